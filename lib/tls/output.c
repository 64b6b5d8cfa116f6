/* output.c owns the way out: encrypting queued plaintext as fast as the
 * transport takes it, flushing ciphertext to the transport (a try-write
 * first, a queued write for what it leaves), completing user writes in
 * order as their last byte is written, and the transport's shutdown. */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/session.h"

void uvctx__tls_complete_writes(tls_t* t) {
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
  uvctx__tls_tx_put(t, tx);
  if (status != 0) {
    /* UV_ECANCELED here means we closed the transport: the session's own
     * error is already set and the close callback finishes the rest. */
    if (status != UV_ECANCELED || t->err == 0)
      uvctx__tls_fail(t, status, UVCTX__TLS_QUIET);
    return;
  }
  t->done_seq = seq;
  uvctx__tls_complete_writes(t);
  maybe_shutdown_transport(t);
  /* A chunk is free again: encrypt what waited for one. */
  if (t->wq_head != NULL && !dead(t))
    uvctx__tls_cycle(t);
}

/* uvctx__tls_tx_rest(), failing the session when memory ran out. */
static tx_t* rest_of(tls_t* t, tx_t* tx, size_t done) {
  tx = uvctx__tls_tx_rest(t, tx, done);
  if (tx == NULL) {
    snprintf(t->reason, sizeof(t->reason), "out of memory");
    uvctx__tls_fail(t, UV_ENOMEM, UVCTX__TLS_QUIET);
  }
  return tx;
}

/* With nothing of ours queued on the transport, offers it `tx` at once.
 * Returns `tx` to queue (all of it, or a chunk with what the transport
 * left), or NULL: written whole (its writes complete from the loop, see
 * uvctx__tls_settle_seqs()) or the session failed. A unit never stays
 * queued: what it holds is copied out, so that it goes back at once. */
static tx_t* try_flush(tls_t* t, tx_t* tx) {
  uv_buf_t buf = uv_buf_init(tx->data, (unsigned)tx->len);
  int n = uvctx_stream_try_write(t->tr, &buf, 1);

  if (n == UV_ENOSYS) {
    t->no_try = 1;
    n = 0;
  } else if (n == UV_EAGAIN) {
    n = 0;
  } else if (n < 0) {
    uvctx__tls_tx_put(t, tx);
    uvctx__tls_fail(t, n, UVCTX__TLS_QUIET);
    return NULL;
  }
  if ((size_t)n == tx->len) {
    /* Nothing earlier is pending: every seq up to this one is done. */
    t->flush_seq = t->done_seq = tx->seq;
    uvctx__tls_tx_put(t, tx);
    return NULL;
  }
  if (n > 0 || tx->kind == TX_UNIT)
    tx = rest_of(t, tx, (size_t)n);
  return tx;
}

/* Hands every chunk of ciphertext to the transport, one write each. */
void uvctx__tls_flush(tls_t* t) {
  tx_t* tx;
  uv_buf_t buf;
  int rc;

  uvctx__tls_seal(t);
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
    if (t->fl_head == NULL && !t->no_try) {
      tx = try_flush(t, tx);
      if (tx == NULL) {
        if (t->err != 0)
          return;
        continue;
      }
    } else if (tx->kind == TX_UNIT) {
      /* A second unit of one SSL_write, behind a rest: not pinned either. */
      tx = rest_of(t, tx, 0);
      if (tx == NULL)
        return;
    }
    buf = uv_buf_init(tx->data, (unsigned)tx->len);
    rc = uvctx_stream_write(&tx->req, t->tr, &buf, 1, tx_cb);
    if (rc != 0) {
      uvctx__tls_tx_put(t, tx);
      uvctx__tls_fail(t, rc, UVCTX__TLS_QUIET);
      return;
    }
    *t->fl_tail = tx;
    t->fl_tail = &tx->next;
    t->fl_bytes += tx->len;
    t->flush_seq = tx->seq;
  }
}

/* After a flush: writes encrypted since the last one (and
 * close_notify) complete with the last transport write issued, which carries
 * their last byte; so do writes with no ciphertext of their own (empty ones).
 */
void uvctx__tls_settle_seqs(tls_t* t) {
  uvctx_write_t* w;

  for (w = t->wf_head; w != NULL; w = w->next_)
    if (W_SEQ(w) > t->flush_seq)
      W_SET_SEQ(w, t->flush_seq);
  if (t->sd_state == SD_NOTIFY && t->sd_seq > t->flush_seq)
    t->sd_seq = t->flush_seq;
  if (t->wf_head != NULL && W_SEQ(t->wf_head) <= t->done_seq)
    uvctx__tls_schedule(t);
  maybe_shutdown_transport(t);
}

/* The transport has handed every write of ours to the kernel; their
 * callbacks may not have run yet. */
static int fl_written(const tls_t* t) {
  return t->tr_state == TR_OPEN && uvctx_stream_write_queue_size(t->tr) == 0;
}

/* Bytes of ciphertext the session may make now. With a try-write, a unit
 * only while the transport holds nothing of ours: its ciphertext goes out
 * before the next is made, so a slow reader pins at most what the
 * transport left of one unit. Without, the session's own chunks. */
static size_t tx_room(const tls_t* t) {
  size_t room = t->out != NULL ? t->out->cap - t->out->len : 0;

  if (!t->no_try) {
    if (t->out == NULL && t->ready_head == NULL &&
        (t->fl_head == NULL || (t->in_try && fl_written(t))))
      room = TX_SIZE;
    return room;
  }
  if (t->spare != NULL)
    room += TX_SIZE;
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

/* Encrypts as much of `len` bytes at `base` as tx_budget() allows into
 * the chunk being filled: the plaintext a chunk counts is that of the
 * records ending in it. Returns the bytes encrypted (0: no room), or -1
 * if the session failed. */
static ssize_t encrypt_some(tls_t* t, const char* base, size_t len) {
  size_t want = tx_budget(t, len);
  size_t n = 0;

  if (want == 0)
    return 0;
  /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex writes all or
   * fails; our BIO never asks to retry. */
  ERR_clear_error();
  t->last_tx = NULL;
  t->app_unit = 1;
  if (SSL_write_ex(t->ssl, base, want, &n) != 1) {
    t->app_unit = 0;
    uvctx__tls_fail(t, uvctx__tls_map_error(t, 0), UVCTX__TLS_ALERT);
    return -1;
  }
  t->app_unit = 0;
  if (t->last_tx != NULL) {
    t->last_tx->plain += want;
    t->out_plain += want;
  }
  return (ssize_t)want;
}

/* Encrypts queued writes, in order, as far as tx_room() allows, handing
 * each full unit to the transport before the next. A write whose
 * ciphertext is all in chunks moves to `wf`. Returns -1 if the session
 * failed. */
int uvctx__tls_encrypt_queued(tls_t* t) {
  uvctx_write_t* w;

  while ((w = t->wq_head) != NULL) {
    while (t->wq_idx < W_NBUFS(w)) {
      uv_buf_t b = w_buf(w, t->wq_idx);
      ssize_t n;
      if (t->wq_off == b.len) {
        t->wq_idx++;
        t->wq_off = 0;
        continue;
      }
      n = encrypt_some(t, b.base + t->wq_off, b.len - t->wq_off);
      if (n < 0)
        return -1;
      if (n == 0) {
        /* A full unit: out to the transport, and on if it took it all. */
        if (t->no_try || (t->out == NULL && t->ready_head == NULL))
          return 0;
        uvctx__tls_flush(t);
        if (dead(t))
          return -1;
        uvctx__tls_settle_seqs(t);
        continue;
      }
      t->wq_off += (size_t)n;
      t->queued_plain -= (size_t)n;
    }
    t->wq_idx = 0;
    t->wq_off = 0;
    t->wq_head = w->next_;
    if (t->wq_head == NULL)
      t->wq_tail = &t->wq_head;
    uvctx__free(W(w)->bufs);
    W(w)->bufs = NULL;
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
      uvctx__tls_fail(t, uvctx__tls_map_error(t, r), UVCTX__TLS_QUIET);
      return -1;
    }
    t->sd_state = SD_NOTIFY;
    t->sd_seq = SEQ_UNSET;
  }
  return 0;
}

int uvctx__tls_try_write(tls_t* t, const uv_buf_t bufs[], unsigned nbufs) {
  size_t took = 0;
  unsigned i;
  ssize_t n = 0;

  if (t->err != 0)
    return t->err;
  if (t->no_try)
    return UV_ENOSYS;
  /* Only with nothing of ours on the way out (so that the bytes keep
   * their order and a slow reader still pins one unit at most), and not
   * from inside a step (a read callback writing back). Transport writes
   * the kernel has taken whole do not count: were the caller told to
   * queue its bytes until their callbacks have run, its buffer would wait
   * in the session behind the next unit the transport refuses. The unit
   * made then goes out behind them, copied to a chunk of its own (see
   * uvctx__tls_flush()). */
  if (dead(t) || t->hs_state != HS_DONE || t->in_cycle ||
      t->sd_state != SD_NONE || t->wq_head != NULL || t->out != NULL ||
      t->ready_head != NULL || (t->fl_head != NULL && !fl_written(t)))
    return UV_EAGAIN;
  t->in_try = 1;
  for (i = 0; i < nbufs; i++) {
    n = bufs[i].len > 0 ? encrypt_some(t, bufs[i].base, bufs[i].len) : 0;
    if (n < 0)
      break;
    took += (size_t)n;
    if ((size_t)n < bufs[i].len)
      break; /* the unit is full: the caller queues the rest */
  }
  t->in_try = 0;
  if (n < 0)
    return t->err;
  if (took == 0)
    return UV_EAGAIN;
  /* One step flushes the unit (a try-write of the transport; what it
   * leaves is queued there in a chunk of its own) and gives OpenSSL's
   * buffers back, without calling anyone back. */
  uvctx__tls_api_cycle(t);
  if (t->err != 0)
    return t->err;
  return (int)took; /* at most one unit */
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
    uvctx__tls_fail(t, rc, UVCTX__TLS_QUIET);
}
