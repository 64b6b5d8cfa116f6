/* Core benchmark: lateness of a 1 ms deadline. A watch on
 * uvctx_with_timeout(background, 1 ms) timestamps uv_hrtime() in its
 * callback; lateness is that minus the context's deadline (from
 * uvctx_deadline(), i.e. uv_hrtime() at creation + 1 ms). The peer is a bare
 * uv_timer_start(1 ms) measured the same way: uv_hrtime() in the callback
 * minus (uv_hrtime() just before the start + 1 ms). A negative lateness is
 * an early fire: never allowed for uvctx, common for a bare libuv timer
 * started with a stale cached loop time.
 *
 * Samples of the two kinds alternate, each started from the previous one's
 * callback (a timer or watch callback is where a server starts its next
 * deadline), so both see the same loop state. Measured twice: with the
 * default deadline source (a uv_timer_t) and with the timerfd source of
 * uvctx_loop_init_ex(UVCTX_LOOP_HIRES_DEADLINES). */
#include "bench.h"

static uv_loop_t loop;
static uvctx_loop_t* ul;
static uv_timer_t timer;
static uvctx_watch_t* watches; /* one per sample */
static uvctx_t* cur;
static uint64_t cur_deadline;
static uint64_t timer_start;
static int64_t* lat_ctx;
static int64_t* lat_timer;
static size_t n_ctx;
static size_t n_timer;
static size_t n_target;

static void start_next(void);

static void watch_cb(uvctx_watch_t* w, int err) {
  uint64_t now = uv_hrtime();

  (void)w;
  if (err != UV_ETIMEDOUT)
    abort();
  lat_ctx[n_ctx++] = (int64_t)(now - cur_deadline);
  uvctx_unref(cur);
  cur = NULL;
  start_next();
}

static void timer_cb(uv_timer_t* t) {
  uint64_t now = uv_hrtime();

  (void)t;
  lat_timer[n_timer++] = (int64_t)(now - (timer_start + 1000000));
  start_next();
}

static void start_next(void) {
  if (n_ctx == n_target && n_timer == n_target) {
    uv_close((uv_handle_t*)&timer, NULL);
    return;
  }
  if (n_timer < n_ctx) {
    timer_start = uv_hrtime();
    BENCH_OK(uv_timer_start(&timer, timer_cb, 1, 0));
    return;
  }
  BENCH_OK(uvctx_with_timeout(uvctx_background(ul), 1, &cur));
  BENCH_ASSERT(uvctx_deadline(cur, &cur_deadline) == 1);
  BENCH_OK(uvctx_watch_start(&watches[n_ctx], cur, watch_cb));
}

static size_t count_early(const int64_t* v, size_t n) {
  size_t k = 0;
  size_t i;

  for (i = 0; i < n; i++)
    k += v[i] < 0;
  return k;
}

/* One measurement: `n` samples of each kind on a fresh loop, the uvctx
 * binding made with `flags` (0, or UVCTX_LOOP_HIRES_DEADLINES). */
static void run_mode(unsigned flags, const char* prefix, size_t n) {
  static const struct {
    const char* suffix;
    double pct;
  } figs[3] = {{"p50", 50}, {"p99", 99}, {"max", 100}};
  char name[64];
  size_t early_ctx;
  size_t early_timer;
  int i;

  n_target = n;
  n_ctx = n_timer = 0;
  memset(watches, 0, n * sizeof(*watches));
  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init_ex(&loop, flags, &ul));
  BENCH_OK(uv_timer_init(&loop, &timer));
  start_next();
  BENCH_OK(uv_run(&loop, UV_RUN_DEFAULT));
  BENCH_ASSERT(n_ctx == n && n_timer == n);
  BENCH_OK(uvctx_loop_close(ul));
  BENCH_OK(uv_run(&loop, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(&loop));
  BENCH_ASSERT(uvctx_live_allocations() == 0);

  early_ctx = count_early(lat_ctx, n);
  early_timer = count_early(lat_timer, n);
  qsort(lat_ctx, n, sizeof(*lat_ctx), bench_cmp_i64);
  qsort(lat_timer, n, sizeof(*lat_timer), bench_cmp_i64);
  for (i = 0; i < 3; i++) {
    snprintf(name, sizeof(name), "%s_late_%s", prefix, figs[i].suffix);
    bench_result_peer(name, "us", bench_pct(lat_ctx, n, figs[i].pct) / 1e3,
                      "uv_timer", bench_pct(lat_timer, n, figs[i].pct) / 1e3);
  }
  /* A count has no meaningful ratio. */
  printf("bench=%s_early unit=count value=%zu peer=uv_timer "
         "peer_value=%zu\n",
         prefix, early_ctx, early_timer);
  fprintf(stderr,
          "# %s: %zu samples each; earliest: uvctx %.1f us, "
          "uv_timer %.1f us\n",
          prefix, n, lat_ctx[0] / 1e3, lat_timer[0] / 1e3);
}

int main(int argc, char** argv) {
  bench_opts_t o;
  size_t n;

  bench_parse(argc, argv, &o);
  n = bench_count(&o, 2000, 10);
  lat_ctx = calloc(n, sizeof(*lat_ctx));
  lat_timer = calloc(n, sizeof(*lat_timer));
  watches = calloc(n, sizeof(*watches));
  BENCH_ASSERT(lat_ctx != NULL && lat_timer != NULL && watches != NULL);

  /* The default source (a uv_timer_t, whole milliseconds), then the Linux
   * timerfd source, each beside its own bare uv_timer_t run. */
  run_mode(0, "deadline_1ms", n);
  run_mode(UVCTX_LOOP_HIRES_DEADLINES, "deadline_1ms_hires", n);
  free(watches);
  free(lat_timer);
  free(lat_ctx);
  return 0;
}
