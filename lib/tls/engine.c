/* engine.c owns the session's engine: one step function run after every
 * input and at the end of every API call, the handshake and its context,
 * reading plaintext, and the close sequence (transport closed, SSL freed
 * in the transport's close callback, every pending callback run, then the
 * session's own idle handle closed, in whose callback the session ends). */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/session.h"

static size_t rx_avail(const tls_t* t) {
  return t->rx_len - t->rx_off;
}

/* The transport reads into the free tail of rx. What SSL left unread (a
 * partial record, usually) moves to the front first when the tail is short,
 * so reads stay large. A full rx yields a zero-length buffer (UV_ENOBUFS);
 * set_transport_reading() normally stops reading before that. */
static void tr_alloc(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  tls_t* t = s->data;

  /* Grown once application data fills the small buffer while the user
   * reads: a connection that only sees the handshake (and the session
   * tickets some peers send after it), or whose reader stopped, never
   * allocates the large one. */
  size_t want =
      t->hs_state == HS_DONE && t->reading &&
              (t->rx_grow || (t->rx_cap > 0 && rx_avail(t) == t->rx_cap))
          ? RX_SIZE
          : RX_HS_SIZE;

  (void)suggested;
  if (t->rx_cap < want) {
    char* rx = uvctx__realloc(t->rx, want);
    if (rx == NULL) {
      t->oom = 1;
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    t->rx = rx;
    t->rx_cap = want;
  }
  if (t->rx_off > 0 && t->rx_cap - t->rx_len < t->rx_cap / 4) {
    memmove(t->rx, t->rx + t->rx_off, t->rx_len - t->rx_off);
    t->rx_len -= t->rx_off;
    t->rx_off = 0;
  }
  *buf = uv_buf_init(t->rx + t->rx_len, (unsigned)(t->rx_cap - t->rx_len));
}

static void tr_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf);

/* The transport is read while there is room in rx (or rx may grow), and,
 * once the user has stopped reading, only while rx holds less than a small
 * buffer's worth: enough to notice the peer's end or an alert on an idle
 * session, while the data of a paused reader waits in the kernel. */
static void set_transport_reading(tls_t* t) {
  size_t avail = rx_avail(t);
  int done = t->hs_state == HS_DONE;
  int want;
  int rc;

  if (t->tr_state != TR_OPEN)
    return;
  want = t->err == 0 && !t->closing && !t->tr_eof && t->hs_state != HS_NONE &&
         (t->rx_cap == 0 || avail < t->rx_cap ||
          (done && t->reading && t->rx_cap < RX_SIZE)) &&
         (!done || t->reading || avail < RX_HS_SIZE);
  if (want == t->tr_reading)
    return;
  if (want) {
    rc = uvctx_stream_read_start(t->tr, tr_alloc, tr_read);
    if (rc != 0) {
      uvctx__tls_fail(t, rc, UVCTX__TLS_QUIET);
      return;
    }
  } else {
    uvctx_stream_read_stop(t->tr);
  }
  t->tr_reading = want;
}

void uvctx__tls_watch_stop(tls_t* t) {
  if (t->watching) {
    uvctx_watch_stop(&t->watch);
    t->watching = 0;
  }
}

/* Runs the handshake callback, once. The context stays referenced until
 * the callback has returned, so the callback may still look at it (its
 * cause, its values) after its owner let go. Nothing of `t` is touched
 * after the call: the callback may close the session. */
static void run_hs_cb(tls_t* t, int status) {
  uvctx_t* ctx = t->hs_ctx;

  t->hs_ctx = NULL;
  t->hs_cb_pending = 0;
  t->hs_deferred = 0;
  t->hs_cb(t->tls, status);
  uvctx_unref(ctx);
}

static void handshake_done(tls_t* t) {
  const unsigned char* p = NULL;
  unsigned int len = 0;
  const char* sni;

  t->hs_state = HS_DONE;
  t->version = SSL_version(t->ssl);
  t->cipher = SSL_get_cipher_name(t->ssl);
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  if (p != NULL && len > 0 && len < sizeof(t->alpn)) {
    memcpy(t->alpn, p, len);
    t->alpn[len] = '\0';
  }
  sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  if (sni != NULL)
    snprintf(t->sni, sizeof(t->sni), "%s", sni);
  if (t->cfg->client_auth != UVCTX_TLS_CLIENT_AUTH_NONE) {
    X509* peer = SSL_get0_peer_certificate(t->ssl);
    if (peer != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK)
      X509_NAME_oneline(X509_get_subject_name(peer), t->peer,
                        (int)sizeof(t->peer));
  }
  uvctx__tls_watch_stop(t);
  if (!t->hs_cb_pending)
    return;
  if (t->api > 0) {
    t->hs_deferred = 1;
    uvctx__tls_schedule(t);
    return;
  }
  run_hs_cb(t, 0);
}

/* Hands decrypted data to the user until SSL wants more input. Each
 * buffer the user lends is filled with as many records as are there (one
 * SSL_read returns one record at most), so a copy out of TLS writes as
 * much per request as one out of a plain stream. */
static void read_plain(tls_t* t) {
  uv_buf_t buf;
  size_t got;
  size_t n;
  int e;

  while (!dead(t) && t->reading && !t->read_done &&
         (t->eof_pending || SSL_pending(t->ssl) > 0 || rx_avail(t) > 0)) {
    if (t->eof_pending) {
      buf = uv_buf_init(NULL, 0);
      t->eof_pending = 0;
      t->read_done = 1;
      uvctx_stream_emit_read(&t->tls->stream, UV_EOF, &buf);
      return;
    }
    buf = uv_buf_init(NULL, 0);
    uvctx_stream_emit_alloc(&t->tls->stream, READ_SUGGEST, &buf);
    if (dead(t) || !t->reading)
      return;
    if (buf.base == NULL || buf.len == 0) {
      uvctx_stream_emit_read(&t->tls->stream, UV_ENOBUFS, &buf);
      return;
    }
    got = 0;
    e = SSL_ERROR_NONE;
    while (got < buf.len) {
      ERR_clear_error();
      if (SSL_read_ex(t->ssl, buf.base + got, buf.len - got, &n) == 1) {
        got += n;
        continue;
      }
      e = SSL_get_error(t->ssl, 0);
      if (e == SSL_ERROR_WANT_READ) {
        ERR_clear_error();
      } else if (e == SSL_ERROR_ZERO_RETURN) {
        /* close_notify: the clean end of the peer's data, delivered
         * after what came before it. */
        ERR_clear_error();
        t->eof_pending = 1;
      }
      break;
    }
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ &&
        e != SSL_ERROR_ZERO_RETURN) {
      int err = uvctx__tls_map_error(t, 0);
      if (got > 0) {
        uvctx_stream_emit_read(&t->tls->stream, (ssize_t)got, &buf);
        if (dead(t))
          return;
        buf = uv_buf_init(NULL, 0);
      }
      if (t->reading && !t->read_done) {
        t->read_done = 1;
        uvctx_stream_emit_read(&t->tls->stream, err, &buf);
      }
      uvctx__tls_fail(t, err, UVCTX__TLS_ALERT);
      return;
    }
    if (got > 0) {
      uvctx_stream_emit_read(&t->tls->stream, (ssize_t)got, &buf);
      if (e == SSL_ERROR_WANT_READ)
        return;
      continue; /* more records, or the EOF */
    }
    if (t->eof_pending) {
      t->eof_pending = 0;
      t->read_done = 1;
      uvctx_stream_emit_read(&t->tls->stream, UV_EOF, &buf);
      return;
    }
    /* Nothing decrypted: the buffer goes back. */
    uvctx_stream_emit_read(&t->tls->stream, 0, &buf);
    return;
  }
}

/* What a session holds while it waits goes back at the end of each step:
 * OpenSSL's record buffers (about 17 KiB each way, made again by the next
 * record; SSL_MODE_RELEASE_BUFFERS would do it after every record read)
 * once no record is partly read, and the small receive buffer once SSL
 * has read all of it. A large one (a transfer in progress) stays. */
static void release_buffers(tls_t* t) {
  if (t->hs_state != HS_DONE || rx_avail(t) != 0 || SSL_pending(t->ssl) != 0)
    return;
  /* It refuses while a record is partly read; before 3.0.14 it could free
   * the buffer under a record whose header alone had arrived
   * (CVE-2024-4741), so older libraries keep their buffers. */
  if (OpenSSL_version_num() >= 0x300000e0UL)
    SSL_free_buffers(t->ssl);
  if (t->rx_cap == RX_HS_SIZE) {
    uvctx__free(t->rx);
    t->rx = NULL;
    t->rx_off = t->rx_len = t->rx_cap = 0;
  }
}

/* One step: advance the handshake, encrypt queued writes, deliver
 * plaintext (only when callbacks are allowed), flush, and decide
 * whether the transport should be read. */
void uvctx__tls_step(tls_t* t) {
  int r;

  if (dead(t) || t->hs_state == HS_NONE)
    return;
  if (t->hs_state == HS_RUNNING) {
    ERR_clear_error();
    r = SSL_do_handshake(t->ssl);
    if (r == 1) {
      handshake_done(t);
      if (dead(t))
        return;
    } else if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
      uvctx__tls_fail(t, uvctx__tls_map_error(t, r), UVCTX__TLS_ALERT);
      return;
    } else {
      ERR_clear_error();
    }
  }
  if (t->hs_state == HS_DONE) {
    if (uvctx__tls_encrypt_queued(t) != 0)
      return;
    if (t->api == 0)
      read_plain(t);
    if (dead(t))
      return;
  }
  uvctx__tls_flush(t);
  if (dead(t))
    return;
  uvctx__tls_settle_seqs(t);
  if (t->tr_eof && t->hs_state == HS_RUNNING) {
    snprintf(t->reason, sizeof(t->reason),
             "peer closed the connection during the handshake");
    uvctx__tls_fail(t, UVCTX_TLS_ETRUNCATED, UVCTX__TLS_QUIET);
    return;
  }
  if (t->tr_eof && t->api == 0 && t->reading && !t->read_done &&
      !t->eof_pending && SSL_pending(t->ssl) == 0 && rx_avail(t) == 0) {
    uv_buf_t none = uv_buf_init(NULL, 0);
    snprintf(t->reason, sizeof(t->reason),
             "peer closed the connection without close_notify");
    t->read_done = 1;
    uvctx_stream_emit_read(&t->tls->stream, UVCTX_TLS_ETRUNCATED, &none);
    uvctx__tls_fail(t, UVCTX_TLS_ETRUNCATED, UVCTX__TLS_QUIET);
    return;
  }
  release_buffers(t);
  set_transport_reading(t);
}

/* Runs uvctx__tls_step() until it settles. Re-entrant calls (a callback inside
 * a step writing or reading) only ask for another round. */
void uvctx__tls_cycle(tls_t* t) {
  if (t->in_cycle) {
    t->again = 1;
    return;
  }
  t->in_cycle = 1;
  do {
    t->again = 0;
    uvctx__tls_step(t);
  } while (t->again && !dead(t));
  t->in_cycle = 0;
}

/* An API call's step: never calls the user back. */
void uvctx__tls_api_cycle(tls_t* t) {
  t->api++;
  uvctx__tls_cycle(t);
  t->api--;
}

static void idle_cb(uv_idle_t* h) {
  tls_t* t = h->data;

  uv_idle_stop(h);
  if (t->hs_deferred && t->hs_cb_pending)
    run_hs_cb(t, 0);
  uvctx__tls_complete_writes(t);
  uvctx__tls_cycle(t);
}

void uvctx__tls_schedule(tls_t* t) {
  if (!t->closing && t->tr_state == TR_OPEN)
    uv_idle_start(&t->idle, idle_cb);
}

static void tr_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  tls_t* t = s->data;

  if (nread == 0)
    return;
  if (nread == UV_ENOBUFS) {
    if (t->oom) {
      snprintf(t->reason, sizeof(t->reason), "out of memory");
      uvctx__tls_fail(t, UV_ENOMEM, UVCTX__TLS_QUIET);
      return;
    }
    /* rx is full: wait until SSL has read some of it. */
    uvctx_stream_read_stop(t->tr);
    t->tr_reading = 0;
    return;
  }
  if (nread == UV_EOF) {
    t->tr_eof = 1;
    t->tr_reading = 0;
    uvctx__tls_cycle(t);
    return;
  }
  if (nread < 0) {
    t->tr_reading = 0;
    snprintf(t->reason, sizeof(t->reason), "transport: %s",
             uv_strerror((int)nread));
    uvctx__tls_fail(t, (int)nread, UVCTX__TLS_QUIET);
    return;
  }
  if (dead(t))
    return;
  /* tr_alloc() lent the tail of rx. A read that filled it says data
   * flows faster than a small buffer takes. */
  t->rx_len += (size_t)nread;
  if (t->rx_len == t->rx_cap && t->hs_state == HS_DONE)
    t->rx_grow = 1;
  (void)buf;
  uvctx__tls_cycle(t);
}

/* ---- ending -------------------------------------------------------------- */

void uvctx__tls_idle_close_cb(uv_handle_t* h) {
  tls_t* t = h->data;
  uvctx_tls_t* tls = t->tls;

  uvctx_tls_config_unref(t->cfg);
  /* The reason outlives the session's state: whoever closed the session
   * (a copy, a pipe) calls back after this, and that is where it is
   * logged. */
  memcpy(tls->reason_, t->reason, sizeof(tls->reason_));
  tls->reason_[sizeof(tls->reason_) - 1] = '\0';
  tls->impl_ = NULL;
  uvctx__free(t);
  uvctx_stream_close_done(&tls->stream);
}

/* Runs every callback still owed, with the session's error. Each request is
 * unlinked before its callback, which may close the session (and so call
 * this again through the close op). */
static void finish_pending(tls_t* t) {
  int err = t->err ? t->err : UV_ECANCELED;
  uvctx_write_t* w;

  if (t->hs_cb_pending)
    run_hs_cb(t, t->hs_deferred ? 0 : err);
  while ((w = t->wf_head) != NULL) {
    t->wf_head = w->next_;
    if (t->wf_head == NULL)
      t->wf_tail = &t->wf_head;
    uvctx_stream_write_done(w, W_SEQ(w) <= t->done_seq ? 0 : err);
  }
  t->queued_plain = 0;
  t->wq_idx = 0;
  t->wq_off = 0;
  while ((w = t->wq_head) != NULL) {
    t->wq_head = w->next_;
    if (t->wq_head == NULL)
      t->wq_tail = &t->wq_head;
    uvctx__free(W(w)->bufs);
    W(w)->bufs = NULL;
    uvctx_stream_write_done(w, err);
  }
  if (t->sd_req != NULL) {
    uvctx_shutdown_t* sd = t->sd_req;
    t->sd_req = NULL;
    uvctx_stream_shutdown_done(sd, err);
  }
  if (t->reading && !t->read_done && !t->closing) {
    uv_buf_t none = uv_buf_init(NULL, 0);
    t->read_done = 1;
    uvctx_stream_emit_read(&t->tls->stream, err, &none);
  }
}

/* The SSL object, its BIO and their buffers. */
static void free_engine(tls_t* t) {
  if (t->ssl == NULL)
    return;
  SSL_free(t->ssl); /* frees the BIO */
  t->ssl = NULL;
  t->bio = NULL;
  /* With ssl NULL, pooled chunks are freed, units go back. */
  uvctx__tls_tx_put_all(t, t->out);
  t->out = NULL;
  uvctx__tls_tx_put_all(t, t->ready_head);
  t->ready_head = NULL;
  t->ready_tail = &t->ready_head;
  uvctx__tls_tx_put_all(t, t->spare);
  t->spare = NULL;
  t->nchunks = 0;
  t->out_pending = 0;
  t->out_plain = 0;
  t->last_tx = NULL;
  uvctx__free(t->rx);
  t->rx = NULL;
  t->rx_off = t->rx_len = t->rx_cap = 0;
  atomic_fetch_sub(&uvctx__tls_ssl_count, 1);
  uvctx__tls_units_trim();
}

/* The transport is closed and every transport write has called back (so
 * every chunk is back with us): the engine goes now, and nothing of the
 * transport is touched again. */
static void tr_close_cb(uvctx_stream_t* s) {
  tls_t* t = s->data;

  t->tr_state = TR_CLOSED;
  free_engine(t);
  finish_pending(t);
  if (t->closing && !uv_is_closing((uv_handle_t*)&t->idle))
    uv_close((uv_handle_t*)&t->idle, uvctx__tls_idle_close_cb);
}

void uvctx__tls_close_transport(tls_t* t) {
  if (t->tr_state != TR_OPEN)
    return;
  t->tr_state = TR_CLOSING;
  t->tr_reading = 0;
  uv_idle_stop(&t->idle);
  uvctx_stream_close(t->tr, tr_close_cb);
}

/* A fatal error: record it, stop watching the context, send what OpenSSL
 * has to say (an alert) when `how` asks for it, and close the transport. The
 * alert is handed to the transport before the close; a libuv stream writes it
 * at once when its queue is empty, so it usually leaves. Callbacks run from the
 * transport's close callback. */
void uvctx__tls_fail(tls_t* t, int err, uvctx__tls_fail_t how) {
  if (t->err != 0 || t->tr_state != TR_OPEN)
    return;
  if (err == 0)
    err = UVCTX_TLS_EPROTO;
  t->err = err;
  uvctx__tls_watch_stop(t);
  if (how == UVCTX__TLS_ALERT)
    uvctx__tls_flush(t);
  ERR_clear_error();
  uvctx__tls_close_transport(t);
}

void uvctx__tls_watch_cb(uvctx_watch_t* w, int err) {
  tls_t* t = UVCTX__CONTAINER_OF(w, tls_t, watch);

  t->watching = 0;
  if (t->hs_state == HS_DONE || t->err != 0 || t->closing)
    return;
  snprintf(t->reason, sizeof(t->reason), "handshake aborted: %s",
           err == UV_ETIMEDOUT ? "deadline exceeded" : "context cancelled");
  uvctx__tls_fail(t, err, UVCTX__TLS_QUIET);
}
