# PostgreSQL under contexts (include/uvctx/pg.h); only with UVCTX_WITH_PG.
list(APPEND UVCTX_SOURCES ${CMAKE_CURRENT_LIST_DIR}/pg.c
  ${CMAKE_CURRENT_LIST_DIR}/pg_pool.c)
