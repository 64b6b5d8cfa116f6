# uvctx-trace: summaries and heatmaps of traces written by
# uvctx_loop_trace_start(). Its JSON reader is shared with the
# trace tests.
# The reader validates UTF-8 with the library's own validator
# (lib/common/text.c, a leaf with no state), compiled in: the shared
# library does not export it.
uvctx_add_program(uvctx-trace
  SOURCES tools/trace/uvctx-trace.c tools/trace/json.c tools/common/heatmap.c
          lib/common/text.c
  LIBS m)
target_include_directories(uvctx-trace PRIVATE tools/common
                           ${PROJECT_SOURCE_DIR}/lib)
install(TARGETS uvctx-trace RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# A traced workload for the docs' heatmap (docs/observability.md); its smoke
# test runs it briefly and summarizes the trace it wrote.
uvctx_add_program(uvctx-trace-demo SOURCES tools/trace/trace-demo.c)
if(UVCTX_BUILD_TESTS)
  add_test(NAME trace_demo
    COMMAND sh ${PROJECT_SOURCE_DIR}/test/obs/trace/demo-smoke.sh
            $<TARGET_FILE:uvctx-trace-demo> $<TARGET_FILE:uvctx-trace>)
  set_tests_properties(trace_demo PROPERTIES TIMEOUT 60 LABELS tools)
endif()
