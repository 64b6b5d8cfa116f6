# lib/io/: the stream layer, the libuv stream kind, copy and pipe. Built on
# the public core API and lib/common/.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/bufpool.c
  ${CMAKE_CURRENT_LIST_DIR}/copy.c
  ${CMAKE_CURRENT_LIST_DIR}/stream.c)
