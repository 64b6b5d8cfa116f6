/* uvctx-pg-demo: request handlers with deadlines querying PostgreSQL
 * through a uvctx pg pool, using only the public API:
 *
 *   - eight "requests" arrive at once, each with a 300 ms deadline, and
 *     share a pool of two connections: the pool queues them in order;
 *   - one of them runs a slow query (pg_sleep(5)): its deadline cuts it,
 *     its handler answers at once with UV_ETIMEDOUT, and the query is
 *     cancelled on the server, whose pg_stat_activity then shows it no
 *     longer running (other clients' queries aside);
 *   - the pool's stats in the Prometheus text format.
 *
 *   uvctx-pg-demo CONNINFO      e.g. "host=127.0.0.1 port=5432 user=postgres"
 *
 * It exits 1 as soon as anything does not behave as documented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvctx.h>
#include <uvctx/metrics.h>
#include <uvctx/pg.h>

#define CHECK(expr)                                                         \
  do {                                                                      \
    if (!(expr)) {                                                          \
      fprintf(stderr, "uvctx-pg-demo: %s:%d: check failed: %s\n", __FILE__, \
              __LINE__, #expr);                                             \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

#define REQUESTS 8
#define SLOW 3 /* the request whose query is too slow for its deadline */
#define DEADLINE_MS 300

typedef struct request_s {
  uvctx_pg_pool_query_t q;
  uvctx_t* ctx;
  int id;
  char arg[16];
  const char* params[1];
  uint64_t start;
  int done;
} request_t;

static int finished;

static double ms_since(uint64_t t0) {
  return (double)(uv_hrtime() - t0) / 1e6;
}

/* A handler's answer: the query's result or why there is none. */
static void answered(uvctx_pg_pool_query_t* q, int status, PGresult* res) {
  request_t* r = q->data;
  if (status == 0)
    printf("request %d: %s after %.0f ms\n", r->id, PQgetvalue(res, 0, 0),
           ms_since(r->start));
  else
    printf("request %d: %s after %.0f ms (%s)\n", r->id, uv_strerror(status),
           ms_since(r->start),
           status == UV_ETIMEDOUT ? "its deadline; the query is cancelled on "
                                    "the server"
                                  : uvctx_pg_pool_query_error(q));
  CHECK(r->id == SLOW ? status == UV_ETIMEDOUT : status == 0);
  r->done = 1;
  uvctx_release(r->ctx);
  finished++;
}

typedef struct check_s {
  uvctx_pg_pool_query_t q;
  int running; /* -1 until answered */
} check_t;

static void counted(uvctx_pg_pool_query_t* q, int status, PGresult* res) {
  check_t* c = q->data;
  CHECK(status == 0);
  c->running = atoi(PQgetvalue(res, 0, 0));
}

static void pool_closed(uvctx_pg_pool_t* p) {
  *(int*)p->data = 1;
}

int main(int argc, char** argv) {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_pg_pool_t pool;
  uvctx_pool_options_t po = {0};
  request_t req[REQUESTS];
  uvctx_pool_stats_t s;
  const uvctx_pool_stats_t* rows[1] = {&s};
  const char* labels[1] = {"demo"};
  check_t c;
  char* text;
  int i, closed = 0;

  if (argc != 2) {
    fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
    return 2;
  }
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvctx_loop_init(&loop, &l) == 0);
  po.max_open = 2;
  CHECK(uvctx_pg_pool_init(&pool, l, argv[1], &po, NULL) == 0);

  printf("%d requests, %d ms deadline each, a pool of %u connections\n",
         REQUESTS, DEADLINE_MS, po.max_open);
  for (i = 0; i < REQUESTS; i++) {
    request_t* r = &req[i];
    memset(r, 0, sizeof(*r));
    r->id = i;
    r->q.data = r;
    r->start = uv_hrtime();
    snprintf(r->arg, sizeof(r->arg), "%d", i);
    r->params[0] = r->arg;
    CHECK(uvctx_with_timeout(uvctx_background(l), DEADLINE_MS, &r->ctx) == 0);
    CHECK(uvctx_pg_pool_query(&r->q, &pool, r->ctx,
                              i == SLOW
                                  ? "SELECT 'slept ' || $1 FROM pg_sleep(5) "
                                    "/* uvctx-pg-demo slow query */"
                                  : "SELECT 'answer ' || ($1::int * 7)",
                              1, r->params, answered) == 0);
  }
  while (finished < REQUESTS)
    uv_run(&loop, UV_RUN_ONCE);

  /* The cancelled query's connection goes back to the pool once the server
   * has confirmed the cancel and its results are drained; then the server
   * no longer runs the slow query. */
  do {
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uvctx_pool_stats(uvctx_pg_pool_base(&pool), &s) == 0);
  } while (s.in_use != 0);
  c.running = -1;
  c.q.data = &c;
  CHECK(uvctx_pg_pool_query(&c.q, &pool, uvctx_background(l),
                            "SELECT count(*) FROM pg_stat_activity WHERE "
                            "state = 'active' AND query LIKE "
                            "'%uvctx-pg-demo slow query%' AND "
                            "pid <> pg_backend_pid()",
                            0, NULL, counted) == 0);
  while (c.running < 0)
    uv_run(&loop, UV_RUN_ONCE);
  printf("the slow query still running on the server: %d\n", c.running);
  CHECK(c.running == 0);

  CHECK(uvctx_pool_stats(uvctx_pg_pool_base(&pool), &s) == 0);
  CHECK(s.opened <= 2 && s.broken_closed == 0);
  CHECK(uvctx_pool_metrics_format(rows, labels, 1, &text, NULL) == 0);
  printf("pool stats (Prometheus text, gauges and counters):\n");
  {
    char* line = strtok(text, "\n");
    for (; line != NULL; line = strtok(NULL, "\n"))
      if (line[0] != '#' && strstr(line, "_bucket") == NULL)
        printf("  %s\n", line);
  }
  uvctx_metrics_free(text);

  pool.data = &closed;
  CHECK(uvctx_pg_pool_close(&pool, pool_closed) == 0);
  while (!closed)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK(uvctx_loop_close(l) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&loop) == 0);
  return 0;
}
