# The OpenSSL TLS shim (included only when UVCTX_WITH_TLS).
list(APPEND UVCTX_IO_SOURCES lib/tls_config.c lib/tls.c)
