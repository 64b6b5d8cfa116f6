# The suites of the libuv operations (include/uvctx/uv.h). They link the
# interposed resolver of gai_gate.c. test_uv_ops runs with one pool thread,
# so that a job in front of the pool makes "still queued" deterministic.
set(UVCTX_UV_TEST_DIR ${CMAKE_CURRENT_LIST_DIR})
# Their shared helpers (uv_support.c), on top of the test-support library.
add_library(uvctx_uv_test_support STATIC ${UVCTX_UV_TEST_DIR}/uv_support.c)
target_include_directories(uvctx_uv_test_support PUBLIC ${UVCTX_UV_TEST_DIR})
target_link_libraries(uvctx_uv_test_support PUBLIC uvctx_test_support)
uvctx_warnings(uvctx_uv_test_support)
uvctx_sanitize(uvctx_uv_test_support)
foreach(suite ops dial process signals threads)
  if(suite STREQUAL "ops")
    set(env "UV_THREADPOOL_SIZE=1")
  else()
    set(env "")
  endif()
  uvctx_add_test(test_uv_${suite}
    SOURCES ${UVCTX_UV_TEST_DIR}/test_uv_${suite}.c
            ${UVCTX_UV_TEST_DIR}/gai_gate.c
    LIBS uvctx_uv_test_support ${CMAKE_DL_LIBS}
    ENV "${env}"
    TIMEOUT 300)
endforeach()

# recv/send over plain TCP and over TLS sessions (the TLS suites'
# certificates and helpers).
if(UVCTX_WITH_TLS)
  uvctx_add_test(test_uv_stream
    SOURCES ${UVCTX_UV_TEST_DIR}/test_uv_stream.c
    LIBS uvctx_uv_test_support TIMEOUT 300)
  add_dependencies(test_uv_stream uvctx_tls_certs)
endif()
