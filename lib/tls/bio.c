/* bio.c owns the session's BIO, the one object SSL reads ciphertext from
 * and writes records into, and its transmit chunks (a small pool kept for
 * the session's life). */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/session.h"

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

void uvctx__tls_tx_put(tls_t* t, tx_t* tx) {
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

void uvctx__tls_seal(tls_t* t) {
  tx_t* tx = t->out;

  if (tx == NULL || tx->len == 0)
    return;
  t->out = NULL;
  *t->ready_tail = tx;
  t->ready_tail = &tx->next;
}

/* SSL's records go straight into transmit chunks. A failed allocation
 * fails the SSL call (no retry flag); uvctx__tls_map_error() then says
 * UV_ENOMEM. */
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
      uvctx__tls_seal(t);
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
      return 1; /* uvctx__tls_flush() runs at the end of every step
                 */
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

BIO_METHOD* uvctx__tls_bio_method(void) {
  uv_once(&bio_once, bio_method_init);
  return bio_method;
}
