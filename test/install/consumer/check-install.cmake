# Driver of the install test (cmake -P; see test/install.cmake): installs
# the build tree into a fresh prefix under WORK_DIR, then builds and runs
# the consumer in this directory against it, through find_package() (shared
# and static targets) and through a plain compiler call fed by pkg-config,
# and compiles each installed header on its own (twice, for the guards).
#
# Inputs (-D): BUILD_DIR, WORK_DIR, GENERATOR, C_COMPILER, PKG_CONFIG,
# LIBDIR (CMAKE_INSTALL_LIBDIR of the build, relative), BUILD_TYPE,
# EXPECT_PROGRAMS (the programs were built and must be installed).

foreach(var BUILD_DIR WORK_DIR GENERATOR C_COMPILER PKG_CONFIG LIBDIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "check-install.cmake: ${var} is not set")
  endif()
endforeach()

set(consumer_dir "${CMAKE_CURRENT_LIST_DIR}")
set(prefix "${WORK_DIR}/prefix")

# Runs a command, prints its output, fails the test when it fails. The
# output is left in `step_output` for the caller to inspect.
function(step what)
  message(STATUS "==> ${what}: ${ARGN}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

function(expect_file path)
  if(NOT EXISTS "${prefix}/${path}")
    message(FATAL_ERROR "not installed: ${path}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
# A DESTDIR from the environment would move the install out of the prefix.
unset(ENV{DESTDIR})

# 1. Install.
set(config_args)
if(BUILD_TYPE)
  set(config_args --config "${BUILD_TYPE}")
endif()
step("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}"
  ${config_args})
foreach(f include/uvctx.h
          ${LIBDIR}/libuvctx.so ${LIBDIR}/libuvctx.a
          ${LIBDIR}/cmake/uvctx/uvctx-config.cmake
          ${LIBDIR}/cmake/uvctx/uvctx-config-version.cmake
          ${LIBDIR}/cmake/uvctx/uvctx-targets.cmake
          ${LIBDIR}/pkgconfig/uvctx.pc)
  expect_file("${f}")
endforeach()

# 2. find_package(uvctx): configure, build, run both executables.
set(fp "${WORK_DIR}/find-package")
step("configure consumer" "${CMAKE_COMMAND}" -S "${consumer_dir}" -B "${fp}"
  -G "${GENERATOR}" "-DCMAKE_C_COMPILER=${C_COMPILER}"
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
# The consumer must have found this install, not one elsewhere.
file(STRINGS "${fp}/CMakeCache.txt" found REGEX "^uvctx_DIR:")
string(FIND "${found}" "${prefix}/" at)
if(NOT at GREATER -1)
  message(FATAL_ERROR "found the wrong uvctx: ${found}")
endif()
step("build consumer" "${CMAKE_COMMAND}" --build "${fp}" ${config_args})
foreach(kind shared static)
  step("run consumer_${kind}" "${fp}/consumer_${kind}")
  if(NOT step_output MATCHES "consumer ok")
    message(FATAL_ERROR "consumer_${kind} did not report success")
  endif()
endforeach()

# 3. pkg-config: what a Makefile user does.
set(ENV{PKG_CONFIG_PATH} "${prefix}/${LIBDIR}/pkgconfig")
step("pkg-config cflags" "${PKG_CONFIG}" --cflags uvctx)
separate_arguments(pc_cflags UNIX_COMMAND "${step_output}")
step("pkg-config libs" "${PKG_CONFIG}" --libs uvctx)
separate_arguments(pc_libs UNIX_COMMAND "${step_output}")
step("pkg-config libdir" "${PKG_CONFIG}" --variable=libdir uvctx)
string(STRIP "${step_output}" pc_libdir)
get_filename_component(pc_libdir "${pc_libdir}" REALPATH)
get_filename_component(want_libdir "${prefix}/${LIBDIR}" REALPATH)
if(NOT pc_libdir STREQUAL want_libdir)
  message(FATAL_ERROR "uvctx.pc libdir ${pc_libdir} is not ${want_libdir}")
endif()
# Paths as a user reads them: no detour through pkgconfig/../..
step("pkg-config includedir" "${PKG_CONFIG}" --variable=includedir uvctx)
if(step_output MATCHES "\\.\\.")
  message(FATAL_ERROR "uvctx.pc includedir is not a plain path: ${step_output}")
endif()
# OpenSSL is a private requirement: only static links see it.
step("pkg-config requires" "${PKG_CONFIG}" --print-requires uvctx)
if(step_output MATCHES "libssl|libcrypto")
  message(FATAL_ERROR "uvctx.pc makes every consumer require OpenSSL")
endif()
set(pc "${WORK_DIR}/pkg-config")
file(MAKE_DIRECTORY "${pc}")
step("compile with pkg-config" "${C_COMPILER}" -std=gnu11 -Wall -Wextra
  -Wstrict-prototypes -Werror ${pc_cflags} "${consumer_dir}/main.c"
  -o "${pc}/consumer_pc" ${pc_libs} "-Wl,-rpath,${pc_libdir}")
step("run consumer_pc" "${pc}/consumer_pc")
if(NOT step_output MATCHES "consumer ok")
  message(FATAL_ERROR "consumer_pc did not report success")
endif()

# 4. Every installed header compiles on its own, with only the flags
# uvctx.pc gives: headers added later are covered without a change here.
file(GLOB headers RELATIVE "${prefix}/include"
  "${prefix}/include/uvctx.h" "${prefix}/include/uvctx/*.h")
foreach(h IN LISTS headers)
  string(MAKE_C_IDENTIFIER "${h}" name)
  file(WRITE "${pc}/${name}.c" "#include <${h}>\n#include <${h}>\n")
  step("header ${h}" "${C_COMPILER}" -std=gnu11 -Wall -Wextra
    -Wstrict-prototypes -Werror ${pc_cflags} -fsyntax-only "${pc}/${name}.c")
endforeach()
# 5. The installed programs start from this prefix (no LD_LIBRARY_PATH:
# they find the installed library through their RPATH).
unset(ENV{LD_LIBRARY_PATH})
if(EXISTS "${prefix}/bin/uvctx-relay")
  step("run uvctx-relay --help" "${prefix}/bin/uvctx-relay" --help)
  if(NOT step_output MATCHES "usage: uvctx-relay")
    message(FATAL_ERROR "uvctx-relay --help printed no usage")
  endif()
  step("run uvctx-trace summary" "${prefix}/bin/uvctx-trace" summary
    "${consumer_dir}/../../obs/trace/sample.json")
elseif(EXPECT_PROGRAMS)
  message(FATAL_ERROR "not installed: bin/uvctx-relay")
endif()

message(STATUS "install test passed: find_package (shared, static) and "
               "pkg-config consumers built and ran against ${prefix}")
