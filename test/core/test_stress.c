/* test_stress.c pins the core under concurrent load across loops: worker
 * threads (more than the machine has cores) churn contexts in their own
 * branches of one root while another thread cancels roots and random
 * subtrees and frees what it took, for a bounded time; and a cancel that
 * walks a 100,000-node tree on one loop leaves another loop's operations
 * running while it walks. Randomized: the seed is printed and taken from
 * UVCTX_TEST_SEED. Under TSan these are the proof that the per-loop locks
 * leave no race. */
#include "core/internal.h"
#include "helpers.h"

static const uvctx_key_t key_s = {.name = "stress"};

/* ---- churn in branches while roots and subtrees are cancelled ------------ */

enum { WORKERS = 4, SLOTS = 64 };

/* A context a worker hands to the chaos thread, with the generation of the
 * root it descends from (0: it is not cancelled by roots). */
typedef struct record_s {
  uvctx_t* ctx;
  unsigned gen;
} record_t;

typedef struct chaos_s {
  uv_mutex_t mu; /* guards root and gen */
  uvctx_t* root;
  unsigned gen;
  uvctx_loop_t* loops[WORKERS];
  _Atomic(record_t*) slots[SLOTS];
  atomic_int stop;
  atomic_int bad;
  atomic_long ops;
  uint64_t seed;
} chaos_t;

typedef struct worker_s {
  chaos_t* ch;
  int id;
  uv_thread_t thread;
} worker_t;

static void stress_fail(chaos_t* ch, const char* what) {
  fprintf(stderr, "stress: %s\n", what);
  atomic_fetch_add(&ch->bad, 1);
}

static void publish(chaos_t* ch, uint64_t* rng, uvctx_t* c, unsigned gen) {
  record_t* r = malloc(sizeof(*r));
  record_t* old;
  if (r == NULL) {
    stress_fail(ch, "out of memory");
    return;
  }
  r->ctx = uvctx_ref(c);
  r->gen = gen;
  old = atomic_exchange(&ch->slots[uvt_rand_below(rng, SLOTS)], r);
  if (old != NULL) {
    uvctx_unref(old->ctx);
    free(old);
  }
}

/* One request's worth of contexts under `branch`, some homed on another
 * worker's loop, cancelled and freed in a random order. */
static void one_request(chaos_t* ch, worker_t* wk, uint64_t* rng,
                        uvctx_t* branch, unsigned gen) {
  uvctx_t* c[6] = {NULL};
  uvctx_t* ps[2];
  uvctx_loop_t* other = ch->loops[uvt_rand_below(rng, WORKERS)];
  int i, n = 6;

  if (uvctx_with_cancel(branch, &c[0]) != 0 ||
      uvctx_with_cancel_on(c[0], other, &c[1]) != 0 ||
      uvctx_with_value(c[1], &key_s, wk, &c[2]) != 0 ||
      uvctx_with_timeout(c[2], 1000000, &c[3]) != 0) {
    stress_fail(ch, "create failed");
    n = 0;
  }
  if (n != 0) {
    ps[0] = c[3];
    ps[1] = uvt_rand_below(rng, 2) ? branch : c[0];
    if (uvctx_any(ps, 2, &c[4]) != 0 || uvctx_with_cancel(c[4], &c[5]) != 0) {
      stress_fail(ch, "create failed");
      n = 4;
    }
  }
  if (n == 6) {
    static const int cancellable[] = {0, 1, 3, 4, 5};
    if (uvctx_value(c[5], &key_s) != wk)
      stress_fail(ch, "value lost");
    /* A cancel of c[0] reaches everything below it before it returns,
     * unless a cancel from above got there first: nobody else cancels
     * this request's contexts until one of them is published, below, and
     * a cancel from above marks the branch before it reaches c[0]. */
    if (uvt_rand_below(rng, 2) == 0) {
      int was_live = uvctx_err(branch) == 0;
      uvctx_cancel(c[0]);
      if (uvctx_err(c[0]) == 0)
        stress_fail(ch, "cancelled context reports live");
      if (was_live && uvctx_err(branch) == 0)
        for (i = 1; i < 6; i++)
          if (uvctx_err(c[i]) == 0)
            stress_fail(ch,
                        "descendant live after its ancestor's cancel returned");
    } else {
      uvctx_cancel(c[cancellable[uvt_rand_below(rng, 5)]]);
    }
    if (uvt_rand_below(rng, 4) == 0)
      publish(ch, rng, c[uvt_rand_below(rng, 6)], gen);
  }
  /* Freed in a random order: parents may go before their children. */
  for (i = n - 1; i > 0; i--) {
    int j = (int)uvt_rand_below(rng, (uint64_t)i + 1);
    uvctx_t* t = c[i];
    c[i] = c[j];
    c[j] = t;
  }
  for (i = 0; i < n; i++)
    uvctx_release(c[i]);
}

static void worker_main(void* arg) {
  worker_t* wk = arg;
  chaos_t* ch = wk->ch;
  uint64_t rng = ch->seed + (uint64_t)wk->id + 1;
  uvctx_t* branch = NULL;
  unsigned gen = 0;
  while (!atomic_load(&ch->stop)) {
    if (branch == NULL || uvctx_err(branch) != 0) {
      uvctx_t* root;
      uvctx_release(branch);
      uv_mutex_lock(&ch->mu);
      root = uvctx_ref(ch->root);
      gen = ch->gen;
      uv_mutex_unlock(&ch->mu);
      if (uvctx_with_cancel_on(root, ch->loops[wk->id], &branch) != 0) {
        stress_fail(ch, "branch failed");
        branch = NULL;
      }
      uvctx_unref(root);
      if (branch == NULL)
        break;
    }
    one_request(ch, wk, &rng, branch, gen);
    atomic_fetch_add(&ch->ops, 1);
  }
  uvctx_release(branch);
}

/* Cancels roots (after putting a new one in place) and random published
 * subtrees, frees what it takes, and checks that a root's cancel has
 * reached every published context of its generation when it returns. */
static void chaos_main(void* arg) {
  chaos_t* ch = arg;
  uint64_t rng = ch->seed;
  record_t* held[SLOTS];
  int n_held = 0, i;
  while (!atomic_load(&ch->stop)) {
    /* Mostly subtrees and frees; a root now and then, so that requests
     * run both in live branches and in branches a cancel is sweeping. */
    uint64_t what = uvt_rand_below(&rng, 256);
    if (what == 0) {
      uvctx_t *old, *fresh;
      unsigned old_gen;
      if (uvctx_with_cancel(uvt_bg, &fresh) != 0) {
        stress_fail(ch, "root failed");
        break;
      }
      uv_mutex_lock(&ch->mu);
      old = ch->root;
      old_gen = ch->gen++;
      ch->root = fresh;
      uv_mutex_unlock(&ch->mu);
      uvctx_cancel_cause(old, UV_ESHUTDOWN, "root replaced");
      for (i = 0; i < n_held; i++)
        if (held[i]->gen == old_gen && uvctx_err(held[i]->ctx) == 0)
          stress_fail(ch, "context live after its root's cancel returned");
      uvctx_unref(old);
    } else if (what < 128 && n_held < SLOTS) {
      record_t* r = atomic_exchange(&ch->slots[uvt_rand_below(&rng, SLOTS)],
                                    (record_t*)NULL);
      if (r != NULL) {
        if (uvctx_cancel_cause(r->ctx, UV_ECONNRESET, NULL) == 0 &&
            uvctx_err(r->ctx) == 0)
          stress_fail(ch, "cancelled subtree reports live");
        held[n_held++] = r;
      }
    } else if (n_held > 0) {
      int k = (int)uvt_rand_below(&rng, (uint64_t)n_held);
      uvctx_unref(held[k]->ctx);
      free(held[k]);
      held[k] = held[--n_held];
    }
  }
  for (i = 0; i < n_held; i++) {
    uvctx_unref(held[i]->ctx);
    free(held[i]);
  }
}

START_TEST(branches_churn_while_roots_and_subtrees_cancelled) {
  chaos_t* ch = calloc(1, sizeof(*ch));
  uv_loop_t loops[WORKERS];
  worker_t wk[WORKERS];
  uv_thread_t chaos;
  uint64_t ms = UVT_SCALE(2000, 1500);
  int i;

  ck_assert_ptr_nonnull(ch);
  ch->seed = uvt_seed("branches_churn_while_roots_and_subtrees_cancelled");
  ck_assert_int_eq(uv_mutex_init(&ch->mu), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ch->root), 0);
  /* The workers' loops are run by nobody while they work, so that any
   * thread may use them; the root is homed on the fixture's loop. */
  for (i = 0; i < WORKERS; i++) {
    ck_assert_int_eq(uv_loop_init(&loops[i]), 0);
    ck_assert_int_eq(uvctx_loop_init(&loops[i], &ch->loops[i]), 0);
  }
  for (i = 0; i < WORKERS; i++) {
    wk[i].ch = ch;
    wk[i].id = i;
    ck_assert_int_eq(uv_thread_create(&wk[i].thread, worker_main, &wk[i]), 0);
  }
  ck_assert_int_eq(uv_thread_create(&chaos, chaos_main, ch), 0);
  uv_sleep((unsigned)ms);
  atomic_store(&ch->stop, 1);
  for (i = 0; i < WORKERS; i++)
    ck_assert_int_eq(uv_thread_join(&wk[i].thread), 0);
  ck_assert_int_eq(uv_thread_join(&chaos), 0);
  for (i = 0; i < SLOTS; i++) {
    record_t* r = atomic_load(&ch->slots[i]);
    if (r != NULL) {
      uvctx_unref(r->ctx);
      free(r);
    }
  }
  fprintf(stderr, "stress: %ld requests in %" PRIu64 " ms, %u roots\n",
          atomic_load(&ch->ops), ms, ch->gen + 1);
  ck_assert_int_eq(atomic_load(&ch->bad), 0);
  ck_assert_int_gt(atomic_load(&ch->ops), 0);
  uvctx_release(ch->root);
  for (i = 0; i < WORKERS; i++) {
    ck_assert_int_eq(uvctx_loop_close(ch->loops[i]), 0);
    uvt_loop_finish(&loops[i]);
  }
  uv_mutex_destroy(&ch->mu);
  free(ch);
}
END_TEST

/* ---- churn under one shared parent while it is cancelled and replaced ---- */

enum { SHARED_WORKERS = 4, HELD = 8 };

typedef struct shared_s {
  uv_mutex_t mu; /* guards parent and gen */
  uvctx_t* parent;
  unsigned gen;
  atomic_int stop;
  atomic_int bad;
  atomic_long ops;
  atomic_long born_done;
  atomic_long striped;
  uint64_t seed;
} shared_t;

typedef struct shared_worker_s {
  shared_t* sh;
  int id;
  uv_thread_t thread;
} shared_worker_t;

static void shared_fail(shared_t* sh, const char* what) {
  fprintf(stderr, "shared: %s\n", what);
  atomic_fetch_add(&sh->bad, 1);
}

/* A child of the shared parent made by this thread, with what hangs below
 * it: a value, a deadline far off and a grandchild. */
typedef struct held_s {
  uvctx_t* c[4];
  int n;
} held_t;

static void held_release(held_t* h, uint64_t* rng) {
  int i;
  /* Freed in a random order: the child may go before what hangs below. */
  for (i = h->n - 1; i > 0; i--) {
    int j = (int)uvt_rand_below(rng, (uint64_t)i + 1);
    uvctx_t* t = h->c[i];
    h->c[i] = h->c[j];
    h->c[j] = t;
  }
  for (i = 0; i < h->n; i++)
    uvctx_release(h->c[i]);
  h->n = 0;
}

static void shared_worker_main(void* arg) {
  shared_worker_t* wk = arg;
  shared_t* sh = wk->sh;
  uint64_t rng = sh->seed + (uint64_t)wk->id + 1;
  held_t held[HELD];
  int i;
  memset(held, 0, sizeof(held));
  while (!atomic_load(&sh->stop)) {
    held_t* h = &held[uvt_rand_below(&rng, HELD)];
    uvctx_t* p;
    int was_done;
    held_release(h, &rng);
    uv_mutex_lock(&sh->mu);
    p = uvctx_ref(sh->parent);
    uv_mutex_unlock(&sh->mu);
    was_done = uvctx_err(p) != 0;
    /* The common shape: child, cancel, free, over and over. */
    if (uvctx_with_cancel(p, &h->c[0]) != 0) {
      shared_fail(sh, "with_cancel failed");
      uvctx_unref(p);
      break;
    }
    h->n = 1;
    if (was_done && uvctx_err(h->c[0]) == 0)
      shared_fail(sh, "child of a done parent born live");
    if (uvctx_err(h->c[0]) != 0)
      atomic_fetch_add(&sh->born_done, 1);
    switch (uvt_rand_below(&rng, 4)) {
      case 0:
        uvctx_cancel(h->c[0]);
        if (uvctx_err(h->c[0]) == 0)
          shared_fail(sh, "cancelled child reports live");
        held_release(h, &rng);
        break;
      case 1:
        /* A subtree of the child, cancelled from the child. */
        if (uvctx_with_value(h->c[0], &key_s, wk, &h->c[1]) != 0 ||
            uvctx_with_timeout(h->c[1], 1000000, &h->c[2]) != 0 ||
            uvctx_with_cancel(h->c[2], &h->c[3]) != 0) {
          shared_fail(sh, "subtree failed");
          break;
        }
        h->n = 4;
        if (uvctx_value(h->c[3], &key_s) != wk)
          shared_fail(sh, "value lost");
        if (uvt_rand_below(&rng, 2) == 0) {
          int live = uvctx_err(h->c[0]) == 0;
          uvctx_cancel(h->c[0]);
          if (live && (uvctx_err(h->c[2]) == 0 || uvctx_err(h->c[3]) == 0))
            shared_fail(sh, "descendant live after the child's cancel");
        }
        break;
      default:
        break; /* kept for the parent's cancel to reach, freed later */
    }
    uvctx_unref(p);
    atomic_fetch_add(&sh->ops, 1);
  }
  for (i = 0; i < HELD; i++)
    held_release(&held[i], &rng);
}

/* Replaces the shared parent now and then (striped at once half the
 * time, else when the workers meet on its lock), cancels the old one and
 * checks that every child it had is done once the cancel returns. */
static void shared_chaos_main(void* arg) {
  shared_t* sh = arg;
  uint64_t rng = sh->seed;
  while (!atomic_load(&sh->stop)) {
    uvctx_t *old, *fresh, *probe[16];
    int i, early, n = 0;
    uv_sleep((unsigned)uvt_rand_below(&rng, 3));
    if (uvctx_with_cancel(uvt_bg, &fresh) != 0) {
      shared_fail(sh, "parent failed");
      break;
    }
    if (uvt_rand_below(&rng, 2) == 0 && uvctx__stripe_now(fresh) != 0)
      shared_fail(sh, "stripe failed");
    uv_mutex_lock(&sh->mu);
    old = sh->parent;
    sh->gen++;
    sh->parent = fresh;
    uv_mutex_unlock(&sh->mu);
    /* Children of its own on the old parent, made from this thread. */
    for (i = 0; i < 16; i++)
      if (uvctx_with_cancel(old, &probe[n]) == 0)
        n++;
    if (uvctx__stripes_of(old) != NULL)
      atomic_fetch_add(&sh->striped, 1);
    uvctx_cancel_cause(old, UV_ESHUTDOWN, "parent replaced");
    for (i = 0; i < n; i++) {
      const char* msg = NULL;
      if (uvctx_cause(probe[i], &msg) != UV_ESHUTDOWN || msg == NULL ||
          strcmp(msg, "parent replaced") != 0)
        shared_fail(sh, "child's cause is not its parent's");
    }
    if (uvctx_err(old) == 0)
      shared_fail(sh, "parent live after its cancel");
    /* The parent's reference goes before or after its children's. */
    early = (int)uvt_rand_below(&rng, 2);
    if (early)
      uvctx_unref(old);
    for (i = 0; i < n; i++)
      uvctx_unref(probe[i]);
    if (!early)
      uvctx_unref(old);
  }
}

START_TEST(shared_parent_churn_while_cancelled_and_replaced) {
  shared_t* sh = calloc(1, sizeof(*sh));
  shared_worker_t wk[SHARED_WORKERS];
  uv_thread_t chaos;
  uint64_t ms = UVT_SCALE(2000, 1500);
  int i;

  ck_assert_ptr_nonnull(sh);
  sh->seed = uvt_seed("shared_parent_churn_while_cancelled_and_replaced");
  ck_assert_int_eq(uv_mutex_init(&sh->mu), 0);
  /* Homed on the fixture's loop, which nobody runs meanwhile: every
   * child is homed there too and made by one of five threads. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &sh->parent), 0);
  for (i = 0; i < SHARED_WORKERS; i++) {
    wk[i].sh = sh;
    wk[i].id = i;
    ck_assert_int_eq(
        uv_thread_create(&wk[i].thread, shared_worker_main, &wk[i]), 0);
  }
  ck_assert_int_eq(uv_thread_create(&chaos, shared_chaos_main, sh), 0);
  uv_sleep((unsigned)ms);
  atomic_store(&sh->stop, 1);
  for (i = 0; i < SHARED_WORKERS; i++)
    ck_assert_int_eq(uv_thread_join(&wk[i].thread), 0);
  ck_assert_int_eq(uv_thread_join(&chaos), 0);
  fprintf(stderr,
          "shared: %ld children in %" PRIu64
          " ms, %u parents (%ld striped), %ld born done\n",
          atomic_load(&sh->ops), ms, sh->gen + 1, atomic_load(&sh->striped),
          atomic_load(&sh->born_done));
  ck_assert_int_eq(atomic_load(&sh->bad), 0);
  ck_assert_int_gt(atomic_load(&sh->ops), 0);
  ck_assert_int_gt(atomic_load(&sh->striped), 0);
  uvctx_release(sh->parent);
  uv_mutex_destroy(&sh->mu);
  free(sh);
}
END_TEST

/* ---- a big walk on one loop, another loop's operations ------------------- */

enum { INNER = 316, LEAVES = 316 }; /* about 100,000 contexts */

typedef struct walk_s {
  uvctx_t* root;
  uvctx_t* sentinel[INNER]; /* one leaf under each inner context */
  uvctx_loop_t* b;
  atomic_int ready;
  atomic_int stop;
  atomic_int overlapped; /* B finished an operation inside the walk */
  atomic_int tree_live;  /* the sentinels may be read */
  atomic_int reading;    /* B is reading them */
  uint64_t worst_ns;     /* B's slowest operation inside the walk */
  atomic_long ops;
} walk_t;

/* A sentinel still live while the root is done: the walk is under way. */
static int walk_under_way(walk_t* w, int* which) {
  int i;
  if (uvctx_err(w->root) == 0)
    return 0;
  for (i = INNER - 1; i >= 0; i--) {
    if (uvctx_err(w->sentinel[i]) == 0) {
      *which = i;
      return 1;
    }
  }
  return 0;
}

/* Loop B's thread: create, cancel, free under a parent of its own, and
 * note each operation that began and ended while A's walk was under way. */
static void other_loop(void* arg) {
  walk_t* w = arg;
  uvctx_t* parent;
  if (uvctx_with_cancel(uvctx_background(w->b), &parent) != 0)
    return;
  atomic_store(&w->ready, 1);
  while (!atomic_load(&w->stop)) {
    uvctx_t* c;
    int s = -1, during;
    uint64_t t0, dt;
    /* The tree is freed only once B is known not to be reading it (both
     * sides store, then load the other's flag). */
    atomic_store(&w->reading, 1);
    during = atomic_load(&w->tree_live) && walk_under_way(w, &s);
    t0 = uv_hrtime();
    if (uvctx_with_cancel(parent, &c) != 0)
      break;
    uvctx_cancel(c);
    uvctx_unref(c);
    dt = uv_hrtime() - t0;
    if (during && uvctx_err(w->sentinel[s]) == 0) {
      atomic_store(&w->overlapped, 1);
      if (dt > w->worst_ns)
        w->worst_ns = dt;
    }
    atomic_store(&w->reading, 0);
    atomic_fetch_add(&w->ops, 1);
  }
  atomic_store(&w->reading, 0);
  uvctx_release(parent);
}

START_TEST(big_walk_leaves_other_loops_running) {
  walk_t* w = calloc(1, sizeof(*w));
  uv_loop_t loop_b;
  uv_thread_t th;
  uvctx_t** all = malloc(INNER * (LEAVES + 1) * sizeof(*all));
  int tries, i, j, n;

  ck_assert_ptr_nonnull(w);
  ck_assert_ptr_nonnull(all);
  ck_assert_int_eq(uv_loop_init(&loop_b), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop_b, &w->b), 0);
  ck_assert_int_eq(uv_thread_create(&th, other_loop, w), 0);
  while (!atomic_load(&w->ready))
    uv_sleep(1);
  /* A scheduler may keep B off the CPU for a whole walk now and then;
   * under one process-wide lock B could never finish inside one. */
  for (tries = 0; tries < 20 && !atomic_load(&w->overlapped); tries++) {
    long before;
    n = 0;
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &w->root), 0);
    for (i = 0; i < INNER; i++) {
      uvctx_t* inner;
      ck_assert_int_eq(uvctx_with_cancel(w->root, &inner), 0);
      all[n++] = inner;
      for (j = 0; j < LEAVES; j++) {
        ck_assert_int_eq(uvctx_with_cancel(inner, &all[n]), 0);
        if (j == 0)
          w->sentinel[i] = all[n];
        n++;
      }
    }
    atomic_store(&w->tree_live, 1);
    before = atomic_load(&w->ops);
    while (atomic_load(&w->ops) < before + 10)
      ; /* B is running */
    ck_assert_int_eq(uvctx_cancel(w->root), 0);
    for (i = 0; i < n; i++)
      ck_assert_int_ne(uvctx_err(all[i]), 0);
    atomic_store(&w->tree_live, 0);
    while (atomic_load(&w->reading))
      ;
    for (i = 0; i < n; i++)
      uvctx_unref(all[i]);
    uvctx_unref(w->root);
  }
  atomic_store(&w->stop, 1);
  ck_assert_int_eq(uv_thread_join(&th), 0);
  fprintf(stderr,
          "big walk: %d tree(s) of %d contexts; the other loop's slowest "
          "operation inside a walk: %.1f us\n",
          tries, INNER * (LEAVES + 1), (double)w->worst_ns / 1000.0);
  ck_assert_msg(atomic_load(&w->overlapped),
                "no operation of the other loop completed inside a walk");
  ck_assert_int_eq(uvctx_loop_close(w->b), 0);
  uvt_loop_finish(&loop_b);
  free(all);
  free(w);
}
END_TEST

static Suite* stress_suite(void) {
  Suite* s = suite_create("stress");
  TCase* tc = tcase_create("stress");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, branches_churn_while_roots_and_subtrees_cancelled);
  tcase_add_test(tc, shared_parent_churn_while_cancelled_and_replaced);
  tcase_add_test(tc, big_walk_leaves_other_loops_running);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(stress_suite());
}
