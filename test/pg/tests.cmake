# PostgreSQL under contexts against a real server: a private cluster that
# cluster.sh starts once for the suite (a CTest fixture) and stops after.
set(UVCTX_PG_STATE ${PROJECT_BINARY_DIR}/pg-cluster.env)
add_test(NAME pg_cluster_start
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cluster.sh start ${UVCTX_PG_STATE})
add_test(NAME pg_cluster_stop
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cluster.sh stop ${UVCTX_PG_STATE})
set_tests_properties(pg_cluster_start PROPERTIES
  FIXTURES_SETUP pg_cluster TIMEOUT 120)
set_tests_properties(pg_cluster_stop PROPERTIES
  FIXTURES_CLEANUP pg_cluster TIMEOUT 120)

uvctx_add_test(test_pg SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pg.c
  ${CMAKE_CURRENT_LIST_DIR}/pg_state.c
  TIMEOUT 300 ENV "UVCTX_PG_STATE=${UVCTX_PG_STATE}")
target_compile_definitions(test_pg PRIVATE
  UVCTX_PG_SCRIPT_DIR="${CMAKE_CURRENT_LIST_DIR}")
# test_pg restarts the server: the users of the cluster never overlap.
set_tests_properties(test_pg PROPERTIES FIXTURES_REQUIRED pg_cluster
  RESOURCE_LOCK pg_cluster)
target_include_directories(test_pg PRIVATE ${CMAKE_CURRENT_LIST_DIR})
