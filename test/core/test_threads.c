/* test_threads.c pins the cross-thread contract: any thread creates,
 * cancels, inspects, refs and unrefs; callbacks run on the home loop's
 * thread; cross-loop children are cancelled by their parent on another
 * loop. Then bounded stress: random trees cancelled from four threads and
 * the loop at once, cancels racing creation and frees, and 100,000
 * cross-thread cancels none of which is lost. Counts scale down in
 * sanitizer builds; randomized tests print their seed (UVCTX_TEST_SEED). */
#include "core/internal.h" /* to stripe a parent and see its stripes */
#include "helpers.h"

static const uvctx_key_t key_a = {.name = "a"};

static uvctx_loop_counts_t counts_of(uvctx_loop_t* l) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(l, &n);
  return n;
}

/* A watch that counts its calls and where they ran. */
typedef struct probe_s {
  uvctx_watch_t w;
  uvt_loop_thread_t* home; /* NULL: the fixture's loop */
  atomic_int calls;
  atomic_int wrong_thread;
  atomic_int err;
} probe_t;

static atomic_int probes_fired;

static void probe_cb(uvctx_watch_t* w, int err) {
  probe_t* p = (probe_t*)w;
  int ok = p->home != NULL ? uvt_on_loop_thread(p->home) : uvt_on_main_thread();
  if (!ok)
    atomic_store(&p->wrong_thread, 1);
  atomic_store(&p->err, err);
  atomic_fetch_add(&p->calls, 1);
  atomic_fetch_add(&probes_fired, 1);
}

static void setup(void) {
  atomic_store(&probes_fired, 0);
  uvt_setup();
}

/* ---- any thread creates, cancels, inspects, refs, unrefs ----------------- */

typedef struct worker_s {
  uv_thread_t thread;
  uvctx_t* root;
  probe_t* probes;
  int n;
  int bad;
} worker_t;

static void worker_main(void* arg) {
  worker_t* wk = arg;
  uvctx_t *c, *v, *d, *m, *ps[2];
  uint64_t dl;
  int i;
  for (i = 0; i < wk->n; i++) {
    if (uvctx_with_cancel(wk->root, &c) != 0 ||
        uvctx_with_value(c, &key_a, wk, &v) != 0 ||
        uvctx_with_timeout(v, 100000, &d) != 0) {
      wk->bad++;
      return;
    }
    ps[0] = d;
    ps[1] = wk->root;
    if (uvctx_any(ps, 2, &m) != 0) {
      wk->bad++;
      return;
    }
    if (uvctx_value(m, &key_a) != wk || uvctx_deadline(m, &dl) != 1 ||
        uvctx_home(m) != uvctx_home(wk->root) || uvctx_err(m) != 0)
      wk->bad++;
    if (uvctx_watch_start(&wk->probes[i].w, i % 2 ? m : c, probe_cb) != 0)
      wk->bad++;
    uvctx_ref(v);
    uvctx_unref(v);
    if (i % 3 == 0)
      uvctx_cancel(d);
    else
      uvctx_cancel(c);
    if (uvctx_err(m) != UV_ECANCELED)
      wk->bad++;
    uvctx_release(m);
    uvctx_release(d);
    uvctx_unref(v);
    uvctx_release(c);
  }
}

START_TEST(any_thread_creates_and_cancels) {
  enum { W = 4 };
  worker_t wk[W];
  uvctx_t* root;
  int i, n = UVT_SCALE(2000, 1000), j;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  for (i = 0; i < W; i++) {
    memset(&wk[i], 0, sizeof(wk[i]));
    wk[i].root = root;
    wk[i].n = n;
    wk[i].probes = calloc(n, sizeof(probe_t));
    ck_assert_ptr_nonnull(wk[i].probes);
    ck_assert_int_eq(uv_thread_create(&wk[i].thread, worker_main, &wk[i]), 0);
  }
  /* The loop runs the callbacks while the workers work. */
  UVT_RUN_UNTIL(atomic_load(&probes_fired) == W * n);
  for (i = 0; i < W; i++) {
    ck_assert_int_eq(uv_thread_join(&wk[i].thread), 0);
    ck_assert_int_eq(wk[i].bad, 0);
    for (j = 0; j < n; j++) {
      ck_assert_int_eq(atomic_load(&wk[i].probes[j].calls), 1);
      ck_assert_int_eq(atomic_load(&wk[i].probes[j].wrong_thread), 0);
      ck_assert_int_eq(atomic_load(&wk[i].probes[j].err), UV_ECANCELED);
    }
    free(wk[i].probes);
  }
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 1);
  ck_assert_uint_eq(counts_of(uvt_l).deadlines, 0);
  uvctx_release(root);
}
END_TEST

/* ---- cross-loop children ------------------------------------------------- */

START_TEST(cross_loop_children) {
  uvt_loop_thread_t t;
  uvctx_t *root, *x, *xd, *xv;
  probe_t px, pxd, pxv;
  const char* msg;
  memset(&px, 0, sizeof(px));
  memset(&pxd, 0, sizeof(pxd));
  memset(&pxv, 0, sizeof(pxv));
  uvt_loop_thread_start(&t);
  px.home = pxd.home = pxv.home = &t;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(root, t.l, &x), 0);
  ck_assert_ptr_eq(uvctx_home(x), t.l);
  ck_assert_int_eq(uvctx_with_timeout(x, 100000, &xd), 0);
  ck_assert_ptr_eq(uvctx_home(xd), t.l);
  ck_assert_int_eq(uvctx_with_value(xd, &key_a, &t, &xv), 0);
  /* The deadline lives in the heap of its own home. */
  UVT_RUN_UNTIL(counts_of(t.l).deadlines == 1);
  ck_assert_uint_eq(counts_of(uvt_l).deadlines, 0);
  ck_assert_uint_eq(counts_of(t.l).contexts, 3);
  ck_assert_int_eq(uvctx_watch_start(&px.w, x, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&pxd.w, xd, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&pxv.w, xv, probe_cb), 0);
  ck_assert_int_eq(uvctx_cancel_cause(root, -31, "shutdown"), 0);
  /* Synchronous on every loop. */
  ck_assert_int_eq(uvctx_err(x), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(xd), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(xv), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(xv, &msg), -31);
  ck_assert_str_eq(msg, "shutdown");
  UVT_RUN_UNTIL(atomic_load(&probes_fired) == 3);
  ck_assert_int_eq(atomic_load(&px.wrong_thread), 0);
  ck_assert_int_eq(atomic_load(&pxd.wrong_thread), 0);
  ck_assert_int_eq(atomic_load(&pxv.wrong_thread), 0);
  ck_assert_int_eq(atomic_load(&pxv.err), UV_ECANCELED);
  UVT_RUN_UNTIL(counts_of(t.l).deadlines == 0);
  uvctx_unref(xv);
  uvctx_unref(xd);
  uvctx_unref(x);
  uvctx_unref(root);
  /* The callbacks ran on t's thread, which drops the reference each held
   * just after it returned: the last free may be its, a moment later. */
  UVT_RUN_UNTIL(counts_of(t.l).contexts == 0);
  uvt_loop_thread_stop(&t);
}
END_TEST

/* A cross-loop child's deadline fires on its own loop's thread. */
START_TEST(cross_loop_deadline) {
  uvt_loop_thread_t t;
  uvctx_t *root, *x, *xd;
  probe_t p;
  memset(&p, 0, sizeof(p));
  uvt_loop_thread_start(&t);
  p.home = &t;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(root, t.l, &x), 0);
  ck_assert_int_eq(uvctx_with_timeout(x, 10, &xd), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, xd, probe_cb), 0);
  UVT_RUN_UNTIL(atomic_load(&p.calls) == 1);
  ck_assert_int_eq(atomic_load(&p.err), UV_ETIMEDOUT);
  ck_assert_int_eq(atomic_load(&p.wrong_thread), 0);
  ck_assert_int_eq(uvctx_err(x), 0);
  ck_assert_int_eq(uvctx_err(root), 0);
  uvctx_unref(xd);
  uvctx_release(x);
  uvctx_release(root);
  uvt_loop_thread_stop(&t);
}
END_TEST

/* ---- random trees cancelled from four threads and the loop at once ------- */

enum { T_CANCEL, T_VALUE, T_DEADLINE, T_ANY, T_DETACHED, T_CANCEL_ON, T_N };
enum { TREE_MAX = 500, CANCELLERS = 4 };

typedef struct tree_s {
  int n;
  uvctx_t* node[TREE_MAX];
  int kind[TREE_MAX];
  int parent[TREE_MAX][2];
  int targeted[TREE_MAX];
  int watched[TREE_MAX];
  probe_t probe[TREE_MAX];
  /* Each canceller's list of nodes and the cause it uses. */
  int list[CANCELLERS + 1][TREE_MAX];
  int list_len[CANCELLERS + 1];
  uv_barrier_t go;
  uvt_loop_thread_t* other;
  int loop_cancelled;
} tree_t;

typedef struct canceller_s {
  tree_t* tree;
  int id;
} canceller_t;

static void cancel_list(tree_t* t, int id) {
  int i;
  for (i = 0; i < t->list_len[id]; i++) {
    uvctx_t* c = t->node[t->list[id][i]];
    int rc = uvctx_cancel_cause(c, -1000 - id, NULL);
    /* Only cancellable kinds are ever targeted. */
    if (rc != 0)
      ck_abort_msg("cancel of node %d returned %d", t->list[id][i], rc);
  }
}

static void canceller_main(void* arg) {
  canceller_t* c = arg;
  uv_barrier_wait(&c->tree->go);
  cancel_list(c->tree, c->id);
}

static void loop_cancel_cb(uv_timer_t* timer) {
  tree_t* t = timer->data;
  uv_barrier_wait(&t->go);
  cancel_list(t, CANCELLERS);
  t->loop_cancelled = 1;
}

static int cancellable(int kind) {
  return kind == T_CANCEL || kind == T_DEADLINE || kind == T_ANY ||
         kind == T_CANCEL_ON;
}

static void tree_build(tree_t* t, uint64_t* rng) {
  int i;
  t->n = 1 + (int)uvt_rand_below(rng, TREE_MAX);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &t->node[0]), 0);
  t->kind[0] = T_CANCEL;
  t->parent[0][0] = t->parent[0][1] = -1;
  for (i = 1; i < t->n; i++) {
    int k = (int)uvt_rand_below(rng, T_N);
    int a = (int)uvt_rand_below(rng, (uint64_t)i);
    int b = (int)uvt_rand_below(rng, (uint64_t)i);
    uvctx_t* p = t->node[a];
    uvctx_t* ps[2];
    int rc = 0;
    t->kind[i] = k;
    t->parent[i][0] = a;
    t->parent[i][1] = k == T_ANY ? b : -1;
    switch (k) {
      case T_CANCEL:
        rc = uvctx_with_cancel(p, &t->node[i]);
        break;
      case T_VALUE:
        rc = uvctx_with_value(p, &key_a, t, &t->node[i]);
        break;
      case T_DEADLINE:
        rc = uvctx_with_timeout(p, 3600 * 1000, &t->node[i]);
        break;
      case T_ANY:
        ps[0] = p;
        ps[1] = t->node[b];
        rc = uvctx_any(ps, 2, &t->node[i]);
        break;
      case T_DETACHED:
        rc = uvctx_without_cancel(p, &t->node[i]);
        break;
      default:
        rc = uvctx_with_cancel_on(
            p, uvt_rand_below(rng, 2) ? t->other->l : uvt_l, &t->node[i]);
        break;
    }
    ck_assert_int_eq(rc, 0);
  }
  for (i = 0; i < t->n; i++) {
    memset(&t->probe[i], 0, sizeof(t->probe[i]));
    t->watched[i] = uvt_rand_below(rng, 3) == 0;
    t->targeted[i] = 0;
    if (uvctx_home(t->node[i]) == t->other->l)
      t->probe[i].home = t->other;
    if (t->watched[i])
      ck_assert_int_eq(uvctx_watch_start(&t->probe[i].w, t->node[i], probe_cb),
                       0);
  }
  for (i = 0; i <= CANCELLERS; i++)
    t->list_len[i] = 0;
  for (i = 0; i < t->n; i++) {
    int who = (int)uvt_rand_below(rng, CANCELLERS + 1);
    /* About one node in eight is a target; several cancellers may share
     * one. */
    if (!cancellable(t->kind[i]) || uvt_rand_below(rng, 8) != 0)
      continue;
    t->targeted[i] = 1;
    t->list[who][t->list_len[who]++] = i;
    if (uvt_rand_below(rng, 4) == 0) {
      who = (who + 1) % (CANCELLERS + 1);
      t->list[who][t->list_len[who]++] = i;
    }
  }
}

static void tree_check_and_free(tree_t* t) {
  static int done[TREE_MAX];
  int i, want_calls = 0;
  for (i = 0; i < t->n; i++) {
    int k = t->kind[i];
    int p0 = t->parent[i][0], p1 = t->parent[i][1];
    if (i == 0)
      done[i] = t->targeted[i];
    else if (k == T_DETACHED)
      done[i] = 0;
    else if (k == T_VALUE)
      done[i] = done[p0];
    else if (k == T_ANY)
      done[i] = t->targeted[i] || done[p0] || done[p1];
    else
      done[i] = t->targeted[i] || done[p0];
    if (done[i]) {
      int cause = uvctx_cause(t->node[i], NULL);
      ck_assert_msg(uvctx_err(t->node[i]) == UV_ECANCELED,
                    "node %d (kind %d) err %d", i, k, uvctx_err(t->node[i]));
      ck_assert_msg(cause <= -1000 && cause >= -1000 - CANCELLERS,
                    "node %d cause %d", i, cause);
    } else {
      ck_assert_msg(uvctx_err(t->node[i]) == 0, "node %d (kind %d) err %d", i,
                    k, uvctx_err(t->node[i]));
    }
    if (t->watched[i] && done[i])
      want_calls++;
  }
  UVT_RUN_UNTIL(atomic_load(&probes_fired) == want_calls);
  for (i = 0; i < t->n; i++) {
    if (!t->watched[i])
      continue;
    if (done[i]) {
      ck_assert_int_eq(atomic_load(&t->probe[i].calls), 1);
      ck_assert_int_eq(atomic_load(&t->probe[i].wrong_thread), 0);
      ck_assert_int_eq(uvctx_watch_stop(&t->probe[i].w), 0);
    } else {
      ck_assert_int_eq(uvctx_watch_stop(&t->probe[i].w), 1);
      ck_assert_int_eq(atomic_load(&t->probe[i].calls), 0);
    }
  }
  for (i = t->n - 1; i >= 0; i--)
    uvctx_unref(t->node[i]);
  atomic_store(&probes_fired, 0);
}

START_TEST(random_trees_cancelled_from_everywhere) {
  int trees = 200, r, i;
  uint64_t rng = uvt_seed("random_trees_cancelled_from_everywhere");
  uvt_loop_thread_t other;
  tree_t* t = calloc(1, sizeof(*t));
  uv_timer_t timer;
  ck_assert_ptr_nonnull(t);
  uvt_loop_thread_start(&other);
  t->other = &other;
  ck_assert_int_eq(uv_timer_init(uvt_loop, &timer), 0);
  timer.data = t;
  for (r = 0; r < trees; r++) {
    uv_thread_t th[CANCELLERS];
    canceller_t cc[CANCELLERS];
    tree_build(t, &rng);
    ck_assert_int_eq(uv_barrier_init(&t->go, CANCELLERS + 1), 0);
    for (i = 0; i < CANCELLERS; i++) {
      cc[i].tree = t;
      cc[i].id = i;
      ck_assert_int_eq(uv_thread_create(&th[i], canceller_main, &cc[i]), 0);
    }
    /* The loop's share is cancelled from inside a loop callback. */
    t->loop_cancelled = 0;
    ck_assert_int_eq(uv_timer_start(&timer, loop_cancel_cb, 0, 0), 0);
    UVT_RUN_UNTIL(t->loop_cancelled);
    for (i = 0; i < CANCELLERS; i++)
      ck_assert_int_eq(uv_thread_join(&th[i]), 0);
    uv_barrier_destroy(&t->go);
    tree_check_and_free(t);
    /* Callbacks on the other loop's thread hold their context until just
     * after they return, and a context holds its parent (which may be
     * homed here): the last frees may come from that thread a moment
     * after the unrefs above. */
    UVT_RUN_UNTIL(counts_of(uvt_l).contexts == 0 &&
                  counts_of(other.l).contexts == 0);
  }
  uvt_close_and_wait((uv_handle_t*)&timer);
  uvt_loop_thread_stop(&other);
  free(t);
}
END_TEST

/* ---- a cancel racing the creation of children ---------------------------- */

typedef struct race_s {
  uvctx_t* parent;
  uvctx_t* kids[64];
  int n;
  int spin;
  uv_barrier_t go;
  int bad;
} race_t;

static void race_creator(void* arg) {
  race_t* r = arg;
  uvctx_t* ps[2];
  int i, rc;
  uv_barrier_wait(&r->go);
  for (i = 0; i < r->n; i++) {
    switch (i % 4) {
      case 0:
        rc = uvctx_with_cancel(r->parent, &r->kids[i]);
        break;
      case 1:
        rc = uvctx_with_value(r->parent, &key_a, r, &r->kids[i]);
        break;
      case 2:
        rc = uvctx_with_timeout(r->parent, 100000, &r->kids[i]);
        break;
      default:
        ps[0] = r->kids[i - 1];
        ps[1] = r->parent;
        rc = uvctx_any(ps, 2, &r->kids[i]);
        break;
    }
    if (rc != 0)
      r->bad++;
  }
}

static void race_canceller(void* arg) {
  race_t* r = arg;
  volatile int i;
  uv_barrier_wait(&r->go);
  for (i = 0; i < r->spin; i++)
    ;
  uvctx_cancel(r->parent);
}

START_TEST(cancel_races_child_creation) {
  int rounds = UVT_SCALE(2000, 600), k, i;
  uint64_t rng = uvt_seed("cancel_races_child_creation");
  race_t r;
  for (k = 0; k < rounds; k++) {
    uv_thread_t a, b;
    memset(&r, 0, sizeof(r));
    r.n = 64;
    r.spin = (int)uvt_rand_below(&rng, 20000);
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &r.parent), 0);
    ck_assert_int_eq(uv_barrier_init(&r.go, 2), 0);
    ck_assert_int_eq(uv_thread_create(&a, race_creator, &r), 0);
    ck_assert_int_eq(uv_thread_create(&b, race_canceller, &r), 0);
    ck_assert_int_eq(uv_thread_join(&a), 0);
    ck_assert_int_eq(uv_thread_join(&b), 0);
    uv_barrier_destroy(&r.go);
    ck_assert_int_eq(r.bad, 0);
    /* Whether made before or after the cancel, no child is left live. */
    for (i = 0; i < r.n; i++) {
      ck_assert_msg(uvctx_err(r.kids[i]) == UV_ECANCELED,
                    "round %d child %d err %d", k, i, uvctx_err(r.kids[i]));
      uvctx_unref(r.kids[i]);
    }
    uvctx_unref(r.parent);
  }
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 0);
  ck_assert_uint_eq(counts_of(uvt_l).deadlines, 0);
}
END_TEST

/* ---- a parent's callback cancels a child on another loop ----------------- */

typedef struct family_s {
  uvctx_watch_t pw;
  uvctx_t* child;
  int rc;
} family_t;

static void family_cb(uvctx_watch_t* w, int err) {
  family_t* f = (family_t*)w;
  (void)err;
  f->rc = uvctx_cancel(f->child);
}

START_TEST(parent_callback_cancels_remote_child) {
  uvt_loop_thread_t t;
  int rounds = UVT_SCALE(200, 50), k;
  uvt_loop_thread_start(&t);
  for (k = 0; k < rounds; k++) {
    family_t f;
    probe_t p;
    uvctx_t *parent, *detached;
    memset(&f, 0, sizeof(f));
    memset(&p, 0, sizeof(p));
    p.home = &t;
    f.rc = 1;
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &parent), 0);
    ck_assert_int_eq(uvctx_without_cancel(parent, &detached), 0);
    ck_assert_int_eq(uvctx_with_cancel_on(detached, t.l, &f.child), 0);
    ck_assert_int_eq(uvctx_watch_start(&f.pw, parent, family_cb), 0);
    ck_assert_int_eq(uvctx_watch_start(&p.w, f.child, probe_cb), 0);
    ck_assert_int_eq(uvctx_cancel(parent), 0);
    ck_assert_int_eq(uvctx_err(f.child), 0);
    UVT_RUN_UNTIL(atomic_load(&p.calls) == 1);
    ck_assert_int_eq(f.rc, 0);
    ck_assert_int_eq(atomic_load(&p.wrong_thread), 0);
    uvctx_unref(f.child);
    uvctx_unref(detached);
    uvctx_unref(parent);
    atomic_store(&probes_fired, 0);
  }
  uvt_run_for(2);
  uvt_loop_thread_stop(&t);
}
END_TEST

/* ---- a cancel from another thread while the context is being freed ------- */

static atomic_int values_freed;

static void count_value_free(void* v) {
  (void)v;
  atomic_fetch_add(&values_freed, 1);
}

static const uvctx_key_t key_counted = {.name = "counted",
                                        .free_value = count_value_free};

typedef struct handoff_s {
  atomic_uintptr_t slot;
  atomic_int seq;
  atomic_int taken;
  int rounds;
} handoff_t;

static void handoff_worker(void* arg) {
  handoff_t* h = arg;
  int k;
  for (k = 1; k <= h->rounds; k++) {
    uvctx_t* c;
    while (atomic_load(&h->seq) != k)
      uv_sleep(0);
    c = (uvctx_t*)atomic_load(&h->slot);
    uvctx_cancel(c);
    uvctx_unref(c); /* the worker's own reference */
    atomic_store(&h->taken, k);
  }
}

START_TEST(cancel_while_freeing) {
  handoff_t h;
  uv_thread_t t;
  probe_t* probes;
  int k, watched = 0, n = UVT_SCALE(20000, 5000);
  memset(&h, 0, sizeof(h));
  atomic_store(&values_freed, 0);
  h.rounds = n;
  probes = calloc(n, sizeof(*probes));
  ck_assert_ptr_nonnull(probes);
  ck_assert_int_eq(uv_thread_create(&t, handoff_worker, &h), 0);
  for (k = 1; k <= n; k++) {
    uvctx_t *c, *v;
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
    ck_assert_int_eq(uvctx_with_value(c, &key_counted, &h, &v), 0);
    /* Every other round a watch holds c too. */
    if (k % 2) {
      ck_assert_int_eq(uvctx_watch_start(&probes[k - 1].w, c, probe_cb), 0);
      watched++;
    }
    uvctx_ref(c); /* the worker's reference */
    atomic_store(&h.slot, (uintptr_t)c);
    atomic_store(&h.seq, k);
    /* Drop ours while the worker cancels and drops its own. */
    uvctx_unref(v);
    uvctx_unref(c);
    while (atomic_load(&h.taken) != k)
      uv_sleep(0);
    if (k % 256 == 0)
      uv_run(uvt_loop, UV_RUN_NOWAIT);
  }
  ck_assert_int_eq(uv_thread_join(&t), 0);
  UVT_RUN_UNTIL(atomic_load(&probes_fired) == watched);
  for (k = 0; k < n; k += 2) {
    ck_assert_int_eq(atomic_load(&probes[k].calls), 1);
    ck_assert_int_eq(atomic_load(&probes[k].err), UV_ECANCELED);
  }
  ck_assert_int_eq(atomic_load(&values_freed), n);
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 0);
  free(probes);
}
END_TEST

/* Both threads drop a reference to a cancellable context each, while one
 * of them cancels it. */
typedef struct pair_s {
  uvctx_t* c;
  uv_barrier_t go;
} pair_t;

static void pair_worker(void* arg) {
  pair_t* p = arg;
  uv_barrier_wait(&p->go);
  uvctx_cancel(p->c);
  uvctx_unref(p->c);
}

START_TEST(release_races_remote_cancel) {
  int k, n = UVT_SCALE(3000, 300);
  uvctx_t* root;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  for (k = 0; k < n; k++) {
    pair_t p;
    uv_thread_t t;
    uvctx_t* kid;
    ck_assert_int_eq(uvctx_with_cancel(root, &p.c), 0);
    ck_assert_int_eq(uvctx_with_cancel(p.c, &kid), 0);
    uvctx_ref(p.c);
    ck_assert_int_eq(uv_barrier_init(&p.go, 2), 0);
    ck_assert_int_eq(uv_thread_create(&t, pair_worker, &p), 0);
    uv_barrier_wait(&p.go);
    if (k % 2)
      uvctx_release(p.c);
    else
      uvctx_unref(p.c);
    uvctx_release(kid);
    ck_assert_int_eq(uv_thread_join(&t), 0);
    uv_barrier_destroy(&p.go);
  }
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 1);
  uvctx_release(root);
}
END_TEST

/* ---- 100,000 cross-thread cancels (20,000 sanitized), none lost ---------- */

typedef struct bulk_s {
  uvctx_t** ctx;
  int from;
  int to;
} bulk_t;

static void bulk_cancel(void* arg) {
  bulk_t* b = arg;
  int i;
  for (i = b->from; i < b->to; i++)
    uvctx_release(b->ctx[i]); /* cancel, then drop the creator's ref */
}

START_TEST(cross_thread_cancels_none_lost) {
  /* The wait below is long: the watchdog is re-armed to outlast it. */
  enum { WAIT_MS = 60000 };
  int n = UVT_SCALE(100000, 20000), i;
  uvctx_t** ctx = calloc(n, sizeof(*ctx));
  probe_t* probes = calloc(n, sizeof(*probes));
  bulk_t b[2];
  uv_thread_t t[2];
  ck_assert_ptr_nonnull(ctx);
  ck_assert_ptr_nonnull(probes);
  for (i = 0; i < n; i++) {
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx[i]), 0);
    ck_assert_int_eq(uvctx_watch_start(&probes[i].w, ctx[i], probe_cb), 0);
  }
  for (i = 0; i < 2; i++) {
    b[i].ctx = ctx;
    b[i].from = i * (n / 2);
    b[i].to = i == 1 ? n : n / 2;
    ck_assert_int_eq(uv_thread_create(&t[i], bulk_cancel, &b[i]), 0);
  }
  /* Callbacks run while the cancels are still coming. The watchdog armed
   * at setup has been running since: re-armed, so that this wait (and the
   * checks after it) can end before it does, with their own message. */
  uvt_watchdog_set(WAIT_MS + 30000);
  UVT_RUN_UNTIL_MS(atomic_load(&probes_fired) == n, WAIT_MS);
  for (i = 0; i < 2; i++)
    ck_assert_int_eq(uv_thread_join(&t[i]), 0);
  uvt_run_for(5);
  for (i = 0; i < n; i++) {
    ck_assert_int_eq(atomic_load(&probes[i].calls), 1);
    ck_assert_int_eq(atomic_load(&probes[i].err), UV_ECANCELED);
    ck_assert_int_eq(atomic_load(&probes[i].wrong_thread), 0);
  }
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 0);
  ck_assert_uint_eq(counts_of(uvt_l).watches, 0);
  free(ctx);
  free(probes);
}
END_TEST

/* ---- a striped parent: children of two threads on two stripes ------------ */

typedef struct striped_s {
  uvctx_t* p;
  uvctx_t* c; /* the other thread's child of p */
  uvctx_t* v; /* a value under it */
  uvctx_t* d; /* a 1 ms deadline under that */
  int bad;
} striped_t;

static void striped_other_thread(void* arg) {
  striped_t* st = arg;
  if (uvctx_with_cancel(st->p, &st->c) != 0 ||
      uvctx_with_value(st->c, &key_a, st, &st->v) != 0 ||
      uvctx_with_timeout(st->v, 1, &st->d) != 0)
    st->bad = 1;
}

/* Lines of a leak report that name a context. */
static int dumped_contexts(uvctx_loop_t* l) {
  char* text = NULL;
  size_t len = 0;
  FILE* f = open_memstream(&text, &len);
  int n = 0;
  const char* s;
  ck_assert_ptr_nonnull(f);
  uvctx_loop_dump(l, f);
  ck_assert_int_eq(fclose(f), 0);
  for (s = text; (s = strstr(s, "  ctx ")) != NULL; s++)
    n++;
  free(text);
  return n;
}

START_TEST(striped_parent_children_of_two_threads) {
  striped_t st = {0};
  uv_thread_t th;
  uvctx_t *before, *c, *d, *late;
  probe_t pd = {0}, po = {0};
  const char* msg = NULL;

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &st.p), 0);
  ck_assert_int_eq(uvctx_with_cancel(st.p, &before), 0);
  ck_assert_int_eq(uvctx__stripe_now(st.p), 0);
  ck_assert_ptr_nonnull(uvctx__stripes_of(st.p));
  /* Made by two threads: each on a stripe of its own, neither the
   * parent's; the first, made before, stays on the parent's list. */
  ck_assert_int_eq(uv_thread_create(&th, striped_other_thread, &st), 0);
  ck_assert_int_eq(uv_thread_join(&th), 0);
  ck_assert_int_eq(st.bad, 0);
  ck_assert_int_eq(uvctx_with_cancel(st.p, &c), 0);
  ck_assert_int_eq(uvctx_with_timeout(c, 1, &d), 0);
  ck_assert_int_eq(UVCTX__DOM(before), 0);
  ck_assert_int_ne(UVCTX__DOM(c), 0);
  ck_assert_int_ne(UVCTX__DOM(st.c), 0);
  ck_assert_int_ne(UVCTX__DOM(c), UVCTX__DOM(st.c));
  ck_assert_int_eq(UVCTX__DOM(st.d), UVCTX__DOM(st.c));
  ck_assert_ptr_eq(uvctx_value(st.d, &key_a), &st);
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 7);
  ck_assert_int_eq(dumped_contexts(uvt_l), 7);

  /* Deadlines of the stripes expire from the loop's timer. */
  ck_assert_int_eq(uvctx_watch_start(&pd.w, d, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&po.w, st.d, probe_cb), 0);
  UVT_RUN_UNTIL(atomic_load(&probes_fired) == 2);
  ck_assert_int_eq(atomic_load(&pd.err), UV_ETIMEDOUT);
  ck_assert_int_eq(atomic_load(&po.err), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_err(c), 0);
  ck_assert_int_eq(uvctx_err(st.c), 0);
  ck_assert_int_eq(uvctx_err(st.p), 0);

  /* The parent's cancel reaches every stripe, with its cause; a child
   * made afterwards is born done with it. */
  ck_assert_int_eq(uvctx_cancel_cause(st.p, UV_ECONNRESET, "gone"), 0);
  ck_assert_int_eq(uvctx_cause(before, &msg), UV_ECONNRESET);
  ck_assert_str_eq(msg, "gone");
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECONNRESET);
  ck_assert_str_eq(msg, "gone");
  ck_assert_int_eq(uvctx_cause(st.c, &msg), UV_ECONNRESET);
  ck_assert_str_eq(msg, "gone");
  ck_assert_int_eq(uvctx_err(st.v), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(st.d), UV_ETIMEDOUT); /* first cancel won */
  ck_assert_int_eq(uvctx_cause(st.p, &msg), UV_ECONNRESET);
  ck_assert_str_eq(msg, "gone");
  ck_assert_int_eq(uvctx_with_cancel(st.p, &late), 0);
  ck_assert_int_eq(uvctx_cause(late, NULL), UV_ECONNRESET);

  /* The parent goes first; its children keep it until the last goes. */
  uvctx_unref(st.p);
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 8);
  uvctx_unref(late);
  uvctx_unref(st.c);
  uvctx_unref(d);
  uvctx_unref(st.d);
  uvctx_unref(before);
  /* Left: c, st.v, st.c (held by st.v) and the parent (held by both). */
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 4);
  uvctx_unref(st.v);
  uvctx_unref(c);
  ck_assert_uint_eq(counts_of(uvt_l).contexts, 0);
}
END_TEST

/* A striped parent that is never cancelled is freed when its last
 * reference and its stripes' last children are gone, in either order. */
START_TEST(striped_parent_freed_without_cancel) {
  striped_t st = {0};
  uv_thread_t th;
  uvctx_t* c;
  int order;
  for (order = 0; order < 2; order++) {
    memset(&st, 0, sizeof(st));
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &st.p), 0);
    ck_assert_int_eq(uvctx__stripe_now(st.p), 0);
    ck_assert_int_eq(uv_thread_create(&th, striped_other_thread, &st), 0);
    ck_assert_int_eq(uv_thread_join(&th), 0);
    ck_assert_int_eq(st.bad, 0);
    ck_assert_int_eq(uvctx_with_cancel(st.p, &c), 0);
    uvctx_release(c); /* this stripe now holds the parent with no child */
    if (order == 0)
      uvctx_unref(st.p);
    uvctx_unref(st.d);
    uvctx_unref(st.v);
    uvctx_unref(st.c);
    if (order == 1) {
      ck_assert_uint_eq(counts_of(uvt_l).contexts, 1);
      uvctx_unref(st.p);
    }
    ck_assert_uint_eq(counts_of(uvt_l).contexts, 0);
  }
}
END_TEST

static void add(Suite* s, const char* name, const TTest* test) {
  TCase* tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, uvt_teardown);
  tcase_add_test(tc, test);
  suite_add_tcase(s, tc);
}

/* One case per test, so that CK_RUN_CASE=name runs one alone. */
static Suite* threads_suite(void) {
  Suite* s = suite_create("threads");
  add(s, "any_thread", any_thread_creates_and_cancels);
  add(s, "cross_loop", cross_loop_children);
  add(s, "cross_loop_deadline", cross_loop_deadline);
  add(s, "trees", random_trees_cancelled_from_everywhere);
  add(s, "creation_race", cancel_races_child_creation);
  add(s, "remote_child", parent_callback_cancels_remote_child);
  add(s, "free_race", cancel_while_freeing);
  add(s, "striped", striped_parent_children_of_two_threads);
  add(s, "striped_free", striped_parent_freed_without_cancel);
  add(s, "release_race", release_races_remote_cancel);
  add(s, "bulk", cross_thread_cancels_none_lost);
  return s;
}

int main(void) {
  return uvt_main(threads_suite());
}
