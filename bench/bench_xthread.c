/* Core benchmark: cross-thread cancel to callback latency. Thread A runs
 * loop A; the main thread (B) makes a context homed on A, starts a watch on
 * it, then cancels it: the figure is uv_hrtime() just before
 * uvctx_cancel() to uv_hrtime() at the top of the watch callback on A. The
 * peer is a bare uv_async_send() ping measured the same way in the same run
 * (B timestamps, sends; A's async callback timestamps). Samples of the two
 * kinds alternate, spaced by a pseudo-random 50-250 us sleep so that A is
 * asleep in epoll each time, which is the case a server sees.
 *
 * A only timestamps and posts a semaphore; B computes the sample after the
 * semaphore, so no clock value crosses threads without a happens-before. */
#include <stdatomic.h>
#include <time.h>

#include "bench.h"

static uv_loop_t loop_a;
static uvctx_loop_t* ul;
static uv_async_t ping;
static uv_sem_t done;
static uint64_t t_recv; /* written by A before posting `done` */
static atomic_int stopping;
static int close_rc;
static uvctx_watch_t* watches; /* one per sample: each is started once */

static void ping_closed(uv_handle_t* h) {
  (void)h;
}

static void ping_cb(uv_async_t* h) {
  if (atomic_load(&stopping)) {
    /* Loop A's thread: the only place uvctx_loop_close() may run. */
    close_rc = uvctx_loop_close(ul);
    if (close_rc != 0)
      uvctx_loop_dump(ul, stderr);
    uv_close((uv_handle_t*)h, ping_closed);
    return;
  }
  t_recv = uv_hrtime();
  uv_sem_post(&done);
}

static void watch_cb(uvctx_watch_t* w, int err) {
  t_recv = uv_hrtime();
  (void)w;
  if (err != UV_ECANCELED)
    abort();
  uv_sem_post(&done);
}

static void run_a(void* arg) {
  (void)arg;
  uv_run(&loop_a, UV_RUN_DEFAULT);
}

static void pause_between(unsigned* seed) {
  struct timespec ts;

  ts.tv_sec = 0;
  ts.tv_nsec = 50000 + (long)(rand_r(seed) % 200000);
  nanosleep(&ts, NULL);
}

static int64_t sample_ping(void) {
  uint64_t t0;

  t0 = uv_hrtime();
  BENCH_OK(uv_async_send(&ping));
  uv_sem_wait(&done);
  return (int64_t)(t_recv - t0);
}

static int64_t sample_cancel(uvctx_watch_t* w, unsigned* seed) {
  uvctx_t* c;
  uint64_t t0;

  BENCH_OK(uvctx_with_cancel(uvctx_background(ul), &c));
  BENCH_OK(uvctx_watch_start(w, c, watch_cb));
  pause_between(seed);
  t0 = uv_hrtime();
  BENCH_OK(uvctx_cancel(c));
  uv_sem_wait(&done);
  uvctx_unref(c);
  return (int64_t)(t_recv - t0);
}

static void report(const char* name, int64_t* ctx, int64_t* base, size_t n) {
  static const double pcts[2] = {50, 99};
  char full[64];
  int i;

  qsort(ctx, n, sizeof(*ctx), bench_cmp_i64);
  qsort(base, n, sizeof(*base), bench_cmp_i64);
  for (i = 0; i < 2; i++) {
    snprintf(full, sizeof(full), "%s_p%.0f", name, pcts[i]);
    bench_result_peer(full, "us", bench_pct(ctx, n, pcts[i]) / 1e3, "uv_async",
                      bench_pct(base, n, pcts[i]) / 1e3);
  }
  fprintf(stderr, "# %s: %zu samples, max %.1f us (uv_async max %.1f us)\n",
          name, n, ctx[n - 1] / 1e3, base[n - 1] / 1e3);
}

int main(int argc, char** argv) {
  bench_opts_t o;
  uv_thread_t ta;
  int64_t* lat_ctx;
  int64_t* lat_ping;
  unsigned seed;
  size_t warm;
  size_t n;
  size_t i;

  bench_parse(argc, argv, &o);
  n = bench_count(&o, 10000, 20);
  warm = o.quick ? 2 : 100;
  lat_ctx = calloc(n, sizeof(*lat_ctx));
  lat_ping = calloc(n, sizeof(*lat_ping));
  watches = calloc(n + warm, sizeof(*watches));
  BENCH_ASSERT(lat_ctx != NULL && lat_ping != NULL && watches != NULL);
  seed = 12345;

  /* Everything is set up before thread A runs the loop, as the API allows;
   * from then on only A touches loop A's handles. The ping handle is
   * referenced, so it also keeps loop A running between samples. */
  BENCH_OK(uv_loop_init(&loop_a));
  BENCH_OK(uvctx_loop_init(&loop_a, &ul));
  BENCH_OK(uv_async_init(&loop_a, &ping, ping_cb));
  BENCH_OK(uv_sem_init(&done, 0));
  BENCH_OK(uv_thread_create(&ta, run_a, NULL));

  for (i = 0; i < warm; i++) {
    pause_between(&seed);
    (void)sample_ping();
    (void)sample_cancel(&watches[n + i], &seed);
  }
  /* Alternate which kind goes first so neither always follows the other. */
  for (i = 0; i < n; i++) {
    if (i % 2 == 0) {
      pause_between(&seed);
      lat_ping[i] = sample_ping();
      lat_ctx[i] = sample_cancel(&watches[i], &seed);
    } else {
      lat_ctx[i] = sample_cancel(&watches[i], &seed);
      pause_between(&seed);
      lat_ping[i] = sample_ping();
    }
  }

  atomic_store(&stopping, 1);
  BENCH_OK(uv_async_send(&ping));
  BENCH_OK(uv_thread_join(&ta));
  BENCH_OK(close_rc);
  /* uvctx_loop_close() succeeded inside the last pass: run the loop once
   * more for its close callbacks. */
  BENCH_OK(uv_run(&loop_a, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(&loop_a));
  BENCH_ASSERT(uvctx_live_allocations() == 0);
  uv_sem_destroy(&done);

  report("xthread_cancel", lat_ctx, lat_ping, n);
  free(watches);
  free(lat_ping);
  free(lat_ctx);
  return 0;
}
