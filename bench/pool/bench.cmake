# The connection pool (uvctx/pool.h) beside Go's database/sql with a fake
# driver (bench/peers/go/pool_test.go).
uvctx_add_bench(bench_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/../bench_pool.c
  SMOKE_ARGS --quick)
