# The core suites, one per module of lib/ (issue 2). Each runs its tests in
# forked children with the fixture of test/helpers.h; counts scale down in
# sanitizer builds so that every suite stays well under a minute under TSan.
foreach(suite loop ctx deadline value watch any threads alloc)
  uvctx_add_test(test_${suite} SOURCES test_${suite}.c TIMEOUT 300)
endforeach()

# The leak report names creation sites through dladdr(): export the test's
# symbols so that it can check them.
set_target_properties(test_loop PROPERTIES ENABLE_EXPORTS ON)
