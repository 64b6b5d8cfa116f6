# The suites of the libuv operations (include/uvctx/uv.h). They link the
# interposed resolver of gai_gate.c. test_uv_ops runs with one pool thread,
# so that a job in front of the pool makes "still queued" deterministic.
set(UVCTX_UV_TEST_DIR ${CMAKE_CURRENT_LIST_DIR})
foreach(suite ops dial process signals)
  if(suite STREQUAL "ops")
    set(env "UV_THREADPOOL_SIZE=1")
  else()
    set(env "")
  endif()
  uvctx_add_test(test_uv_${suite}
    SOURCES ${UVCTX_UV_TEST_DIR}/test_uv_${suite}.c
            ${UVCTX_UV_TEST_DIR}/gai_gate.c
    LIBS ${CMAKE_DL_LIBS}
    ENV "${env}"
    TIMEOUT 300)
  target_include_directories(test_uv_${suite} PRIVATE
                             ${CMAKE_CURRENT_SOURCE_DIR})
endforeach()
