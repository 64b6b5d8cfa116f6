/* errors.c owns the mapping of OpenSSL failures to libuv codes, and the
 * reason a session keeps for its first fatal error. */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/session.h"

/* Maps the failure of an SSL call to a libuv code and records OpenSSL's
 * reason. The error queue is drained here (and cleared before every call),
 * so one connection's failure never shows up in another's. */
int uvctx__tls_map_error(tls_t* t, int ret) {
  int e = SSL_get_error(t->ssl, ret);
  unsigned long code;
  long vr;
  int reason;

  if (t->oom) {
    ERR_clear_error();
    snprintf(t->reason, sizeof(t->reason), "out of memory");
    return UV_ENOMEM;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    snprintf(t->reason, sizeof(t->reason),
             "peer sent close_notify during the handshake");
    return UVCTX_TLS_ETRUNCATED;
  }
  if (e == SSL_ERROR_SYSCALL) {
    /* Our BIO never reports EOF: only an internal failure gets here. */
    uvctx__tls_drain_errors("TLS internal error", t->reason, sizeof(t->reason));
    return UVCTX_TLS_EPROTO;
  }
  code = uvctx__tls_drain_errors(NULL, t->reason, sizeof(t->reason));
  reason = ERR_GET_REASON(code);
  vr = SSL_get_verify_result(t->ssl);
  if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    snprintf(t->reason, sizeof(t->reason), "peer did not return a certificate");
    return UVCTX_TLS_EVERIFY;
  }
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    snprintf(t->reason, sizeof(t->reason), "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
    return UVCTX_TLS_EVERIFY;
  }
  if (ERR_GET_LIB(code) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET)
    return UVCTX_TLS_EALERT;
  if (e == SSL_ERROR_SSL && t->reason[0] == '\0')
    snprintf(t->reason, sizeof(t->reason), "TLS protocol error");
  return UVCTX_TLS_EPROTO;
}
