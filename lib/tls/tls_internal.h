/* Internals shared by tls_config.c and tls.c. Not part of the public API. */
#ifndef UVCTX_TLS_INTERNAL_H
#define UVCTX_TLS_INTERNAL_H

#include <stdatomic.h>

#include <openssl/ssl.h>

#include "common/alloc.h"
#include "io/io.h"
#include "uvctx/tls.h"

#define UVCTX__TLS_REASON 256

struct uvctx_tls_config_s {
  atomic_uint refs;
  int role;
  int verify;
  int has_cert;
  int has_ca;
  int client_auth; /* UVCTX_TLS_CLIENT_AUTH_*, servers */
  SSL_CTX* ctx;
  unsigned char* alpn; /* wire format: length-prefixed names */
  size_t alpn_len;
  char reason[UVCTX__TLS_REASON];
};

/* Drains the calling thread's OpenSSL error queue into `buf` as the reason
 * of its oldest entry (the root cause), prefixed by `what` when not NULL.
 * Returns the packed code of that entry, 0 if the queue was empty. */
unsigned long uvctx__tls_drain_errors(const char* what, char* buf, size_t len);

/* SSL objects alive, over all sessions: for tests that prove every SSL*
 * was freed. */
uint64_t uvctx__tls_live_ssl(void);

/* Bytes a session holds of its own for data in flight: its transmit
 * chunks (not yet written, or kept for reuse) and its receive buffer. For
 * tests that bound what a slow reader pins, and that an idle session
 * holds nothing. 0 for a closed session. */
size_t uvctx__tls_held_bytes(const uvctx_tls_t* tls);

#endif /* UVCTX_TLS_INTERNAL_H */
