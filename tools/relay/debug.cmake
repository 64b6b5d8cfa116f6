# The relay's debug endpoints (tools/relay/debug.c): the leak report, live
# traces and the heatmap on the --metrics listener; its summary log lines
# (summary.c). The heatmap rendering
# and the JSON reader are shared with uvctx-trace.
target_sources(uvctx-relay PRIVATE
  tools/relay/debug.c
  tools/relay/page.c
  tools/relay/summary.c
  tools/common/heatmap.c
  tools/trace/json.c
  lib/common/text.c) # the JSON reader's UTF-8 validator (see trace.cmake)
target_include_directories(uvctx-relay PRIVATE tools/common tools/trace
                           ${PROJECT_SOURCE_DIR}/lib)
target_link_libraries(uvctx-relay PRIVATE m)
