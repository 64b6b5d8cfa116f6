# Observability suites (lib/obs/): tracing and the uvctx-trace tool, the
# loop stats, histograms, Prometheus text and log fields.
uvctx_add_test(test_trace
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_trace.c ${PROJECT_SOURCE_DIR}/tools/trace/json.c
  TIMEOUT 300)
target_include_directories(test_trace PRIVATE ${PROJECT_SOURCE_DIR}/tools/trace)
if(TARGET uvctx-trace)
  # The suite runs the tool on the traces it writes.
  add_dependencies(test_trace uvctx-trace)
  set_property(TEST test_trace APPEND PROPERTY ENVIRONMENT
    "UVCTX_TRACE_TOOL=$<TARGET_FILE:uvctx-trace>")
endif()

uvctx_add_test(test_stats SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_stats.c
  TIMEOUT 300)

# The tool alone, on a hand-written trace with known answers.
if(TARGET uvctx-trace)
  add_test(NAME trace_tool
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/trace/check-tool.sh
            $<TARGET_FILE:uvctx-trace> ${CMAKE_CURRENT_LIST_DIR}/trace)
  set_tests_properties(trace_tool PROPERTIES TIMEOUT 60 LABELS tools)
endif()

# uvctx-trace's JSON reader alone: strict RFC 8259 and UTF-8.
uvctx_add_test(test_json
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_json.c ${PROJECT_SOURCE_DIR}/tools/trace/json.c
  TIMEOUT 60)
target_include_directories(test_json PRIVATE ${PROJECT_SOURCE_DIR}/tools/trace)

# Misuse reports (UVCTX_DEBUG): one line per broken precondition.
uvctx_add_test(test_misuse SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_misuse.c
  TIMEOUT 120)

# uvctx_loop_snapshot(): the leak report as records (lib/obs/dump.c).
uvctx_add_test(test_snapshot SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_snapshot.c
  TIMEOUT 120)
set_target_properties(test_snapshot PROPERTIES ENABLE_EXPORTS ON)
