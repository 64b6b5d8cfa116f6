# lib/tls/: the OpenSSL shim (UVCTX_WITH_TLS), a stream kind on lib/io/:
# configuration (tls_config.c) and the session, one owner per part (see
# session.h): errors, the BIO, output, the engine, the stream and the API.
list(APPEND UVCTX_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/bio.c
  ${CMAKE_CURRENT_LIST_DIR}/engine.c
  ${CMAKE_CURRENT_LIST_DIR}/errors.c
  ${CMAKE_CURRENT_LIST_DIR}/output.c
  ${CMAKE_CURRENT_LIST_DIR}/session.c
  ${CMAKE_CURRENT_LIST_DIR}/tls_config.c)
