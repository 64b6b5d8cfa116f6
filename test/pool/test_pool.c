/* The generic connection pool (uvctx/pool.h) against a fake connection
 * kind whose opens take scripted delays and fail on demand, and which
 * counts every connection it opens and closes: reuse order, FIFO fairness
 * under a flood of waiters with random deadlines, limits at every instant,
 * expiry, broken-connection replacement, cancellation from another thread,
 * closing, and allocation failure. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "uvctx/metrics.h"
#include "uvctx/pool.h"

#define CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

/* ---- the fake kind --------------------------------------------------------
 */

typedef struct fake_s fake_t;

typedef struct fake_conn_s {
  uvctx_pool_conn_t head;
  fake_t* fake;
  int id;
  void* holder;           /* who holds it: never two at once */
  int bad;                /* the check refuses it */
  uv_timer_t close_timer; /* async close */
} fake_conn_t;

/* One open in flight: a timer for its delay and a watch on the pool's
 * context, whichever ends it first. */
typedef struct fake_open_s {
  fake_t* fake;
  uv_timer_t timer;
  uvctx_watch_t watch;
  int fail; /* status to report, 0 for a connection */
  int status;
} fake_open_t;

struct fake_s {
  uvctx_pool_t pool;
  /* script */
  uint64_t open_delay_ms;   /* fixed delay, or ... */
  uint64_t open_delay_rand; /* ... uniform in [0, this) ms when non-zero */
  uint64_t rng;
  int fail_next; /* this many opens report fail_status */
  int fail_status;
  int refuse_next; /* this many open() calls return refuse_status */
  int refuse_status;
  int async_close;
  /* counts */
  int next_id;
  int open_calls, opened, open_failed, closes, closed_done;
  int live, max_live; /* from open() to closed(): what is really open */
  int in_open;        /* inside open(): no pool callback may run */
  int pool_closed;
};

static void fake_live_add(fake_t* f, int d) {
  f->live += d;
  if (f->live > f->max_live)
    f->max_live = f->live;
}

static void fake_open_closed(uv_handle_t* h) {
  fake_open_t* o = h->data;
  fake_t* f = o->fake;
  fake_conn_t* c = NULL;
  int status = o->status;
  ck_assert_int_eq(f->in_open, 0);
  if (o->status == 0) {
    c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->fake = f;
    c->id = ++f->next_id;
    f->opened++;
  } else {
    f->open_failed++;
    fake_live_add(f, -1);
  }
  free(o);
  uvctx_pool_opened(&f->pool, c != NULL ? &c->head : NULL, status);
}

static void fake_open_finish(fake_open_t* o, int status) {
  o->status = status;
  uv_timer_stop(&o->timer);
  uv_close((uv_handle_t*)&o->timer, fake_open_closed);
}

static void fake_open_timer(uv_timer_t* t) {
  fake_open_t* o = t->data;
  if (uvctx_watch_stop(&o->watch) == 1)
    fake_open_finish(o, o->fail);
}

static void fake_open_abandoned(uvctx_watch_t* w, int err) {
  fake_open_t* o = w->data;
  fake_open_finish(o, err);
}

static int fake_open(uvctx_pool_t* pool, uvctx_t* ctx) {
  fake_t* f = CONTAINER_OF(pool, fake_t, pool);
  fake_open_t* o;
  uint64_t delay;
  f->open_calls++;
  if (f->refuse_next > 0) {
    f->refuse_next--;
    return f->refuse_status;
  }
  o = calloc(1, sizeof(*o));
  if (o == NULL)
    return UV_ENOMEM;
  o->fake = f;
  if (f->fail_next > 0) {
    f->fail_next--;
    o->fail = f->fail_status;
  }
  f->in_open = 1;
  fake_live_add(f, 1);
  ck_assert_int_eq(uv_timer_init(uvt_loop, &o->timer), 0);
  o->timer.data = o;
  o->watch.data = o;
  ck_assert_int_eq(uvctx_watch_start(&o->watch, ctx, fake_open_abandoned), 0);
  delay = f->open_delay_rand != 0 ? uvt_rand_below(&f->rng, f->open_delay_rand)
                                  : f->open_delay_ms;
  ck_assert_int_eq(uv_timer_start(&o->timer, fake_open_timer, delay, 0), 0);
  f->in_open = 0;
  return 0;
}

static void fake_conn_gone(fake_conn_t* c) {
  fake_t* f = c->fake;
  free(c);
  f->closed_done++;
  fake_live_add(f, -1);
  uvctx_pool_closed(&f->pool);
}

static void fake_close_cb(uv_handle_t* h) {
  fake_conn_gone(h->data);
}

static void fake_close(uvctx_pool_t* pool, uvctx_pool_conn_t* conn) {
  fake_t* f = CONTAINER_OF(pool, fake_t, pool);
  fake_conn_t* c = CONTAINER_OF(conn, fake_conn_t, head);
  ck_assert_ptr_null(c->holder);
  f->closes++;
  if (f->async_close) {
    ck_assert_int_eq(uv_timer_init(uvt_loop, &c->close_timer), 0);
    c->close_timer.data = c;
    uv_close((uv_handle_t*)&c->close_timer, fake_close_cb);
  } else {
    fake_conn_gone(c);
  }
}

static int fake_check(uvctx_pool_t* pool, uvctx_pool_conn_t* conn) {
  (void)pool;
  return CONTAINER_OF(conn, fake_conn_t, head)->bad ? UV_ECONNRESET : 0;
}

static const uvctx_pool_kind_t fake_kind = {fake_open, fake_close, fake_check};

static void fake_init(fake_t* f, const uvctx_pool_options_t* opts) {
  memset(f, 0, sizeof(*f));
  ck_assert_int_eq(uvctx_pool_init(&f->pool, uvt_l, &fake_kind, f, opts), 0);
}

static void fake_pool_closed(uvctx_pool_t* pool) {
  fake_t* f = CONTAINER_OF(pool, fake_t, pool);
  f->pool_closed++;
}

/* Closes the pool, waits for its callback and checks that every connection
 * opened was closed. */
static void fake_finish(fake_t* f) {
  ck_assert_int_eq(uvctx_pool_close(&f->pool, fake_pool_closed), 0);
  ck_assert_int_eq(f->pool_closed, 0);
  UVT_RUN_UNTIL(f->pool_closed == 1);
  ck_assert_int_eq(f->opened, f->closes);
  ck_assert_int_eq(f->closes, f->closed_done);
  ck_assert_int_eq(f->live, 0);
}

/* ---- one requester --------------------------------------------------------
 */

typedef struct user_s {
  uvctx_pool_acquire_t req;
  uvctx_t* ctx;
  int calls;
  int status;
  fake_conn_t* conn;
  int in_call; /* set around uvctx_pool_acquire() */
} user_t;

static void user_cb(uvctx_pool_acquire_t* req, int status,
                    uvctx_pool_conn_t* conn) {
  user_t* u = req->data;
  ck_assert_int_eq(u->in_call, 0);
  u->calls++;
  u->status = status;
  if (status == 0) {
    ck_assert_ptr_nonnull(conn);
    u->conn = CONTAINER_OF(conn, fake_conn_t, head);
    ck_assert_ptr_null(u->conn->holder);
    u->conn->holder = u;
  } else {
    ck_assert_ptr_null(conn);
    u->conn = NULL;
  }
}

/* Starts an acquire under ctx (the background if NULL). */
static void user_acquire(user_t* u, fake_t* f, uvctx_t* ctx) {
  memset(u, 0, sizeof(*u));
  u->req.data = u;
  u->ctx = ctx;
  u->in_call = 1;
  ck_assert_int_eq(uvctx_pool_acquire(&u->req, &f->pool,
                                      ctx != NULL ? ctx : uvt_bg, user_cb),
                   0);
  u->in_call = 0;
}

/* Acquires and waits for the connection. */
static void user_get(user_t* u, fake_t* f, uvctx_t* ctx) {
  user_acquire(u, f, ctx);
  UVT_RUN_UNTIL(u->calls == 1);
  ck_assert_int_eq(u->status, 0);
}

static void user_release(user_t* u, fake_t* f, int broken) {
  ck_assert_ptr_nonnull(u->conn);
  u->conn->holder = NULL;
  uvctx_pool_release(&f->pool, &u->conn->head, broken);
  u->conn = NULL;
}

static uvctx_pool_stats_t stats_of(fake_t* f) {
  uvctx_pool_stats_t s;
  ck_assert_int_eq(uvctx_pool_stats(&f->pool, &s), 0);
  return s;
}

/* ---- tests ----------------------------------------------------------------
 */

START_TEST(test_reuse_most_recent_first) {
  fake_t f;
  user_t a, b, c, d;
  uvctx_pool_stats_t s;
  fake_init(&f, NULL);
  user_acquire(&a, &f, NULL);
  user_acquire(&b, &f, NULL);
  ck_assert_int_eq(a.calls + b.calls, 0); /* never inside the call */
  UVT_RUN_UNTIL(a.calls == 1 && b.calls == 1);
  ck_assert_int_eq(a.status, 0);
  ck_assert_int_eq(b.status, 0);
  ck_assert_int_ne(a.conn->id, b.conn->id);
  ck_assert_int_eq(f.opened, 2);
  {
    int ida = a.conn->id, idb = b.conn->id;
    user_release(&a, &f, 0);
    user_release(&b, &f, 0);
    s = stats_of(&f);
    ck_assert_uint_eq(s.idle, 2);
    ck_assert_uint_eq(s.in_use, 0);
    user_acquire(&c, &f, NULL);
    /* An idle connection is handed over on the next iteration, not in the
     * call. */
    ck_assert_int_eq(c.calls, 0);
    user_acquire(&d, &f, NULL);
    UVT_RUN_UNTIL(c.calls == 1 && d.calls == 1);
    ck_assert_int_eq(c.conn->id, idb); /* most recently released first */
    ck_assert_int_eq(d.conn->id, ida);
  }
  ck_assert_int_eq(f.opened, 2);
  s = stats_of(&f);
  ck_assert_uint_eq(s.in_use, 2);
  ck_assert_uint_eq(s.open, 2);
  ck_assert_uint_eq(s.acquired, 4);
  user_release(&c, &f, 0);
  user_release(&d, &f, 0);
  fake_finish(&f);
  ck_assert_int_eq(c.calls + d.calls + a.calls + b.calls, 4);
}
END_TEST

/* The flood: N requesters, some with random deadlines, through a pool of
 * MAX_OPEN connections whose opens take random time; holders keep their
 * connection a random while. */
#define FLOOD_MAX_OPEN 4

typedef struct flood_s flood_t;
typedef struct flooder_s {
  user_t u;
  flood_t* fl;
  int seq;
  int granted_order;
  uv_timer_t hold;
} flooder_t;

struct flood_s {
  fake_t f;
  flooder_t* who;
  int n;
  int done;
  int grants;
  int last_granted_seq;
  int held, max_held;
  uint64_t rng;
};

static void flood_hold_closed(uv_handle_t* h) {
  flooder_t* w = h->data;
  w->fl->done++;
}

static void flood_hold_done(uv_timer_t* t) {
  flooder_t* w = t->data;
  w->fl->held--;
  user_release(&w->u, &w->fl->f, 0);
  uv_close((uv_handle_t*)t, flood_hold_closed);
}

static void flood_cb(uvctx_pool_acquire_t* req, int status,
                     uvctx_pool_conn_t* conn) {
  flooder_t* w = CONTAINER_OF(req, flooder_t, u.req);
  flood_t* fl = w->fl;
  uvctx_pool_stats_t s;
  user_cb(req, status, conn);
  s = stats_of(&fl->f);
  ck_assert_uint_le(s.in_use, FLOOD_MAX_OPEN);
  ck_assert_uint_le(s.open + s.opening + s.closing, FLOOD_MAX_OPEN);
  if (status == 0) {
    /* FIFO: every grant goes to a requester queued after the previous
     * one's. */
    ck_assert_int_gt(w->seq, fl->last_granted_seq);
    fl->last_granted_seq = w->seq;
    w->granted_order = ++fl->grants;
    /* Its context was not done when it got the connection. */
    ck_assert_int_eq(uvctx_err(w->u.ctx), 0);
    fl->held++;
    if (fl->held > fl->max_held)
      fl->max_held = fl->held;
    ck_assert_int_eq(uv_timer_init(uvt_loop, &w->hold), 0);
    w->hold.data = w;
    ck_assert_int_eq(uv_timer_start(&w->hold, flood_hold_done,
                                    uvt_rand_below(&fl->rng, 3), 0),
                     0);
  } else {
    /* Only a done context makes a requester give up, with its error. */
    ck_assert_int_ne(uvctx_err(w->u.ctx), 0);
    ck_assert_int_eq(status, uvctx_err(w->u.ctx));
    fl->done++;
  }
}

START_TEST(test_fifo_flood_random_deadlines) {
  flood_t fl;
  uvctx_pool_options_t o = {0};
  uvctx_pool_stats_t s;
  int i, errors = 0;
  uint64_t seed = uvt_seed("test_fifo_flood_random_deadlines");
  memset(&fl, 0, sizeof(fl));
  fl.rng = seed;
  fl.n = UVT_SCALE(600, 200);
  o.max_open = FLOOD_MAX_OPEN;
  o.max_idle = 2;
  fake_init(&fl.f, &o);
  fl.f.rng = seed ^ 0x5555;
  fl.f.open_delay_rand = 4;
  fl.f.async_close = 1;
  fl.who = calloc((size_t)fl.n, sizeof(*fl.who));
  ck_assert_ptr_nonnull(fl.who);
  for (i = 0; i < fl.n; i++) {
    flooder_t* w = &fl.who[i];
    uvctx_t* ctx;
    w->fl = &fl;
    w->seq = i + 1;
    if (uvt_rand_below(&fl.rng, 3) == 0)
      ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
    else
      ck_assert_int_eq(
          uvctx_with_timeout(uvt_bg, uvt_rand_below(&fl.rng, 150), &ctx), 0);
    w->u.req.data = &w->u;
    w->u.ctx = ctx;
    ck_assert_int_eq(uvctx_pool_acquire(&w->u.req, &fl.f.pool, ctx, flood_cb),
                     0);
    /* A few more broken releases on the way would hide nothing: keep the
     * flood about fairness. Every 50th requester checks the gauges. */
    if (i % 50 == 0) {
      s = stats_of(&fl.f);
      ck_assert_uint_le(s.opening, FLOOD_MAX_OPEN);
    }
  }
  UVT_RUN_UNTIL_MS(fl.done == fl.n, 60000);
  for (i = 0; i < fl.n; i++) {
    ck_assert_int_eq(fl.who[i].u.calls, 1);
    if (fl.who[i].u.status != 0)
      errors++;
    uvctx_release(fl.who[i].u.ctx);
  }
  ck_assert_int_eq(fl.grants + errors, fl.n);
  /* Both outcomes happened, or the test proved little. */
  ck_assert_int_gt(fl.grants, FLOOD_MAX_OPEN);
  ck_assert_int_gt(errors, 0);
  ck_assert_int_le(fl.f.max_live, FLOOD_MAX_OPEN);
  ck_assert_int_le(fl.max_held, FLOOD_MAX_OPEN);
  s = stats_of(&fl.f);
  ck_assert_uint_eq(s.acquired, (uint64_t)fl.grants);
  ck_assert_uint_eq(s.in_use, 0);
  ck_assert_uint_eq(s.waiting, 0);
  ck_assert_uint_le(s.idle, 2);
  ck_assert_uint_gt(s.wait_count, 0);
  ck_assert_uint_eq(s.wait.count, s.wait_count);
  fake_finish(&fl.f);
  free(fl.who);
}
END_TEST

START_TEST(test_max_idle_closes_the_rest) {
  fake_t f;
  user_t u[5];
  uvctx_pool_options_t o = {0};
  uvctx_pool_stats_t s;
  int i;
  o.max_idle = 2;
  fake_init(&f, &o);
  for (i = 0; i < 5; i++)
    user_acquire(&u[i], &f, NULL);
  UVT_RUN_UNTIL(u[0].calls && u[1].calls && u[2].calls && u[3].calls &&
                u[4].calls);
  ck_assert_int_eq(f.opened, 5);
  for (i = 0; i < 5; i++)
    user_release(&u[i], &f, 0);
  s = stats_of(&f);
  ck_assert_uint_eq(s.idle, 2);
  ck_assert_uint_eq(s.max_idle_closed, 3);
  ck_assert_int_eq(f.closes, 3);
  fake_finish(&f);
}
END_TEST

START_TEST(test_max_open_bounds_opens) {
  fake_t f;
  user_t u[6];
  uvctx_pool_options_t o = {0};
  int i;
  o.max_open = 2;
  o.max_idle = 5; /* capped at max_open */
  fake_init(&f, &o);
  f.open_delay_ms = 5;
  for (i = 0; i < 6; i++)
    user_acquire(&u[i], &f, NULL);
  ck_assert_int_eq(f.open_calls, 2);
  UVT_RUN_UNTIL(u[0].calls && u[1].calls);
  ck_assert_ptr_nonnull(u[0].conn);
  ck_assert_ptr_nonnull(u[1].conn);
  ck_assert_int_eq(u[2].calls + u[3].calls + u[4].calls + u[5].calls, 0);
  for (i = 0; i < 4; i++) {
    user_release(&u[i], &f, 0);
    UVT_RUN_UNTIL(u[i + 2].calls == 1);
    ck_assert_ptr_nonnull(u[i + 2].conn);
  }
  user_release(&u[4], &f, 0);
  user_release(&u[5], &f, 0);
  ck_assert_int_eq(f.opened, 2);
  ck_assert_int_le(f.max_live, 2);
  ck_assert_uint_eq(stats_of(&f).idle, 2);
  fake_finish(&f);
}
END_TEST

START_TEST(test_max_lifetime) {
  fake_t f;
  user_t a, b, c;
  uvctx_pool_options_t o = {0};
  int first;
  o.max_lifetime_ms = 40;
  fake_init(&f, &o);
  user_get(&a, &f, NULL);
  first = a.conn->id;
  user_release(&a, &f, 0);
  /* Idle past its lifetime: the timer closes it, and it is never handed
   * out. */
  UVT_RUN_UNTIL(f.closes == 1);
  ck_assert_uint_eq(stats_of(&f).max_lifetime_closed, 1);
  user_get(&b, &f, NULL);
  ck_assert_int_ne(b.conn->id, first);
  ck_assert_int_eq(f.opened, 2);
  /* In use past its lifetime: closed on release. */
  uvt_run_for(60);
  user_release(&b, &f, 0);
  ck_assert_int_eq(f.closes, 2);
  ck_assert_uint_eq(stats_of(&f).max_lifetime_closed, 2);
  ck_assert_uint_eq(stats_of(&f).idle, 0);
  user_get(&c, &f, NULL);
  ck_assert_int_eq(f.opened, 3);
  user_release(&c, &f, 0);
  fake_finish(&f);
}
END_TEST

START_TEST(test_max_idle_time) {
  fake_t f;
  user_t a, b;
  uvctx_pool_options_t o = {0};
  uint64_t released;
  o.max_idle_time_ms = 30;
  fake_init(&f, &o);
  f.async_close = 1;
  user_get(&a, &f, NULL);
  user_release(&a, &f, 0);
  released = uv_hrtime();
  UVT_RUN_UNTIL(f.closed_done == 1);
  /* Never early. */
  ck_assert_uint_ge(uv_hrtime() - released, 30 * 1000000u);
  ck_assert_uint_eq(stats_of(&f).max_idle_time_closed, 1);
  ck_assert_uint_eq(stats_of(&f).idle, 0);
  user_get(&b, &f, NULL);
  ck_assert_int_eq(f.opened, 2);
  user_release(&b, &f, 0);
  fake_finish(&f);
}
END_TEST

START_TEST(test_broken_release_opens_for_waiter) {
  fake_t f;
  user_t a, b;
  uvctx_pool_options_t o = {0};
  int first;
  o.max_open = 1;
  fake_init(&f, &o);
  f.async_close = 1;
  user_get(&a, &f, NULL);
  first = a.conn->id;
  user_acquire(&b, &f, NULL);
  uvt_run_for(5);
  ck_assert_int_eq(b.calls, 0);
  user_release(&a, &f, 1);
  /* The slot is free only once the close is confirmed: max_open holds. */
  ck_assert_int_eq(f.open_calls, 1);
  UVT_RUN_UNTIL(b.calls == 1);
  ck_assert_int_eq(b.status, 0);
  ck_assert_int_ne(b.conn->id, first);
  ck_assert_int_eq(f.opened, 2);
  ck_assert_int_le(f.max_live, 1);
  ck_assert_uint_eq(stats_of(&f).broken_closed, 1);
  user_release(&b, &f, 0);
  fake_finish(&f);
}
END_TEST

START_TEST(test_check_refuses_idle) {
  fake_t f;
  user_t a, b;
  int first;
  fake_init(&f, NULL);
  user_get(&a, &f, NULL);
  first = a.conn->id;
  a.conn->bad = 1;
  user_release(&a, &f, 0);
  user_get(&b, &f, NULL);
  ck_assert_int_ne(b.conn->id, first);
  ck_assert_uint_eq(stats_of(&f).broken_closed, 1);
  user_release(&b, &f, 0);
  fake_finish(&f);
}
END_TEST

START_TEST(test_open_failure_goes_to_waiter) {
  fake_t f;
  user_t a, b, c;
  fake_init(&f, NULL);
  f.fail_next = 1;
  f.fail_status = UV_ECONNREFUSED;
  user_acquire(&a, &f, NULL);
  UVT_RUN_UNTIL(a.calls == 1);
  ck_assert_int_eq(a.status, UV_ECONNREFUSED);
  /* open() refusing at once: the error still comes through the callback. */
  f.refuse_next = 1;
  f.refuse_status = UV_ENOMEM;
  user_acquire(&b, &f, NULL);
  ck_assert_int_eq(b.calls, 0);
  UVT_RUN_UNTIL(b.calls == 1);
  ck_assert_int_eq(b.status, UV_ENOMEM);
  ck_assert_uint_eq(stats_of(&f).open_failures, 2);
  ck_assert_uint_eq(stats_of(&f).waiting, 0);
  user_get(&c, &f, NULL);
  ck_assert_int_eq(c.status, 0);
  user_release(&c, &f, 0);
  fake_finish(&f);
}
END_TEST

static void cancel_later(void* arg) {
  uv_sleep(20);
  ck_assert_int_eq(uvctx_cancel(arg), 0);
}

START_TEST(test_cancel_from_another_thread) {
  fake_t f;
  user_t a, b;
  uvctx_pool_options_t o = {0};
  uvctx_t* ctx;
  uv_thread_t t;
  o.max_open = 1;
  fake_init(&f, &o);
  user_get(&a, &f, NULL);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  user_acquire(&b, &f, ctx);
  ck_assert_int_eq(uv_thread_create(&t, cancel_later, ctx), 0);
  UVT_RUN_UNTIL(b.calls == 1);
  ck_assert_int_eq(uv_thread_join(&t), 0);
  ck_assert_int_eq(b.status, UV_ECANCELED);
  ck_assert_ptr_null(b.conn);
  ck_assert_uint_eq(stats_of(&f).waiting, 0);
  /* The waiter left: the released connection becomes idle. */
  user_release(&a, &f, 0);
  uvt_run_for(5);
  ck_assert_int_eq(b.calls, 1);
  ck_assert_uint_eq(stats_of(&f).idle, 1);
  uvctx_release(ctx);
  fake_finish(&f);
}
END_TEST

START_TEST(test_done_context) {
  fake_t f;
  user_t a;
  uvctx_t* ctx;
  fake_init(&f, NULL);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &ctx), 0);
  user_acquire(&a, &f, ctx);
  ck_assert_int_eq(a.calls, 0);
  UVT_RUN_UNTIL(a.calls == 1);
  ck_assert_int_eq(a.status, UV_ETIMEDOUT);
  ck_assert_int_eq(f.open_calls, 0); /* no work for a done context */
  uvctx_release(ctx);
  fake_finish(&f);
}
END_TEST

START_TEST(test_done_wins_over_handover) {
  fake_t f;
  user_t a, b, c;
  uvctx_pool_options_t o = {0};
  uvctx_t* ctx;
  o.max_open = 1;
  fake_init(&f, &o);
  user_get(&a, &f, NULL);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  user_acquire(&b, &f, ctx);
  user_acquire(&c, &f, NULL);
  /* The connection is on its way to b when b's context ends: b gets the
   * error, and the connection goes on to c. */
  user_release(&a, &f, 0);
  ck_assert_int_eq(uvctx_cancel(ctx), 0);
  UVT_RUN_UNTIL(b.calls == 1 && c.calls == 1);
  ck_assert_int_eq(b.status, UV_ECANCELED);
  ck_assert_ptr_null(b.conn);
  ck_assert_int_eq(c.status, 0);
  ck_assert_int_eq(f.opened, 1);
  user_release(&c, &f, 0);
  uvctx_release(ctx);
  fake_finish(&f);
}
END_TEST

START_TEST(test_close_fails_waiters) {
  fake_t f;
  user_t a, w1, w2, refused;
  uvctx_pool_options_t o = {0};
  o.max_open = 1;
  fake_init(&f, &o);
  user_get(&a, &f, NULL);
  user_acquire(&w1, &f, NULL);
  user_acquire(&w2, &f, NULL);
  ck_assert_int_eq(uvctx_pool_close(&f.pool, fake_pool_closed), 0);
  ck_assert_int_eq(uvctx_pool_close(&f.pool, fake_pool_closed), UV_EALREADY);
  memset(&refused, 0, sizeof(refused));
  refused.req.data = &refused;
  ck_assert_int_eq(uvctx_pool_acquire(&refused.req, &f.pool, uvt_bg, user_cb),
                   UV_ECANCELED);
  ck_assert_int_eq(w1.calls + w2.calls, 0); /* not inside the close */
  UVT_RUN_UNTIL(w1.calls == 1 && w2.calls == 1);
  ck_assert_int_eq(w1.status, UV_ECANCELED);
  ck_assert_int_eq(w2.status, UV_ECANCELED);
  uvt_run_for(5);
  ck_assert_int_eq(refused.calls, 0);
  ck_assert_int_eq(f.pool_closed, 0); /* a still holds its connection */
  user_release(&a, &f, 0);
  ck_assert_int_eq(f.closes, 1); /* closed, not kept idle */
  UVT_RUN_UNTIL(f.pool_closed == 1);
  ck_assert_int_eq(f.opened, f.closes);
  ck_assert_int_eq(f.live, 0);
}
END_TEST

START_TEST(test_close_with_idle_and_open_in_flight) {
  fake_t f;
  user_t a, b, w;
  uvctx_pool_options_t o = {0};
  uvctx_t* ctx;
  o.max_open = 3;
  fake_init(&f, &o);
  f.async_close = 1;
  user_acquire(&a, &f, NULL);
  user_acquire(&b, &f, NULL);
  UVT_RUN_UNTIL(a.calls && b.calls);
  /* An open that will not finish by itself, for a waiter that leaves. */
  f.open_delay_ms = 60000;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  user_acquire(&w, &f, ctx);
  ck_assert_int_eq(f.open_calls, 3);
  uvctx_release(ctx);
  UVT_RUN_UNTIL(w.calls == 1);
  ck_assert_int_eq(w.status, UV_ECANCELED);
  user_release(&b, &f, 0);
  ck_assert_uint_eq(stats_of(&f).idle, 1);
  ck_assert_uint_eq(stats_of(&f).opening, 1);
  /* A live pool keeps the loop binding busy. */
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);

  ck_assert_int_eq(uvctx_pool_close(&f.pool, fake_pool_closed), 0);
  ck_assert_int_eq(f.closes, 1); /* the idle one, at once */
  /* The open is abandoned through the pool's context. */
  UVT_RUN_UNTIL(f.open_failed == 1 && f.closed_done == 1);
  uvt_run_for(5);
  ck_assert_int_eq(f.pool_closed, 0); /* a still holds its connection */
  user_release(&a, &f, 0);
  UVT_RUN_UNTIL(f.pool_closed == 1);
  ck_assert_int_eq(f.opened, 2);
  ck_assert_int_eq(f.opened, f.closes);
  ck_assert_int_eq(f.live, 0);
}
END_TEST

START_TEST(test_context_on_another_loop) {
  fake_t f;
  uv_loop_t other;
  uvctx_loop_t* ol;
  uvctx_t* ctx;
  user_t u;
  fake_init(&f, NULL);
  ck_assert_int_eq(uv_loop_init(&other), 0);
  ck_assert_int_eq(uvctx_loop_init(&other, &ol), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvctx_background(ol), &ctx), 0);
  memset(&u, 0, sizeof(u));
  ck_assert_int_eq(uvctx_pool_acquire(&u.req, &f.pool, ctx, user_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_pool_acquire(NULL, &f.pool, uvt_bg, user_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_pool_acquire(&u.req, &f.pool, uvt_bg, NULL),
                   UV_EINVAL);
  uvctx_release(ctx);
  ck_assert_int_eq(uvctx_loop_close(ol), 0);
  uvt_loop_finish(&other);
  fake_finish(&f);
  ck_assert_int_eq(u.calls, 0);
}
END_TEST

START_TEST(test_stats_in_prometheus_text) {
  fake_t f;
  user_t a, b;
  uvctx_pool_options_t o = {0};
  uvctx_pool_stats_t s;
  const uvctx_pool_stats_t* rows[1];
  const char* labels[] = {"db \"main\""};
  char* text = NULL;
  size_t len = 0;
  o.max_open = 1;
  fake_init(&f, &o);
  user_get(&a, &f, NULL);
  user_acquire(&b, &f, NULL); /* waits for a's connection (a waited for
                                 its open) */
  uvt_run_for(5);
  user_release(&a, &f, 0);
  UVT_RUN_UNTIL(b.calls == 1);
  s = stats_of(&f);
  ck_assert_uint_eq(s.wait_count, 2);
  ck_assert_uint_eq(s.wait.count, 2);
  ck_assert_uint_eq(s.wait.sum_ns, s.wait_duration_ns);
  ck_assert_uint_ge(s.wait_duration_ns, 4 * 1000000u);
  rows[0] = &s;
  ck_assert_int_eq(uvctx_pool_metrics_format(rows, labels, 1, &text, &len), 0);
  ck_assert_uint_eq(len, strlen(text));
  ck_assert_ptr_nonnull(
      strstr(text, "# TYPE uvctx_pool_in_use gauge\n"
                   "uvctx_pool_in_use{pool=\"db \\\"main\\\"\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(text, "# TYPE uvctx_pool_wait_total counter\n"
                                     "uvctx_pool_wait_total{pool="));
  ck_assert_ptr_nonnull(strstr(text, "uvctx_pool_max_open{pool=\"db \\\"main"
                                     "\\\"\"} 1\n"));
  ck_assert_ptr_nonnull(
      strstr(text, "# TYPE uvctx_pool_wait_duration_seconds histogram\n"));
  ck_assert_ptr_nonnull(strstr(
      text, "uvctx_pool_wait_duration_seconds_bucket{pool=\"db \\\"main\\\"\","
            "le=\"+Inf\"} 2\n"));
  ck_assert_ptr_nonnull(strstr(
      text,
      "uvctx_pool_wait_duration_seconds_count{pool=\"db \\\"main\\\"\"} 2\n"));
  ck_assert_ptr_nonnull(strstr(text, "uvctx_pool_opened_total{pool="));
  uvctx_metrics_free(text);
  /* Without labels, the index. */
  ck_assert_int_eq(uvctx_pool_metrics_format(rows, NULL, 1, &text, NULL), 0);
  ck_assert_ptr_nonnull(strstr(text, "uvctx_pool_idle{pool=\"0\"} 0\n"));
  uvctx_metrics_free(text);
  ck_assert_int_eq(uvctx_pool_metrics_format(rows, NULL, 1, NULL, NULL),
                   UV_EINVAL);
  rows[0] = NULL;
  ck_assert_int_eq(uvctx_pool_metrics_format(rows, NULL, 1, &text, NULL),
                   UV_EINVAL);
  user_release(&b, &f, 0);
  fake_finish(&f);
}
END_TEST

/* ---- allocation failure ---------------------------------------------------
 */

static void alloc_setup(void) {
  uvt_alloc_install();
  uvt_setup();
}

START_TEST(test_init_allocation_failure) {
  fake_t f;
  long n;
  int rc = -1;
  uint64_t before = uvctx_live_allocations();
  for (n = 1; n < 50; n++) {
    memset(&f, 0, sizeof(f));
    uvt_alloc_fail_nth(n);
    rc = uvctx_pool_init(&f.pool, uvt_l, &fake_kind, &f, NULL);
    uvt_alloc_disarm();
    if (rc == 0)
      break;
    ck_assert_int_eq(rc, UV_ENOMEM);
    ck_assert(uvt_alloc_failed());
    /* Nothing is left behind. */
    ck_assert_uint_eq(uvctx_live_allocations(), before);
  }
  ck_assert_int_eq(rc, 0);
  ck_assert_int_gt(n, 1); /* at least one allocation could fail */
  fake_finish(&f);
}
END_TEST

static Suite* pool_suite(void) {
  Suite* s = suite_create("pool");
  TCase* tc = tcase_create("pool");
  TCase* ta = tcase_create("alloc");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, test_reuse_most_recent_first);
  tcase_add_test(tc, test_fifo_flood_random_deadlines);
  tcase_add_test(tc, test_max_idle_closes_the_rest);
  tcase_add_test(tc, test_max_open_bounds_opens);
  tcase_add_test(tc, test_max_lifetime);
  tcase_add_test(tc, test_max_idle_time);
  tcase_add_test(tc, test_broken_release_opens_for_waiter);
  tcase_add_test(tc, test_check_refuses_idle);
  tcase_add_test(tc, test_open_failure_goes_to_waiter);
  tcase_add_test(tc, test_cancel_from_another_thread);
  tcase_add_test(tc, test_done_context);
  tcase_add_test(tc, test_done_wins_over_handover);
  tcase_add_test(tc, test_close_fails_waiters);
  tcase_add_test(tc, test_close_with_idle_and_open_in_flight);
  tcase_add_test(tc, test_context_on_another_loop);
  tcase_add_test(tc, test_stats_in_prometheus_text);
  suite_add_tcase(s, tc);
  tcase_add_checked_fixture(ta, alloc_setup, uvt_teardown);
  tcase_add_test(ta, test_init_allocation_failure);
  suite_add_tcase(s, ta);
  return s;
}

int main(void) {
  return uvt_main(pool_suite());
}
