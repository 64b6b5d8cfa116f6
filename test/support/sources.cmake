# The test-support library: the loop fixture, bounded waits, seeds, the
# failing allocator (helpers), the real peers of the stream and copy suites
# (copy_peers) and the TLS suites' configurations and transports (tlsutil).
# It is built in the same sanitizer mode as the suites it is linked into.
add_library(uvctx_test_support STATIC
  ${CMAKE_CURRENT_LIST_DIR}/helpers.c
  ${CMAKE_CURRENT_LIST_DIR}/copy_peers.c)
if(UVCTX_WITH_TLS)
  # The certificates are made at build time by test/tls/gen-certs.sh.
  set(UVCTX_TLS_CERT_DIR ${CMAKE_CURRENT_BINARY_DIR}/tls-certs)
  target_sources(uvctx_test_support PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/tlsutil.c)
  target_compile_definitions(uvctx_test_support PUBLIC
    UVCTX_TLS_CERT_DIR="${UVCTX_TLS_CERT_DIR}"
    UVCTX_TLS_SCRIPT_DIR="${CMAKE_CURRENT_LIST_DIR}/../tls")
endif()
target_include_directories(uvctx_test_support PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(uvctx_test_support PUBLIC uvctx_testing PkgConfig::CHECK)
uvctx_warnings(uvctx_test_support)
uvctx_sanitize(uvctx_test_support)
