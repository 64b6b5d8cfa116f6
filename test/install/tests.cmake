# The install test: installs this build into a prefix inside the build
# tree and builds a tiny consumer against it, through find_package(uvctx)
# and through pkg-config (driver: test/install/consumer/check-install.cmake).
#
# Plain builds only: in a sanitizer build the installed library carries the
# sanitizer runtime, and the consumer's own link would have to match; that
# says nothing more about the install rules.
if(UVCTX_SANITIZE STREQUAL "" AND NOT IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  add_test(NAME install_consumer
    COMMAND "${CMAKE_COMMAND}"
      "-DBUILD_DIR=${PROJECT_BINARY_DIR}"
      "-DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install-test"
      "-DGENERATOR=${CMAKE_GENERATOR}"
      "-DC_COMPILER=${CMAKE_C_COMPILER}"
      "-DPKG_CONFIG=${PKG_CONFIG_EXECUTABLE}"
      "-DLIBDIR=${CMAKE_INSTALL_LIBDIR}"
      "-DBUILD_TYPE=${CMAKE_BUILD_TYPE}"
      "-DEXPECT_PROGRAMS=$<BOOL:$<TARGET_EXISTS:uvctx-relay>>"
      -P "${CMAKE_CURRENT_LIST_DIR}/consumer/check-install.cmake")
  set_tests_properties(install_consumer PROPERTIES TIMEOUT 300
    LABELS install)
endif()
