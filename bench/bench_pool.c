/* bench_pool: acquire + release of an idle connection through the generic
 * pool (uvctx/pool.h), ns/op, with a connection kind that does nothing.
 * Its peer is Go's database/sql with a fake driver (bench/peers/go,
 * BenchmarkPoolAcquireRelease: db.Conn(ctx) + Conn.Close()), joined by
 * scripts/bench.sh.
 *
 *   pool_acquire_release         one requester: acquire, the callback on
 *                                the next loop iteration, release
 *   pool_acquire_release_batch   ten requesters on ten idle connections,
 *                                per acquire + release
 *   pool_bare_loop_iteration     one libuv loop iteration driven by a
 *                                uv_idle_t and nothing else: the floor of
 *                                the sequential figure, since an acquire
 *                                callback never runs inside the call
 *
 * Medians of five rounds. */
#include <stdlib.h>

#include "bench.h"
#include "uvctx/pool.h"

#define ROUNDS 5
#define BATCH 10

typedef struct nop_conn_s {
  uvctx_pool_conn_t head;
  uv_timer_t t;
  uvctx_pool_t* pool;
} nop_conn_t;

static void nop_opened(uv_timer_t* t) {
  nop_conn_t* c = t->data;
  uv_close((uv_handle_t*)t, NULL);
  uvctx_pool_opened(c->pool, &c->head, 0);
}

/* The open completes on the next iteration (never inside open()). */
static int nop_open(uvctx_pool_t* pool, uvctx_t* ctx) {
  nop_conn_t* c = calloc(1, sizeof(*c));
  (void)ctx;
  if (c == NULL)
    return UV_ENOMEM;
  c->pool = pool;
  uv_timer_init(uvctx_loop_uv(uvctx_home(ctx)), &c->t);
  c->t.data = c;
  uv_timer_start(&c->t, nop_opened, 0, 0);
  return 0;
}

static void nop_close(uvctx_pool_t* pool, uvctx_pool_conn_t* conn) {
  free(conn);
  uvctx_pool_closed(pool);
}

static const uvctx_pool_kind_t nop_kind = {nop_open, nop_close, NULL};

typedef struct runner_s {
  uvctx_pool_acquire_t req;
  uvctx_pool_t* pool;
  uvctx_t* ctx;
  size_t left;
  size_t* done;
} runner_t;

static void run_cb(uvctx_pool_acquire_t* req, int status,
                   uvctx_pool_conn_t* conn) {
  runner_t* r = req->data;
  BENCH_OK(status);
  uvctx_pool_release(r->pool, conn, 0);
  (*r->done)++;
  if (--r->left > 0)
    BENCH_OK(uvctx_pool_acquire(&r->req, r->pool, r->ctx, run_cb));
}

/* ns per acquire + release with `k` requesters on `k` idle connections. */
static double measure(uv_loop_t* loop, uvctx_pool_t* pool, uvctx_t* ctx,
                      size_t k, size_t n) {
  runner_t r[BATCH];
  size_t i, done = 0;
  uint64_t t0;
  t0 = bench_now();
  for (i = 0; i < k; i++) {
    r[i].req.data = &r[i];
    r[i].pool = pool;
    r[i].ctx = ctx;
    r[i].left = n / k;
    r[i].done = &done;
    BENCH_OK(uvctx_pool_acquire(&r[i].req, pool, ctx, run_cb));
  }
  uv_run(loop, UV_RUN_DEFAULT);
  BENCH_ASSERT(done == (n / k) * k);
  return (double)(bench_now() - t0) / (double)done;
}

static size_t idle_left;

static void idle_tick(uv_idle_t* h) {
  if (--idle_left == 0)
    uv_idle_stop(h);
}

/* ns per bare loop iteration. */
static double measure_bare(uv_loop_t* loop, size_t n) {
  uv_idle_t h;
  uint64_t t0;
  BENCH_OK(uv_idle_init(loop, &h));
  idle_left = n;
  t0 = bench_now();
  BENCH_OK(uv_idle_start(&h, idle_tick));
  uv_run(loop, UV_RUN_DEFAULT);
  t0 = bench_now() - t0;
  uv_close((uv_handle_t*)&h, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return (double)t0 / (double)n;
}

static void pool_closed(uvctx_pool_t* pool) {
  *(int*)pool->data = 1;
}

int main(int argc, char** argv) {
  bench_opts_t o;
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_pool_t pool;
  uvctx_pool_options_t po = {0};
  uvctx_t* ctx;
  double seq[ROUNDS], batch[ROUNDS], bare[ROUNDS];
  size_t n, i;
  int closed = 0;
  uvctx_pool_stats_t s;

  bench_parse(argc, argv, &o);
  n = bench_count(&o, 2000000, 2000);
  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init(&loop, &l));
  po.max_open = BATCH;
  po.max_idle = BATCH;
  BENCH_OK(uvctx_pool_init(&pool, l, &nop_kind, NULL, &po));
  BENCH_OK(uvctx_with_cancel(uvctx_background(l), &ctx));
  /* Warm up: open the connections, so that every timed acquire finds an
   * idle one. */
  measure(&loop, &pool, ctx, BATCH, BATCH);
  BENCH_OK(uvctx_pool_stats(&pool, &s));
  BENCH_ASSERT(s.idle == BATCH);
  for (i = 0; i < ROUNDS; i++) {
    seq[i] = measure(&loop, &pool, ctx, 1, n);
    batch[i] = measure(&loop, &pool, ctx, BATCH, n);
    bare[i] = measure_bare(&loop, n);
  }
  BENCH_OK(uvctx_pool_stats(&pool, &s));
  BENCH_ASSERT(s.opened == BATCH); /* nothing was opened while timed */
  bench_result("pool_acquire_release", "ns/op", bench_median(seq, ROUNDS));
  bench_result("pool_acquire_release_batch", "ns/op",
               bench_median(batch, ROUNDS));
  bench_result("pool_bare_loop_iteration", "ns/op", bench_median(bare, ROUNDS));

  uvctx_release(ctx);
  pool.data = &closed;
  BENCH_OK(uvctx_pool_close(&pool, pool_closed));
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_ASSERT(closed == 1);
  BENCH_OK(uvctx_loop_close(l));
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_OK(uv_loop_close(&loop));
  return 0;
}
