/* bio.c owns the session's BIO, the one object SSL reads ciphertext from
 * and writes records into, and the transmit chunks those records land in:
 * encryption units lent by a process-wide pool, chunks of their own for
 * handshake flights, alerts and what the transport left of a unit, and a
 * small pool per session for transports that cannot try-write. */
#include <limits.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/session.h"

/* Encryption units. A unit holds ciphertext only from the SSL_write that
 * fills it to the try-write that hands it to the transport, within one
 * step, so a few units serve every session of the process: a session
 * that waits for a slow reader holds none, only the bytes the transport
 * left (copied out into a chunk of their size). Units are kept while any
 * session lives and freed with the last one, so that the allocator's
 * live count is back to zero once every session is gone. */
static uv_mutex_t units_lock;
static tx_t* units;
static unsigned nunits;
#define UNITS_MAX 16

static tx_t* unit_get(void) {
  tx_t* tx;

  uv_mutex_lock(&units_lock);
  tx = units;
  if (tx != NULL) {
    units = tx->next;
    nunits--;
  }
  uv_mutex_unlock(&units_lock);
  if (tx == NULL) {
    tx = uvctx__malloc(sizeof(*tx) + TX_SIZE);
    if (tx == NULL)
      return NULL;
  }
  tx->cap = TX_SIZE;
  tx->kind = TX_UNIT;
  return tx;
}

static void unit_put(tx_t* tx) {
  uv_mutex_lock(&units_lock);
  if (nunits < UNITS_MAX && atomic_load(&uvctx__tls_ssl_count) > 0) {
    tx->next = units;
    units = tx;
    nunits++;
    tx = NULL;
  }
  uv_mutex_unlock(&units_lock);
  uvctx__free(tx);
}

/* Called after the count of live SSL objects went down: with the last
 * session gone, the pool's units go too. A session made meanwhile finds
 * the count above zero here and the units stay, or allocates new ones. */
void uvctx__tls_units_trim(void) {
  tx_t* tx;

  uv_mutex_lock(&units_lock);
  if (atomic_load(&uvctx__tls_ssl_count) > 0) {
    uv_mutex_unlock(&units_lock);
    return;
  }
  tx = units;
  units = NULL;
  nunits = 0;
  uv_mutex_unlock(&units_lock);
  while (tx != NULL) {
    tx_t* next = tx->next;
    uvctx__free(tx);
    tx = next;
  }
}

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

/* Where the next bytes SSL writes go: application data into a unit when
 * the transport can take it at once (or, when it cannot try-write, into
 * the session's own chunks, of which it keeps one spare), anything else
 * (handshake flights, alerts, close_notify, key updates) into a small
 * chunk freed once written. */
static tx_t* tx_get(tls_t* t) {
  tx_t* tx = NULL;

  if (t->app_unit && !t->no_try) {
    tx = unit_get();
  } else if (t->app_unit && t->spare != NULL) {
    tx = t->spare;
    t->spare = NULL;
  } else if (t->app_unit) {
    tx = uvctx__malloc(sizeof(*tx) + TX_SIZE);
    if (tx == NULL)
      return NULL;
    tx->cap = TX_SIZE;
    tx->kind = TX_POOLED;
    t->nchunks++;
  } else {
    tx = uvctx__malloc(sizeof(*tx) + TX_HS_SIZE);
    if (tx == NULL)
      return NULL;
    tx->cap = TX_HS_SIZE;
    tx->kind = TX_ONCE;
  }
  if (tx == NULL)
    return NULL;
  tx->t = t;
  tx->len = 0;
  tx->plain = 0;
  tx->next = NULL;
  return tx;
}

tx_t* uvctx__tls_tx_rest(tls_t* t, tx_t* tx, size_t done) {
  size_t rest = tx->len - done;
  tx_t* r = uvctx__malloc(sizeof(*r) + rest);

  if (r != NULL) {
    memcpy(r->data, tx->data + done, rest);
    r->t = t;
    r->seq = tx->seq;
    r->next = NULL;
    r->len = rest;
    r->cap = rest;
    r->plain = tx->plain;
    r->kind = TX_ONCE;
  }
  uvctx__tls_tx_put(t, tx);
  return r;
}

void uvctx__tls_tx_put(tls_t* t, tx_t* tx) {
  switch (tx->kind) {
    case TX_UNIT:
      unit_put(tx);
      return;
    case TX_POOLED:
      if (t->spare == NULL && t->ssl != NULL) {
        tx->next = NULL;
        t->spare = tx;
        return;
      }
      t->nchunks--;
      break;
    default:
      break;
  }
  uvctx__free(tx);
}

void uvctx__tls_tx_put_all(tls_t* t, tx_t* tx) {
  while (tx != NULL) {
    tx_t* next = tx->next;
    uvctx__tls_tx_put(t, tx);
    tx = next;
  }
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
 * OpenSSL's own methods are), with the lock of the units' pool. */
static void bio_method_init(void) {
  BIO_METHOD* m;

  if (uv_mutex_init(&units_lock) != 0)
    return;

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
