# lib/core/: the context tree, deadlines, values, watches, the loop binding,
# the mailbox, the timer source, its stats and the trace hooks. Depends on lib/common/ only.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/ctx.c
  ${CMAKE_CURRENT_LIST_DIR}/deadline.c
  ${CMAKE_CURRENT_LIST_DIR}/lock.c
  ${CMAKE_CURRENT_LIST_DIR}/loop.c
  ${CMAKE_CURRENT_LIST_DIR}/mailbox.c
  ${CMAKE_CURRENT_LIST_DIR}/stats.c
  ${CMAKE_CURRENT_LIST_DIR}/timer.c
  ${CMAKE_CURRENT_LIST_DIR}/trace_hooks.c
  ${CMAKE_CURRENT_LIST_DIR}/value.c
  ${CMAKE_CURRENT_LIST_DIR}/watch.c)
