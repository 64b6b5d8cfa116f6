/* session.c owns the TLS session as a uvctx stream kind (its ops) and the
 * public API of include/uvctx/tls.h: init, handshake and the accessors. */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/debug.h"
#include "tls/session.h"

atomic_uint_fast64_t uvctx__tls_ssl_count;

uint64_t uvctx__tls_live_ssl(void) {
  return atomic_load(&uvctx__tls_ssl_count);
}

static size_t chunks_bytes(const tx_t* tx) {
  size_t n = 0;

  for (; tx != NULL; tx = tx->next)
    n += tx->cap;
  return n;
}

size_t uvctx__tls_held_bytes(const uvctx_tls_t* tls) {
  const tls_t* t = tls != NULL ? tls->impl_ : NULL;

  if (t == NULL)
    return 0;
  return (t->out != NULL ? t->out->cap : 0) + chunks_bytes(t->ready_head) +
         chunks_bytes(t->fl_head) + chunks_bytes(t->spare) + t->rx_cap;
}

/* ---- stream ops ---------------------------------------------------------- */

static void start_handshake(tls_t* t) {
  if (t->hs_state != HS_NONE)
    return;
  t->hs_state = HS_RUNNING;
  uvctx__tls_api_cycle(t);
}

static int op_read_start(uvctx_stream_t* s) {
  tls_t* t = of_stream(s);

  if (t->err != 0)
    return t->err;
  t->reading = 1;
  /* A healthy session that delivered its end read a clean close_notify:
   * reading again reports UV_EOF again, as a libuv stream does, not a
   * truncation. */
  if (t->read_done) {
    t->read_done = 0;
    t->eof_pending = 1;
  }
  start_handshake(t);
  uvctx__tls_schedule(t);
  return 0;
}

static int op_read_stop(uvctx_stream_t* s) {
  tls_t* t = of_stream(s);

  t->reading = 0;
  return 0;
}

static int op_write(uvctx_stream_t* s, uvctx_write_t* req,
                    const uv_buf_t bufs[], unsigned nbufs) {
  tls_t* t = of_stream(s);
  uv_buf_t* copy = NULL;

  if (t->err != 0)
    return t->err;
  if (nbufs > 1) {
    copy = uvctx__malloc(sizeof(*copy) * nbufs);
    if (copy == NULL)
      return UV_ENOMEM;
    memcpy(copy, bufs, sizeof(*copy) * nbufs);
  } else {
    W(req)->base = bufs[0].base;
  }
  W(req)->bufs = copy;
  W(req)->nbufs = nbufs;
  W(req)->seq = 0;
  req->next_ = NULL;
  *t->wq_tail = req;
  t->wq_tail = &req->next_;
  t->queued_plain += uvctx_write_size(req);
  if (t->hs_state == HS_NONE)
    start_handshake(t);
  else
    uvctx__tls_api_cycle(t);
  return 0;
}

static int op_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req) {
  tls_t* t = of_stream(s);

  if (t->err != 0)
    return t->err;
  t->sd_req = req;
  t->sd_state = SD_QUEUED;
  if (t->hs_state == HS_NONE)
    start_handshake(t);
  else
    uvctx__tls_api_cycle(t);
  return 0;
}

/* Abortive close. Pending callbacks run from the transport's close
 * callback (or, when the transport is already closed, from the idle
 * handle's), never inside this call. */
static void op_close(uvctx_stream_t* s) {
  tls_t* t = of_stream(s);

  t->closing = 1;
  t->reading = 0;
  if (t->err == 0)
    t->err = UV_ECANCELED;
  uvctx__tls_watch_stop(t);
  if (t->tr_state == TR_OPEN)
    uvctx__tls_close_transport(t);
  else if (t->tr_state == TR_CLOSED)
    uv_close((uv_handle_t*)&t->idle, uvctx__tls_idle_close_cb);
}

/* Plaintext accepted and not yet handed to the operating system, so that
 * it means for a TLS stream what it means for a plain one (and copy's
 * high-water mark, counted in plaintext buffers, holds exactly): queued
 * plaintext, plus the plaintext of every chunk of which a byte is still
 * unflushed or in the transport's queue. A chunk counts the plaintext
 * whose last record ends in it, so a write adds exactly its size and
 * nothing leaves before its last byte has. */
static size_t op_write_queue_size(const uvctx_stream_t* s) {
  tls_t* t = of_stream(s);
  size_t n = t->queued_plain + t->out_plain;
  size_t written;
  size_t cum = 0;
  const tx_t* tx;

  if (t->tr_state != TR_OPEN || t->fl_head == NULL)
    return n;
  written = uvctx_stream_write_queue_size(t->tr);
  written = written < t->fl_bytes ? t->fl_bytes - written : 0;
  for (tx = t->fl_head; tx != NULL; tx = tx->next) {
    cum += tx->len;
    if (cum > written)
      n += tx->plain;
  }
  return n;
}

/* Takes plaintext at once, encrypted into one unit that is offered to
 * the transport's try-write, when nothing of the session's is on its way
 * out; UV_EAGAIN otherwise (and before the handshake has ended), UV_ENOSYS
 * over a transport without a try-write. What the transport leaves of the
 * unit stays with the session, queued on the transport in a chunk of its
 * size, and counts in op_write_queue_size() until it is written: a caller
 * learns from there that not all it wrote is out (a copy then waits for
 * it with an empty write, which completes once it is). The caller's
 * buffer is free at once: a relay behind a slow reader holds the
 * ciphertext it refused, not that and the plaintext too. */
static int op_try_write(uvctx_stream_t* s, const uv_buf_t bufs[],
                        unsigned nbufs) {
  return uvctx__tls_try_write(of_stream(s), bufs, nbufs);
}

static const uvctx_stream_ops_t tls_ops = {
    "tls",       op_read_start, op_read_stop,        op_write,
    op_shutdown, op_close,      op_write_queue_size, op_try_write};

/* ---- public -------------------------------------------------------------- */

static int is_ip_literal(const char* name) {
  unsigned char tmp[16];
  return uv_inet_pton(AF_INET, name, tmp) == 0 ||
         uv_inet_pton(AF_INET6, name, tmp) == 0;
}

int uvctx_tls_init(uvctx_tls_t* tls, uvctx_tls_config_t* config,
                   uvctx_stream_t* transport, const char* server_name) {
  uv_loop_t* loop;
  tls_t* t;
  int rc;

  if (tls != NULL)
    tls->reason_[0] = '\0';
  if (tls == NULL || config == NULL || transport == NULL)
    return UVCTX__EINVAL("tls, config or transport is NULL");
  if (uvctx_stream_is_closing(transport))
    return UVCTX__EINVAL("the transport is closing");
  if (config->role == UVCTX_TLS_SERVER && !config->has_cert)
    return UVCTX__EINVAL("a server configuration without a certificate");
  if (config->role == UVCTX_TLS_SERVER && server_name)
    return UVCTX__EINVAL("a server session takes no server name");
  /* Client certificates cannot verify against no CA. */
  if (config->role == UVCTX_TLS_SERVER &&
      config->client_auth != UVCTX_TLS_CLIENT_AUTH_NONE && !config->has_ca)
    return UVCTX__EINVAL("client authentication without CA certificates");
  if (config->role == UVCTX_TLS_CLIENT && config->verify &&
      (server_name == NULL || server_name[0] == '\0'))
    return UVCTX__EINVAL("a verifying client needs a server name");
  loop = uvctx_stream_loop(transport);
  if (loop == NULL)
    return UVCTX__EINVAL("the transport has no loop (detached?)");

  t = uvctx__calloc(1, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  rc = uvctx_stream_init(&tls->stream, &tls_ops, loop);
  if (rc != 0)
    goto fail_stream;
  ERR_clear_error();
  rc = UV_ENOMEM;
  if (uvctx__tls_bio_method() == NULL)
    goto fail_ssl;
  t->ssl = SSL_new(config->ctx);
  if (t->ssl == NULL)
    goto fail_ssl;
  t->bio = BIO_new(uvctx__tls_bio_method());
  if (t->bio == NULL)
    goto fail_ssl_obj;
  BIO_set_data(t->bio, t);
  SSL_set_bio(t->ssl, t->bio, t->bio); /* one reference, both ways */
  /* Released after every record read, buffers would be freed and made
   * again several times per transport read; the engine gives them back
   * once per step instead (release_buffers()). A configuration may have
   * asked for it. */
  SSL_clear_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
  if (config->role == UVCTX_TLS_CLIENT) {
    SSL_set_connect_state(t->ssl);
    if (server_name != NULL && is_ip_literal(server_name)) {
      /* No SNI for addresses (RFC 6066 3); match the IP SANs instead. */
      if (config->verify &&
          !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name))
        goto fail_name;
    } else if (server_name != NULL) {
      if (!SSL_set_tlsext_host_name(t->ssl, server_name))
        goto fail_name;
      /* Names are matched against DNS SANs only: a certificate without
       * any is not matched on its subject CN (RFC 6125 6.4.4; browsers
       * and Go do the same). */
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
      if (config->verify && !SSL_set1_host(t->ssl, server_name))
        goto fail_name;
    }
  } else {
    SSL_set_accept_state(t->ssl);
  }
  rc = uv_idle_init(loop, &t->idle);
  if (rc != 0)
    goto fail_ssl_obj;
  t->idle.data = t;
  atomic_fetch_add(&uvctx__tls_ssl_count, 1);
  t->tls = tls;
  t->cfg = uvctx_tls_config_ref(config);
  t->tr = transport;
  /* A transport without try-write gets the session's own chunks (see
   * bio.c); one that has it may still answer UV_ENOSYS (output.c). */
  t->no_try = transport->ops_->try_write == NULL;
  t->wq_tail = &t->wq_head;
  t->wf_tail = &t->wf_head;
  t->ready_tail = &t->ready_head;
  t->fl_tail = &t->fl_head;
  transport->data = t;
  tls->impl_ = t;
  return 0;

fail_name:
  rc = UV_EINVAL;
fail_ssl_obj:
  SSL_free(t->ssl); /* and the BIO, if it was set */
fail_ssl:
  ERR_clear_error();
fail_stream:
  uvctx__free(t);
  return rc;
}

int uvctx_tls_handshake(uvctx_tls_t* tls, uvctx_t* ctx,
                        uvctx_tls_handshake_cb cb) {
  tls_t* t;
  int rc;

  if (tls == NULL || cb == NULL)
    return UVCTX__EINVAL("tls or cb is NULL");
  if (tls->impl_ == NULL || uvctx_stream_is_closing(&tls->stream))
    return UVCTX__EINVAL("the session is closed or closing");
  t = tls->impl_;
  if (t->err != 0)
    return t->err;
  if (t->hs_state != HS_NONE)
    return UV_EALREADY;
  if (ctx != NULL) {
    if (uvctx_loop_uv(uvctx_home(ctx)) != uvctx_stream_loop(&tls->stream))
      return UVCTX__EINVAL("the context's home loop is not the session's");
    /* An already-done context is noticed from the loop, through the
     * watch: the abort then happens outside this call, as it must. */
    rc = uvctx_watch_start(&t->watch, ctx, uvctx__tls_watch_cb);
    if (rc != 0)
      return rc;
    t->watching = 1;
    t->hs_ctx = uvctx_ref(ctx);
  }
  t->hs_cb = cb;
  t->hs_cb_pending = 1;
  start_handshake(t);
  return 0;
}

const char* uvctx_tls_alpn(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL || tls->impl_->alpn[0] == '\0')
    return NULL;
  return tls->impl_->alpn;
}

const char* uvctx_tls_server_name(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL || tls->impl_->sni[0] == '\0')
    return NULL;
  return tls->impl_->sni;
}

int uvctx_tls_version(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL)
    return 0;
  return tls->impl_->version;
}

const char* uvctx_tls_cipher(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL)
    return NULL;
  return tls->impl_->cipher;
}

const char* uvctx_tls_peer_subject(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL || tls->impl_->peer[0] == '\0')
    return NULL;
  return tls->impl_->peer;
}

const char* uvctx_tls_reason(const uvctx_tls_t* tls) {
  const char* r;

  if (tls == NULL)
    return NULL;
  r = tls->impl_ != NULL ? tls->impl_->reason : tls->reason_;
  return r[0] != '\0' ? r : NULL;
}
