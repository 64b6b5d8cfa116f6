# libuv operations under a context (include/uvctx/uv.h), one file per
# operation family, built on the public API only.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/sleep.c
  ${CMAKE_CURRENT_LIST_DIR}/work.c
  ${CMAKE_CURRENT_LIST_DIR}/connect.c
  ${CMAKE_CURRENT_LIST_DIR}/getaddrinfo.c
  ${CMAKE_CURRENT_LIST_DIR}/dial.c
  ${CMAKE_CURRENT_LIST_DIR}/process.c
  ${CMAKE_CURRENT_LIST_DIR}/signals.c
  ${CMAKE_CURRENT_LIST_DIR}/group.c
  ${CMAKE_CURRENT_LIST_DIR}/recv.c
  ${CMAKE_CURRENT_LIST_DIR}/send.c
)
