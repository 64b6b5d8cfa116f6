# The review suite: regression tests for bugs found by reviewing the I/O
# layer (stream, copy, TLS). Its TLS tests need the generated certificates.
uvctx_add_test(test_review SOURCES test_review.c TIMEOUT 300)
if(UVCTX_WITH_TLS)
  add_dependencies(test_review uvctx_tls_certs)
  target_compile_definitions(test_review PRIVATE
    UVCTX_TLS_CERT_DIR="${UVCTX_TLS_CERT_DIR}")
endif()
