/* The TLS session: OpenSSL over two memory BIOs on top of a uvctx stream
 * (the transport), exposed as a uvctx stream itself. It owns the engine
 * (one step function run after every input and at the end of every call),
 * the handshake and its context, the mapping of OpenSSL failures to libuv
 * codes, and the session's close sequence: transport closed, SSL freed in
 * the transport's close callback, every pending callback run, then the
 * session's own idle handle closed, in whose callback the session ends.
 *
 * Callback discipline: user callbacks run only from transport callbacks,
 * from the watch callback, or from the session's idle handle, never inside
 * an API call. API calls (write, shutdown, handshake, read_start) only
 * encrypt and flush; anything that would call back is deferred to the idle
 * handle. Every path that may call back re-checks `dead()` afterwards,
 * because the callback may have closed the session. */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls_internal.h"

/* Transport reads land here before they are copied into the read BIO. */
#define RX_SIZE (64 * 1024)
/* Reading from the transport stops while the read BIO holds more than this
 * many bytes the user has not read: memory stays bounded when the user
 * stops reading while the peer keeps sending. */
#define RX_CAP (256 * 1024)
/* Plaintext is handed to the user in buffers of about this size. */
#define READ_SUGGEST (64 * 1024)

enum { HS_NONE = 0, HS_RUNNING, HS_DONE };
enum { TR_OPEN = 0, TR_CLOSING, TR_CLOSED };
enum {
  SD_NONE = 0,
  SD_QUEUED, /* after the handshake and queued writes */
  SD_NOTIFY, /* close_notify flushed, waiting for its write */
  SD_TRANSPORT, /* transport shutdown issued */
  SD_DONE
};

typedef struct uvctx__tls_s tls_t;

struct uvctx__tls_s {
  uvctx_tls_t* tls;
  uvctx_tls_config_t* cfg;
  uvctx_stream_t* tr;
  SSL* ssl;
  BIO* rbio; /* network -> SSL */
  BIO* wbio; /* SSL -> network */
  uv_idle_t idle;

  uvctx_watch_t watch;
  int watching;
  uvctx_tls_handshake_cb hs_cb;
  int hs_state;
  int hs_cb_pending; /* hs_cb has yet to run */
  int hs_deferred;   /* ... from the idle handle, with status 0 */

  int err;      /* first fatal error; 0 while healthy */
  int tr_state;
  int tr_reading;
  int tr_eof;   /* the transport delivered UV_EOF */
  int reading;  /* the user wants plaintext */
  int read_done; /* UV_EOF or an error was delivered */
  int closing;  /* the user closed the session */
  int in_cycle;
  int again;
  int api;      /* > 0 inside an API call: no user callbacks */

  /* Plaintext writes: `wq` not yet encrypted (before the handshake ends),
   * `wf` encrypted and waiting for the transport write that carries their
   * last byte (sequence number in impl_[2]). Transport writes complete in
   * order, so completing `wf` is a prefix walk. */
  uvctx_write_t* wq_head;
  uvctx_write_t** wq_tail;
  uvctx_write_t* wf_head;
  uvctx_write_t** wf_tail;
  size_t queued_plain;
  uint64_t flush_seq; /* sequence number of the last transport write */
  uint64_t done_seq;  /* ... of the last one completed */

  uvctx_shutdown_t* sd_req;
  int sd_state;
  uint64_t sd_seq;
  uvctx_shutdown_t tr_sd;

  int version;
  const char* cipher; /* OpenSSL's static name */
  char alpn[256];
  char sni[256];
  char reason[UVCTX__TLS_REASON];
  char rx[RX_SIZE];
};

/* A transport write: one flush of the write BIO. */
typedef struct {
  uvctx_write_t req;
  tls_t* t;
  uint64_t seq;
  char data[];
} tx_t;

static atomic_uint_fast64_t live_ssl;

uint64_t uvctx__tls_live_ssl(void) {
  return atomic_load(&live_ssl);
}

#define W_BUFS(w) ((uv_buf_t*)(w)->impl_[0])
#define W_NBUFS(w) ((unsigned)(uintptr_t)(w)->impl_[1])
#define W_SEQ(w) ((uint64_t)(uintptr_t)(w)->impl_[2])

static void cycle(tls_t* t);
static void schedule(tls_t* t);
static void fail(tls_t* t, int err, int send_alert);

static int dead(const tls_t* t) {
  return t->err != 0 || t->closing || t->tr_state != TR_OPEN ||
         t->ssl == NULL;
}

static tls_t* of_stream(const uvctx_stream_t* s) {
  return UVCTX__CONTAINER_OF(s, uvctx_tls_t, stream)->impl_;
}

/* ---- errors -------------------------------------------------------------- */

/* Maps the failure of an SSL call to a libuv code and records OpenSSL's
 * reason. The error queue is drained here (and cleared before every call),
 * so one connection's failure never shows up in another's. */
static int map_error(tls_t* t, int ret) {
  int e = SSL_get_error(t->ssl, ret);
  unsigned long code;
  long vr;
  int reason;

  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    snprintf(t->reason, sizeof(t->reason),
             "peer sent close_notify during the handshake");
    return UVCTX_TLS_ETRUNCATED;
  }
  if (e == SSL_ERROR_SYSCALL) {
    /* The BIOs are memory BIOs that never report EOF: only an internal
     * failure gets here. */
    uvctx__tls_drain_errors("TLS internal error", t->reason,
                            sizeof(t->reason));
    return UVCTX_TLS_EPROTO;
  }
  code = uvctx__tls_drain_errors(NULL, t->reason, sizeof(t->reason));
  reason = ERR_GET_REASON(code);
  vr = SSL_get_verify_result(t->ssl);
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

/* ---- output -------------------------------------------------------------- */

static void complete_writes(tls_t* t) {
  uvctx_write_t* w;

  while ((w = t->wf_head) != NULL && W_SEQ(w) <= t->done_seq) {
    t->wf_head = w->next_;
    if (t->wf_head == NULL)
      t->wf_tail = &t->wf_head;
    uvctx_stream_write_done(w, 0);
  }
}

static void maybe_shutdown_transport(tls_t* t);

static void tx_cb(uvctx_write_t* req, int status) {
  tx_t* tx = UVCTX__CONTAINER_OF(req, tx_t, req);
  tls_t* t = tx->t;
  uint64_t seq = tx->seq;

  uvctx__free(tx);
  if (status != 0) {
    /* UV_ECANCELED here means we closed the transport: the session's own
     * error is already set and the close callback finishes the rest. */
    if (status != UV_ECANCELED || t->err == 0)
      fail(t, status, 0);
    return;
  }
  t->done_seq = seq;
  complete_writes(t);
  maybe_shutdown_transport(t);
}

/* Hands everything in the write BIO to the transport as one write. */
static void flush(tls_t* t) {
  size_t n;
  tx_t* tx;
  uv_buf_t buf;
  int rc;

  if (t->tr_state != TR_OPEN || t->wbio == NULL)
    return;
  n = BIO_ctrl_pending(t->wbio);
  if (n == 0)
    return;
  tx = uvctx__malloc(sizeof(*tx) + n);
  if (tx == NULL) {
    snprintf(t->reason, sizeof(t->reason), "out of memory");
    fail(t, UV_ENOMEM, 0);
    return;
  }
  tx->t = t;
  tx->seq = t->flush_seq + 1;
  BIO_read(t->wbio, tx->data, (int)n);
  buf = uv_buf_init(tx->data, (unsigned)n);
  rc = uvctx_stream_write(&tx->req, t->tr, &buf, 1, tx_cb);
  if (rc != 0) {
    uvctx__free(tx);
    fail(t, rc, 0);
    return;
  }
  t->flush_seq = tx->seq;
}

/* Writes carrying no ciphertext of their own (empty, or whose bytes went
 * out in an earlier flush) wait for the last transport write issued. */
static void settle_seqs(tls_t* t) {
  uvctx_write_t* w;

  for (w = t->wf_head; w != NULL; w = w->next_)
    if (W_SEQ(w) > t->flush_seq)
      w->impl_[2] = (void*)(uintptr_t)t->flush_seq;
  if (t->wf_head != NULL && W_SEQ(t->wf_head) <= t->done_seq)
    schedule(t);
}

static int encrypt_queued(tls_t* t) {
  uvctx_write_t* w;
  unsigned i;

  while ((w = t->wq_head) != NULL) {
    uv_buf_t* bufs = W_BUFS(w);
    for (i = 0; i < W_NBUFS(w); i++) {
      size_t off = 0;
      while (off < bufs[i].len) {
        size_t chunk = bufs[i].len - off;
        int r;
        if (chunk > (1u << 30))
          chunk = 1u << 30;
        ERR_clear_error();
        r = SSL_write(t->ssl, bufs[i].base + off, (int)chunk);
        if (r <= 0) {
          fail(t, map_error(t, r), 1);
          return -1;
        }
        off += (size_t)r;
      }
    }
    t->wq_head = w->next_;
    if (t->wq_head == NULL)
      t->wq_tail = &t->wq_head;
    t->queued_plain -= uvctx_write_size(w);
    uvctx__free(w->impl_[0]);
    w->impl_[0] = NULL;
    w->impl_[2] = (void*)(uintptr_t)(t->flush_seq + 1);
    w->next_ = NULL;
    *t->wf_tail = w;
    t->wf_tail = &w->next_;
  }
  if (t->sd_state == SD_QUEUED) {
    int r;
    ERR_clear_error();
    r = SSL_shutdown(t->ssl);
    if (r < 0) {
      fail(t, map_error(t, r), 0);
      return -1;
    }
    t->sd_state = SD_NOTIFY;
    t->sd_seq = t->flush_seq + 1;
  }
  return 0;
}

static void tr_shutdown_cb(uvctx_shutdown_t* req, int status) {
  tls_t* t = req->data;
  uvctx_shutdown_t* sd = t->sd_req;

  t->sd_state = SD_DONE;
  if (sd == NULL)
    return;
  t->sd_req = NULL;
  uvctx_stream_shutdown_done(sd, status == 0 ? 0 : (t->err ? t->err : status));
}

/* Graceful shutdown, second half: once the write carrying close_notify is
 * done, shut the transport's write side. */
static void maybe_shutdown_transport(tls_t* t) {
  int rc;

  if (t->sd_state != SD_NOTIFY || t->done_seq < t->sd_seq || dead(t))
    return;
  t->sd_state = SD_TRANSPORT;
  t->tr_sd.data = t;
  rc = uvctx_stream_shutdown(&t->tr_sd, t->tr, tr_shutdown_cb);
  if (rc != 0)
    fail(t, rc, 0);
}

/* ---- the engine ---------------------------------------------------------- */

static void tr_alloc(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  tls_t* t = s->data;
  (void)suggested;
  *buf = uv_buf_init(t->rx, sizeof(t->rx));
}

static void tr_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf);

static void set_transport_reading(tls_t* t) {
  int want;
  int rc;

  if (t->tr_state != TR_OPEN)
    return;
  want = t->err == 0 && !t->closing && !t->tr_eof && t->hs_state != HS_NONE &&
         (t->hs_state == HS_RUNNING || BIO_ctrl_pending(t->rbio) < RX_CAP);
  if (want == t->tr_reading)
    return;
  if (want) {
    rc = uvctx_stream_read_start(t->tr, tr_alloc, tr_read);
    if (rc != 0) {
      fail(t, rc, 0);
      return;
    }
  } else {
    uvctx_stream_read_stop(t->tr);
  }
  t->tr_reading = want;
}

static void watch_stop(tls_t* t) {
  if (t->watching) {
    uvctx_watch_stop(&t->watch);
    t->watching = 0;
  }
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
  watch_stop(t);
  if (!t->hs_cb_pending)
    return;
  if (t->api > 0) {
    t->hs_deferred = 1;
    schedule(t);
    return;
  }
  t->hs_cb_pending = 0;
  t->hs_cb(t->tls, 0);
}

/* Hands decrypted data to the user until SSL wants more input. */
static void read_plain(tls_t* t) {
  uv_buf_t buf;
  int r;
  int e;

  while (!dead(t) && t->reading && !t->read_done &&
         (SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->rbio) > 0)) {
    buf = uv_buf_init(NULL, 0);
    uvctx_stream_emit_alloc(&t->tls->stream, READ_SUGGEST, &buf);
    if (dead(t) || !t->reading)
      return;
    if (buf.base == NULL || buf.len == 0) {
      uvctx_stream_emit_read(&t->tls->stream, UV_ENOBUFS, &buf);
      return;
    }
    ERR_clear_error();
    r = SSL_read(t->ssl, buf.base, buf.len > INT_MAX ? INT_MAX : (int)buf.len);
    if (r > 0) {
      uvctx_stream_emit_read(&t->tls->stream, r, &buf);
      continue;
    }
    e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      uvctx_stream_emit_read(&t->tls->stream, 0, &buf);
      return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      /* close_notify: the clean end of the peer's data. */
      ERR_clear_error();
      t->read_done = 1;
      uvctx_stream_emit_read(&t->tls->stream, UV_EOF, &buf);
      return;
    }
    {
      int err = map_error(t, r);
      t->read_done = 1;
      uvctx_stream_emit_read(&t->tls->stream, err, &buf);
      fail(t, err, 1);
    }
    return;
  }
}

/* One step: advance the handshake, encrypt queued writes, deliver
 * plaintext (only when callbacks are allowed), flush, and decide whether
 * the transport should be read. */
static void step(tls_t* t) {
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
      fail(t, map_error(t, r), 1);
      return;
    } else {
      ERR_clear_error();
    }
  }
  if (t->hs_state == HS_DONE) {
    if (encrypt_queued(t) != 0)
      return;
    if (t->api == 0)
      read_plain(t);
    if (dead(t))
      return;
  }
  flush(t);
  if (dead(t))
    return;
  settle_seqs(t);
  if (t->tr_eof && t->hs_state == HS_RUNNING) {
    snprintf(t->reason, sizeof(t->reason),
             "peer closed the connection during the handshake");
    fail(t, UVCTX_TLS_ETRUNCATED, 0);
    return;
  }
  if (t->tr_eof && t->api == 0 && t->reading && !t->read_done &&
      SSL_pending(t->ssl) == 0 && BIO_ctrl_pending(t->rbio) == 0) {
    uv_buf_t none = uv_buf_init(NULL, 0);
    snprintf(t->reason, sizeof(t->reason),
             "peer closed the connection without close_notify");
    t->read_done = 1;
    uvctx_stream_emit_read(&t->tls->stream, UVCTX_TLS_ETRUNCATED, &none);
    fail(t, UVCTX_TLS_ETRUNCATED, 0);
    return;
  }
  set_transport_reading(t);
}

/* Runs step() until it settles. Re-entrant calls (a callback inside a step
 * writing or reading) only ask for another round. */
static void cycle(tls_t* t) {
  if (t->in_cycle) {
    t->again = 1;
    return;
  }
  t->in_cycle = 1;
  do {
    t->again = 0;
    step(t);
  } while (t->again && !dead(t));
  t->in_cycle = 0;
}

/* An API call's step: never calls the user back. */
static void api_cycle(tls_t* t) {
  t->api++;
  cycle(t);
  t->api--;
}

static void idle_cb(uv_idle_t* h) {
  tls_t* t = h->data;

  uv_idle_stop(h);
  if (t->hs_deferred && t->hs_cb_pending) {
    t->hs_deferred = 0;
    t->hs_cb_pending = 0;
    t->hs_cb(t->tls, 0);
  }
  complete_writes(t);
  cycle(t);
}

static void schedule(tls_t* t) {
  if (!t->closing && t->tr_state == TR_OPEN)
    uv_idle_start(&t->idle, idle_cb);
}

static void tr_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  tls_t* t = s->data;

  if (nread == 0)
    return;
  if (nread == UV_EOF) {
    t->tr_eof = 1;
    t->tr_reading = 0;
    cycle(t);
    return;
  }
  if (nread < 0) {
    t->tr_reading = 0;
    snprintf(t->reason, sizeof(t->reason), "transport: %s",
             uv_strerror((int)nread));
    fail(t, (int)nread, 0);
    return;
  }
  if (dead(t))
    return;
  /* Memory BIO writes only fail on allocation failure. */
  if (BIO_write(t->rbio, buf->base, (int)nread) != (int)nread) {
    snprintf(t->reason, sizeof(t->reason), "out of memory");
    fail(t, UV_ENOMEM, 0);
    return;
  }
  cycle(t);
}

/* ---- ending -------------------------------------------------------------- */

static void idle_close_cb(uv_handle_t* h) {
  tls_t* t = h->data;
  uvctx_tls_t* tls = t->tls;

  uvctx_tls_config_unref(t->cfg);
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

  if (t->hs_cb_pending) {
    int status = t->hs_deferred ? 0 : err;
    t->hs_cb_pending = 0;
    t->hs_deferred = 0;
    t->hs_cb(t->tls, status);
  }
  while ((w = t->wf_head) != NULL) {
    t->wf_head = w->next_;
    if (t->wf_head == NULL)
      t->wf_tail = &t->wf_head;
    uvctx_stream_write_done(w, W_SEQ(w) <= t->done_seq ? 0 : err);
  }
  while ((w = t->wq_head) != NULL) {
    t->wq_head = w->next_;
    if (t->wq_head == NULL)
      t->wq_tail = &t->wq_head;
    t->queued_plain -= uvctx_write_size(w);
    uvctx__free(w->impl_[0]);
    w->impl_[0] = NULL;
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

static void free_ssl(tls_t* t) {
  if (t->ssl == NULL)
    return;
  SSL_free(t->ssl); /* frees both BIOs */
  t->ssl = NULL;
  t->rbio = NULL;
  t->wbio = NULL;
  atomic_fetch_sub(&live_ssl, 1);
}

/* The transport is closed and every transport write has called back: the
 * SSL object goes now, and nothing of the transport is touched again. */
static void tr_close_cb(uvctx_stream_t* s) {
  tls_t* t = s->data;

  t->tr_state = TR_CLOSED;
  free_ssl(t);
  finish_pending(t);
  if (t->closing && !uv_is_closing((uv_handle_t*)&t->idle))
    uv_close((uv_handle_t*)&t->idle, idle_close_cb);
}

static void close_transport(tls_t* t) {
  if (t->tr_state != TR_OPEN)
    return;
  t->tr_state = TR_CLOSING;
  t->tr_reading = 0;
  uv_idle_stop(&t->idle);
  uvctx_stream_close(t->tr, tr_close_cb);
}

/* A fatal error: record it, stop watching the context, send what OpenSSL
 * has to say (an alert) when asked, and close the transport. The alert is
 * handed to the transport before the close; a libuv stream writes it at
 * once when its queue is empty, so it usually leaves. Callbacks run from
 * the transport's close callback. */
static void fail(tls_t* t, int err, int send_alert) {
  if (t->err != 0 || t->tr_state != TR_OPEN)
    return;
  if (err == 0)
    err = UVCTX_TLS_EPROTO;
  t->err = err;
  watch_stop(t);
  if (send_alert)
    flush(t);
  ERR_clear_error();
  close_transport(t);
}

static void watch_cb(uvctx_watch_t* w, int err) {
  tls_t* t = UVCTX__CONTAINER_OF(w, tls_t, watch);

  t->watching = 0;
  if (t->hs_state == HS_DONE || t->err != 0 || t->closing)
    return;
  snprintf(t->reason, sizeof(t->reason), "handshake aborted: %s",
           err == UV_ETIMEDOUT ? "deadline exceeded" : "context cancelled");
  fail(t, err, 0);
}

/* ---- stream ops ---------------------------------------------------------- */

static void start_handshake(tls_t* t) {
  if (t->hs_state != HS_NONE)
    return;
  t->hs_state = HS_RUNNING;
  api_cycle(t);
}

static int op_read_start(uvctx_stream_t* s) {
  tls_t* t = of_stream(s);

  if (t->err != 0)
    return t->err;
  t->reading = 1;
  t->read_done = 0;
  start_handshake(t);
  schedule(t);
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
  uv_buf_t* copy;

  if (t->err != 0)
    return t->err;
  copy = uvctx__malloc(sizeof(*copy) * nbufs);
  if (copy == NULL)
    return UV_ENOMEM;
  memcpy(copy, bufs, sizeof(*copy) * nbufs);
  req->impl_[0] = copy;
  req->impl_[1] = (void*)(uintptr_t)nbufs;
  req->impl_[2] = NULL;
  req->next_ = NULL;
  *t->wq_tail = req;
  t->wq_tail = &req->next_;
  t->queued_plain += uvctx_write_size(req);
  if (t->hs_state == HS_NONE)
    start_handshake(t);
  else
    api_cycle(t);
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
    api_cycle(t);
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
  watch_stop(t);
  if (t->tr_state == TR_OPEN)
    close_transport(t);
  else if (t->tr_state == TR_CLOSED)
    uv_close((uv_handle_t*)&t->idle, idle_close_cb);
}

static size_t op_write_queue_size(const uvctx_stream_t* s) {
  tls_t* t = of_stream(s);
  size_t n = t->queued_plain;

  if (t->tr_state == TR_OPEN)
    n += uvctx_stream_write_queue_size(t->tr);
  return n;
}

static const uvctx_stream_ops_t tls_ops = {
    "tls",    op_read_start, op_read_stop,       op_write,
    op_shutdown, op_close,   op_write_queue_size};

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

  if (tls == NULL || config == NULL || transport == NULL ||
      uvctx_stream_is_closing(transport))
    return UV_EINVAL;
  if (config->role == UVCTX_TLS_SERVER && (!config->has_cert || server_name))
    return UV_EINVAL;
  if (config->role == UVCTX_TLS_CLIENT && config->verify &&
      (server_name == NULL || server_name[0] == '\0'))
    return UV_EINVAL;
  loop = uvctx_stream_loop(transport);
  if (loop == NULL)
    return UV_EINVAL;

  t = uvctx__calloc(1, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  rc = uvctx_stream_init(&tls->stream, &tls_ops, loop);
  if (rc != 0)
    goto fail_stream;
  ERR_clear_error();
  rc = UV_ENOMEM;
  t->ssl = SSL_new(config->ctx);
  if (t->ssl == NULL)
    goto fail_ssl;
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->rbio == NULL || t->wbio == NULL)
    goto fail_bio;
  /* -1: "no data yet, retry", not EOF; end of stream is the transport's to
   * report. */
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_mem_eof_return(t->wbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
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
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
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
  atomic_fetch_add(&live_ssl, 1);
  t->tls = tls;
  t->cfg = uvctx_tls_config_ref(config);
  t->tr = transport;
  t->wq_tail = &t->wq_head;
  t->wf_tail = &t->wf_head;
  transport->data = t;
  tls->impl_ = t;
  return 0;

fail_name:
  rc = UV_EINVAL;
  goto fail_ssl_obj;
fail_bio:
  BIO_free(t->rbio);
  BIO_free(t->wbio);
fail_ssl_obj:
  SSL_free(t->ssl);
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

  if (tls == NULL || cb == NULL || tls->impl_ == NULL ||
      uvctx_stream_is_closing(&tls->stream))
    return UV_EINVAL;
  t = tls->impl_;
  if (t->err != 0)
    return t->err;
  if (t->hs_state != HS_NONE)
    return UV_EALREADY;
  if (ctx != NULL) {
    if (uvctx_loop_uv(uvctx_home(ctx)) != uvctx_stream_loop(&tls->stream))
      return UV_EINVAL;
    /* An already-done context is noticed from the loop, through the
     * watch: the abort then happens outside this call, as it must. */
    rc = uvctx_watch_start(&t->watch, ctx, watch_cb);
    if (rc != 0)
      return rc;
    t->watching = 1;
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

const char* uvctx_tls_reason(const uvctx_tls_t* tls) {
  if (tls == NULL || tls->impl_ == NULL || tls->impl_->reason[0] == '\0')
    return NULL;
  return tls->impl_->reason;
}
