# lib/obs/: what the library tells about itself: the leak report, the trace
# writer, log fields and the Prometheus exposition. Depends on lib/core/ and
# lib/common/.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/dump.c
  ${CMAKE_CURRENT_LIST_DIR}/observe.c
  ${CMAKE_CURRENT_LIST_DIR}/site.c
  ${CMAKE_CURRENT_LIST_DIR}/trace.c)
