# The core suites, one per module of lib/core/. Each runs its tests in
# forked children with the fixture of test/support/helpers.h; counts scale down in
# sanitizer builds so that every suite stays well under a minute under TSan.
foreach(suite loop ctx deadline value watch any threads alloc ctx_misuse stress)
  uvctx_add_test(test_${suite} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_${suite}.c TIMEOUT 300)
endforeach()

# The leak report names creation sites through dladdr(): export the test's
# symbols so that it can check them.
set_target_properties(test_loop PROPERTIES ENABLE_EXPORTS ON)

# The deadline suite again with the timerfd deadline source
# (UVCTX_LOOP_HIRES_DEADLINES): the same contract, a different clock path.
add_test(NAME test_deadline_hires COMMAND test_deadline)
set_tests_properties(test_deadline_hires PROPERTIES TIMEOUT 300
  ENVIRONMENT "CK_DEFAULT_TIMEOUT=300;UVCTX_TEST_LOOP_FLAGS=1")
