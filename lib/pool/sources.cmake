# The generic connection pool (include/uvctx/pool.h).
list(APPEND UVCTX_SOURCES ${CMAKE_CURRENT_LIST_DIR}/pool.c)
