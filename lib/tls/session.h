/* session.h: the internals of a TLS session, shared by the files of
 * lib/tls/ that own its parts: errors.c (OpenSSL failures as libuv codes),
 * bio.c (the BIO and its transmit chunks), output.c (encrypting queued
 * plaintext and flushing ciphertext to the transport), engine.c (the step
 * function, the handshake, reading, and the close sequence) and session.c
 * (the stream kind and the public API). Not part of the public API.
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
 * no copy out of it, no allocation per flush).
 *
 * Memory follows the data. Application data is encrypted only as fast as
 * the transport takes it: one unit at a time, tried at once (a try-write),
 * and the next one only once the transport holds nothing of ours; the
 * rest waits as plaintext in the writer's own buffers, or is refused by
 * the session's own try-write, which takes a writer's bytes only then
 * (so a copy's buffer is free once encrypted). A session whose
 * peer reads slowly holds only what the transport left of one unit, and
 * an idle one holds no output memory at all: no chunk, no OpenSSL record
 * buffer, and no receive buffer unless it holds a partial record. */
#ifndef UVCTX_TLS_SESSION_H
#define UVCTX_TLS_SESSION_H

#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tls/tls_internal.h"

/* Transport reads land in `rx`, where SSL reads them. The transport is not
 * read while it is full: memory stays bounded when the user stops reading
 * while the peer keeps sending. Small (one handshake flight) until a read
 * after the handshake fills it, then grown: a connection that sees only a
 * handshake allocates little (a large buffer per handshake made glibc map
 * and unmap, or trim and regrow, its heap). */
#define RX_SIZE (128 * 1024)
#define RX_HS_SIZE (8 * 1024)
/* Application data is encrypted in units of this size: a 64 KiB plaintext
 * write (four full records, 65,624 bytes with TLS 1.3 overhead) fits in
 * one, so a copy's buffer becomes one transport write. It is also the most
 * a slow reader pins: what the transport left of the last unit, half of
 * it on average. Units of two records pinned about 7 KiB less per held
 * connection under a slow-read attack, and took twice the system calls
 * per byte of a fast one. */
#define TX_SIZE (66 * 1024)
/* A transport that cannot try-write gets its records through chunks of
 * the session's own, at most this many in flight (the rest waits as
 * plaintext), one kept as a spare: allocating and freeing them per write
 * made glibc trim and regrow its heap on every burst. */
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

typedef enum { HS_NONE = 0, HS_RUNNING, HS_DONE } hs_state_t;
typedef enum { TR_OPEN = 0, TR_CLOSING, TR_CLOSED } tr_state_t;
typedef enum {
  SD_NONE = 0,
  SD_QUEUED,    /* after the handshake and queued writes */
  SD_NOTIFY,    /* close_notify flushed, waiting for its write */
  SD_TRANSPORT, /* transport shutdown issued */
  SD_DONE
} sd_state_t;

typedef struct uvctx__tls_s tls_t;

/* Handshake flights and alerts use chunks of this size, freed once
 * written. */
#define TX_HS_SIZE (8 * 1024)

/* What a chunk is and where it goes back to (see bio.c). */
typedef enum {
  TX_ONCE = 0, /* its own allocation, freed once written */
  TX_UNIT,     /* an encryption unit, back to the process-wide pool */
  TX_POOLED    /* the session's own, for transports without try-write */
} tx_kind_t;

/* A transmit chunk: ciphertext SSL wrote, then one transport write. */
typedef struct tx_s {
  uvctx_write_t req;
  tls_t* t;
  uint64_t seq;
  struct tx_s* next;
  size_t len;
  size_t cap;   /* TX_SIZE, TX_HS_SIZE, or the length of a rest */
  size_t plain; /* plaintext whose last record ends here */
  tx_kind_t kind;
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
  unsigned rx_grow : 1; /* application data filled rx: grow it to RX_SIZE */
  /* Ciphertext not yet handed to the transport: `out` being filled, then
   * `ready` (sealed, in order); `out_pending` bytes in all of them.
   * `spare` is the one TX_POOLED chunk kept for reuse. */
  tx_t* out;
  tx_t* ready_head;
  tx_t** ready_tail;
  tx_t* spare;
  unsigned nchunks;      /* TX_POOLED chunks allocated: in use or spare */
  unsigned app_unit : 1; /* SSL is writing application data */
  unsigned no_try : 1;   /* the transport has no try-write */
  unsigned in_try : 1;   /* inside the session's own try-write */
  size_t out_pending;
  size_t out_plain; /* `plain` of out and ready */
  tx_t* last_tx;    /* where bio_write() put its last byte */
  /* Chunks handed to the transport, oldest first, until their write
   * completes: `fl_bytes` of ciphertext. See op_write_queue_size(). */
  tx_t* fl_head;
  tx_t** fl_tail;
  size_t fl_bytes;
  unsigned oom : 1; /* an allocation inside a BIO call failed */

  uvctx_watch_t watch;
  unsigned watching : 1;
  uvctx_tls_handshake_cb hs_cb;
  hs_state_t hs_state;
  unsigned hs_cb_pending : 1; /* hs_cb has yet to run */
  uvctx_t* hs_ctx; /* the handshake's context, held until hs_cb has run */
  unsigned hs_deferred : 1; /* ... from the idle handle, with status 0 */

  int err; /* first fatal error; 0 while healthy */
  tr_state_t tr_state;
  unsigned tr_reading : 1;
  unsigned tr_eof : 1;    /* the transport delivered UV_EOF */
  unsigned reading : 1;   /* the user wants plaintext */
  unsigned read_done : 1; /* UV_EOF or an error was delivered */
  unsigned
      eof_pending : 1;  /* close_notify was read, UV_EOF not delivered yet */
  unsigned closing : 1; /* the user closed the session */
  unsigned in_cycle : 1;
  unsigned again : 1;
  int api; /* > 0 inside an API call: no user callbacks */

  /* Plaintext writes: `wq` not yet encrypted (before the handshake ends),
   * `wf` encrypted and waiting for the transport write that carries their
   * last byte (its seq, see W() below). Transport writes complete in
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
  sd_state_t sd_state;
  uint64_t sd_seq;
  uvctx_shutdown_t tr_sd;

  int version;
  const char* cipher; /* OpenSSL's static name */
  char alpn[256];
  char sni[256];
  char peer[256]; /* verified client certificate's subject (servers) */
  char reason[UVCTX__TLS_REASON];
};

/* A queued plaintext write keeps its buffers, and its sequence number, in
 * the request's private storage (impl_.tls): a copied array of them, or,
 * for the usual single buffer, without an allocation: `bufs` NULL and the
 * base in `base` (the length is the request's size). */
#define W(w) (&(w)->impl_.tls)
#define W_NBUFS(w) (W(w)->nbufs)
#define W_SEQ(w) (W(w)->seq)
#define W_SET_SEQ(w, v) (W(w)->seq = (v))

static inline uv_buf_t w_buf(const uvctx_write_t* w, unsigned i) {
  uv_buf_t b;

  if (W(w)->bufs != NULL)
    return W(w)->bufs[i];
  b.base = W(w)->base;
  b.len = uvctx_write_size(w);
  return b;
}

static inline int dead(const tls_t* t) {
  return t->err != 0 || t->closing || t->tr_state != TR_OPEN || t->ssl == NULL;
}

static inline tls_t* of_stream(const uvctx_stream_t* s) {
  return UVCTX__CONTAINER_OF(s, uvctx_tls_t, stream)->impl_;
}

/* SSL objects alive (session.c), behind uvctx__tls_live_ssl(). */
extern atomic_uint_fast64_t uvctx__tls_ssl_count;

/* ---- defined in tls/errors.c --------------------------------------------- */

int uvctx__tls_map_error(tls_t* t, int ret);

/* ---- defined in tls/bio.c ------------------------------------------------ */

/* Gives a chunk back where it came from (see tx_kind_t); _all: a list. */
void uvctx__tls_tx_put(tls_t* t, tx_t* tx);
void uvctx__tls_tx_put_all(tls_t* t, tx_t* tx);
/* What a transport left of `tx` after taking `done` bytes, in a chunk of
 * its own (TX_ONCE, same seq and plain); `tx` goes back. NULL: no memory
 * (`tx` went back all the same). */
tx_t* uvctx__tls_tx_rest(tls_t* t, tx_t* tx, size_t done);
/* Frees the units' pool once no session is left (after the count of live
 * SSL objects went down). */
void uvctx__tls_units_trim(void);
void uvctx__tls_seal(tls_t* t);
/* The BIO method of every session (created once). NULL if OpenSSL could
 * not make it. */
BIO_METHOD* uvctx__tls_bio_method(void);

/* ---- defined in tls/output.c --------------------------------------------- */

void uvctx__tls_complete_writes(tls_t* t);
void uvctx__tls_flush(tls_t* t);
void uvctx__tls_settle_seqs(tls_t* t);
int uvctx__tls_encrypt_queued(tls_t* t);
/* The session's try-write (see op_try_write() in session.c). */
int uvctx__tls_try_write(tls_t* t, const uv_buf_t bufs[], unsigned nbufs);

/* ---- defined in tls/engine.c --------------------------------------------- */

void uvctx__tls_watch_stop(tls_t* t);
void uvctx__tls_step(tls_t* t);
void uvctx__tls_cycle(tls_t* t);
void uvctx__tls_api_cycle(tls_t* t);
void uvctx__tls_schedule(tls_t* t);
void uvctx__tls_idle_close_cb(uv_handle_t* h);
void uvctx__tls_close_transport(tls_t* t);
/* How uvctx__tls_fail() ends the session: with OpenSSL's alert flushed to
 * the peer first (a protocol error OpenSSL detected), or quietly (the
 * transport failed, memory ran out, the context ended). */
typedef enum { UVCTX__TLS_QUIET = 0, UVCTX__TLS_ALERT } uvctx__tls_fail_t;
void uvctx__tls_fail(tls_t* t, int err, uvctx__tls_fail_t how);
void uvctx__tls_watch_cb(uvctx_watch_t* w, int err);

#endif /* UVCTX_TLS_SESSION_H */
