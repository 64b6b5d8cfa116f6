# The generic connection pool against a fake connection kind.
uvctx_add_test(test_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pool.c
  TIMEOUT 300)
