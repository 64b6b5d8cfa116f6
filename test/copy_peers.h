/* copy_peers.h owns the real peers the stream, copy and pipe suites run
 * against: connected TCP pairs on 127.0.0.1 (port 0) and uv_pipe_t pairs
 * (a Unix socketpair), a sender writing a position-dependent pattern with
 * random chunking, a sink verifying it (optionally rate-limited), and a
 * handle close counter. Plain libuv on purpose: the peers must not share
 * code with what they test.
 *
 * Header only, static functions, like helpers.h. */
#ifndef UVCTX_TEST_COPY_PEERS_H
#define UVCTX_TEST_COPY_PEERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "helpers.h"
#include "uvctx/copy.h"

#define CP_CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

typedef union cp_handle_u {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_tty_t tty;
} cp_handle_t;

/* ---- the pattern ---------------------------------------------------------- */

/* Byte `i` of every transfer: depends on the position so that a lost,
 * repeated or reordered chunk of any length shows. */
static inline uint8_t cp_pattern(uint64_t i) {
  uint64_t x = ((i >> 3) + 1) * 0x9E3779B97F4A7C15ull;
  return (uint8_t)((x >> 56) ^ i);
}

static inline void cp_fill(char* p, uint64_t off, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (char)cp_pattern(off + i);
}

/* ---- closing plain handles ------------------------------------------------ */

static int cp_closes_pending__;

static inline void cp_on_close__(uv_handle_t* h) {
  (void)h;
  cp_closes_pending__--;
}

/* Closes `x` unless it is closing already (its close is then counted by
 * whoever started it). */
static inline void cp_close_h(uv_handle_t* h) {
  if (h->loop == NULL || uv_is_closing(h))
    return;
  cp_closes_pending__++;
  uv_close(h, cp_on_close__);
}

static inline void cp_close(cp_handle_t* x) {
  cp_close_h(&x->h);
}

static inline void cp_wait_closed(void) {
  UVT_RUN_UNTIL(cp_closes_pending__ == 0);
}

/* ---- connected pairs ------------------------------------------------------ */

typedef struct cp_listener_s {
  uv_tcp_t tcp;
  struct sockaddr_in addr;
  cp_handle_t* accept_into;
  int accepted;
} cp_listener_t;

static inline void cp_on_conn__(uv_stream_t* l, int status) {
  cp_listener_t* L = l->data;
  ck_assert_int_eq(status, 0);
  ck_assert_ptr_nonnull(L->accept_into);
  ck_assert_int_eq(uv_tcp_init(l->loop, &L->accept_into->tcp), 0);
  ck_assert_int_eq(uv_accept(l, &L->accept_into->s), 0);
  L->accept_into = NULL;
  L->accepted++;
}

static inline void cp_listen(cp_listener_t* L) {
  struct sockaddr_in any;
  int len = sizeof(L->addr);
  memset(L, 0, sizeof(*L));
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &L->tcp), 0);
  L->tcp.data = L;
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &any), 0);
  ck_assert_int_eq(uv_tcp_bind(&L->tcp, (const struct sockaddr*)&any, 0), 0);
  ck_assert_int_eq(uv_listen((uv_stream_t*)&L->tcp, 128, cp_on_conn__), 0);
  ck_assert_int_eq(uv_tcp_getsockname(&L->tcp, (struct sockaddr*)&L->addr,
                                      &len), 0);
}

static inline void cp_unlisten(cp_listener_t* L) {
  cp_close_h((uv_handle_t*)&L->tcp);
}

static int cp_connected__;

static inline void cp_on_connect__(uv_connect_t* req, int status) {
  (void)req;
  ck_assert_int_eq(status, 0);
  cp_connected__++;
}

/* Connects `client` to the listener; the accepted end goes to `server`. */
static inline void cp_tcp_pair(cp_listener_t* L, cp_handle_t* client,
                               cp_handle_t* server) {
  uv_connect_t req;
  int before = L->accepted;
  cp_connected__ = 0;
  L->accept_into = server;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &client->tcp), 0);
  ck_assert_int_eq(uv_tcp_connect(&req, &client->tcp,
                                  (const struct sockaddr*)&L->addr,
                                  cp_on_connect__), 0);
  UVT_RUN_UNTIL(cp_connected__ == 1 && L->accepted == before + 1);
}

/* Two connected uv_pipe_t over a Unix socketpair. */
static inline void cp_unix_pair(cp_handle_t* a, cp_handle_t* b) {
  uv_os_sock_t fds[2];
  ck_assert_int_eq(uv_socketpair(SOCK_STREAM, 0, fds, 0, 0), 0);
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &a->pipe, 0), 0);
  ck_assert_int_eq(uv_pipe_open(&a->pipe, fds[0]), 0);
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &b->pipe, 0), 0);
  ck_assert_int_eq(uv_pipe_open(&b->pipe, fds[1]), 0);
}

/* Small kernel buffers, so that a stalled reader fills queues quickly. */
static inline void cp_small_buffers(cp_handle_t* x, int bytes) {
  int v = bytes;
  uv_send_buffer_size(&x->h, &v);
  v = bytes;
  uv_recv_buffer_size(&x->h, &v);
}

/* ---- the sender ------------------------------------------------------------- */

typedef struct cp_sender_s {
  uv_stream_t* s;
  uint64_t total; /* UINT64_MAX: until stopped */
  uint64_t queued;
  uint64_t written;
  uint64_t rng;
  size_t max_chunk;
  unsigned inflight;
  unsigned max_inflight;
  uint64_t writes_started;
  uint64_t writes_done;
  int shutdown_at_end;
  int shut_state; /* 0 none, 1 requested, 2 its callback ran */
  int shut_status;
  int err;
  int stopped;
  uv_shutdown_t shut_req;
  void (*on_shutdown)(struct cp_sender_s* x);
  void* data;
} cp_sender_t;

typedef struct cp_wreq_s {
  uv_write_t req;
  cp_sender_t* snd;
  size_t len;
  char bytes[];
} cp_wreq_t;

static inline void cp_sender_pump(cp_sender_t* x);

static inline void cp_sender_write_cb__(uv_write_t* r, int status) {
  cp_wreq_t* w = CP_CONTAINER_OF(r, cp_wreq_t, req);
  cp_sender_t* x = w->snd;
  x->inflight--;
  x->writes_done++;
  if (status == 0)
    x->written += w->len;
  else if (x->err == 0)
    x->err = status;
  free(w);
  cp_sender_pump(x);
}

static inline void cp_sender_shutdown_cb__(uv_shutdown_t* r, int status) {
  cp_sender_t* x = CP_CONTAINER_OF(r, cp_sender_t, shut_req);
  x->shut_state = 2;
  x->shut_status = status;
  if (x->on_shutdown != NULL)
    x->on_shutdown(x);
}

static inline void cp_sender_pump(cp_sender_t* x) {
  while (x->err == 0 && !x->stopped && !uv_is_closing((uv_handle_t*)x->s) &&
         x->inflight < x->max_inflight && x->queued < x->total) {
    uint64_t left = x->total - x->queued;
    size_t len = 1 + (size_t)uvt_rand_below(&x->rng, x->max_chunk);
    cp_wreq_t* w;
    uv_buf_t b;
    int rc;
    if (len > left)
      len = (size_t)left;
    w = malloc(sizeof(*w) + len);
    ck_assert_ptr_nonnull(w);
    w->snd = x;
    w->len = len;
    cp_fill(w->bytes, x->queued, len);
    b = uv_buf_init(w->bytes, (unsigned)len);
    rc = uv_write(&w->req, x->s, &b, 1, cp_sender_write_cb__);
    if (rc != 0) {
      free(w);
      x->err = rc;
      break;
    }
    x->inflight++;
    x->writes_started++;
    x->queued += len;
  }
  if (x->err == 0 && !x->stopped && x->shutdown_at_end &&
      x->shut_state == 0 && x->queued == x->total && x->inflight == 0 &&
      !uv_is_closing((uv_handle_t*)x->s)) {
    ck_assert_int_eq(uv_shutdown(&x->shut_req, x->s,
                                 cp_sender_shutdown_cb__), 0);
    x->shut_state = 1;
  }
}

/* Sends `total` pattern bytes in random chunks of 1..max_chunk, then shuts
 * the write half down if `shutdown_at_end`. */
static inline void cp_sender_start(cp_sender_t* x, uv_stream_t* s,
                                   uint64_t total, size_t max_chunk,
                                   uint64_t seed, int shutdown_at_end) {
  memset(x, 0, sizeof(*x));
  x->s = s;
  x->total = total;
  x->max_chunk = max_chunk;
  x->max_inflight = 4;
  x->rng = seed;
  x->shutdown_at_end = shutdown_at_end;
  cp_sender_pump(x);
}

/* ---- the sink ----------------------------------------------------------------- */

typedef struct cp_sink_s {
  uv_stream_t* s;
  uint64_t received;
  uint64_t bad; /* first wrong offset + 1; 0 while all is well */
  int eof;
  int err;
  uint64_t rng;
  size_t max_read;
  char* buf;
  int reading;
  /* Rate limiting: read at most bytes_per_tick per 10 ms. */
  uv_timer_t timer;
  int limited;
  int64_t budget;
  int64_t per_tick;
  void (*on_data)(struct cp_sink_s* k); /* after each read, optional */
  void (*on_end)(struct cp_sink_s* k);  /* after EOF or an error */
  void* data;
} cp_sink_t;

static inline void cp_sink_alloc__(uv_handle_t* h, size_t sugg, uv_buf_t* b) {
  cp_sink_t* k = h->data;
  size_t n = k->max_read;
  (void)sugg;
  if (k->rng != 0)
    n = 1 + (size_t)uvt_rand_below(&k->rng, k->max_read);
  *b = uv_buf_init(k->buf, (unsigned)n);
}

/* Checks `n` received bytes at stream offset `at` against cp_pattern();
 * records the first mismatch (1-based offset) in *bad, once. Shared by
 * every sink that verifies a patterned transfer. */
static inline void cp_verify(uint64_t* bad, uint64_t at, const char* p,
                             size_t n) {
  size_t i;
  if (*bad != 0)
    return;
  for (i = 0; i < n; i++)
    if ((uint8_t)p[i] != cp_pattern(at + (uint64_t)i)) {
      *bad = at + (uint64_t)i + 1;
      return;
    }
}

static inline void cp_sink_read__(uv_stream_t* s, ssize_t n,
                                  const uv_buf_t* b) {
  cp_sink_t* k = s->data;
  if (n > 0) {
    cp_verify(&k->bad, k->received, b->base, (size_t)n);
    k->received += (uint64_t)n;
    if (k->limited) {
      k->budget -= n;
      if (k->budget <= 0 && k->reading) {
        uv_read_stop(s);
        k->reading = 0;
      }
    }
    if (k->on_data != NULL)
      k->on_data(k);
    return;
  }
  if (n == 0)
    return;
  k->reading = 0;
  if (n == UV_EOF)
    k->eof = 1;
  else
    k->err = (int)n;
  if (k->on_end != NULL)
    k->on_end(k);
}

static inline void cp_sink_resume(cp_sink_t* k) {
  if (k->reading || k->eof || k->err || uv_is_closing((uv_handle_t*)k->s))
    return;
  ck_assert_int_eq(uv_read_start(k->s, cp_sink_alloc__, cp_sink_read__), 0);
  k->reading = 1;
}

static inline void cp_sink_pause(cp_sink_t* k) {
  if (!k->reading)
    return;
  uv_read_stop(k->s);
  k->reading = 0;
}

static inline void cp_sink_tick__(uv_timer_t* t) {
  cp_sink_t* k = t->data;
  k->budget += k->per_tick;
  if (k->budget > k->per_tick)
    k->budget = k->per_tick;
  if (k->budget > 0)
    cp_sink_resume(k);
}

/* Reads and verifies everything that arrives on `s`. random_reads: read
 * sizes vary in 1..max_read. start: begin reading now (else call
 * cp_sink_resume() later). */
static inline void cp_sink_init(cp_sink_t* k, uv_stream_t* s, size_t max_read,
                                uint64_t seed, int start) {
  memset(k, 0, sizeof(*k));
  k->s = s;
  k->max_read = max_read;
  k->rng = seed;
  k->buf = malloc(max_read);
  ck_assert_ptr_nonnull(k->buf);
  s->data = k;
  if (start)
    cp_sink_resume(k);
}

/* Limits the sink to `bytes_per_sec` (in 10 ms ticks). */
static inline void cp_sink_limit(cp_sink_t* k, uint64_t bytes_per_sec) {
  k->limited = 1;
  k->per_tick = (int64_t)(bytes_per_sec / 100);
  k->budget = k->per_tick;
  ck_assert_int_eq(uv_timer_init(uvt_loop, &k->timer), 0);
  k->timer.data = k;
  ck_assert_int_eq(uv_timer_start(&k->timer, cp_sink_tick__, 10, 10), 0);
}

static inline void cp_sink_free(cp_sink_t* k) {
  if (k->limited)
    cp_close_h((uv_handle_t*)&k->timer);
  free(k->buf);
  k->buf = NULL;
}

#endif /* UVCTX_TEST_COPY_PEERS_H */
