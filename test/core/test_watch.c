/* test_watch.c pins lib/core/watch.c: callbacks run on the home loop's thread,
 * never inside the call that caused them, exactly once unless stopped;
 * uvctx_watch_stop() returns 1 only when it prevented the callback; a
 * watch keeps its context alive; a watch may be restarted from its own
 * callback. */
#include "helpers.h"

static const uvctx_key_t key_a = {.name = "a", .free_value = NULL};

static uvctx_loop_counts_t counts(void) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(uvt_l, &n);
  return n;
}

typedef struct probe_s {
  uvctx_watch_t w;
  int calls;
  int err;
  int wrong_thread;
  int in_call; /* set around calls that must not run the callback */
  int nested;
} probe_t;

static void probe_cb(uvctx_watch_t* w, int err) {
  probe_t* p = w->data;
  p->calls++;
  p->err = err;
  if (!uvt_on_main_thread())
    p->wrong_thread = 1;
  if (p->in_call)
    p->nested = 1;
}

static void probe_init(probe_t* p) {
  memset(p, 0, sizeof(*p));
  memset(&p->w, 0xa5, sizeof(p->w)); /* watches take uninitialized memory */
  p->w.data = p;
}

START_TEST(fires_once_after_cancel) {
  uvctx_t* c;
  probe_t p;
  probe_init(&p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_ptr_eq(p.w.data, &p);
  ck_assert_uint_eq(counts().watches, 1);
  p.in_call = 1;
  ck_assert_int_eq(uvctx_cancel(c), 0);
  p.in_call = 0;
  ck_assert_int_eq(p.calls, 0);
  /* uv_run() does not return before the callback ran. */
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ECANCELED);
  ck_assert_int_eq(p.nested, 0);
  ck_assert_int_eq(p.wrong_thread, 0);
  ck_assert_uint_eq(counts().watches, 0);
  uvt_run_for(5);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 0);
  uvctx_unref(c);
}
END_TEST

START_TEST(start_on_done_context_is_queued) {
  uvctx_t* c;
  probe_t p;
  probe_init(&p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  p.in_call = 1;
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  p.in_call = 0;
  ck_assert_int_eq(p.calls, 0);
  uvctx_unref(c);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ECANCELED);
  ck_assert_int_eq(p.nested, 0);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

START_TEST(stop_prevents_callback) {
  uvctx_t* c;
  probe_t p;
  probe_init(&p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 1);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 0);
  ck_assert_uint_eq(counts().watches, 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 0);

  /* Stopped after the cancel, while the callback is queued. */
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 1);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 0);
  uvctx_unref(c);

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 1);
  uvt_run_for(5);
  ck_assert_int_eq(p.calls, 0);
  ck_assert_uint_eq(counts().watches, 0);
  uvctx_unref(c);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

START_TEST(stop_of_null_watch) {
  ck_assert_int_eq(uvctx_watch_stop(NULL), 0);
}
END_TEST

START_TEST(bad_input) {
  uvctx_t* c;
  probe_t p;
  uint64_t before;
  probe_init(&p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  before = uvctx_live_allocations();
  ck_assert_int_eq(uvctx_watch_start(NULL, c, probe_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_watch_start(&p.w, NULL, probe_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, NULL), UV_EINVAL);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_uint_eq(counts().watches, 0);
  uvctx_release(c);
  uvt_run_for(2);
  ck_assert_int_eq(p.calls, 0);
}
END_TEST

/* The watch holds its context: dropping every other reference keeps the
 * context alive (and cancellable through its parent) until the callback. */
START_TEST(watch_keeps_context_alive) {
  uvctx_t *p, *c;
  probe_t a, b;
  probe_init(&a);
  probe_init(&b);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&a.w, c, probe_cb), 0);
  uvctx_unref(c);
  ck_assert_uint_eq(counts().contexts, 2);
  ck_assert_int_eq(uvctx_cancel(p), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(a.calls, 1);
  ck_assert_uint_eq(counts().contexts, 1);

  /* Stopping drops the reference too. */
  ck_assert_int_eq(uvctx_with_cancel(p, &c), 0); /* born done */
  ck_assert_int_eq(uvctx_watch_start(&b.w, c, probe_cb), 0);
  uvctx_unref(c);
  ck_assert_uint_eq(counts().contexts, 2);
  ck_assert_int_eq(uvctx_watch_stop(&b.w), 1);
  ck_assert_uint_eq(counts().contexts, 1);
  uvctx_unref(p);
  ck_assert_uint_eq(counts().contexts, 0);
  ck_assert_int_eq(b.calls, 0);
}
END_TEST

/* Restarting a watch from inside its own callback. */
typedef struct again_s {
  uvctx_watch_t w;
  uvctx_t* c;
  int calls;
  int depth;
  int max_depth;
  int limit;
} again_t;

static void again_cb(uvctx_watch_t* w, int err) {
  again_t* a = (again_t*)w;
  ck_assert_int_eq(err, UV_ECANCELED);
  a->calls++;
  a->depth++;
  if (a->depth > a->max_depth)
    a->max_depth = a->depth;
  if (a->calls < a->limit)
    ck_assert_int_eq(uvctx_watch_start(&a->w, a->c, again_cb), 0);
  a->depth--;
}

START_TEST(restart_from_callback) {
  again_t a;
  memset(&a, 0, sizeof(a));
  a.limit = 100;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a.c), 0);
  ck_assert_int_eq(uvctx_watch_start(&a.w, a.c, again_cb), 0);
  ck_assert_int_eq(uvctx_cancel(a.c), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(a.calls, a.limit);
  ck_assert_int_eq(a.max_depth, 1); /* never inside uvctx_watch_start() */
  ck_assert_uint_eq(counts().watches, 0);
  uvctx_unref(a.c);
}
END_TEST

/* Restarting on a fresh, live context from the callback. */
typedef struct hop_s {
  uvctx_watch_t w;
  uvctx_t* next;
  int calls;
} hop_t;

static void hop_cb(uvctx_watch_t* w, int err) {
  hop_t* h = (hop_t*)w;
  (void)err;
  h->calls++;
  if (h->calls == 1) {
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &h->next), 0);
    ck_assert_int_eq(uvctx_watch_start(&h->w, h->next, hop_cb), 0);
    ck_assert_int_eq(uvctx_cancel(h->next), 0);
    uvctx_unref(h->next);
  }
}

START_TEST(restart_on_another_context) {
  hop_t h;
  uvctx_t* c;
  memset(&h, 0, sizeof(h));
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&h.w, c, hop_cb), 0);
  uvctx_release(c);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(h.calls, 2);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

START_TEST(many_watches_each_once) {
  enum { N = 1000 };
  probe_t* p = calloc(N, sizeof(*p));
  uvctx_t *c, *v, *ps[2], *any, *other;
  int i;
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &other), 0);
  ck_assert_int_eq(uvctx_with_value(c, &key_a, NULL, &v), 0);
  ps[0] = other;
  ps[1] = c;
  ck_assert_int_eq(uvctx_any(ps, 2, &any), 0);
  for (i = 0; i < N; i++) {
    probe_init(&p[i]);
    ck_assert_int_eq(uvctx_watch_start(&p[i].w,
                                       i % 3 == 0   ? c
                                       : i % 3 == 1 ? v
                                                    : any,
                                       probe_cb),
                     0);
  }
  ck_assert_uint_eq(counts().watches, N);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  for (i = 0; i < N; i++)
    ck_assert_int_eq(p[i].calls, 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  for (i = 0; i < N; i++) {
    ck_assert_int_eq(p[i].calls, 1);
    ck_assert_int_eq(p[i].err, UV_ECANCELED);
  }
  ck_assert_uint_eq(counts().watches, 0);
  uvctx_unref(any);
  uvctx_unref(v);
  uvctx_unref(c);
  uvctx_release(other);
  free(p);
}
END_TEST

/* Two watches on one context, the first to run stops the other: the
 * stopped one never runs, and exactly one of the two stops says 1. */
typedef struct pair_s {
  uvctx_watch_t w[2];
  int calls[2];
  int stopped[2];
} pair_t;

static void pair_cb(uvctx_watch_t* w, int err) {
  pair_t* p = w->data;
  int i = w == &p->w[0] ? 0 : 1;
  (void)err;
  p->calls[i]++;
  p->stopped[1 - i] = uvctx_watch_stop(&p->w[1 - i]);
}

START_TEST(stop_from_sibling_callback) {
  pair_t p;
  uvctx_t* c;
  memset(&p, 0, sizeof(p));
  p.w[0].data = p.w[1].data = &p;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w[0], c, pair_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w[1], c, pair_cb), 0);
  uvctx_release(c);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls[0] + p.calls[1], 1);
  ck_assert_int_eq(p.stopped[0] + p.stopped[1], 1);
  ck_assert_uint_eq(counts().watches, 0);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

/* A watch on a parent whose callback cancels a child: the child's watch
 * fires exactly once, whether the child is a descendant (already
 * cancelled) or hangs below a without_cancel. */
typedef struct fam_s {
  uvctx_watch_t pw;
  probe_t kid[2];
  uvctx_t* kids[2];
  int rc[2];
} fam_t;

static void fam_cb(uvctx_watch_t* w, int err) {
  fam_t* f = (fam_t*)w;
  (void)err;
  f->rc[0] = uvctx_cancel(f->kids[0]);
  f->rc[1] = uvctx_cancel(f->kids[1]);
}

START_TEST(parent_callback_cancels_child) {
  fam_t f;
  uvctx_t *p, *d;
  memset(&f, 0, sizeof(f));
  probe_init(&f.kid[0]);
  probe_init(&f.kid[1]);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &f.kids[0]), 0);
  ck_assert_int_eq(uvctx_without_cancel(p, &d), 0);
  ck_assert_int_eq(uvctx_with_cancel(d, &f.kids[1]), 0);
  ck_assert_int_eq(uvctx_watch_start(&f.pw, p, fam_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&f.kid[0].w, f.kids[0], probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&f.kid[1].w, f.kids[1], probe_cb), 0);
  ck_assert_int_eq(uvctx_cancel(p), 0);
  ck_assert_int_eq(uvctx_err(f.kids[1]), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(f.rc[0], 0);
  ck_assert_int_eq(f.rc[1], 0);
  ck_assert_int_eq(f.kid[0].calls, 1);
  ck_assert_int_eq(f.kid[1].calls, 1);
  ck_assert_int_eq(uvctx_err(f.kids[1]), UV_ECANCELED);
  uvctx_unref(f.kids[0]);
  uvctx_unref(f.kids[1]);
  uvctx_unref(d);
  uvctx_unref(p);
}
END_TEST

/* Watches on contexts that can never be done never fire, and count as
 * pending until stopped. */
START_TEST(never_done_contexts) {
  uvctx_t *c, *d;
  probe_t a, b;
  probe_init(&a);
  probe_init(&b);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_without_cancel(c, &d), 0);
  ck_assert_int_eq(uvctx_watch_start(&a.w, uvt_bg, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&b.w, d, probe_cb), 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_uint_eq(counts().watches, 2);
  uvt_run_for(5);
  ck_assert_int_eq(a.calls + b.calls, 0);
  ck_assert_int_eq(uvctx_watch_stop(&a.w), 1);
  ck_assert_int_eq(uvctx_watch_stop(&b.w), 1);
  ck_assert_uint_eq(counts().watches, 0);
  uvctx_unref(d);
  uvctx_unref(c);
}
END_TEST

/* A callback that drops the last reference to its own context. */
typedef struct own_s {
  uvctx_watch_t w;
  uvctx_t* c;
  int calls;
} own_t;

static void own_cb(uvctx_watch_t* w, int err) {
  own_t* o = (own_t*)w;
  (void)err;
  o->calls++;
  uvctx_release(o->c);
}

START_TEST(callback_drops_last_reference) {
  own_t o;
  memset(&o, 0, sizeof(o));
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 5, &o.c), 0);
  ck_assert_int_eq(uvctx_watch_start(&o.w, o.c, own_cb), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(o.calls, 1);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

/* Cancelled or started from another thread, the callback still runs on
 * the home loop's thread. */
typedef struct remote_s {
  uvctx_t* c;
  probe_t* p;
  atomic_int done;
} remote_t;

static void remote_cancel(void* arg) {
  remote_t* r = arg;
  ck_assert_int_eq(uvctx_cancel(r->c), 0);
  atomic_store(&r->done, 1);
}

static void remote_start(void* arg) {
  remote_t* r = arg;
  ck_assert_int_eq(uvctx_watch_start(&r->p->w, r->c, probe_cb), 0);
  ck_assert_int_eq(uvctx_cancel(r->c), 0);
  atomic_store(&r->done, 1);
}

START_TEST(remote_cancel_runs_on_home_thread) {
  probe_t p;
  remote_t r;
  uv_thread_t t;
  probe_init(&p);
  memset(&r, 0, sizeof(r));
  r.p = &p;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &r.c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, r.c, probe_cb), 0);
  ck_assert_int_eq(uv_thread_create(&t, remote_cancel, &r), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
  ck_assert_int_eq(p.calls, 0);
  UVT_RUN_UNTIL(p.calls == 1);
  ck_assert_int_eq(p.wrong_thread, 0);
  ck_assert_int_eq(p.err, UV_ECANCELED);
  uvctx_unref(r.c);

  /* Started and cancelled from another thread. */
  probe_init(&p);
  atomic_store(&r.done, 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &r.c), 0);
  ck_assert_int_eq(uv_thread_create(&t, remote_start, &r), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
  UVT_RUN_UNTIL(p.calls == 1);
  ck_assert_int_eq(p.wrong_thread, 0);
  uvt_run_for(5);
  ck_assert_int_eq(p.calls, 1);
  uvctx_unref(r.c);
}
END_TEST

/* ---- the same-thread path of the mailbox --------------------------------- */

static uvctx_loop_stats_t loop_stats(void) {
  uvctx_loop_stats_t st;
  ck_assert_int_eq(uvctx_loop_stats(uvt_l, &st), 0);
  return st;
}

/* A new cancel context of the background with probe p's watch on it. */
static uvctx_t* watched(probe_t* p, uvctx_watch_cb cb) {
  uvctx_t* c;
  probe_init(p);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p->w, c, cb), 0);
  return c;
}

/* The order callbacks ran in. */
static int order[4];
static int n_order;

static uvctx_t* same_thread_ctx; /* cancelled by the handle callbacks below */

static void cancel_from_timer(uv_timer_t* t) {
  (void)t;
  ck_assert_int_eq(uvctx_cancel(same_thread_ctx), 0);
}

static void cancel_from_async(uv_async_t* a) {
  (void)a;
  ck_assert_int_eq(uvctx_cancel(same_thread_ctx), 0);
}

/* A cancel on the loop's own thread sends no wake-up: the callbacks come
 * from the very next pass of the loop (one uv_run(UV_RUN_NOWAIT)), counted
 * as callbacks with their propagation delay and not as remote wake-ups;
 * once they have run, nothing of the binding keeps the loop alive (or its
 * poll from blocking). */
START_TEST(loop_thread_cancel_needs_no_wakeup) {
  uvctx_t* c[3];
  probe_t p[3];
  uvctx_loop_stats_t before = loop_stats(), after;
  int i;

  for (i = 0; i < 3; i++)
    c[i] = watched(&p[i], probe_cb);
  p[0].in_call = p[1].in_call = p[2].in_call = 1;
  ck_assert_int_eq(uvctx_cancel(c[2]), 0);
  ck_assert_int_eq(uvctx_cancel(c[0]), 0);
  ck_assert_int_eq(uvctx_cancel(c[1]), 0);
  p[0].in_call = p[1].in_call = p[2].in_call = 0;
  ck_assert_int_eq(p[0].calls + p[1].calls + p[2].calls, 0);
  /* The binding keeps the loop alive while they are due. */
  ck_assert_int_ne(uv_loop_alive(uvt_loop), 0);
  uv_run(uvt_loop, UV_RUN_NOWAIT);
  for (i = 0; i < 3; i++) {
    ck_assert_int_eq(p[i].calls, 1);
    ck_assert_int_eq(p[i].err, UV_ECANCELED);
    ck_assert_int_eq(p[i].nested, 0);
    ck_assert_int_eq(p[i].wrong_thread, 0);
  }
  after = loop_stats();
  ck_assert_uint_eq(after.remote_wakeups, before.remote_wakeups);
  ck_assert_uint_eq(after.callbacks, before.callbacks + 3);
  ck_assert_uint_eq(after.propagation.count, before.propagation.count + 3);
  ck_assert_int_eq(uv_loop_alive(uvt_loop), 0);
  for (i = 0; i < 3; i++)
    uvctx_unref(c[i]);
}
END_TEST

/* Callbacks come in the order their watches were made due. */
static probe_t* order_probes;

static void ordered_cb(uvctx_watch_t* w, int err) {
  probe_t* p = w->data;
  probe_cb(w, err);
  order[n_order++] = (int)(p - order_probes);
}

START_TEST(loop_thread_callbacks_keep_their_order) {
  uvctx_t* c[3];
  probe_t p[3];
  int i;

  n_order = 0;
  order_probes = p;
  for (i = 0; i < 3; i++)
    c[i] = watched(&p[i], ordered_cb);
  ck_assert_int_eq(uvctx_cancel(c[2]), 0);
  ck_assert_int_eq(uvctx_cancel(c[0]), 0);
  ck_assert_int_eq(uvctx_cancel(c[1]), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(n_order, 3);
  ck_assert_int_eq(order[0], 2);
  ck_assert_int_eq(order[1], 0);
  ck_assert_int_eq(order[2], 1);
  for (i = 0; i < 3; i++)
    uvctx_unref(c[i]);
}
END_TEST

/* A cancel from a timer callback is delivered before the poll of that
 * same iteration, one from an I/O callback (here an async handle's) right
 * after it: either way before that uv_run(UV_RUN_ONCE) returns. */
START_TEST(loop_thread_cancel_from_callbacks_same_iteration) {
  uv_timer_t t;
  uv_async_t a;
  probe_t p;

  same_thread_ctx = watched(&p, probe_cb);
  ck_assert_int_eq(uv_timer_init(uvt_loop, &t), 0);
  ck_assert_int_eq(uv_timer_start(&t, cancel_from_timer, 0, 0), 0);
  uv_run(uvt_loop, UV_RUN_ONCE);
  ck_assert_int_eq(p.calls, 1);
  uvctx_unref(same_thread_ctx);

  same_thread_ctx = watched(&p, probe_cb);
  ck_assert_int_eq(uv_async_init(uvt_loop, &a, cancel_from_async), 0);
  ck_assert_int_eq(uv_async_send(&a), 0);
  uv_run(uvt_loop, UV_RUN_ONCE);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.wrong_thread, 0);
  uvctx_unref(same_thread_ctx);
  uv_close((uv_handle_t*)&t, NULL);
  uv_close((uv_handle_t*)&a, NULL);
  uv_run(uvt_loop, UV_RUN_DEFAULT);
}
END_TEST

/* A due watch stopped before the loop delivers it: no callback, and the
 * binding stops keeping the loop alive after one pass. */
START_TEST(loop_thread_stop_before_delivery) {
  probe_t p;
  uvctx_t* c = watched(&p, probe_cb);

  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 1);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 0);
  ck_assert_int_eq(uv_loop_alive(uvt_loop), 0);
  uvctx_unref(c);
}
END_TEST

/* ---- the propagation histogram's clock ---------------------------------- */

/* The propagation recorded for a cancel made `delay_ms` before the loop
 * delivers its callback, on this thread or (remote) on another, checked
 * against uv_hrtime() readings around the cancel and around the delivery:
 * the true delay lies between the inner and the outer span of those
 * readings, and the recorded one may miss it by no more than the clock's
 * calibration allows (see common/clock.h), far less than the tolerance
 * here. The sleep only makes the delay long against the clock's
 * resolution; no bound depends on how long it really took. */
static void propagation_agrees(uint64_t delay_ms, int remote) {
  probe_t p;
  uvctx_t* c = watched(&p, probe_cb);
  uvctx_loop_stats_t before = loop_stats(), after;
  uint64_t t0, t1, t2, t3, got, lo, hi, tol;
  remote_t r;
  uv_thread_t t;

  t0 = uv_hrtime();
  if (remote) {
    r.c = c;
    r.p = &p;
    atomic_store(&r.done, 0);
    ck_assert_int_eq(uv_thread_create(&t, remote_cancel, &r), 0);
    ck_assert_int_eq(uv_thread_join(&t), 0);
  } else {
    ck_assert_int_eq(uvctx_cancel(c), 0);
  }
  t1 = uv_hrtime();
  uv_sleep((unsigned)delay_ms);
  t2 = uv_hrtime();
  UVT_RUN_UNTIL(p.calls == 1);
  t3 = uv_hrtime();
  after = loop_stats();
  ck_assert_int_eq(p.calls, 1);
  ck_assert_uint_eq(after.propagation.count, before.propagation.count + 1);
  got = after.propagation.sum_ns - before.propagation.sum_ns;
  lo = t2 - t1;
  hi = t3 - t0;
  tol = hi / 100 + 50000;
  ck_assert_msg(got + tol >= lo && got <= hi + tol,
                "propagation %" PRIu64 " ns, uv_hrtime() says %" PRIu64
                " to %" PRIu64 " ns",
                got, lo, hi);
  ck_assert_uint_ge(after.propagation.max_ns, got);
  uvctx_unref(c);
}

/* In a fresh process the clock's first conversions are provisional (two
 * uv_hrtime() readings of their own), later ones use the final rate (once
 * 50 ms have passed since the first binding was made): this test crosses
 * both, in the order they come. */
START_TEST(propagation_agrees_with_hrtime) {
  propagation_agrees(2, 0);
  propagation_agrees(60, 0);
  propagation_agrees(2, 0);
  propagation_agrees(3, 1);
}
END_TEST

static Suite* watch_suite(void) {
  Suite* s = suite_create("watch");
  TCase* tc = tcase_create("watch");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, fires_once_after_cancel);
  tcase_add_test(tc, start_on_done_context_is_queued);
  tcase_add_test(tc, stop_prevents_callback);
  tcase_add_test(tc, stop_of_null_watch);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, watch_keeps_context_alive);
  tcase_add_test(tc, restart_from_callback);
  tcase_add_test(tc, restart_on_another_context);
  tcase_add_test(tc, many_watches_each_once);
  tcase_add_test(tc, stop_from_sibling_callback);
  tcase_add_test(tc, parent_callback_cancels_child);
  tcase_add_test(tc, never_done_contexts);
  tcase_add_test(tc, callback_drops_last_reference);
  tcase_add_test(tc, remote_cancel_runs_on_home_thread);
  tcase_add_test(tc, loop_thread_cancel_needs_no_wakeup);
  tcase_add_test(tc, loop_thread_callbacks_keep_their_order);
  tcase_add_test(tc, loop_thread_cancel_from_callbacks_same_iteration);
  tcase_add_test(tc, loop_thread_stop_before_delivery);
  tcase_add_test(tc, propagation_agrees_with_hrtime);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(watch_suite());
}
