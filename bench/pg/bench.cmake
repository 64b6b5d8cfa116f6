# PostgreSQL through the pg pool beside node-postgres and pgbench, on the
# private cluster of the pg test suite (its CTest fixture) in smoke runs.
uvctx_add_bench(bench_pg SOURCES ${CMAKE_CURRENT_LIST_DIR}/../bench_pg.c
  ${CMAKE_CURRENT_LIST_DIR}/../../test/pg/pg_state.c
  SMOKE_ARGS --quick)
target_compile_definitions(bench_pg PRIVATE
  UVCTX_BENCH_NODE_PG_DIR="${CMAKE_CURRENT_LIST_DIR}/../peers/node-pg")
set_tests_properties(smoke_bench_pg PROPERTIES SKIP_RETURN_CODE 77
  ENVIRONMENT "UVCTX_PG_STATE=${PROJECT_BINARY_DIR}/pg-cluster.env")
if(UVCTX_BUILD_TESTS)
  set_tests_properties(smoke_bench_pg PROPERTIES FIXTURES_REQUIRED pg_cluster
    RESOURCE_LOCK pg_cluster)
endif()
target_include_directories(bench_pg PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../../test/pg)
