# Install rules and the package files consumers find us with: the exported
# uvctx-config.cmake (targets uvctx::uvctx and uvctx::uvctx_static) and
# uvctx.pc. Included by cmake/uvctx-install.cmake.
#
# Both files are relocatable: they locate the prefix from where they were
# installed, so `cmake --install build --prefix DIR` works for any DIR (the
# install test relies on it).

include(CMakePackageConfigHelpers)

set(UVCTX_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/uvctx")
set(UVCTX_PKGCONFIG_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

install(TARGETS uvctx uvctx_static
  EXPORT uvctx-targets
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")

# The umbrella header and whatever module headers exist at install time
# (evaluated then, so headers added later need no change here).
install(FILES "${PROJECT_SOURCE_DIR}/include/uvctx.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/uvctx/"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/uvctx"
  FILES_MATCHING PATTERN "*.h")

# The exported targets name PkgConfig::LIBUV, Threads::Threads and, with
# TLS, OpenSSL::SSL/Crypto verbatim; uvctx-config.cmake recreates them
# before it loads uvctx-targets.cmake.
install(EXPORT uvctx-targets
  NAMESPACE uvctx::
  DESTINATION "${UVCTX_CMAKE_DIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/uvctx-config.cmake.in"
  "${PROJECT_BINARY_DIR}/uvctx-config.cmake"
  INSTALL_DESTINATION "${UVCTX_CMAKE_DIR}")
# 0.x: a minor release may break the API, so only 0.1.y satisfies 0.1.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/uvctx-config-version.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/uvctx-config.cmake"
  "${PROJECT_BINARY_DIR}/uvctx-config-version.cmake"
  DESTINATION "${UVCTX_CMAKE_DIR}")

# uvctx.pc. The public header includes <uv.h>, so libuv is a public
# requirement. OpenSSL is needed only to link (the TLS API passes no OpenSSL
# type), so it is private: a consumer of the shared library does not link
# libssl itself, and `pkg-config --static` still brings it in.
set(UVCTX_PC_REQUIRES "libuv >= 1.44")
set(UVCTX_PC_REQUIRES_PRIVATE "")
set(UVCTX_PC_CFLAGS "")
if(UVCTX_WITH_TLS)
  set(UVCTX_PC_REQUIRES_PRIVATE "libssl >= 3.0, libcrypto >= 3.0")
  set(UVCTX_PC_CFLAGS " -DUVCTX_WITH_TLS=1")
endif()
# The PostgreSQL module's header includes <libpq-fe.h>: libpq is public too.
if(UVCTX_WITH_PG)
  string(APPEND UVCTX_PC_REQUIRES ", libpq")
  string(APPEND UVCTX_PC_CFLAGS " -DUVCTX_WITH_PG=1")
endif()
set(UVCTX_PC_LIBS_PRIVATE "")
if(CMAKE_THREAD_LIBS_INIT)
  string(APPEND UVCTX_PC_LIBS_PRIVATE " ${CMAKE_THREAD_LIBS_INIT}")
endif()
foreach(lib IN LISTS CMAKE_DL_LIBS)
  string(APPEND UVCTX_PC_LIBS_PRIVATE " -l${lib}")
endforeach()
string(STRIP "${UVCTX_PC_LIBS_PRIVATE}" UVCTX_PC_LIBS_PRIVATE)

# The directories are written when the file is installed, from the prefix
# of that install (`cmake --install build --prefix DIR` included), so that
# they read DIR/include rather than a path through pkgconfig/../..
# Absolute CMAKE_INSTALL_<dir> values are kept as they are.
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(UVCTX_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(UVCTX_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
set(UVCTX_PC_PREFIX "@UVCTX_INSTALL_PREFIX@")
configure_file("${PROJECT_SOURCE_DIR}/cmake/uvctx.pc.in"
  "${PROJECT_BINARY_DIR}/uvctx.pc.install" @ONLY)
install(CODE "
  set(UVCTX_INSTALL_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/uvctx.pc.install\"
    \"${PROJECT_BINARY_DIR}/uvctx.pc\" @ONLY)
")
install(FILES "${PROJECT_BINARY_DIR}/uvctx.pc"
  DESTINATION "${UVCTX_PKGCONFIG_DIR}")
