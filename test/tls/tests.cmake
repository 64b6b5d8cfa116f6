# The TLS suites (lib/tls/). Certificates are made at build time by
# test/tls/gen-certs.sh (openssl CLI) into the build tree.
add_custom_command(
  OUTPUT ${UVCTX_TLS_CERT_DIR}/stamp
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/gen-certs.sh
          ${UVCTX_TLS_CERT_DIR}
  DEPENDS ${CMAKE_CURRENT_LIST_DIR}/gen-certs.sh
  COMMENT "Generating the TLS test certificates")
add_custom_target(uvctx_tls_certs ALL DEPENDS ${UVCTX_TLS_CERT_DIR}/stamp)

# The byte-boundary test steps through every budget; under TSan (several
# times slower) it takes every 8th, plus the last byte.
if(UVCTX_SANITIZE STREQUAL "thread")
  set(UVCTX_TLS_CUT_ENV "UVCTX_TLS_CUT_STRIDE=8")
else()
  set(UVCTX_TLS_CUT_ENV "UVCTX_TLS_CUT_STRIDE=1")
endif()

uvctx_add_test(test_tls SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tls.c TIMEOUT 300
               ENV "${UVCTX_TLS_CUT_ENV}")
uvctx_add_test(test_tls_peers SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tls_peers.c TIMEOUT 300)
# Copy and pipe over TLS on loopback TCP (64 MiB transfers in the plain
# build, 8 MiB under sanitizers).
uvctx_add_test(test_tls_copy SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tls_copy.c TIMEOUT 300)
foreach(t test_tls test_tls_peers test_tls_copy)
  add_dependencies(${t} uvctx_tls_certs)
endforeach()
