/* The TLS session: OpenSSL over a BIO of our own on top of a uvctx stream
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
 * because the callback may have closed the session.
 *
 * Bytes are copied as little as OpenSSL allows: one BIO of our own serves
 * both directions. The transport reads ciphertext straight into `rx`,
 * which SSL reads from; SSL writes records straight into transmit chunks
 * that are handed to the transport as they are (no memory BIO in between,
 * no copy out of it, no allocation per flush). */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/tls_internal.h"

/* Transport reads land in `rx`, where SSL reads them. The transport is not
 * read while it is full: memory stays bounded when the user stops reading
 * while the peer keeps sending. Small (one handshake flight) until a read
 * after the handshake fills it, then grown: a connection that sees only a
 * handshake allocates little (a large buffer per handshake made glibc map
 * and unmap, or trim and regrow, its heap). */
#define RX_SIZE (128 * 1024)
#define RX_HS_SIZE (8 * 1024)
/* Ciphertext goes out in chunks of this size: a 64 KiB plaintext write
 * (four full records, 65,624 bytes with TLS 1.3 overhead) fits in one, so
 * a copy's buffer becomes one transport write. */
#define TX_SIZE (66 * 1024)
/* Application data is encrypted only while it fits in this many chunks
 * (allocated as needed, then kept until the session ends): the rest waits
 * as plaintext, which bounds the session's memory, and no chunk is
 * allocated or freed per write. Allocating and freeing them per write
 * made glibc trim and regrow its heap on every burst (brk and page faults
 * were a tenth of the profile). Handshake and alert output may exceed it
 * briefly. */
#define TX_MAX 4
/* Largest record payload, and an upper bound of a record's overhead
 * (header, explicit IV, MAC or tag, CBC padding). */
#define REC_MAX 16384
#define REC_OVERHEAD 512
/* Plaintext is handed to the user in buffers of about this size, filled
 * with as many records as are there. */
#define READ_SUGGEST (64 * 1024)
/* W_SEQ of a write whose ciphertext has not been flushed yet. */
#define SEQ_UNSET UINT64_MAX

enum { HS_NONE = 0, HS_RUNNING, HS_DONE };
enum { TR_OPEN = 0, TR_CLOSING, TR_CLOSED };
enum {
  SD_NONE = 0,
  SD_QUEUED,    /* after the handshake and queued writes */
  SD_NOTIFY,    /* close_notify flushed, waiting for its write */
  SD_TRANSPORT, /* transport shutdown issued */
  SD_DONE
};

typedef struct uvctx__tls_s tls_t;

/* Handshake flights and alerts use chunks of this size, freed once
 * written. */
#define TX_HS_SIZE (8 * 1024)

/* A transmit chunk: ciphertext SSL wrote, then one transport write. */
typedef struct tx_s {
  uvctx_write_t req;
  tls_t* t;
  uint64_t seq;
  struct tx_s* next;
  size_t len;
  size_t cap;   /* TX_SIZE (pooled) or TX_HS_SIZE */
  size_t plain; /* plaintext whose last record ends here */
  char data[];
} tx_t;

struct uvctx__tls_s {
  uvctx_tls_t* tls;
  uvctx_tls_config_t* cfg;
  uvctx_stream_t* tr;
  SSL* ssl;
  BIO* bio; /* ours, both directions: see bio_read() and bio_write() */
  uv_idle_t idle;

  /* Received ciphertext: rx[rx_off, rx_len) is not read by SSL yet. */
  char* rx;
  size_t rx_off;
  size_t rx_len;
  size_t rx_cap;
  int rx_grow; /* application data filled rx: grow it to RX_SIZE */
  /* Ciphertext not yet handed to the transport: `out` being filled, then
   * `ready` (sealed, in order); `out_pending` bytes in all of them.
   * `spare` caches chunks for reuse. */
  tx_t* out;
  tx_t* ready_head;
  tx_t** ready_tail;
  tx_t* spare;
  unsigned nspare;
  unsigned nchunks; /* allocated: in use or spare */
  size_t out_pending;
  size_t out_plain; /* `plain` of out and ready */
  tx_t* last_tx;    /* where bio_write() put its last byte */
  /* Chunks handed to the transport, oldest first, until their write
   * completes: `fl_bytes` of ciphertext. See op_write_queue_size(). */
  tx_t* fl_head;
  tx_t** fl_tail;
  size_t fl_bytes;
  int oom; /* an allocation inside a BIO call failed */

  uvctx_watch_t watch;
  int watching;
  uvctx_tls_handshake_cb hs_cb;
  int hs_state;
  int hs_cb_pending; /* hs_cb has yet to run */
  uvctx_t* hs_ctx;   /* the handshake's context, held until hs_cb has run */
  int hs_deferred;   /* ... from the idle handle, with status 0 */

  int err; /* first fatal error; 0 while healthy */
  int tr_state;
  int tr_reading;
  int tr_eof;      /* the transport delivered UV_EOF */
  int reading;     /* the user wants plaintext */
  int read_done;   /* UV_EOF or an error was delivered */
  int eof_pending; /* close_notify was read, UV_EOF not delivered yet */
  int closing;     /* the user closed the session */
  int in_cycle;
  int again;
  int api; /* > 0 inside an API call: no user callbacks */

  /* Plaintext writes: `wq` not yet encrypted (before the handshake ends),
   * `wf` encrypted and waiting for the transport write that carries their
   * last byte (sequence number in impl_[2]). Transport writes complete in
   * order, so completing `wf` is a prefix walk. */
  uvctx_write_t* wq_head;
  uvctx_write_t** wq_tail;
  uvctx_write_t* wf_head;
  uvctx_write_t** wf_tail;
  unsigned wq_idx; /* progress in wq_head: buffer, offset */
  size_t wq_off;
  size_t queued_plain; /* bytes in wq not encrypted yet */
  uint64_t flush_seq;  /* sequence number of the last transport write */
  uint64_t done_seq;   /* ... of the last one completed */

  uvctx_shutdown_t* sd_req;
  int sd_state;
  uint64_t sd_seq;
  uvctx_shutdown_t tr_sd;

  int version;
  const char* cipher; /* OpenSSL's static name */
  char alpn[256];
  char sni[256];
  char peer[256]; /* verified client certificate's subject (servers) */
  char reason[UVCTX__TLS_REASON];
};

static atomic_uint_fast64_t live_ssl;

uint64_t uvctx__tls_live_ssl(void) {
  return atomic_load(&live_ssl);
}

/* A queued plaintext write keeps its buffers in impl_[0] (a copied array)
 * and impl_[1] (their count), or, for the usual single buffer, without an
 * allocation: impl_[0] NULL and the base in impl_[3] (the length is the
 * request's size). impl_[2] is its sequence number. */
#define W_NBUFS(w) ((unsigned)(uintptr_t)(w)->impl_[1])
#define W_SEQ(w) ((uint64_t)(uintptr_t)(w)->impl_[2])
#define W_SET_SEQ(w, v) ((w)->impl_[2] = (void*)(uintptr_t)(v))

static uv_buf_t w_buf(const uvctx_write_t* w, unsigned i) {
  uv_buf_t b;

  if (w->impl_[0] != NULL)
    return ((const uv_buf_t*)w->impl_[0])[i];
  b.base = w->impl_[3];
  b.len = uvctx_write_size(w);
  return b;
}

static void cycle(tls_t* t);
static void schedule(tls_t* t);
static void fail(tls_t* t, int err, int send_alert);

static int dead(const tls_t* t) {
  return t->err != 0 || t->closing || t->tr_state != TR_OPEN || t->ssl == NULL;
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

/* ---- the BIO ------------------------------------------------------------- */

/* SSL reads what the transport put in rx. Empty is "retry", never EOF:
 * the end of the stream is the transport's to report. */
static int bio_read(BIO* b, char* out, size_t len, size_t* got) {
  tls_t* t = BIO_get_data(b);
  size_t avail = t->rx_len - t->rx_off;

  BIO_clear_retry_flags(b);
  if (avail == 0) {
    BIO_set_retry_read(b);
    *got = 0;
    return 0;
  }
  if (len > avail)
    len = avail;
  memcpy(out, t->rx + t->rx_off, len);
  t->rx_off += len;
  if (t->rx_off == t->rx_len)
    t->rx_off = t->rx_len = 0;
  *got = len;
  return 1;
}

static tx_t* tx_get(tls_t* t) {
  tx_t* tx = t->spare;

  if (t->hs_state != HS_DONE) {
    tx = uvctx__malloc(sizeof(*tx) + TX_HS_SIZE);
    if (tx == NULL)
      return NULL;
    tx->cap = TX_HS_SIZE;
  } else if (tx != NULL) {
    t->spare = tx->next;
    t->nspare--;
  } else {
    tx = uvctx__malloc(sizeof(*tx) + TX_SIZE);
    if (tx == NULL)
      return NULL;
    tx->cap = TX_SIZE;
    t->nchunks++;
  }
  tx->t = t;
  tx->len = 0;
  tx->plain = 0;
  tx->next = NULL;
  return tx;
}

static void tx_put(tls_t* t, tx_t* tx) {
  if (tx->cap != TX_SIZE) {
    uvctx__free(tx);
    return;
  }
  if (t->nchunks > TX_MAX || t->ssl == NULL) {
    uvctx__free(tx);
    t->nchunks--;
    return;
  }
  tx->next = t->spare;
  t->spare = tx;
  t->nspare++;
}

static void seal(tls_t* t) {
  tx_t* tx = t->out;

  if (tx == NULL || tx->len == 0)
    return;
  t->out = NULL;
  *t->ready_tail = tx;
  t->ready_tail = &tx->next;
}

/* SSL's records go straight into transmit chunks. A failed allocation
 * fails the SSL call (no retry flag); map_error() then says UV_ENOMEM. */
static int bio_write(BIO* b, const char* in, size_t len, size_t* written) {
  tls_t* t = BIO_get_data(b);
  size_t done = 0;

  BIO_clear_retry_flags(b);
  while (done < len) {
    size_t n;
    if (t->out == NULL) {
      t->out = tx_get(t);
      if (t->out == NULL) {
        t->oom = 1;
        *written = 0;
        return 0;
      }
    }
    n = t->out->cap - t->out->len;
    if (n > len - done)
      n = len - done;
    memcpy(t->out->data + t->out->len, in + done, n);
    t->out->len += n;
    t->out_pending += n;
    t->last_tx = t->out;
    done += n;
    if (t->out->len == t->out->cap)
      seal(t);
  }
  *written = len;
  return 1;
}

static long bio_ctrl(BIO* b, int cmd, long num, void* ptr) {
  tls_t* t = BIO_get_data(b);

  (void)num;
  (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1; /* flush() runs at the end of every step */
    case BIO_CTRL_PENDING:
      return t != NULL ? (long)(t->rx_len - t->rx_off) : 0;
    case BIO_CTRL_WPENDING:
      return t != NULL ? (long)t->out_pending : 0;
    default:
      return 0;
  }
}

static int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

static int bio_destroy(BIO* b) {
  BIO_set_data(b, NULL);
  BIO_set_init(b, 0);
  return 1;
}

static BIO_METHOD* bio_method;
static uv_once_t bio_once = UV_ONCE_INIT;

/* Made once per process and never freed (it is process-wide, as
 * OpenSSL's own methods are). */
static void bio_method_init(void) {
  BIO_METHOD* m;

  m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "uvctx");
  if (m == NULL)
    return;
  if (!BIO_meth_set_read_ex(m, bio_read) ||
      !BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
      !BIO_meth_set_create(m, bio_create) ||
      !BIO_meth_set_destroy(m, bio_destroy)) {
    BIO_meth_free(m);
    return;
  }
  bio_method = m;
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
  tx_t** pp = &t->fl_head;

  /* Transport writes complete in order: this is fl_head. */
  while (*pp != tx)
    pp = &(*pp)->next;
  *pp = tx->next;
  if (*pp == NULL)
    t->fl_tail = pp;
  t->fl_bytes -= tx->len;
  tx_put(t, tx);
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
  /* A chunk is free again: encrypt what waited for one. */
  if (t->wq_head != NULL && !dead(t))
    cycle(t);
}

/* Hands every chunk of ciphertext to the transport, one write each. */
static void flush(tls_t* t) {
  tx_t* tx;
  uv_buf_t buf;
  int rc;

  seal(t);
  while ((tx = t->ready_head) != NULL) {
    if (t->tr_state != TR_OPEN)
      return; /* freed with the engine */
    t->ready_head = tx->next;
    if (t->ready_head == NULL)
      t->ready_tail = &t->ready_head;
    tx->next = NULL;
    t->out_pending -= tx->len;
    t->out_plain -= tx->plain;
    tx->seq = t->flush_seq + 1;
    buf = uv_buf_init(tx->data, (unsigned)tx->len);
    rc = uvctx_stream_write(&tx->req, t->tr, &buf, 1, tx_cb);
    if (rc != 0) {
      tx_put(t, tx);
      fail(t, rc, 0);
      return;
    }
    *t->fl_tail = tx;
    t->fl_tail = &tx->next;
    t->fl_bytes += tx->len;
    t->flush_seq = tx->seq;
  }
}

/* After a flush: writes encrypted since the last one (and close_notify)
 * complete with the last transport write issued, which carries their last
 * byte; so do writes with no ciphertext of their own (empty ones). */
static void settle_seqs(tls_t* t) {
  uvctx_write_t* w;

  for (w = t->wf_head; w != NULL; w = w->next_)
    if (W_SEQ(w) > t->flush_seq)
      W_SET_SEQ(w, t->flush_seq);
  if (t->sd_state == SD_NOTIFY && t->sd_seq > t->flush_seq)
    t->sd_seq = t->flush_seq;
  if (t->wf_head != NULL && W_SEQ(t->wf_head) <= t->done_seq)
    schedule(t);
  maybe_shutdown_transport(t);
}

/* Bytes of ciphertext the chunk pool can still take. */
static size_t tx_room(const tls_t* t) {
  size_t room = t->out != NULL ? t->out->cap - t->out->len : 0;

  room += (size_t)t->nspare * TX_SIZE;
  if (t->nchunks < TX_MAX)
    room += (size_t)(TX_MAX - t->nchunks) * TX_SIZE;
  return room;
}

/* How much of `left` plaintext bytes to encrypt now: all of it if it fits
 * in the pool, else whole records that fit, else nothing (wait for a
 * transport write to complete). */
static size_t tx_budget(const tls_t* t, size_t left) {
  size_t room = tx_room(t);
  size_t recs = (left + REC_MAX - 1) / REC_MAX;
  size_t n;

  if (left <= room && room - left >= recs * REC_OVERHEAD)
    return left;
  n = room / (REC_MAX + REC_OVERHEAD) * REC_MAX;
  return n < left ? n : left;
}

/* Encrypts queued writes, in order, as far as the chunk pool allows. A
 * write whose ciphertext is all in chunks moves to `wf`. Returns -1 if
 * the session failed. */
static int encrypt_queued(tls_t* t) {
  uvctx_write_t* w;

  while ((w = t->wq_head) != NULL) {
    while (t->wq_idx < W_NBUFS(w)) {
      uv_buf_t b = w_buf(w, t->wq_idx);
      size_t n = 0;
      size_t want;
      if (t->wq_off == b.len) {
        t->wq_idx++;
        t->wq_off = 0;
        continue;
      }
      want = tx_budget(t, b.len - t->wq_off);
      if (want == 0)
        return 0;
      /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex writes all
       * or fails; our BIO never asks to retry. */
      ERR_clear_error();
      t->last_tx = NULL;
      if (SSL_write_ex(t->ssl, b.base + t->wq_off, want, &n) != 1) {
        fail(t, map_error(t, 0), 1);
        return -1;
      }
      t->wq_off += want;
      t->queued_plain -= want;
      if (t->last_tx != NULL) {
        t->last_tx->plain += want;
        t->out_plain += want;
      }
    }
    t->wq_idx = 0;
    t->wq_off = 0;
    t->wq_head = w->next_;
    if (t->wq_head == NULL)
      t->wq_tail = &t->wq_head;
    uvctx__free(w->impl_[0]);
    w->impl_[0] = NULL;
    W_SET_SEQ(w, SEQ_UNSET);
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
    t->sd_seq = SEQ_UNSET;
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

static size_t rx_avail(const tls_t* t) {
  return t->rx_len - t->rx_off;
}

/* The transport reads into the free tail of rx. What SSL left unread (a
 * partial record, usually) moves to the front first when the tail is short,
 * so reads stay large. A full rx yields a zero-length buffer (UV_ENOBUFS);
 * set_transport_reading() normally stops reading before that. */
static void tr_alloc(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  tls_t* t = s->data;

  /* Grown once application data fills the small buffer: a connection
   * that only sees the handshake (and the session tickets some peers send
   * after it) never allocates the large one. */
  size_t want =
      t->hs_state == HS_DONE &&
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

static void set_transport_reading(tls_t* t) {
  int want;
  int rc;

  if (t->tr_state != TR_OPEN)
    return;
  want = t->err == 0 && !t->closing && !t->tr_eof && t->hs_state != HS_NONE &&
         (t->rx_cap == 0 || rx_avail(t) < t->rx_cap ||
          (t->hs_state == HS_DONE && t->rx_cap < RX_SIZE));
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
  watch_stop(t);
  if (!t->hs_cb_pending)
    return;
  if (t->api > 0) {
    t->hs_deferred = 1;
    schedule(t);
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
      int err = map_error(t, 0);
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
      fail(t, err, 1);
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
      !t->eof_pending && SSL_pending(t->ssl) == 0 && rx_avail(t) == 0) {
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
  if (t->hs_deferred && t->hs_cb_pending)
    run_hs_cb(t, 0);
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
  if (nread == UV_ENOBUFS) {
    if (t->oom) {
      snprintf(t->reason, sizeof(t->reason), "out of memory");
      fail(t, UV_ENOMEM, 0);
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
  /* tr_alloc() lent the tail of rx. A read that filled it says data
   * flows faster than a small buffer takes. */
  t->rx_len += (size_t)nread;
  if (t->rx_len == t->rx_cap && t->hs_state == HS_DONE)
    t->rx_grow = 1;
  (void)buf;
  cycle(t);
}

/* ---- ending -------------------------------------------------------------- */

static void idle_close_cb(uv_handle_t* h) {
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

static void free_chunks(tx_t* tx) {
  while (tx != NULL) {
    tx_t* next = tx->next;
    uvctx__free(tx);
    tx = next;
  }
}

/* The SSL object, its BIO and their buffers. */
static void free_engine(tls_t* t) {
  if (t->ssl == NULL)
    return;
  SSL_free(t->ssl); /* frees the BIO */
  t->ssl = NULL;
  t->bio = NULL;
  uvctx__free(t->out);
  t->out = NULL;
  free_chunks(t->ready_head);
  t->ready_head = NULL;
  t->ready_tail = &t->ready_head;
  free_chunks(t->spare);
  t->spare = NULL;
  t->nspare = 0;
  t->nchunks = 0;
  t->out_pending = 0;
  t->out_plain = 0;
  t->last_tx = NULL;
  uvctx__free(t->rx);
  t->rx = NULL;
  t->rx_off = t->rx_len = t->rx_cap = 0;
  atomic_fetch_sub(&live_ssl, 1);
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
  /* A healthy session that delivered its end read a clean close_notify:
   * reading again reports UV_EOF again, as a libuv stream does, not a
   * truncation. */
  if (t->read_done) {
    t->read_done = 0;
    t->eof_pending = 1;
  }
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
  uv_buf_t* copy = NULL;

  if (t->err != 0)
    return t->err;
  if (nbufs > 1) {
    copy = uvctx__malloc(sizeof(*copy) * nbufs);
    if (copy == NULL)
      return UV_ENOMEM;
    memcpy(copy, bufs, sizeof(*copy) * nbufs);
  } else {
    req->impl_[3] = bufs[0].base;
  }
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

static const uvctx_stream_ops_t tls_ops = {
    "tls",       op_read_start, op_read_stop,       op_write,
    op_shutdown, op_close,      op_write_queue_size};

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

  uv_once(&bio_once, bio_method_init);
  if (tls != NULL)
    tls->reason_[0] = '\0';
  if (tls == NULL || config == NULL || transport == NULL ||
      uvctx_stream_is_closing(transport))
    return UV_EINVAL;
  if (config->role == UVCTX_TLS_SERVER && (!config->has_cert || server_name))
    return UV_EINVAL;
  /* Client certificates cannot verify against no CA. */
  if (config->role == UVCTX_TLS_SERVER &&
      config->client_auth != UVCTX_TLS_CLIENT_AUTH_NONE && !config->has_ca)
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
  if (bio_method == NULL)
    goto fail_ssl;
  t->ssl = SSL_new(config->ctx);
  if (t->ssl == NULL)
    goto fail_ssl;
  t->bio = BIO_new(bio_method);
  if (t->bio == NULL)
    goto fail_ssl_obj;
  BIO_set_data(t->bio, t);
  SSL_set_bio(t->ssl, t->bio, t->bio); /* one reference, both ways */
  /* Released buffers would be freed and allocated again around every
   * idle moment; a configuration may have asked for it. */
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
  atomic_fetch_add(&live_ssl, 1);
  t->tls = tls;
  t->cfg = uvctx_tls_config_ref(config);
  t->tr = transport;
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
