# lib/common/: what every layer uses and that knows nothing of contexts:
# the allocator, misuse reports, text escaping, histogram maths, the clock
# of the propagation stamps.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/alloc.c
  ${CMAKE_CURRENT_LIST_DIR}/clock.c
  ${CMAKE_CURRENT_LIST_DIR}/debug.c
  ${CMAKE_CURRENT_LIST_DIR}/histogram.c
  ${CMAKE_CURRENT_LIST_DIR}/text.c)
