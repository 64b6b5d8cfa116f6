/* test_pipe.c owns the Check suite of uvctx_pipe_start(): a tiny echo
 * proxy between loopback sockets (both directions, half-close), half-close
 * in either order, cancellation, a peer's reset, and the idle timeout fed
 * by progress in either direction. */
#include <signal.h>

#include "copy_peers.h"

/* Peer P <-> [a | pipe | b] <-> peer Q. */
typedef struct proxy_s {
  cp_handle_t a_h;
  cp_handle_t b_h;
  uvctx_stream_t a;
  uvctx_stream_t b;
  uvctx_pipe_t pipe;
  int closes;
} proxy_t;

static cp_listener_t L;
static int listening;
static cp_handle_t p_h;
static cp_handle_t q_h;
static proxy_t* X;
static uvctx_t* ctx;
static int calls;
static int status;
static uint64_t a_to_b;
static uint64_t b_to_a;
static int a_closing;
static int b_closing;
static int released;
static uint64_t alloc_base;

static void pp_setup(void) {
  uvctx_t* warm;
  listening = 0;
  uvt_setup();
  /* Make the deadline heap's array now (see test_copy.c). */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3600 * 1000, &warm), 0);
  uvctx_release(warm);
}

static void pp_teardown(void) {
  if (listening) {
    cp_unlisten(&L);
    cp_wait_closed();
  }
  uvt_teardown();
}

static void proxy_closed(uvctx_stream_t* s) {
  proxy_t* x = s->data;
  if (--x->closes == 0) {
    free(x);
    released = 1;
  }
}

/* uvctx_pipe_bytes() as read inside the completion callback. */
static uint64_t final_up, final_down;
/* uvctx_pipe_error_at() as read inside the completion callback. */
static int err_at, err_side;

static void on_pipe(uvctx_pipe_t* p, int st, uint64_t ab, uint64_t ba) {
  proxy_t* x = p->data;
  calls++;
  status = st;
  a_to_b = ab;
  b_to_a = ba;
  uvctx_pipe_bytes(p, &final_up, &final_down);
  err_side = -1;
  err_at = uvctx_pipe_error_at(p, &err_side);
  a_closing = uvctx_stream_is_closing(&x->a);
  b_closing = uvctx_stream_is_closing(&x->b);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&x->a), 0);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&x->b), 0);
  if (st != 0) {
    /* Both closed, close callbacks done: free at once (ASan watches). */
    ck_assert(a_closing && b_closing);
    free(x);
    released = 1;
  } else {
    x->closes = 2;
    uvctx_stream_close(&x->a, proxy_closed);
    uvctx_stream_close(&x->b, proxy_closed);
  }
}

static void proxy_begin(int unix_pipes) {
  X = calloc(1, sizeof(*X));
  ck_assert_ptr_nonnull(X);
  memset(&p_h, 0, sizeof(p_h));
  memset(&q_h, 0, sizeof(q_h));
  calls = 0;
  released = 0;
  alloc_base = uvctx_live_allocations();
  if (unix_pipes) {
    cp_unix_pair(&p_h, &X->a_h);
    cp_unix_pair(&X->b_h, &q_h);
  } else {
    if (!listening) {
      cp_listen(&L);
      listening = 1;
    }
    cp_tcp_pair(&L, &p_h, &X->a_h);
    cp_tcp_pair(&L, &X->b_h, &q_h);
  }
  ck_assert_int_eq(uvctx_stream_init_uv(&X->a, &X->a_h.s), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&X->b, &X->b_h.s), 0);
  X->a.data = X;
  X->b.data = X;
  X->pipe.data = X;
}

static void proxy_start(uvctx_t* c, const uvctx_copy_options_t* o) {
  ck_assert_int_eq(uvctx_pipe_start(&X->pipe, c, &X->a, &X->b, o, on_pipe), 0);
  ck_assert_int_eq(calls, 0);
}

static void proxy_end(void) {
  uvctx_loop_counts_t n;
  UVT_RUN_UNTIL(calls >= 1);
  uvt_run_for(2);
  ck_assert_int_eq(calls, 1);
  cp_close(&p_h);
  cp_close(&q_h);
  cp_wait_closed();
  UVT_RUN_UNTIL(released);
  uvctx_release(ctx);
  ctx = NULL;
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, 0);
  ck_assert_uint_eq(n.watches, 0);
  ck_assert_uint_le(uvctx_live_allocations(), alloc_base);
}

/* ---- an echo server built on uvctx_copy (src == dst) --------------------- */

static cp_handle_t echo_h;
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

/* The proxy's b side is connected to an echo server: q_h is the echo
 * server's end. */
static void echo_on_q(void) {
  echo_done = 0;
  memset(&echo_h, 0, sizeof(echo_h));
  ck_assert_int_eq(uvctx_stream_init_uv(&echo_s, &q_h.s), 0);
  ck_assert_int_eq(
      uvctx_copy_start(&echo_c, uvt_bg, &echo_s, &echo_s, NULL, on_echo), 0);
}

static const uint64_t echo_sizes[] = {0, 1, 65537, 3u << 20};

/* Running totals while the transfer is under way, read on every read of
 * the client's sink until the pipe completes (X is freed once the pipe has
 * completed and its streams closed). They count writes whose callbacks
 * have run, which comes a loop turn after the bytes left: what the client
 * has received is at most the count plus one pool of buffers in flight (8
 * of 64 KiB by default). */
static uint64_t echo_total;
static uint64_t echo_partial; /* samples with 0 < down < total */
static uint64_t echo_up, echo_down;

static void echo_sample(cp_sink_t* k) {
  uint64_t up, down;
  if (calls != 0)
    return;
  uvctx_pipe_bytes(&X->pipe, &up, &down);
  ck_assert_uint_le(k->received, down + 8 * 65536);
  ck_assert_uint_le(up, echo_total);
  ck_assert_uint_le(down, echo_total);
  ck_assert_uint_ge(up, echo_up);
  ck_assert_uint_ge(down, echo_down);
  echo_up = up;
  echo_down = down;
  if (down > 0 && down < echo_total)
    echo_partial++;
}

static void echo_proxy(int unix_pipes, uint64_t total, const char* name) {
  uint64_t seed = uvt_seed(name);
  cp_sender_t snd;
  cp_sink_t sink;
  echo_total = total;
  echo_partial = 0;
  echo_up = 0;
  echo_down = 0;
  proxy_begin(unix_pipes);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, NULL);
  echo_on_q();
  cp_sink_init(&sink, &p_h.s, 64 * 1024, seed | 1, 1);
  sink.on_data = echo_sample;
  cp_sender_start(&snd, &p_h.s, total, 100000, seed, 1);
  UVT_RUN_UNTIL(calls == 1 && sink.eof && echo_done);
  /* A small transfer can be echoed whole before the client's first read;
   * 3 MiB cannot: the pipe moves at most one pool a loop turn each way, so
   * the client reads while the way back is part done. */
  if (total >= (1u << 20))
    ck_assert_uint_gt(echo_partial, 0);
  ck_assert_int_eq(status, 0);
  ck_assert_int_eq(echo_status, 0);
  ck_assert_uint_eq(a_to_b, total);
  ck_assert_uint_eq(b_to_a, total);
  /* Read in the callback, the running counts are the final ones. */
  ck_assert_uint_eq(final_up, total);
  ck_assert_uint_eq(final_down, total);
  ck_assert_uint_eq(sink.received, total);
  ck_assert_uint_eq(sink.bad, 0);
  /* The echo server's stream closed q_h: do not close it twice. */
  q_h.h.loop = NULL;
  cp_sink_free(&sink);
  proxy_end();
  ck_assert_uint_eq(snd.writes_started, snd.writes_done);
}

START_TEST(test_echo_proxy_tcp) {
  echo_proxy(0, echo_sizes[_i], "test_echo_proxy_tcp");
}
END_TEST

START_TEST(test_echo_proxy_pipe) {
  echo_proxy(1, echo_sizes[_i], "test_echo_proxy_pipe");
}
END_TEST

/* ---- half-close in either order ------------------------------------------ */

static cp_sender_t p_snd;
static cp_sender_t q_snd;
static cp_sink_t p_sink;
static cp_sink_t q_sink;
static uint64_t second_total;

/* Q starts sending only once it saw P's EOF: the b -> a direction must
 * still work after a -> b is shut. */
static void q_on_end(cp_sink_t* k) {
  (void)k;
  ck_assert_int_eq(calls, 0);
  cp_sender_start(&q_snd, &q_h.s, second_total, 7000, 77, 1);
}

START_TEST(test_half_close) {
  const uint64_t first = 200000;
  second_total = 300000;
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, NULL);
  cp_sink_init(&p_sink, &p_h.s, 8192, 3, 1);
  cp_sink_init(&q_sink, &q_h.s, 8192, 5, 1);
  q_sink.on_end = q_on_end;
  memset(&q_snd, 0, sizeof(q_snd));
  cp_sender_start(&p_snd, &p_h.s, first, 9000, 7, 1);
  UVT_RUN_UNTIL(calls == 1 && p_sink.eof);
  ck_assert_int_eq(status, 0);
  ck_assert_uint_eq(a_to_b, first);
  ck_assert_uint_eq(b_to_a, second_total);
  ck_assert_uint_eq(q_sink.received, first);
  ck_assert_uint_eq(p_sink.received, second_total);
  ck_assert_uint_eq(p_sink.bad + q_sink.bad, 0);
  cp_sink_free(&p_sink);
  cp_sink_free(&q_sink);
  proxy_end();
}
END_TEST

/* ---- cancel, reset, idle ------------------------------------------------- */

static void cancel_when_flowing(cp_sink_t* k) {
  if (k->received >= 100000 && uvctx_err(ctx) == 0)
    ck_assert_int_eq(uvctx_cancel(ctx), 0);
}

START_TEST(test_cancel_mid_transfer) {
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, NULL);
  cp_sink_init(&p_sink, &p_h.s, 8192, 0, 1);
  cp_sink_init(&q_sink, &q_h.s, 8192, 0, 1);
  q_sink.on_data = cancel_when_flowing;
  cp_sender_start(&p_snd, &p_h.s, UINT64_MAX, 60000, 1, 0);
  cp_sender_start(&q_snd, &q_h.s, UINT64_MAX, 60000, 2, 0);
  UVT_RUN_UNTIL(calls == 1);
  ck_assert_int_eq(status, UV_ECANCELED);
  ck_assert_int_eq(err_at, UVCTX_PIPE_AT_NONE); /* the context, no I/O */
  ck_assert_int_eq(err_side, -1);
  ck_assert_uint_ge(a_to_b, 100000);
  ck_assert(a_closing && b_closing);
  /* The peers see the proxy go away. */
  UVT_RUN_UNTIL((p_sink.eof || p_sink.err) && (q_sink.eof || q_sink.err));
  ck_assert_uint_eq(p_sink.bad + q_sink.bad, 0);
  cp_sink_free(&p_sink);
  cp_sink_free(&q_sink);
  proxy_end();
  ck_assert_uint_eq(p_snd.writes_started, p_snd.writes_done);
  ck_assert_uint_eq(q_snd.writes_started, q_snd.writes_done);
}
END_TEST

static void reset_p(cp_sink_t* k) {
  if (k->received < 50000 || p_h.h.loop == NULL || uv_is_closing(&p_h.h))
    return;
  cp_closes_pending__++;
  ck_assert_int_eq(uv_tcp_close_reset(&p_h.tcp, cp_on_close__), 0);
}

START_TEST(test_peer_reset) {
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, NULL);
  cp_sink_init(&q_sink, &q_h.s, 8192, 0, 1);
  q_sink.on_data = reset_p;
  cp_sender_start(&p_snd, &p_h.s, UINT64_MAX, 30000, 1, 0);
  UVT_RUN_UNTIL(calls == 1);
  if (status != UV_ECONNRESET && status != UV_EPIPE)
    ck_abort_msg("status %s", uv_err_name(status));
  ck_assert(a_closing && b_closing);
  /* P, behind stream a, reset: the error is a's, met reading (or writing
   * back, had anything flowed that way), never b's. */
  ck_assert_int_eq(err_side, 0);
  ck_assert(err_at == UVCTX_PIPE_AT_READ || err_at == UVCTX_PIPE_AT_WRITE);
  UVT_RUN_UNTIL(q_sink.eof || q_sink.err);
  cp_sink_free(&q_sink);
  proxy_end();
}
END_TEST

/* Traffic in one direction only keeps the pipe alive past several idle
 * periods; once it stops, the idle timeout fires. A byte every DRIP_MS
 * against an idle timeout of three times that: a stall of the loop longer
 * than the difference ends the pipe early, so sanitized builds, where
 * stalls of 100 ms and more happen on a loaded machine, use longer
 * periods. */
#define DRIP_MS UVT_SCALE(50, 200)
#define DRIP_IDLE_MS (3 * DRIP_MS)
#define DRIP_BYTES 11

static uv_timer_t drip;
static int drips;
static uint64_t last_drip; /* uv_hrtime() of the last byte written */

static void drip_cb(uv_timer_t* t) {
  static char one = 0;
  uv_buf_t b = uv_buf_init(&one, 1);
  one = (char)cp_pattern((uint64_t)drips);
  if (++drips == DRIP_BYTES + 1) {
    uv_timer_stop(t);
    return;
  }
  ck_assert_int_eq(uv_try_write(&q_h.s, &b, 1), 1);
  last_drip = uv_hrtime();
}

START_TEST(test_idle_either_direction) {
  uvctx_copy_options_t o;
  uint64_t t0;
  uint64_t ms;
  memset(&o, 0, sizeof(o));
  o.idle_timeout_ms = DRIP_IDLE_MS;
  drips = 0;
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, &o);
  cp_sink_init(&p_sink, &p_h.s, 8192, 0, 1);
  ck_assert_int_eq(uv_timer_init(uvt_loop, &drip), 0);
  ck_assert_int_eq(uv_timer_start(&drip, drip_cb, DRIP_MS, DRIP_MS), 0);
  t0 = uv_hrtime();
  UVT_RUN_UNTIL(calls == 1);
  ms = (uv_hrtime() - t0) / 1000000;
  ck_assert_int_eq(status, UV_ETIMEDOUT);
  ck_assert_uint_eq(a_to_b, 0);
  /* Every byte went through before the timeout (the timer's last turn
   * only stops it). */
  ck_assert_int_ge(drips, DRIP_BYTES);
  ck_assert_uint_eq(b_to_a, DRIP_BYTES);
  /* The idle period counts from the last byte and is never short by the
   * real clock. The drip timer runs on libuv's cached millisecond clock,
   * so the total is compared with a millisecond of slack. */
  ck_assert_uint_ge(uv_hrtime() - last_drip, DRIP_IDLE_MS * 1000000ull);
  if (!UVCTX_TEST_SANITIZED)
    ck_assert_uint_ge(ms, DRIP_BYTES * DRIP_MS + DRIP_IDLE_MS - 1);
  cp_close_h((uv_handle_t*)&drip);
  cp_sink_free(&p_sink);
  proxy_end();
}
END_TEST

static void bad_pipe_cb(uvctx_pipe_t* p, int st, uint64_t x, uint64_t y) {
  (void)p;
  (void)st;
  (void)x;
  (void)y;
  ck_abort_msg("a failed start must not call back");
}

/* Half-close timeouts: one peer sends 1000 bytes and half-closes, the
 * other reads them and stays silent. The timeout of the direction that
 * finished ends the pipe (the 60 s idle timeout and the other direction's
 * 60 s would not), and uvctx_pipe_error_at() names the silent stream.
 * _i = 0: P (on a) half-closes, waiting for Q (b); _i = 1: the reverse. */
#define FIN_MS UVT_SCALE(100, 300)

START_TEST(test_half_close_timeout) {
  uvctx_copy_options_t o;
  cp_handle_t* talker = _i == 0 ? &p_h : &q_h;
  cp_handle_t* silent = _i == 0 ? &q_h : &p_h;
  uint64_t t0;
  uint64_t ms;

  memset(&o, 0, sizeof(o));
  o.idle_timeout_ms = 60000;
  o.half_close_timeout_ms[_i] = FIN_MS;
  o.half_close_timeout_ms[1 - _i] = 60000;
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, &o);
  cp_sink_init(&q_sink, &silent->s, 8192, 0, 1);
  cp_sender_start(&p_snd, &talker->s, 1000, 1000, 3, 1);
  UVT_RUN_UNTIL(q_sink.eof); /* the silent peer has the FIN */
  t0 = uv_hrtime();
  UVT_RUN_UNTIL(calls == 1);
  ms = (uv_hrtime() - t0) / 1000000;
  ck_assert_int_eq(status, UV_ETIMEDOUT);
  ck_assert_int_eq(err_at, UVCTX_PIPE_AT_HALF_CLOSED);
  ck_assert_int_eq(err_side, 1 - _i);
  ck_assert_uint_eq(_i == 0 ? a_to_b : b_to_a, 1000);
  ck_assert_uint_eq(q_sink.received, 1000);
  ck_assert_uint_eq(q_sink.bad, 0);
  /* Never early (it is counted from the half-close, which came before
   * the sink saw the FIN). */
  ck_assert_uint_le(ms, 60000);
  cp_sink_free(&q_sink);
  proxy_end();
}
END_TEST

/* Without a half-close timeout for the direction that finished, the idle
 * timeout still governs: a half-closed pipe with a silent peer lives on
 * past the other direction's (unused) half-close timeout. */
START_TEST(test_half_close_timeout_other_direction_unused) {
  uvctx_copy_options_t o;

  memset(&o, 0, sizeof(o));
  o.idle_timeout_ms = 60000;
  o.half_close_timeout_ms[1] = FIN_MS; /* only if b half-closes first */
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  proxy_start(ctx, &o);
  cp_sink_init(&q_sink, &q_h.s, 8192, 0, 1);
  cp_sender_start(&p_snd, &p_h.s, 1000, 1000, 3, 1);
  UVT_RUN_UNTIL(q_sink.eof);
  uvt_run_for(3 * FIN_MS);
  ck_assert_int_eq(calls, 0);
  ck_assert_int_eq(uvctx_cancel(ctx), 0);
  UVT_RUN_UNTIL(calls == 1);
  ck_assert_int_eq(status, UV_ECANCELED);
  ck_assert_int_eq(err_at, UVCTX_PIPE_AT_NONE);
  cp_sink_free(&q_sink);
  proxy_end();
}
END_TEST

START_TEST(test_invalid_arguments) {
  uvctx_pipe_t p;
  proxy_begin(0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  ck_assert_int_eq(uvctx_pipe_start(&p, ctx, &X->a, &X->a, NULL, bad_pipe_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_pipe_start(NULL, ctx, &X->a, &X->b, NULL, bad_pipe_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_pipe_start(&p, ctx, &X->a, &X->b, NULL, NULL),
                   UV_EINVAL);
  proxy_start(ctx, NULL);
  ck_assert_int_eq(uvctx_pipe_start(&p, ctx, &X->a, &X->b, NULL, bad_pipe_cb),
                   UV_EBUSY);
  ck_assert_int_eq(uvctx_pipe_error_at(&X->pipe, NULL), UVCTX_PIPE_AT_NONE);
  ck_assert_int_eq(uvctx_pipe_error_at(NULL, NULL), UVCTX_PIPE_AT_NONE);
  uvctx_cancel(ctx);
  proxy_end();
  ck_assert_int_eq(status, UV_ECANCELED);
}
END_TEST

static Suite* pipe_suite(void) {
  Suite* s = suite_create("pipe");
  TCase* tc = tcase_create("pipe");
  tcase_add_checked_fixture(tc, pp_setup, pp_teardown);
  tcase_add_loop_test(tc, test_echo_proxy_tcp, 0, 4);
  tcase_add_loop_test(tc, test_echo_proxy_pipe, 0, 4);
  tcase_add_test(tc, test_half_close);
  tcase_add_test(tc, test_cancel_mid_transfer);
  tcase_add_test(tc, test_peer_reset);
  tcase_add_test(tc, test_idle_either_direction);
  tcase_add_loop_test(tc, test_half_close_timeout, 0, 2);
  tcase_add_test(tc, test_half_close_timeout_other_direction_unused);
  tcase_add_test(tc, test_invalid_arguments);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner* sr;
  int failed;
  signal(SIGPIPE, SIG_IGN);
  sr = srunner_create(pipe_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
