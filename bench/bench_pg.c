/* bench_pg: PostgreSQL through the pg pool (uvctx/pg.h) on a private
 * cluster on loopback (test/pg/cluster.sh; its state file in
 * UVCTX_PG_STATE), beside its peers in the same run:
 *
 *   pg_select1, pg_select_param   queries/s of `SELECT 1` and of
 *                                 `SELECT $1::int` through a 10-connection
 *                                 pool with 50 requesters, beside
 *                                 node-postgres's pg.Pool (the same
 *                                 workload, bench/peers/node-pg; needs
 *                                 UVCTX_BENCH_NODE_PG, a directory holding
 *                                 its node_modules) and beside
 *                                 `pgbench -S -c 10` (the server's own
 *                                 ceiling);
 *   pg_cancel_reusable_p50/p99    from a query's context ending to its
 *                                 connection being handed out again, over
 *                                 cancelled pg_sleep(10) queries.
 *
 * --quick (the CTest smoke run): tiny counts and no peers unless
 * UVCTX_BENCH_PEERS=1. Without a cluster it exits 77 (skipped), or fails
 * under UVCTX_REQUIRE_PEERS=1. Medians of three rounds. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "pg_state.h"
#include "uvctx/pg.h"

#define POOL_SIZE 10
#define REQUESTERS 50
#define ROUNDS 3

static char pg_port[16];
static char conninfo[256];

/* ---- throughput ----------------------------------------------------------
 */

typedef struct run_s run_t;
typedef struct requester_s {
  uvctx_pg_pool_query_t req;
  run_t* run;
  char param[16];
  const char* params[1];
} requester_t;

struct run_s {
  uvctx_pg_pool_t* pool;
  uvctx_t* ctx;
  const char* sql;
  int nparams;
  size_t issued, done, total;
  requester_t who[REQUESTERS];
};

static void queried(uvctx_pg_pool_query_t* req, int status, PGresult* res);

static void issue(requester_t* r) {
  run_t* run = r->run;
  run->issued++;
  snprintf(r->param, sizeof(r->param), "%zu", run->issued);
  BENCH_OK(uvctx_pg_pool_query(&r->req, run->pool, run->ctx, run->sql,
                               run->nparams, r->params, queried));
}

static void queried(uvctx_pg_pool_query_t* req, int status, PGresult* res) {
  requester_t* r = req->data;
  run_t* run = r->run;
  if (status != 0)
    fprintf(stderr, "bench_pg: %s\n", uvctx_pg_pool_query_error(req));
  BENCH_OK(status);
  BENCH_ASSERT(PQntuples(res) == 1);
  run->done++;
  if (run->issued < run->total)
    issue(r);
}

/* Queries/s of `total` queries from REQUESTERS loops sharing the pool. */
static double run_round(uv_loop_t* loop, run_t* run, size_t total) {
  size_t i;
  uint64_t t0;
  run->issued = run->done = 0;
  run->total = total;
  t0 = bench_now();
  for (i = 0; i < REQUESTERS && run->issued < total; i++)
    issue(&run->who[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  BENCH_ASSERT(run->done == total);
  return (double)total / ((double)(bench_now() - t0) / 1e9);
}

/* ---- cancellation --------------------------------------------------------
 */

typedef struct cancel_s {
  uvctx_pg_pool_query_t slow;
  uvctx_pool_acquire_t next;
  uvctx_pg_pool_t* pool;
  uvctx_loop_t* l;
  uv_timer_t timer;
  uvctx_t* ctx;
  uint64_t cancelled_at;
  int64_t* lat;
  size_t i, n;
  int slow_done, next_done;
} cancel_t;

static void cancel_one(cancel_t* c);

static void slow_cb(uvctx_pg_pool_query_t* req, int status, PGresult* res) {
  cancel_t* c = req->data;
  (void)res;
  BENCH_ASSERT(status == UV_ECANCELED);
  c->slow_done = 1;
}

/* The waiter gets the only connection once the cancelled query is over on
 * the server and drained: that is when it is reusable. */
static void next_cb(uvctx_pool_acquire_t* req, int status,
                    uvctx_pool_conn_t* conn) {
  cancel_t* c = req->data;
  BENCH_OK(status);
  BENCH_ASSERT(c->slow_done);
  c->lat[c->i] = (int64_t)(bench_now() - c->cancelled_at);
  uvctx_pg_pool_release(c->pool, uvctx_pg_pool_conn(conn));
  uvctx_release(c->ctx);
  if (++c->i < c->n)
    cancel_one(c);
  else
    uv_close((uv_handle_t*)&c->timer, NULL);
}

static void fire(uv_timer_t* t) {
  cancel_t* c = t->data;
  c->cancelled_at = bench_now();
  BENCH_OK(uvctx_cancel(c->ctx));
}

/* One pg_sleep(10) whose context is cancelled 2 ms after it was sent,
 * with an acquire queued behind it on the pool's only connection. */
static void cancel_one(cancel_t* c) {
  c->slow_done = 0;
  BENCH_OK(uvctx_with_cancel(uvctx_background(c->l), &c->ctx));
  c->slow.data = c;
  BENCH_OK(uvctx_pg_pool_query(&c->slow, c->pool, c->ctx, "SELECT pg_sleep(10)",
                               0, NULL, slow_cb));
  c->next.data = c;
  BENCH_OK(uvctx_pool_acquire(&c->next, uvctx_pg_pool_base(c->pool),
                              uvctx_background(c->l), next_cb));
  BENCH_OK(uv_timer_start(&c->timer, fire, 2, 0));
}

/* ---- peers ---------------------------------------------------------------
 */

/* Runs `cmd` and keeps its output in `out`; -1 if it failed. */
static int run_peer(const char* cmd, char* out, size_t size) {
  size_t len = 0, n;
  FILE* p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  while (len + 1 < size && (n = fread(out + len, 1, size - 1 - len, p)) > 0)
    len += n;
  out[len] = '\0';
  return pclose(p) == 0 ? 0 : -1;
}

/* The number after `key` in `text`, or -1. */
static double value_after(const char* text, const char* key) {
  const char* at = strstr(text, key);
  return at != NULL ? strtod(at + strlen(key), NULL) : -1;
}

static const char* pg_bindir(void) {
  const char* d = getenv("UVCTX_PG_BINDIR");
  return d != NULL && *d != '\0' ? d : "/usr/lib/postgresql/15/bin";
}

/* `pgbench -S -c 10` on the same cluster: its tps (the median of three
 * runs of `secs` seconds), after initializing its tables once. */
static double pgbench_tps(int secs) {
  char cmd[1024], out[4096];
  double v[ROUNDS];
  int i;
  snprintf(cmd, sizeof(cmd),
           "%s/pgbench -i -q -s 1 -h 127.0.0.1 -p %s -U postgres postgres "
           "2>&1",
           pg_bindir(), pg_port);
  if (run_peer(cmd, out, sizeof(out)) != 0)
    return -1;
  snprintf(cmd, sizeof(cmd),
           "%s/pgbench -n -S -c 10 -T %d -h 127.0.0.1 -p %s -U postgres "
           "postgres 2>&1",
           pg_bindir(), secs, pg_port);
  for (i = 0; i < ROUNDS; i++)
    if (run_peer(cmd, out, sizeof(out)) != 0 ||
        (v[i] = value_after(out, "tps = ")) < 0)
      return -1;
  return bench_median(v, ROUNDS);
}

static void report(const char* name, double value, double node, double pgb) {
  if (node > 0)
    bench_result_peer(name, "queries/s", value, "node-postgres", node);
  if (pgb > 0)
    bench_result_peer(name, "queries/s", value, "pgbench", pgb);
  if (node <= 0 && pgb <= 0)
    bench_result(name, "queries/s", value);
}

static void pool_closed(uvctx_pg_pool_t* p) {
  *(int*)p->data = 1;
}

int main(int argc, char** argv) {
  bench_opts_t o;
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_pg_pool_t pool, one;
  uvctx_pool_options_t po = {0};
  static run_t run;
  cancel_t c;
  double sel1[ROUNDS], selp[ROUNDS], node1 = -1, nodep = -1, pgb = -1;
  const char* state = getenv("UVCTX_PG_STATE");
  const char* nodedir = getenv("UVCTX_BENCH_NODE_PG");
  int peers, closed = 0, i;
  size_t total, ncancel;

  bench_parse(argc, argv, &o);
  if (state == NULL ||
      !pg_state_get(state, "PG_PORT", pg_port, sizeof(pg_port))) {
    if (getenv("UVCTX_REQUIRE_PEERS") != NULL) {
      fprintf(stderr, "bench_pg: no cluster (UVCTX_PG_STATE)\n");
      return 1;
    }
    fprintf(stderr, "bench_pg: skipped: no cluster (UVCTX_PG_STATE)\n");
    return 77;
  }
  snprintf(conninfo, sizeof(conninfo),
           "host=127.0.0.1 port=%s user=postgres dbname=postgres", pg_port);
  peers = !o.quick || (getenv("UVCTX_BENCH_PEERS") != NULL &&
                       strcmp(getenv("UVCTX_BENCH_PEERS"), "1") == 0);
  total = bench_count(&o, 100000, 500);
  ncancel = bench_count(&o, 1000, 10);

  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init(&loop, &l));
  po.max_open = POOL_SIZE;
  po.max_idle = POOL_SIZE;
  BENCH_OK(uvctx_pg_pool_init(&pool, l, conninfo, &po, NULL));
  memset(&run, 0, sizeof(run));
  run.pool = &pool;
  run.ctx = uvctx_background(l);
  for (i = 0; i < REQUESTERS; i++) {
    run.who[i].req.data = &run.who[i];
    run.who[i].run = &run;
    run.who[i].params[0] = run.who[i].param;
  }
  run.sql = "SELECT 1";
  run_round(&loop, &run, POOL_SIZE * 4); /* warm: open every connection */
  for (i = 0; i < ROUNDS; i++) {
    run.sql = "SELECT 1";
    run.nparams = 0;
    sel1[i] = run_round(&loop, &run, total);
    run.sql = "SELECT $1::int";
    run.nparams = 1;
    selp[i] = run_round(&loop, &run, total);
  }

  /* Cancellation: a pool of one, so that the waiter gets exactly the
   * cancelled query's connection. */
  po.max_open = 1;
  po.max_idle = 1;
  BENCH_OK(uvctx_pg_pool_init(&one, l, conninfo, &po, NULL));
  run.pool = &one; /* warm: its connection idle before the first cancel */
  run_round(&loop, &run, 1);
  memset(&c, 0, sizeof(c));
  c.pool = &one;
  c.l = l;
  c.n = ncancel;
  c.lat = calloc(ncancel, sizeof(*c.lat));
  BENCH_ASSERT(c.lat != NULL);
  BENCH_OK(uv_timer_init(&loop, &c.timer));
  c.timer.data = &c;
  cancel_one(&c);
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_ASSERT(c.i == ncancel);

  if (peers) {
    char cmd[1024], out[4096];
    if (nodedir != NULL && *nodedir != '\0') {
      snprintf(cmd, sizeof(cmd),
               "NODE_PATH='%s/node_modules' node '%s/pg_pool.js' 127.0.0.1 %s "
               "postgres postgres %d %d %zu %d",
               nodedir, UVCTX_BENCH_NODE_PG_DIR, pg_port, POOL_SIZE, REQUESTERS,
               total, ROUNDS);
      if (run_peer(cmd, out, sizeof(out)) == 0) {
        node1 = value_after(out, "select1_qps=");
        nodep = value_after(out, "select_param_qps=");
      }
      if (node1 < 0 || nodep < 0)
        fprintf(stderr, "bench_pg: the node-postgres peer failed\n");
    } else {
      fprintf(stderr, "bench_pg: UVCTX_BENCH_NODE_PG is unset: no "
                      "node-postgres figures\n");
    }
    pgb = pgbench_tps(o.quick ? 1 : 5);
    if (pgb < 0)
      fprintf(stderr, "bench_pg: pgbench failed\n");
  }
  report("pg_select1", bench_median(sel1, ROUNDS), node1, pgb);
  report("pg_select_param", bench_median(selp, ROUNDS), nodep, pgb);
  qsort(c.lat, ncancel, sizeof(*c.lat), bench_cmp_i64);
  bench_result("pg_cancel_reusable_p50", "us",
               (double)bench_pct(c.lat, ncancel, 50) / 1e3);
  bench_result("pg_cancel_reusable_p99", "us",
               (double)bench_pct(c.lat, ncancel, 99) / 1e3);
  free(c.lat);

  pool.data = &closed;
  BENCH_OK(uvctx_pg_pool_close(&pool, pool_closed));
  one.data = &closed;
  BENCH_OK(uvctx_pg_pool_close(&one, pool_closed));
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_OK(uvctx_loop_close(l));
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_OK(uv_loop_close(&loop));
  return 0;
}
