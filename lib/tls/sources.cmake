# lib/tls/: the OpenSSL shim (UVCTX_WITH_TLS). A stream kind on lib/io/.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/tls.c
  ${CMAKE_CURRENT_LIST_DIR}/tls_config.c)
