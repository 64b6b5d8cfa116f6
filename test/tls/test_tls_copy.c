/* test_tls_copy.c owns the Check suite of copy and pipe over TLS:
 * the copy suite's byte-exact transfers with a TLS session as the source,
 * the destination or both, over real loopback TCP; a TLS-terminating echo
 * proxy and half-close through uvctx_pipe_start(); cancellation and
 * deadlines mid-transfer; and the high-water mark with a TLS destination.
 * Plain peers are the copy suites' raw libuv peers (copy_peers.h); TLS
 * peers are sessions of the shim driven by the same sender and sink in
 * their uvctx-stream form. Every test ends with the helpers.h teardown (nothing
 * leaked, no SSL object left). */
#include <signal.h>

#include "copy_peers.h"
#include "tlsutil.h"

/* ---- TLS-capable ends ---------------------------------------------------- */

/* One end of a TCP connection: the handle, its uvctx stream and, when
 * `tls`, a session over it. `s` is what is read and written. */
typedef struct tend_s {
  cp_handle_t h;
  uvctx_stream_t tr;
  uvctx_tls_t tls;
  uvctx_stream_t* s;
  int is_tls;
  int hs_calls;
  int hs_status;
  int closed;
  void* owner;
} tend_t;

static uvctx_tls_config_t* srv_cfg;
static uvctx_tls_config_t* cli_cfg;

enum { PLAIN = -1 };

/* Makes `e` (with a connected e->h) a stream: plain, or a TLS session of
 * `role`. */
static void tend_wrap(tend_t* e, int role) {
  ck_assert_int_eq(uvctx_stream_init_uv(&e->tr, &e->h.s), 0);
  e->is_tls = role != PLAIN;
  if (e->is_tls) {
    ck_assert_int_eq(
        uvctx_tls_init(&e->tls, role == UVCTX_TLS_SERVER ? srv_cfg : cli_cfg,
                       &e->tr, role == UVCTX_TLS_SERVER ? NULL : "localhost"),
        0);
    e->s = &e->tls.stream;
  } else {
    e->s = &e->tr;
  }
  e->s->data = e;
}

static void tend_hs_cb(uvctx_tls_t* tls, int status) {
  tend_t* e = tls->stream.data;
  e->hs_calls++;
  e->hs_status = status;
}

static void tend_handshake(tend_t* e) {
  ck_assert_int_eq(uvctx_tls_handshake(&e->tls, NULL, tend_hs_cb), 0);
}

static void tend_closed_cb(uvctx_stream_t* s) {
  tend_t* e = s->data;
  e->closed++;
}

/* Closes a TLS peer and waits for its close callback. */
static void tend_close_wait(tend_t* e) {
  if (!uvctx_stream_is_closing(e->s))
    uvctx_stream_close(e->s, tend_closed_cb);
  UVT_RUN_UNTIL(e->closed == 1);
}

/* ---- fixture ------------------------------------------------------------- */

static cp_listener_t L;

static void tc_setup(void) {
  uvctx_t* warm;
  uvt_setup();
  /* Make the deadline heap's array now (see test_copy.c), so that the
   * per-test allocation checks see only the test's own. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3600 * 1000, &warm), 0);
  uvctx_release(warm);
  srv_cfg = tu_server_cfg(0);
  cli_cfg = tu_client_cfg(0);
  cp_listen(&L);
}

static void tc_teardown(void) {
  cp_unlisten(&L);
  cp_wait_closed();
  uvctx_tls_config_unref(srv_cfg);
  uvctx_tls_config_unref(cli_cfg);
  ck_assert_uint_eq(uvctx__tls_live_ssl(), 0);
  uvt_teardown();
}

/* ---- copy: sender -> [in | copy | out] -> sink --------------------------- */

enum { M_TLS_SRC, M_TLS_DST, M_TLS_BOTH, M_N };
static const char* const mode_names[] = {"tls src", "tls dst", "tls both"};

typedef struct relay_s {
  tend_t in;
  tend_t out;
  uvctx_copy_t copy;
  int closes;
} relay_t;

typedef struct {
  relay_t* r;
  int calls;
  int status;
  uint64_t bytes;
  int in_closing;
  int out_closing;
  int released;
  tend_t snd; /* plain: only snd.h is used, by psnd */
  tend_t sink;
  cp_sender_t psnd;
  cp_sink_t psink;
  cp_sender_t tsnd;
  cp_sink_t tsink;
  uvctx_t* ctx;
  uint64_t alloc_base;
  size_t out_held_at_end; /* the relay's TLS destination, at on_copy */
} world_t;

static world_t W;

static void relay_closed(uvctx_stream_t* s) {
  relay_t* r = ((tend_t*)s->data)->owner;
  if (--r->closes == 0) {
    W.released = 1;
    free(r);
  }
}

static void on_copy(uvctx_copy_t* c, int status, uint64_t bytes) {
  relay_t* r = c->data;
  W.calls++;
  W.status = status;
  W.bytes = bytes;
  W.in_closing = uvctx_stream_is_closing(r->in.s);
  W.out_closing = uvctx_stream_is_closing(r->out.s);
  ck_assert_uint_eq(uvctx_stream_writes_pending(r->out.s), 0);
  ck_assert_uint_eq(uvctx_copy_bytes(c), bytes);
  if (r->out.is_tls)
    W.out_held_at_end = uvctx__tls_held_bytes(&r->out.tls);
  if (status != 0) {
    /* The copy closed both sessions (and so their transports); their
     * close callbacks have run: the memory goes now, under ASan's eyes. */
    ck_assert(W.in_closing && W.out_closing);
    W.released = 1;
    free(r);
    return;
  }
  r->closes = 2;
  uvctx_stream_close(r->in.s, relay_closed);
  uvctx_stream_close(r->out.s, relay_closed);
}

static int src_tls(int mode) {
  return mode != M_TLS_DST;
}

static int dst_tls(int mode) {
  return mode != M_TLS_SRC;
}

/* Connects sender -> relay.in and relay.out -> sink over loopback TCP,
 * with TLS on the hops the mode says. The relay's sessions start their
 * handshakes implicitly (the copy's first read or write); the peers call
 * uvctx_tls_handshake(). */
static void world_begin(int mode) {
  relay_t* r;
  memset(&W, 0, sizeof(W));
  W.alloc_base = uvctx_live_allocations();
  r = calloc(1, sizeof(*r));
  ck_assert_ptr_nonnull(r);
  W.r = r;
  r->in.owner = r;
  r->out.owner = r;
  r->copy.data = r;
  cp_tcp_pair(&L, &W.snd.h, &r->in.h);
  cp_tcp_pair(&L, &r->out.h, &W.sink.h);
  tend_wrap(&r->in, src_tls(mode) ? UVCTX_TLS_SERVER : PLAIN);
  tend_wrap(&r->out, dst_tls(mode) ? UVCTX_TLS_CLIENT : PLAIN);
  if (src_tls(mode))
    tend_wrap(&W.snd, UVCTX_TLS_CLIENT);
  if (dst_tls(mode))
    tend_wrap(&W.sink, UVCTX_TLS_SERVER);
}

static void world_start_copy(uvctx_t* ctx, const uvctx_copy_options_t* o) {
  ck_assert_int_eq(
      uvctx_copy_start(&W.r->copy, ctx, W.r->in.s, W.r->out.s, o, on_copy), 0);
  ck_assert_int_eq(W.calls, 0); /* never inside the start */
}

static void world_start_sink(size_t max_read, uint64_t seed) {
  if (W.sink.is_tls) {
    tend_handshake(&W.sink);
    cp_sink_init_stream(&W.tsink, W.sink.s, max_read, seed, 1);
  } else {
    cp_sink_init(&W.psink, &W.sink.h.s, max_read, seed, 1);
  }
}

static void world_start_sender(uint64_t total, size_t max_chunk,
                               uint64_t seed) {
  if (W.snd.is_tls) {
    tend_handshake(&W.snd);
    cp_sender_start_stream(&W.tsnd, W.snd.s, total, max_chunk, seed, 1);
  } else {
    cp_sender_start(&W.psnd, &W.snd.h.s, total, max_chunk, seed, 1);
  }
}

static uint64_t sink_received(void) {
  return W.sink.is_tls ? W.tsink.received : W.psink.received;
}

static uint64_t sink_bad(void) {
  return W.sink.is_tls ? W.tsink.bad : W.psink.bad;
}

static int sink_eof(void) {
  return W.sink.is_tls ? W.tsink.eof : W.psink.eof;
}

static int sink_ended(void) {
  return W.sink.is_tls ? (W.tsink.eof || W.tsink.err)
                       : (W.psink.eof || W.psink.err);
}

static uint64_t sender_written(void) {
  return W.snd.is_tls ? W.tsnd.written : W.psnd.written;
}

/* Waits for the copy, closes the peers and proves everything went: the
 * relay's memory, every peer write, every context and allocation. */
static void world_end(void) {
  uvctx_loop_counts_t n;
  UVT_RUN_UNTIL(W.calls >= 1);
  uvt_run_for(2);
  ck_assert_int_eq(W.calls, 1);
  if (W.status != 0)
    ck_assert(W.in_closing && W.out_closing);
  if (W.snd.is_tls)
    tend_close_wait(&W.snd);
  else
    cp_close(&W.snd.h);
  if (W.sink.is_tls) {
    tend_close_wait(&W.sink);
    cp_sink_free(&W.tsink);
  } else {
    cp_close(&W.sink.h);
    cp_sink_free(&W.psink);
  }
  cp_wait_closed();
  UVT_RUN_UNTIL(W.released);
  if (W.snd.is_tls)
    ck_assert_uint_eq(W.tsnd.writes_started, W.tsnd.writes_done);
  else
    ck_assert_uint_eq(W.psnd.writes_started, W.psnd.writes_done);
  uvctx_release(W.ctx);
  W.ctx = NULL;
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, 0);
  ck_assert_uint_eq(n.watches, 0);
  ck_assert_uint_eq(n.deadlines, 0);
  ck_assert_uint_le(uvctx_live_allocations(), W.alloc_base);
  ck_assert_uint_eq(uvctx__tls_live_ssl(), 0);
}

/* ---- byte-exact transfers ------------------------------------------------ */

#define BIG_PLAIN (64ull << 20)
#define BIG_SANITIZED (8ull << 20)
#define NSIZES 6

static const uint64_t sizes[NSIZES] = {0, 1, 65535, 65536, 65537, 0};

START_TEST(test_transfer) {
  int mode = _i / NSIZES;
  int si = _i % NSIZES;
  uint64_t total =
      si == NSIZES - 1 ? UVT_SCALE(BIG_PLAIN, BIG_SANITIZED) : sizes[si];
  uint64_t seed = uvt_seed("test_transfer");
  uint64_t t0;
  uvt_watchdog_set(120000);
  world_begin(mode);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &W.ctx), 0);
  world_start_copy(W.ctx, NULL);
  world_start_sink(64 * 1024, seed | 1);
  t0 = uv_hrtime();
  world_start_sender(total, 128 * 1024, seed);
  UVT_RUN_UNTIL_MS(W.calls == 1 && sink_eof(), 100000);
  if (total >= (8u << 20))
    fprintf(stderr, "transfer, %s: %" PRIu64 " MiB in %.3f s\n",
            mode_names[mode], total >> 20, (double)(uv_hrtime() - t0) / 1e9);
  ck_assert_msg(W.status == 0, "%s, %" PRIu64 " B: status %s", mode_names[mode],
                total, uv_err_name(W.status));
  ck_assert_uint_eq(W.bytes, total);
  ck_assert_uint_eq(sink_received(), total);
  ck_assert_uint_eq(sink_bad(), 0);
  ck_assert_uint_eq(sender_written(), total);
  /* Status 0 leaves both streams open (src at EOF, dst shut down, with
   * close_notify first when it is a session: the sink saw UV_EOF, not a
   * truncation). */
  ck_assert(!W.in_closing && !W.out_closing);
  if (W.snd.is_tls) {
    UVT_RUN_UNTIL(W.tsnd.shut_state == 2);
    ck_assert_int_eq(W.tsnd.shut_status, 0);
    ck_assert_int_eq(W.snd.hs_status, 0);
  }
  if (W.sink.is_tls)
    ck_assert_int_eq(W.sink.hs_status, 0);
  world_end();
}
END_TEST

/* ---- cancel and deadline mid-transfer ------------------------------------ */

static void cancel_when_flowing(cp_sink_t* k) {
  if (k->received >= 100000 && uvctx_err(W.ctx) == 0)
    ck_assert_int_eq(uvctx_cancel(W.ctx), 0);
}

static void cancel_when_flowing_plain(cp_sink_t* k) {
  if (k->received >= 100000 && uvctx_err(W.ctx) == 0)
    ck_assert_int_eq(uvctx_cancel(W.ctx), 0);
}

/* An endless sender; the sink cancels the context once 100 kB arrived.
 * The copy ends with UV_ECANCELED exactly once, both sessions closed, and
 * the peers see the relay go. */
START_TEST(test_cancel_mid_transfer) {
  int mode = _i;
  world_begin(mode);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &W.ctx), 0);
  world_start_copy(W.ctx, NULL);
  world_start_sink(64 * 1024, 0);
  if (W.sink.is_tls)
    W.tsink.on_data = cancel_when_flowing;
  else
    W.psink.on_data = cancel_when_flowing_plain;
  world_start_sender(UINT64_MAX, 64 * 1024, 5);
  UVT_RUN_UNTIL(W.calls == 1);
  ck_assert_msg(W.status == UV_ECANCELED, "%s: status %s", mode_names[mode],
                uv_err_name(W.status));
  ck_assert_uint_gt(W.bytes, 0);
  ck_assert(W.in_closing && W.out_closing);
  UVT_RUN_UNTIL(sink_ended());
  ck_assert_uint_eq(sink_bad(), 0);
  ck_assert_uint_ge(sink_received(), 100000);
  if (W.snd.is_tls) /* its writes fail once the relay is gone */
    UVT_RUN_UNTIL(W.tsnd.err != 0 && W.tsnd.inflight == 0);
  world_end();
}
END_TEST

START_TEST(test_deadline_mid_transfer) {
  int mode = _i;
  uint64_t t0 = uv_hrtime();
  /* Long enough for the handshakes and the first bytes, which sanitizers
   * slow down several times. */
  uint64_t deadline_ms = UVT_SCALE(150, 1000);
  uint64_t ms;
  world_begin(mode);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, deadline_ms, &W.ctx), 0);
  world_start_copy(W.ctx, NULL);
  world_start_sink(64 * 1024, 0);
  world_start_sender(UINT64_MAX, 64 * 1024, 3);
  UVT_RUN_UNTIL(W.calls == 1);
  ms = (uv_hrtime() - t0) / 1000000;
  ck_assert_msg(W.status == UV_ETIMEDOUT, "%s: status %s", mode_names[mode],
                uv_err_name(W.status));
  ck_assert_uint_gt(W.bytes, 0);
  UVT_RUN_UNTIL(sink_ended());
  ck_assert_uint_eq(sink_bad(), 0);
  if (!UVCTX_TEST_SANITIZED) {
    ck_assert_uint_ge(ms, deadline_ms);
    ck_assert_uint_lt(ms, 5000);
  }
  world_end();
}
END_TEST

/* A context already done: the copy over TLS still calls back from the
 * loop, with the context's error, and nothing moved. */
START_TEST(test_ctx_done_before_start) {
  world_begin(M_TLS_BOTH);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &W.ctx), 0);
  world_start_copy(W.ctx, NULL);
  world_start_sink(4096, 0);
  world_start_sender(1000, 100, 7);
  UVT_RUN_UNTIL(W.calls == 1);
  ck_assert_int_eq(W.status, UV_ETIMEDOUT);
  ck_assert_uint_eq(W.bytes, 0);
  UVT_RUN_UNTIL(sink_ended());
  ck_assert_uint_eq(sink_received(), 0);
  world_end();
}
END_TEST

/* ---- the high-water mark with a TLS destination -------------------------- */

static size_t max_queue;
static uint64_t samples;
static uv_check_t qcheck;

static void sample_queue(void) {
  size_t q;
  if (W.calls != 0 || W.r == NULL || uvctx_stream_is_closing(W.r->out.s))
    return;
  q = uvctx_stream_write_queue_size(W.r->out.s);
  if (q > max_queue)
    max_queue = q;
  samples++;
}

static void qcheck_cb(uv_check_t* c) {
  (void)c;
  sample_queue();
}

static void sink_sample(cp_sink_t* k) {
  (void)k;
  sample_queue();
}

/* A plain source to be copied into a TLS session, with small kernel
 * buffers on the session's side (so that its peer's stalls show at once)
 * and `cb` sampling the session every loop turn. */
static void world_begin_tls_dst(uv_check_t* c, uv_check_cb cb) {
  world_begin(M_TLS_DST);
  cp_small_buffers(&W.r->out.h, 32 * 1024);
  cp_small_buffers(&W.sink.h, 32 * 1024);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &W.ctx), 0);
  ck_assert_int_eq(uv_check_init(uvt_loop, c), 0);
  ck_assert_int_eq(uv_check_start(c, cb), 0);
}

/* A plain source copied into a TLS session whose peer reads slowly: the
 * session's write queue (plaintext not yet handed to the kernel) never
 * exceeds the high-water mark, sampled every loop turn and every sink
 * read, while the pool is larger than the mark. */
START_TEST(test_high_water_tls_dst) {
  uvctx_copy_options_t o;
  const uint64_t total = 2u << 20;
  memset(&o, 0, sizeof(o));
  o.buffer_size = 16 * 1024;
  o.buffers = 32;
  o.high_water = 64 * 1024;
  o.low_water = 16 * 1024;
  max_queue = 0;
  samples = 0;
  world_begin_tls_dst(&qcheck, qcheck_cb);
  world_start_copy(W.ctx, &o);
  world_start_sink(8 * 1024, 0);
  W.tsink.on_data = sink_sample;
  cp_sink_limit(&W.tsink, 4u << 20);
  world_start_sender(total, 64 * 1024, 11);
  UVT_RUN_UNTIL_MS(W.calls == 1 && sink_eof(), 30000);
  fprintf(stderr,
          "high water, TLS dst: max queue %zu of %zu over %" PRIu64
          " samples\n",
          max_queue, o.high_water, samples);
  ck_assert_int_eq(W.status, 0);
  ck_assert_uint_eq(sink_received(), total);
  ck_assert_uint_eq(sink_bad(), 0);
  ck_assert_uint_le(max_queue, o.high_water);
  ck_assert_uint_gt(max_queue, 0); /* the mark was approached */
  cp_close_h((uv_handle_t*)&qcheck);
  world_end();
}
END_TEST

/* ---- memory under a slow reader ----------------------------------------- */

static size_t max_held;
static size_t max_out_queue;

static void held_check_cb(uv_check_t* c) {
  size_t n;
  (void)c;
  if (W.calls != 0 || W.r == NULL || uvctx_stream_is_closing(W.r->out.s))
    return;
  n = uvctx__tls_held_bytes(&W.r->out.tls);
  if (n > max_held)
    max_held = n;
  n = uvctx_stream_write_queue_size(W.r->out.s);
  if (n > max_out_queue)
    max_out_queue = n;
}

/* The stalled reader reads again: every byte arrives, in order, the copy
 * counts each once, and once it is done the session holds no buffer. */
static void resume_reader_all_arrive(uint64_t total, uv_check_t* check) {
  cp_sink_resume(&W.tsink);
  UVT_RUN_UNTIL_MS(W.calls == 1 && sink_eof(), 30000);
  ck_assert_int_eq(W.status, 0);
  ck_assert_uint_eq(W.bytes, total);
  ck_assert_uint_eq(sink_received(), total);
  ck_assert_uint_eq(sink_bad(), 0);
  ck_assert_uint_eq(W.out_held_at_end, 0);
  cp_close_h((uv_handle_t*)check);
}

/* A copy with room for four 64 KiB buffers in flight writes into a TLS
 * session whose peer stops reading. The session encrypts only as fast as
 * the transport takes the records, so what it holds of its own (checked
 * every loop turn) stays within what the kernel left of one encryption
 * unit; the rest waits as plaintext in the copy's buffers. Once the peer
 * reads again every byte arrives, in order, and when the copy is done the
 * session holds no buffer at all. */
START_TEST(test_slow_reader_pins_one_unit) {
  uvctx_copy_options_t o;
  static uv_check_t hcheck;
  const uint64_t total = 4u << 20;
  memset(&o, 0, sizeof(o));
  o.buffer_size = 64 * 1024;
  o.buffers = 8;
  o.high_water = 4 * 64 * 1024;
  max_held = 0;
  max_out_queue = 0;
  world_begin_tls_dst(&hcheck, held_check_cb);
  world_start_copy(W.ctx, &o);
  tend_handshake(&W.sink);
  cp_sink_init_stream(&W.tsink, W.sink.s, 64 * 1024, 0, 0); /* paused */
  world_start_sender(total, 64 * 1024, 5);
  /* Until the copy is held up by the session: more queued than one
   * buffer, so the session had more than one unit's worth to encrypt. */
  UVT_RUN_UNTIL(max_out_queue > 64 * 1024);
  uvt_run_for(300);
  ck_assert_int_eq(W.calls, 0);
  ck_assert_uint_lt(sink_received() + 1, total);
  fprintf(stderr,
          "slow reader: the session held at most %zu bytes, %zu queued\n",
          max_held, max_out_queue);
  /* One unit, of which the transport took a part: an rx buffer of the
   * handshake's size is not held either, once read. */
  ck_assert_uint_le(max_held, 66 * 1024);
  resume_reader_all_arrive(total, &hcheck);
  world_end();
}
END_TEST

/* A relay's copy: buffers from a pool, at most one queued. */
static uvctx_copy_pool_t* relay_pool;
static size_t max_pool_stalled;

static int pool_sampling;

static void pool_check_cb(uv_check_t* c) {
  held_check_cb(c);
  if (pool_sampling && W.calls == 0 &&
      uvctx_copy_pool_bytes(relay_pool) > max_pool_stalled)
    max_pool_stalled = uvctx_copy_pool_bytes(relay_pool);
}

static void relay_copy_begin(uv_check_t* c, int reading) {
  uvctx_copy_options_t o;
  memset(&o, 0, sizeof(o));
  ck_assert_int_eq(uvctx_copy_pool_init(&relay_pool, uvt_loop, 0, 0), 0);
  o.pool = relay_pool;
  o.high_water = 64 * 1024;
  max_held = 0;
  max_out_queue = 0;
  max_pool_stalled = 0;
  pool_sampling = 0;
  world_begin_tls_dst(c, pool_check_cb);
  world_start_copy(W.ctx, &o);
  tend_handshake(&W.sink);
  cp_sink_init_stream(&W.tsink, W.sink.s, 64 * 1024, 0, reading);
}

/* Until the copy is held up by the session (the session keeps ciphertext
 * its transport refused, the copy reads no more), then as long again
 * sampling what the pool has lent every loop turn. */
static void relay_copy_stall(uint64_t total) {
  UVT_RUN_UNTIL(max_out_queue > 0);
  uvt_run_for(300);
  pool_sampling = 1;
  uvt_run_for(300);
  pool_sampling = 0;
  ck_assert_int_eq(W.calls, 0);
  ck_assert_uint_lt(sink_received() + 1, total);
  ck_assert_uint_gt(uvctx_stream_write_queue_size(W.r->out.s), 0);
  fprintf(stderr,
          "relay copy, slow reader: session held at most %zu bytes, %zu "
          "queued; pool lent %zu while stalled\n",
          max_held, max_out_queue, max_pool_stalled);
}

/* The pool goes first: the buffers it keeps count as live allocations. */
static void relay_copy_end(void) {
  UVT_RUN_UNTIL(W.calls >= 1);
  ck_assert_int_eq(uvctx_copy_pool_close(relay_pool), 0);
  relay_pool = NULL;
  world_end();
}

/* The relay's case: a copy from a pool with a high-water mark of one
 * buffer writes into a TLS session whose peer stops reading. The session
 * takes each read at once (encrypted, and what its transport refused
 * kept in a chunk of that size), so while the copy waits for the reader
 * it holds no buffer at all (checked every loop turn): a held connection
 * costs the ciphertext the kernel left, not that and a plaintext buffer.
 * The copy's queue (the high-water mark) counts what the session kept.
 * Once the peer reads again every byte arrives, in order, and the copy
 * counts each exactly once. */
START_TEST(test_slow_reader_holds_no_copy_buffer) {
  static uv_check_t hcheck;
  const uint64_t total = 4u << 20;
  relay_copy_begin(&hcheck, 0); /* the reader stopped */
  world_start_sender(total, 64 * 1024, 9);
  relay_copy_stall(total);
  ck_assert_uint_eq(max_pool_stalled, 0);
  ck_assert_uint_eq(uvctx_copy_pool_bytes(relay_pool), 0);
  ck_assert_uint_le(max_held, 66 * 1024);
  ck_assert_uint_le(max_out_queue, 64 * 1024);
  resume_reader_all_arrive(total, &hcheck);
  relay_copy_end();
}
END_TEST

/* The same copy cancelled while the session still keeps bytes the copy
 * handed it: those are not counted as copied, so the count never exceeds
 * what the reader receives once it reads what the kernel had taken. */
START_TEST(test_cut_counts_no_byte_the_session_kept) {
  static uv_check_t hcheck;
  const uint64_t total = 4u << 20;
  relay_copy_begin(&hcheck, 0); /* the reader stopped */
  world_start_sender(total, 64 * 1024, 13);
  relay_copy_stall(total);
  ck_assert_int_eq(uvctx_cancel(W.ctx), 0);
  UVT_RUN_UNTIL(W.calls == 1);
  ck_assert_int_eq(W.status, UV_ECANCELED);
  cp_sink_resume(&W.tsink);
  UVT_RUN_UNTIL(sink_ended());
  fprintf(stderr,
          "cut with bytes kept: counted %" PRIu64 ", received %" PRIu64 "\n",
          W.bytes, sink_received());
  ck_assert_uint_gt(W.bytes, 0);
  ck_assert_uint_le(W.bytes, sink_received());
  ck_assert_uint_eq(sink_bad(), 0);
  cp_close_h((uv_handle_t*)&hcheck);
  relay_copy_end();
}
END_TEST

/* ---- the session's try-write ----------------------------------------------
 */

static char tw_rbuf[64 * 1024];
static uint64_t tw_received;
static int tw_calls;
static int tw_status;

static void tw_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* b) {
  (void)s;
  (void)sug;
  *b = uv_buf_init(tw_rbuf, sizeof(tw_rbuf));
}

static void tw_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)b;
  if (n > 0)
    tw_received += (uint64_t)n;
}

static void tw_write_cb(uvctx_write_t* w, int status) {
  (void)w;
  tw_calls++;
  tw_status = status;
}

/* The session's own try-write: UV_EAGAIN before the handshake ends; then
 * it takes a 64 KiB buffer whole even when its transport (small kernel
 * buffers, a peer that does not read) takes only part of the ciphertext.
 * What it keeps counts in its write queue, and while it keeps some the
 * answer is UV_EAGAIN; an empty write queued then completes only once the
 * reader has read, and every byte taken arrives. */
START_TEST(test_try_write_takes_whole_or_waits) {
  static tend_t a, b;
  static char data[64 * 1024];
  uv_buf_t ub = uv_buf_init(data, sizeof(data));
  uvctx_write_t w;
  uint64_t taken = 0;
  uint64_t base = uvctx_live_allocations();
  int rc;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  tw_received = 0;
  tw_calls = 0;
  cp_tcp_pair(&L, &a.h, &b.h);
  cp_small_buffers(&a.h, 32 * 1024);
  cp_small_buffers(&b.h, 32 * 1024);
  tend_wrap(&a, UVCTX_TLS_CLIENT);
  tend_wrap(&b, UVCTX_TLS_SERVER);
  ck_assert_int_eq(uvctx_stream_try_write(a.s, &ub, 1), UV_EAGAIN);
  tend_handshake(&a);
  tend_handshake(&b);
  UVT_RUN_UNTIL(a.hs_calls == 1 && b.hs_calls == 1);
  ck_assert_int_eq(a.hs_status, 0);
  ck_assert_int_eq(b.hs_status, 0);
  /* Until the transport refuses part of a unit: b does not read. */
  while (uvctx_stream_write_queue_size(a.s) == 0) {
    ck_assert_uint_lt(taken, 64u << 20);
    rc = uvctx_stream_try_write(a.s, &ub, 1);
    ck_assert_int_eq(rc, (int)sizeof(data));
    taken += (uint64_t)rc;
    uvt_run_for(1);
  }
  ck_assert_uint_le(uvctx_stream_write_queue_size(a.s), sizeof(data));
  ck_assert_uint_le(uvctx__tls_held_bytes(&a.tls), 66 * 1024);
  ck_assert_int_eq(uvctx_stream_try_write(a.s, &ub, 1), UV_EAGAIN);
  ub.len = 0;
  ck_assert_int_eq(uvctx_stream_write(&w, a.s, &ub, 1, tw_write_cb), 0);
  uvt_run_for(50);
  ck_assert_int_eq(tw_calls, 0);
  ck_assert_int_eq(uvctx_stream_read_start(b.s, tw_alloc, tw_read), 0);
  UVT_RUN_UNTIL(tw_calls == 1 && tw_received == taken);
  ck_assert_int_eq(tw_status, 0);
  ck_assert_uint_eq(uvctx_stream_write_queue_size(a.s), 0);
  fprintf(stderr,
          "session try-write: %" PRIu64 " bytes taken before one "
          "was kept\n",
          taken);
  tend_close_wait(&a);
  tend_close_wait(&b);
  cp_wait_closed();
  ck_assert_uint_le(uvctx_live_allocations(), base);
}
END_TEST

/* ---- allocation failure -------------------------------------------------- */

/* The counting allocator of helpers.h, which also notes the size of the
 * allocation it failed. */
static size_t failed_size;

static void* rec_malloc(size_t n) {
  if (!uvt_alloc_should_fail__())
    return malloc(n);
  failed_size = n;
  return NULL;
}

static void* rec_realloc(void* p, size_t n) {
  if (!uvt_alloc_should_fail__())
    return realloc(p, n);
  failed_size = n;
  return NULL;
}

static void* rec_calloc(size_t n, size_t size) {
  if (!uvt_alloc_should_fail__())
    return calloc(n, size);
  failed_size = n * size;
  return NULL;
}

static void alloc_setup(void) {
  ck_assert_int_eq(
      uvctx_replace_allocator(rec_malloc, rec_realloc, rec_calloc, free), 0);
  tc_setup();
}

/* An encryption unit: 66 KiB and a chunk's header. */
static int is_unit_size(size_t n) {
  return n > 66 * 1024 && n <= 66 * 1024 + 1024;
}

/* The relay's copy into a TLS session with small kernel buffers (so that
 * units are refused in part and what is left is kept in chunks of its
 * own), the Nth allocation after the copy started failing, for every N
 * until a transfer needs no more: the handshake's chunks and receive
 * buffers of both sessions, the pool's buffers, the units, the chunks of
 * what the transport left. Each run ends with the copy's callback, once:
 * a failed pool buffer or unit with UV_ENOMEM, whatever else with
 * UV_ENOMEM or the error the peer's failure caused (or 0, where nothing
 * needed the memory after all); the teardown proves that nothing leaked,
 * no SSL object or context is left and both loops close. */
START_TEST(test_enomem_in_transfer) {
  static uv_check_t hcheck;
  const uint64_t total = 256u << 10;
  int units = 0, buffers = 0, nomem = 0;
  long n;
  for (n = 1; n < 2000; n++) {
    relay_copy_begin(&hcheck, 1);
    failed_size = 0;
    uvt_alloc_fail_nth(n);
    world_start_sender(total, 64 * 1024, (uint64_t)n);
    UVT_RUN_UNTIL_MS(W.calls == 1 && sink_ended(), 30000);
    uvt_alloc_disarm();
    ck_assert_uint_eq(sink_bad(), 0);
    if (!uvt_alloc_failed()) {
      /* Past the last allocation: the transfer as it is without one. */
      ck_assert_int_eq(W.status, 0);
      ck_assert_uint_eq(W.bytes, total);
      ck_assert_uint_eq(sink_received(), total);
      cp_close_h((uv_handle_t*)&hcheck);
      relay_copy_end();
      break;
    }
    if (is_unit_size(failed_size) || failed_size == 64 * 1024) {
      ck_assert_msg(W.status == UV_ENOMEM,
                    "allocation %ld (%zu bytes): status %s", n, failed_size,
                    uv_err_name(W.status));
      units += is_unit_size(failed_size);
      buffers += failed_size == 64 * 1024;
    }
    nomem += W.status == UV_ENOMEM;
    if (W.status == 0)
      ck_assert_uint_eq(W.bytes, total);
    cp_close_h((uv_handle_t*)&hcheck);
    relay_copy_end();
  }
  fprintf(stderr,
          "enomem in transfer: %ld allocations, %d failed with UV_ENOMEM "
          "(%d units, %d pool buffers)\n",
          n - 1, nomem, units, buffers);
  ck_assert_int_lt(n, 2000);
  ck_assert_int_gt(units, 0);
  ck_assert_int_gt(buffers, 0);
}
END_TEST

/* ---- pipe: a TLS-terminating proxy --------------------------------------- */

/* Client P (TLS) <-> [a: TLS server | pipe | b: plain] <-> Q (plain). */
typedef struct proxy_s {
  tend_t a;
  tend_t b;
  uvctx_pipe_t pipe;
  int closes;
} proxy_t;

static proxy_t* X;
static tend_t P; /* the TLS client */
static cp_handle_t Q_h;
static int pcalls;
static int pstatus;
static uint64_t a_to_b;
static uint64_t b_to_a;
static int preleased;

static void proxy_closed(uvctx_stream_t* s) {
  proxy_t* x = ((tend_t*)s->data)->owner;
  if (--x->closes == 0) {
    free(x);
    preleased = 1;
  }
}

static void on_pipe(uvctx_pipe_t* p, int st, uint64_t ab, uint64_t ba) {
  proxy_t* x = p->data;
  pcalls++;
  pstatus = st;
  a_to_b = ab;
  b_to_a = ba;
  ck_assert_uint_eq(uvctx_stream_writes_pending(x->a.s), 0);
  ck_assert_uint_eq(uvctx_stream_writes_pending(x->b.s), 0);
  if (st != 0) {
    ck_assert(uvctx_stream_is_closing(x->a.s) &&
              uvctx_stream_is_closing(x->b.s));
    free(x);
    preleased = 1;
    return;
  }
  x->closes = 2;
  uvctx_stream_close(x->a.s, proxy_closed);
  uvctx_stream_close(x->b.s, proxy_closed);
}

static void proxy_begin(uvctx_t* c) {
  X = calloc(1, sizeof(*X));
  ck_assert_ptr_nonnull(X);
  memset(&P, 0, sizeof(P));
  memset(&Q_h, 0, sizeof(Q_h));
  pcalls = 0;
  preleased = 0;
  X->a.owner = X;
  X->b.owner = X;
  X->pipe.data = X;
  cp_tcp_pair(&L, &P.h, &X->a.h);
  cp_tcp_pair(&L, &X->b.h, &Q_h);
  tend_wrap(&X->a, UVCTX_TLS_SERVER);
  tend_wrap(&X->b, PLAIN);
  tend_wrap(&P, UVCTX_TLS_CLIENT);
  tend_handshake(&P);
  ck_assert_int_eq(uvctx_pipe_start(&X->pipe, c, X->a.s, X->b.s, NULL, on_pipe),
                   0);
  ck_assert_int_eq(pcalls, 0);
}

static void proxy_end(uvctx_t* c, uint64_t alloc_base) {
  uvctx_loop_counts_t n;
  UVT_RUN_UNTIL(pcalls >= 1);
  uvt_run_for(2);
  ck_assert_int_eq(pcalls, 1);
  tend_close_wait(&P);
  cp_close(&Q_h);
  cp_wait_closed();
  UVT_RUN_UNTIL(preleased);
  uvctx_release(c);
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, 0);
  ck_assert_uint_eq(n.watches, 0);
  ck_assert_uint_le(uvctx_live_allocations(), alloc_base);
  ck_assert_uint_eq(uvctx__tls_live_ssl(), 0);
}

/* Q is an echo server built on uvctx_copy (src == dst). */
static uvctx_stream_t echo_s;
static uvctx_copy_t echo_c;
static int echo_done;
static int echo_status;

static void on_echo(uvctx_copy_t* c, int st, uint64_t bytes) {
  (void)c;
  (void)bytes;
  echo_done = 1;
  echo_status = st;
  if (st == 0)
    uvctx_stream_close(&echo_s, NULL);
}

static void echo_start(void) {
  echo_done = 0;
  ck_assert_int_eq(uvctx_stream_init_uv(&echo_s, &Q_h.s), 0);
  ck_assert_int_eq(
      uvctx_copy_start(&echo_c, uvt_bg, &echo_s, &echo_s, NULL, on_echo), 0);
}

static const uint64_t echo_sizes[] = {0, 1, 65537, 3u << 20};

/* P sends `total` bytes through the proxy to the echo and reads them back;
 * its EOF (close_notify) travels to Q as a FIN and Q's back to P as
 * close_notify. */
START_TEST(test_terminating_echo_proxy) {
  uint64_t total = echo_sizes[_i];
  uint64_t seed = uvt_seed("test_terminating_echo_proxy");
  uint64_t base = uvctx_live_allocations();
  uvctx_t* c;
  cp_sender_t snd;
  cp_sink_t sink;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  proxy_begin(c);
  echo_start();
  cp_sink_init_stream(&sink, P.s, 64 * 1024, seed | 1, 1);
  cp_sender_start_stream(&snd, P.s, total, 100000, seed, 1);
  UVT_RUN_UNTIL(pcalls == 1 && sink.eof && echo_done);
  ck_assert_msg(pstatus == 0, "pipe: %s", uv_err_name(pstatus));
  ck_assert_int_eq(echo_status, 0);
  ck_assert_int_eq(P.hs_status, 0);
  ck_assert_uint_eq(a_to_b, total);
  ck_assert_uint_eq(b_to_a, total);
  ck_assert_uint_eq(sink.received, total);
  ck_assert_uint_eq(sink.bad, 0);
  UVT_RUN_UNTIL(snd.shut_state == 2);
  ck_assert_int_eq(snd.shut_status, 0);
  cp_sink_free(&sink);
  proxy_end(c, base);
  ck_assert_uint_eq(snd.writes_started, snd.writes_done);
}
END_TEST

/* Half-close through the TLS side: P sends and shuts down (close_notify,
 * then FIN); Q starts sending only once it has seen that EOF, and P, its
 * write side shut, still reads all of it and then Q's end as
 * close_notify. */
static cp_sender_t q_snd;
static cp_sink_t q_sink;
static uint64_t second_total;

static void q_on_end(cp_sink_t* k) {
  (void)k;
  ck_assert_int_eq(pcalls, 0);
  cp_sender_start(&q_snd, &Q_h.s, second_total, 7000, 77, 1);
}

START_TEST(test_half_close_tls) {
  const uint64_t first = 200000;
  uint64_t base = uvctx_live_allocations();
  uvctx_t* c;
  cp_sender_t snd;
  cp_sink_t sink;
  second_total = 300000;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  proxy_begin(c);
  cp_sink_init(&q_sink, &Q_h.s, 8192, 5, 1);
  q_sink.on_end = q_on_end;
  memset(&q_snd, 0, sizeof(q_snd));
  cp_sink_init_stream(&sink, P.s, 8192, 3, 1);
  cp_sender_start_stream(&snd, P.s, first, 9000, 7, 1);
  UVT_RUN_UNTIL(pcalls == 1 && sink.eof);
  ck_assert_msg(pstatus == 0, "pipe: %s", uv_err_name(pstatus));
  ck_assert_uint_eq(a_to_b, first);
  ck_assert_uint_eq(b_to_a, second_total);
  ck_assert_uint_eq(q_sink.received, first);
  ck_assert_uint_eq(sink.received, second_total);
  ck_assert_uint_eq(q_sink.bad + sink.bad, 0);
  ck_assert_int_eq(snd.shut_status, 0);
  cp_sink_free(&sink);
  cp_sink_free(&q_sink);
  proxy_end(c, base);
}
END_TEST

/* Both directions endless; cancelled once Q has 100 kB: UV_ECANCELED,
 * both sides closed, the peers see the proxy go. */
static uvctx_t* pctx;

static void cancel_pipe_when_flowing(cp_sink_t* k) {
  if (k->received >= 100000 && uvctx_err(pctx) == 0)
    ck_assert_int_eq(uvctx_cancel(pctx), 0);
}

START_TEST(test_pipe_cancel_mid_transfer) {
  uint64_t base = uvctx_live_allocations();
  cp_sender_t snd;
  cp_sink_t sink;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &pctx), 0);
  proxy_begin(pctx);
  cp_sink_init(&q_sink, &Q_h.s, 8192, 0, 1);
  q_sink.on_data = cancel_pipe_when_flowing;
  cp_sink_init_stream(&sink, P.s, 8192, 0, 1);
  cp_sender_start_stream(&snd, P.s, UINT64_MAX, 60000, 1, 0);
  cp_sender_start(&q_snd, &Q_h.s, UINT64_MAX, 60000, 2, 0);
  UVT_RUN_UNTIL(pcalls == 1);
  ck_assert_msg(pstatus == UV_ECANCELED, "pipe: %s", uv_err_name(pstatus));
  ck_assert_uint_ge(a_to_b, 100000);
  UVT_RUN_UNTIL((sink.eof || sink.err) && (q_sink.eof || q_sink.err));
  ck_assert_uint_eq(sink.bad + q_sink.bad, 0);
  /* The proxy went away without close_notify. */
  ck_assert_int_ne(sink.eof, 1);
  UVT_RUN_UNTIL(snd.inflight == 0);
  cp_sink_free(&sink);
  cp_sink_free(&q_sink);
  proxy_end(pctx, base);
  ck_assert_uint_eq(snd.writes_started, snd.writes_done);
  ck_assert_uint_eq(q_snd.writes_started, q_snd.writes_done);
}
END_TEST

static Suite* tls_copy_suite(void) {
  Suite* s = suite_create("tls_copy");
  TCase* tc = tcase_create("transfer");
  tcase_add_checked_fixture(tc, tc_setup, tc_teardown);
  tcase_add_loop_test(tc, test_transfer, 0, M_N * NSIZES);
  suite_add_tcase(s, tc);
  tc = tcase_create("cancel");
  tcase_add_checked_fixture(tc, tc_setup, tc_teardown);
  tcase_add_loop_test(tc, test_cancel_mid_transfer, 0, M_N);
  tcase_add_loop_test(tc, test_deadline_mid_transfer, 0, M_N);
  tcase_add_test(tc, test_ctx_done_before_start);
  suite_add_tcase(s, tc);
  tc = tcase_create("flow");
  tcase_add_checked_fixture(tc, tc_setup, tc_teardown);
  tcase_add_test(tc, test_high_water_tls_dst);
  tcase_add_test(tc, test_slow_reader_pins_one_unit);
  tcase_add_test(tc, test_slow_reader_holds_no_copy_buffer);
  tcase_add_test(tc, test_cut_counts_no_byte_the_session_kept);
  tcase_add_test(tc, test_try_write_takes_whole_or_waits);
  suite_add_tcase(s, tc);
  tc = tcase_create("enomem");
  tcase_add_checked_fixture(tc, alloc_setup, tc_teardown);
  tcase_add_test(tc, test_enomem_in_transfer);
  suite_add_tcase(s, tc);
  tc = tcase_create("pipe");
  tcase_add_checked_fixture(tc, tc_setup, tc_teardown);
  tcase_add_loop_test(tc, test_terminating_echo_proxy, 0, 4);
  tcase_add_test(tc, test_half_close_tls);
  tcase_add_test(tc, test_pipe_cancel_mid_transfer);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return uvt_main(tls_copy_suite());
}
