/* Core benchmark: the cost of making, cancelling and freeing contexts and of
 * reading values, in ns per operation, on the loop's own thread. Each
 * workload mirrors one in bench/peers/go/ctx_test.go so that
 * scripts/bench.sh can print the uvctx/Go ratio:
 *
 *   with_cancel_cancel_unref  child of a cancelable parent, cancel, unref
 *   with_timeout_release      with_timeout(background, 1 h), release
 *   with_timeout_release_hires  the same on a UVCTX_LOOP_HIRES_DEADLINES loop
 *   value_lookup_dN           uvctx_value() of the outermost key of a chain
 *                             of N value contexts (every level visited)
 *   with_value_chain_d10      a chain of 10 value contexts made and freed,
 *                             per level
 *   cancel_fanout_N           cancel of a parent with N children, per child
 *   cancel_chain_N            cancel of the first of a chain of N, per level
 *
 * `--only PREFIX` runs only the workloads whose name starts with PREFIX
 * (with --quick or --scale, for one scenario under callgrind).
 *
 * Loop-style workloads run several rounds and report the median round, so
 * one preempted round on this shared machine does not move the figure.
 * Fan-out and chain report the mean over their repetitions, as the Go peer
 * does (it times only the cancel, each repetition on a fresh tree). */
#include "bench.h"

#define ROUNDS 5

static uv_loop_t loop;
static uvctx_loop_t* ul;
static volatile uintptr_t sink;

static void setup(void) {
  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init(&loop, &ul));
}

static void teardown(void) {
  int rc;

  rc = uvctx_loop_close(ul);
  if (rc != 0)
    uvctx_loop_dump(ul, stderr);
  BENCH_OK(rc);
  BENCH_OK(uv_run(&loop, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(&loop));
  BENCH_ASSERT(uvctx_live_allocations() == 0);
}

/* Lets the loop run whatever the library queued for it (timer re-syncs),
 * outside the timed sections. */
static void flush(void) {
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void bench_with_cancel(const bench_opts_t* o) {
  size_t n = bench_count(o, 1000000, 200);
  double per[ROUNDS];
  uvctx_t* parent;
  uvctx_t* c;
  uint64_t t0;
  size_t i;
  int r;

  BENCH_OK(uvctx_with_cancel(uvctx_background(ul), &parent));
  for (r = 0; r < ROUNDS; r++) {
    t0 = bench_now();
    for (i = 0; i < n; i++) {
      BENCH_OK(uvctx_with_cancel(parent, &c));
      BENCH_OK(uvctx_cancel(c));
      uvctx_unref(c);
    }
    per[r] = (double)(bench_now() - t0) / (double)n;
    flush();
  }
  BENCH_ASSERT(uvctx_err(parent) == 0);
  uvctx_release(parent);
  bench_result("with_cancel_cancel_unref", "ns/op", bench_median(per, ROUNDS));
}

/* with_timeout(background, 1 h) + release on binding `b`: each new deadline
 * becomes the earliest, so the hires binding pays a timerfd_settime() for
 * every one; that cost is the point of measuring both. */
static void bench_with_timeout(const bench_opts_t* o, uvctx_loop_t* b,
                               const char* name) {
  size_t n = bench_count(o, 1000000, 200);
  double per[ROUNDS];
  uvctx_t* c;
  uint64_t t0;
  size_t i;
  int r;

  for (r = 0; r < ROUNDS; r++) {
    t0 = bench_now();
    for (i = 0; i < n; i++) {
      BENCH_OK(uvctx_with_timeout(uvctx_background(b), 3600 * 1000, &c));
      uvctx_release(c);
    }
    per[r] = (double)(bench_now() - t0) / (double)n;
    flush();
  }
  bench_result(name, "ns/op", bench_median(per, ROUNDS));
}

static void bench_with_timeout_hires(const bench_opts_t* o) {
  uv_loop_t hloop;
  uvctx_loop_t* hl;

  BENCH_OK(uv_loop_init(&hloop));
  BENCH_OK(uvctx_loop_init_ex(&hloop, UVCTX_LOOP_HIRES_DEADLINES, &hl));
  bench_with_timeout(o, hl, "with_timeout_release_hires");
  BENCH_OK(uvctx_loop_close(hl));
  BENCH_OK(uv_run(&hloop, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(&hloop));
}

static void bench_value(const bench_opts_t* o, size_t depth, size_t full) {
  static uvctx_key_t keys[100];
  static int vals[100];
  uvctx_t* chain[100];
  size_t n = bench_count(o, full, 500);
  double per[ROUNDS];
  char name[64];
  uintptr_t acc;
  uint64_t t0;
  size_t i;
  int r;

  BENCH_ASSERT(depth >= 1 && depth <= 100);
  /* Distinct key objects, one per level: keys compare by address. */
  for (i = 0; i < depth; i++) {
    keys[i].name = "bench.key";
    keys[i].free_value = NULL;
    BENCH_OK(uvctx_with_value(i == 0 ? uvctx_background(ul) : chain[i - 1],
                              &keys[i], &vals[i], &chain[i]));
  }
  acc = 0;
  for (r = 0; r < ROUNDS; r++) {
    t0 = bench_now();
    for (i = 0; i < n; i++)
      acc += (uintptr_t)uvctx_value(chain[depth - 1], &keys[0]);
    per[r] = (double)(bench_now() - t0) / (double)n;
  }
  sink = acc;
  BENCH_ASSERT(uvctx_value(chain[depth - 1], &keys[0]) == &vals[0]);
  for (i = 0; i < depth; i++)
    uvctx_unref(chain[i]);
  snprintf(name, sizeof(name), "value_lookup_d%zu", depth);
  bench_result(name, "ns/op", bench_median(per, ROUNDS));
}

/* Building a chain of 10 value contexts and freeing it, per level: the
 * cost of request-scoped values themselves. */
static void bench_value_chain(const bench_opts_t* o) {
  static const uvctx_key_t key = {.name = "bench.chain"};
  uvctx_t* chain[10];
  size_t n = bench_count(o, 200000, 50);
  double per[ROUNDS];
  uint64_t t0;
  size_t i;
  int j;
  int r;

  for (r = 0; r < ROUNDS; r++) {
    t0 = bench_now();
    for (i = 0; i < n; i++) {
      BENCH_OK(uvctx_with_value(uvctx_background(ul), &key, chain, chain));
      for (j = 1; j < 10; j++)
        BENCH_OK(uvctx_with_value(chain[j - 1], &key, chain + j, chain + j));
      for (j = 0; j < 10; j++)
        uvctx_unref(chain[j]);
    }
    per[r] = (double)(bench_now() - t0) / (double)(n * 10);
  }
  bench_result("with_value_chain_d10", "ns/level", bench_median(per, ROUNDS));
}

/* Cancel of a parent with `size` cancelable children; only the cancel is
 * timed. */
static void bench_fanout(size_t size, size_t reps) {
  uvctx_t** kids;
  uvctx_t* parent;
  double* per;
  char name[64];
  char sz[32];
  uint64_t t0;
  size_t i;
  size_t r;

  kids = malloc(size * sizeof(*kids));
  per = malloc(reps * sizeof(*per));
  BENCH_ASSERT(kids != NULL && per != NULL);
  for (r = 0; r < reps; r++) {
    BENCH_OK(uvctx_with_cancel(uvctx_background(ul), &parent));
    for (i = 0; i < size; i++)
      BENCH_OK(uvctx_with_cancel(parent, &kids[i]));
    t0 = bench_now();
    BENCH_OK(uvctx_cancel(parent));
    per[r] = (double)(bench_now() - t0) / (double)size;
    BENCH_ASSERT(uvctx_err(kids[size - 1]) == UV_ECANCELED);
    for (i = 0; i < size; i++)
      uvctx_unref(kids[i]);
    uvctx_unref(parent);
    flush();
  }
  snprintf(name, sizeof(name), "cancel_fanout_%s",
           bench_size_name(size, sz, sizeof(sz)));
  bench_result(name, "ns/child", bench_mean(per, reps));
  free(per);
  free(kids);
}

/* Cancel of the first context of a chain of `size`, each the child of the
 * previous one; only the cancel is timed. */
static void bench_chain(size_t size, size_t reps) {
  uvctx_t** chain;
  double* per;
  char name[64];
  char sz[32];
  uint64_t t0;
  size_t i;
  size_t r;

  chain = malloc(size * sizeof(*chain));
  per = malloc(reps * sizeof(*per));
  BENCH_ASSERT(chain != NULL && per != NULL);
  for (r = 0; r < reps; r++) {
    BENCH_OK(uvctx_with_cancel(uvctx_background(ul), &chain[0]));
    for (i = 1; i < size; i++)
      BENCH_OK(uvctx_with_cancel(chain[i - 1], &chain[i]));
    t0 = bench_now();
    BENCH_OK(uvctx_cancel(chain[0]));
    per[r] = (double)(bench_now() - t0) / (double)size;
    BENCH_ASSERT(uvctx_err(chain[size - 1]) == UV_ECANCELED);
    /* Root first: every context but the last stays alive through its
     * child, and the last unref frees the whole chain (iteratively). */
    for (i = 0; i < size; i++)
      uvctx_unref(chain[i]);
    flush();
  }
  snprintf(name, sizeof(name), "cancel_chain_%s",
           bench_size_name(size, sz, sizeof(sz)));
  bench_result(name, "ns/level", bench_mean(per, reps));
  free(per);
  free(chain);
}

/* The --only prefix, NULL for every workload. */
static const char* only;

static int want(const char* name) {
  return bench_wanted(only, name);
}

int main(int argc, char** argv) {
  static const size_t sizes[3] = {1000, 10000, 100000};
  static const size_t reps[3] = {101, 21, 7};
  bench_opts_t o;
  size_t i;

  argc = bench_take_only(argc, argv, &only);
  bench_parse(argc, argv, &o);
  setup();
  if (want("with_cancel_cancel_unref"))
    bench_with_cancel(&o);
  if (want("with_timeout_release"))
    bench_with_timeout(&o, ul, "with_timeout_release");
  if (want("with_timeout_release_hires"))
    bench_with_timeout_hires(&o);
  if (want("value_lookup_d1"))
    bench_value(&o, 1, 20000000);
  if (want("value_lookup_d10"))
    bench_value(&o, 10, 5000000);
  if (want("value_lookup_d100"))
    bench_value(&o, 100, 500000);
  if (want("with_value_chain_d10"))
    bench_value_chain(&o);
  for (i = 0; i < 3 && want("cancel_fanout_"); i++) {
    size_t size = o.quick ? sizes[i] / 100 : sizes[i];
    size_t r = bench_count(&o, reps[i], 2);
    bench_fanout(size, r);
  }
  for (i = 0; i < 3 && want("cancel_chain_"); i++) {
    size_t size = o.quick ? sizes[i] / 100 : sizes[i];
    size_t r = bench_count(&o, reps[i], 2);
    bench_chain(size, r);
  }
  teardown();
  return 0;
}
