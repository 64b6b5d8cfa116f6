/* test_ctx.c pins the context tree of lib/core/ctx.c: synchronous propagation
 * of cancellation and cause, the first cancel winning, children born done,
 * which kinds can be cancelled, without_cancel, references, bad input, and
 * iterative cancel and free of very long chains and wide fan-outs. */
#include "helpers.h"

static const uvctx_key_t key_a = {.name = "a", .free_value = NULL};

static int count_contexts(void) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(uvt_l, &n);
  return (int)n.contexts;
}

START_TEST(cancel_basic) {
  uvctx_t* c = NULL;
  const char* msg = "untouched";
  uint64_t dl = 42;

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_ptr_eq(uvctx_home(c), uvt_l);
  ck_assert_int_eq(count_contexts(), 1);
  ck_assert_int_eq(uvctx_err(c), 0);
  ck_assert_int_eq(uvctx_cause(c, &msg), 0);
  ck_assert_int_eq(uvctx_deadline(c, &dl), 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECANCELED);
  ck_assert_ptr_null(msg);
  ck_assert_int_eq(uvctx_cause(c, NULL), UV_ECANCELED);
  /* Cancelling a done context does nothing and returns 0. */
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_cancel_cause(c, -77, "late"), 0);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECANCELED);
  ck_assert_ptr_null(msg);
  ck_assert_int_eq(uvctx_err(uvt_bg), 0);
  uvctx_unref(c);
  ck_assert_int_eq(count_contexts(), 0);
}
END_TEST

START_TEST(first_cancel_wins) {
  uvctx_t* c;
  uvctx_t* child;
  const char* msg;

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_with_cancel(c, &child), 0);
  ck_assert_int_eq(uvctx_cancel_cause(c, -5, "first"), 0);
  ck_assert_int_eq(uvctx_cancel_cause(c, -7, "second"), 0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(c, &msg), -5);
  ck_assert_str_eq(msg, "first");
  /* The child was cancelled by its parent: a later cancel of its own is
   * too late. */
  ck_assert_int_eq(uvctx_cancel_cause(child, -9, "child"), 0);
  ck_assert_int_eq(uvctx_cause(child, &msg), -5);
  ck_assert_str_eq(msg, "first");
  uvctx_unref(child);
  uvctx_unref(c);
}
END_TEST

/* Kinds of node in the trees below. */
enum { K_CANCEL, K_VALUE, K_DEADLINE, K_ANY, K_CANCEL_ON, K_NKINDS };

static uvctx_t* make(int kind, uvctx_t* parent, uvctx_t* other) {
  uvctx_t* c = NULL;
  uvctx_t* ps[2];
  switch (kind) {
    case K_CANCEL:
      ck_assert_int_eq(uvctx_with_cancel(parent, &c), 0);
      break;
    case K_VALUE:
      ck_assert_int_eq(uvctx_with_value(parent, &key_a, parent, &c), 0);
      break;
    case K_DEADLINE:
      /* Far away: it must not fire during the test. */
      ck_assert_int_eq(uvctx_with_timeout(parent, 3600 * 1000, &c), 0);
      break;
    case K_ANY:
      ps[0] = parent;
      ps[1] = other != NULL ? other : parent;
      ck_assert_int_eq(uvctx_any(ps, 2, &c), 0);
      break;
    case K_CANCEL_ON:
      ck_assert_int_eq(uvctx_with_cancel_on(parent, uvt_l, &c), 0);
      break;
  }
  ck_assert_ptr_nonnull(c);
  return c;
}

/* A deterministic tree of every cancellable-through kind: node i hangs
 * under node (i-1)/2 (a binary tree, 7 levels deep for N = 200), and an
 * any() node also under node i-1, an earlier node of another branch.
 * Cancelling one inner node first reaches exactly its descendants (derived
 * from the same edges), then cancelling the root reaches the rest. */
enum { TREE_N = 200, TREE_SUB = 5 };

static int tree_parent(int i) {
  return (i - 1) / 2;
}

static int tree_other(int i) {
  return i - 1 != tree_parent(i) ? i - 1 : -1;
}

START_TEST(cancel_propagates_synchronously) {
  enum { N = TREE_N };
  uvctx_t* node[N];
  int depth[N];
  int sub_done[N]; /* expected done after cancelling node TREE_SUB */
  uvctx_t* root;
  const char* msg;
  char text[32];
  int i, n_sub = 0, deepest_sub = 0;

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  node[0] = root;
  depth[0] = 0;
  for (i = 1; i < N; i++) {
    int o = tree_other(i);
    node[i] = make(i % K_NKINDS, node[tree_parent(i)], o >= 0 ? node[o] : NULL);
    depth[i] = depth[tree_parent(i)] + 1;
  }
  /* What cancelling node TREE_SUB must reach: itself, and every node with
   * a parent that is reached (an any() node has two). */
  for (i = 0; i < N; i++) {
    int o = tree_other(i);
    sub_done[i] = i == TREE_SUB ||
                  (i > 0 && (sub_done[tree_parent(i)] ||
                             (i % K_NKINDS == K_ANY && o >= 0 && sub_done[o])));
    if (sub_done[i]) {
      n_sub++;
      if (depth[i] - depth[TREE_SUB] > deepest_sub)
        deepest_sub = depth[i] - depth[TREE_SUB];
    }
  }
  /* The tree is no star: the subtree is deep, and not the whole tree. */
  ck_assert_int_eq(depth[N - 1], 7);
  ck_assert_int_eq(deepest_sub, 5); /* depth 2 down to 7 (191..199) */
  ck_assert_int_gt(n_sub, 1);
  ck_assert_int_lt(n_sub, N - 1);

  ck_assert_int_eq(uvctx_cancel_cause(node[TREE_SUB], -55, "subtree"), 0);
  for (i = 0; i < N; i++) {
    ck_assert_msg(uvctx_err(node[i]) == (sub_done[i] ? UV_ECANCELED : 0),
                  "node %d (depth %d, kind %d) err %d after the subtree", i,
                  depth[i], i % K_NKINDS, uvctx_err(node[i]));
    ck_assert_int_eq(uvctx_cause(node[i], &msg), sub_done[i] ? -55 : 0);
    if (sub_done[i])
      ck_assert_str_eq(msg, "subtree");
  }

  snprintf(text, sizeof(text), "%s", "root cause");
  ck_assert_int_eq(uvctx_cancel_cause(root, -1234, text), 0);
  /* The message was copied. */
  memset(text, 'x', sizeof(text) - 1);
  for (i = 0; i < N; i++) {
    ck_assert_msg(uvctx_err(node[i]) == UV_ECANCELED, "node %d err %d", i,
                  uvctx_err(node[i]));
    /* The first cancel that reached a node stays its cause. */
    ck_assert_int_eq(uvctx_cause(node[i], &msg), sub_done[i] ? -55 : -1234);
    ck_assert_str_eq(msg, sub_done[i] ? "subtree" : "root cause");
    ck_assert_int_eq(uvctx_cause(node[i], NULL), sub_done[i] ? -55 : -1234);
  }
  for (i = N - 1; i >= 0; i--)
    uvctx_unref(node[i]);
  ck_assert_int_eq(count_contexts(), 0);
}
END_TEST

START_TEST(cancel_goes_down_only) {
  uvctx_t *p, *a, *b, *a1, *b1;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &b), 0);
  ck_assert_int_eq(uvctx_with_cancel(a, &a1), 0);
  ck_assert_int_eq(uvctx_with_value(b, &key_a, NULL, &b1), 0);
  ck_assert_int_eq(uvctx_cancel(a), 0);
  ck_assert_int_eq(uvctx_err(a), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(a1), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(p), 0);
  ck_assert_int_eq(uvctx_err(b), 0);
  ck_assert_int_eq(uvctx_err(b1), 0);
  ck_assert_int_eq(uvctx_cause(b1, NULL), 0);
  uvctx_release(b1); /* a value context: only unrefs */
  ck_assert_int_eq(uvctx_err(b), 0);
  uvctx_release(a1);
  uvctx_release(a);
  uvctx_release(b);
  ck_assert_int_eq(uvctx_err(p), 0);
  uvctx_release(p);
  ck_assert_int_eq(count_contexts(), 0);
}
END_TEST

START_TEST(child_of_done_parent_is_born_done) {
  uvctx_t *p, *c;
  const char* msg;
  int kind;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_cancel_cause(p, -99, "gone"), 0);
  for (kind = 0; kind < K_NKINDS; kind++) {
    c = make(kind, p, NULL);
    ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
    ck_assert_int_eq(uvctx_cause(c, &msg), -99);
    ck_assert_str_eq(msg, "gone");
    uvctx_unref(c);
  }
  /* A parent done by its deadline passes UV_ETIMEDOUT on. */
  uvctx_unref(p);
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 0, -42, "slow", &p), 0);
  ck_assert_int_eq(uvctx_err(p), UV_ETIMEDOUT);
  for (kind = 0; kind < K_NKINDS; kind++) {
    c = make(kind, p, NULL);
    ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
    ck_assert_int_eq(uvctx_cause(c, &msg), -42);
    ck_assert_str_eq(msg, "slow");
    uvctx_unref(c);
  }
  uvctx_unref(p);
  ck_assert_int_eq(count_contexts(), 0);
}
END_TEST

START_TEST(cancel_cause_copies_message) {
  uvctx_t* c;
  const char* msg = "x";
  char buf[16] = "transient";
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_cancel_cause(c, UV_ECONNRESET, buf), 0);
  strcpy(buf, "changed");
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECONNRESET);
  ck_assert_str_eq(msg, "transient");
  uvctx_unref(c);

  /* A NULL message. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_cancel_cause(c, -3, NULL), 0);
  msg = "x";
  ck_assert_int_eq(uvctx_cause(c, &msg), -3);
  ck_assert_ptr_null(msg);
  uvctx_unref(c);
}
END_TEST

START_TEST(cancel_cause_rejects_nonnegative_cause) {
  uvctx_t* c;
  uint64_t before;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  before = uvctx_live_allocations();
  ck_assert_int_eq(uvctx_cancel_cause(c, 0, "zero"), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel_cause(c, 5, "positive"), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel_cause(c, 0, NULL), UV_EINVAL);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_int_eq(uvctx_err(c), 0);
  uvctx_release(c);
}
END_TEST

START_TEST(uncancellable_kinds) {
  uvctx_t *p, *v, *d;
  uint64_t before;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_value(p, &key_a, &before, &v), 0);
  ck_assert_int_eq(uvctx_without_cancel(p, &d), 0);
  before = uvctx_live_allocations();
  ck_assert_int_eq(uvctx_cancel(uvt_bg), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel(v), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel(d), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel_cause(uvt_bg, -1, "m"), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel_cause(v, -1, "m"), UV_EINVAL);
  ck_assert_int_eq(uvctx_cancel_cause(d, -1, "m"), UV_EINVAL);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_int_eq(uvctx_err(uvt_bg), 0);
  ck_assert_int_eq(uvctx_err(v), 0);
  ck_assert_int_eq(uvctx_err(d), 0);
  ck_assert_int_eq(uvctx_err(p), 0);
  /* release on them only unrefs; on the background it is a no-op. */
  uvctx_release(uvt_bg);
  uvctx_unref(uvt_bg);
  ck_assert_ptr_eq(uvctx_ref(uvt_bg), uvt_bg);
  ck_assert_int_eq(uvctx_err(uvt_bg), 0);
  uvctx_release(v);
  uvctx_release(d);
  ck_assert_int_eq(uvctx_err(p), 0);
  ck_assert_int_eq(count_contexts(), 1);
  uvctx_release(p);
}
END_TEST

START_TEST(without_cancel_is_never_done) {
  uvctx_t *p, *d, *dc, *dl;
  const char* msg = "x";
  uint64_t ns = 7;
  int v = 1;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_a, &v, &p), 0);
  ck_assert_int_eq(uvctx_with_timeout(p, 3600 * 1000, &dl), 0);
  ck_assert_int_eq(uvctx_deadline(dl, &ns), 1);
  ck_assert_int_eq(uvctx_without_cancel(dl, &d), 0);
  ck_assert_ptr_eq(uvctx_home(d), uvt_l);
  ck_assert_ptr_eq(uvctx_value(d, &key_a), &v);
  ck_assert_int_eq(uvctx_deadline(d, &ns), 0);
  ck_assert_int_eq(uvctx_with_cancel(d, &dc), 0);
  ck_assert_int_eq(uvctx_cancel_cause(dl, -8, "parent"), 0);
  ck_assert_int_eq(uvctx_err(dl), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(d), 0);
  ck_assert_int_eq(uvctx_cause(d, &msg), 0);
  ck_assert_int_eq(uvctx_cause(d, NULL), 0);
  ck_assert_int_eq(uvctx_err(dc), 0);
  ck_assert_int_eq(uvctx_deadline(dc, &ns), 0);
  /* A without_cancel child of a done parent is not done either. */
  uvctx_unref(d);
  ck_assert_int_eq(uvctx_without_cancel(dl, &d), 0);
  ck_assert_int_eq(uvctx_err(d), 0);
  ck_assert_ptr_eq(uvctx_value(d, &key_a), &v);
  /* Its own cancellable children still work. */
  ck_assert_int_eq(uvctx_cancel(dc), 0);
  ck_assert_int_eq(uvctx_err(dc), UV_ECANCELED);
  uvctx_release(dc);
  uvctx_release(d);
  uvctx_release(dl);
  uvctx_release(p);
}
END_TEST

START_TEST(references) {
  uvctx_t *p, *c;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &c), 0);
  ck_assert_ptr_eq(uvctx_ref(c), c);
  uvctx_unref(c);
  ck_assert_int_eq(uvctx_err(c), 0);
  /* The child holds its parent: dropping ours keeps p alive. */
  uvctx_unref(p);
  ck_assert_int_eq(count_contexts(), 2);
  uvctx_release(c);
  ck_assert_int_eq(count_contexts(), 0);

  /* release cancels the subtree and drops one reference. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &c), 0);
  uvctx_release(p);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  ck_assert_int_eq(count_contexts(), 2);
  uvctx_unref(c);
  ck_assert_int_eq(count_contexts(), 0);

  uvctx_unref(NULL);
  uvctx_release(NULL);
}
END_TEST

START_TEST(bad_input) {
  static char sentinel_storage[8];
  uvctx_t* const sentinel = (uvctx_t*)(void*)sentinel_storage;
  uvctx_t* o = sentinel;
  uvctx_t *p, *ps[2];
  uint64_t before, soon;
  uvctx_loop_counts_t n;

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  before = uvctx_live_allocations();
  soon = uv_hrtime() + 1000000000u;

  ck_assert_int_eq(uvctx_with_cancel(NULL, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel(p, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel_on(NULL, uvt_l, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel_on(p, NULL, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel_on(p, uvt_l, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline(NULL, soon, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline(p, soon, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout(NULL, 10, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout(p, 10, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline_cause(NULL, soon, -1, "m", &o),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline_cause(p, soon, -1, "m", NULL),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline_cause(p, soon, 0, "m", &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_deadline_cause(p, soon, 1, NULL, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout_cause(NULL, 10, -1, "m", &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout_cause(p, 10, -1, "m", NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout_cause(p, 10, 0, "m", &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_timeout_cause(p, 0, 3, "m", &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_value(NULL, &key_a, &o, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_value(p, NULL, &o, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_value(p, &key_a, &o, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_without_cancel(NULL, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_without_cancel(p, NULL), UV_EINVAL);
  ps[0] = p;
  ps[1] = NULL;
  ck_assert_int_eq(uvctx_any(NULL, 1, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_any(ps, 0, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_any(ps, 2, &o), UV_EINVAL);
  ps[0] = NULL;
  ps[1] = p;
  ck_assert_int_eq(uvctx_any(ps, 2, &o), UV_EINVAL);
  ps[0] = p;
  ck_assert_int_eq(uvctx_any(ps, 2, NULL), UV_EINVAL);

  ck_assert_ptr_eq(o, sentinel);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, 1);
  ck_assert_uint_eq(n.deadlines, 0);
  ck_assert_int_eq(uvctx_err(p), 0);
  uvctx_release(p);
}
END_TEST

/* ---- long chains and wide fan-outs, iteratively -------------------------- */

typedef struct chain_s {
  size_t n;
  uvctx_t* root;
  uvctx_t* leaf;
  int leaf_err;
  int leaf_cause;
  void* leaf_value;
} chain_t;

static void chain_build(chain_t* ch, size_t n, int mixed) {
  uvctx_t* c;
  uvctx_t* next;
  uint64_t far = uv_hrtime() + 3600ull * 1000000000u;
  size_t i;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ch->root), 0);
  ck_assert_int_eq(uvctx_with_value(ch->root, &key_a, ch, &c), 0);
  for (i = 2; i < n; i++) {
    switch (mixed ? i % 4 : 0) {
      case 0:
        ck_assert_int_eq(uvctx_with_cancel(c, &next), 0);
        break;
      case 1:
        ck_assert_int_eq(uvctx_with_value(c, &key_a, ch, &next), 0);
        break;
      case 2:
        /* Later than its ancestors': no heap entry of its own. */
        ck_assert_int_eq(uvctx_with_deadline(c, far + i, &next), 0);
        break;
      default:
        ck_assert_int_eq(uvctx_any(&c, 1, &next), 0);
        break;
    }
    uvctx_unref(c); /* the chain holds itself up */
    c = next;
  }
  ch->n = n;
  ch->leaf = c;
}

static void chain_cancel_and_free(void* arg) {
  chain_t* ch = arg;
  uvctx_cancel_cause(ch->root, -4242, NULL);
  ch->leaf_err = uvctx_err(ch->leaf);
  ch->leaf_cause = uvctx_cause(ch->leaf, NULL);
  ch->leaf_value = uvctx_value(ch->leaf, &key_a);
  uvctx_unref(ch->root);
  uvctx_unref(ch->leaf); /* frees the whole chain */
}

static void chain_test(int mixed) {
  chain_t ch;
  uvctx_loop_counts_t n;
  size_t len = UVT_SCALE(1000000, 100000);
  memset(&ch, 0, sizeof(ch));
  chain_build(&ch, len, mixed);
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, len);
  ck_assert_uint_le(n.deadlines, 1);
  uvt_run_on_small_stack(chain_cancel_and_free, &ch, 64);
  ck_assert_int_eq(ch.leaf_err, UV_ECANCELED);
  ck_assert_int_eq(ch.leaf_cause, -4242);
  ck_assert_ptr_eq(ch.leaf_value, &ch);
  uvctx_loop_counts(uvt_l, &n);
  ck_assert_uint_eq(n.contexts, 0);
  ck_assert_uint_eq(n.deadlines, 0);
}

START_TEST(chain_of_a_million_cancels_iteratively) {
  uint64_t before = uvctx_live_allocations();
  chain_test(0);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
}
END_TEST

/* The deadline heap's array is the binding's and stays allocated until
 * uvctx_loop_close(): allocate it before taking a baseline. */
static uint64_t baseline_with_heap(void) {
  uvctx_t* c;
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3600 * 1000, &c), 0);
  uvctx_release(c);
  return uvctx_live_allocations();
}

START_TEST(mixed_chain_cancels_iteratively) {
  uint64_t before = baseline_with_heap();
  chain_test(1);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
}
END_TEST

/* Freeing a chain without cancelling it first. */
static void chain_free_only(void* arg) {
  chain_t* ch = arg;
  ch->leaf_value = uvctx_value(ch->leaf, &key_a);
  uvctx_unref(ch->root);
  uvctx_unref(ch->leaf);
}

START_TEST(live_chain_frees_iteratively) {
  chain_t ch;
  uint64_t before = baseline_with_heap();
  memset(&ch, 0, sizeof(ch));
  chain_build(&ch, UVT_SCALE(1000000, 100000), 1);
  uvt_run_on_small_stack(chain_free_only, &ch, 64);
  ck_assert_ptr_eq(ch.leaf_value, &ch);
  ck_assert_int_eq(count_contexts(), 0);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
}
END_TEST

typedef struct fan_s {
  uvctx_t* root;
  uvctx_t** kids;
  size_t n;
} fan_t;

static void fan_cancel(void* arg) {
  fan_t* f = arg;
  uvctx_cancel(f->root);
}

START_TEST(wide_fan_out_cancels) {
  fan_t f;
  size_t i;
  f.n = UVT_SCALE(100000, 20000);
  f.kids = calloc(f.n, sizeof(*f.kids));
  ck_assert_ptr_nonnull(f.kids);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &f.root), 0);
  for (i = 0; i < f.n; i++)
    f.kids[i] = make((int)(i % K_NKINDS), f.root, f.root);
  uvt_run_on_small_stack(fan_cancel, &f, 64);
  for (i = 0; i < f.n; i++) {
    ck_assert_int_eq(uvctx_err(f.kids[i]), UV_ECANCELED);
    uvctx_unref(f.kids[i]);
  }
  uvctx_unref(f.root);
  free(f.kids);
  ck_assert_int_eq(count_contexts(), 0);
}
END_TEST

/* Children dropped before their parent is cancelled are gone from it: a
 * cancel afterwards touches only what lives. */
START_TEST(dropped_children_unlink) {
  uvctx_t *p, *c, *keep;
  int i;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_cancel(p, &keep), 0);
  for (i = 0; i < 1000; i++) {
    c = make(i % K_NKINDS, p, keep);
    if (i % 2)
      uvctx_release(c);
    else
      uvctx_unref(c);
  }
  ck_assert_int_eq(count_contexts(), 2);
  ck_assert_int_eq(uvctx_cancel(p), 0);
  ck_assert_int_eq(uvctx_err(keep), UV_ECANCELED);
  uvctx_unref(keep);
  uvctx_unref(p);
}
END_TEST

/* Roots and branches made for other loops are the parents other threads
 * write (each child's creation and free changes their count and children
 * list): each starts a cache line and is alone in it, even when made one
 * after the other; they work like any other. */
START_TEST(roots_and_branches_start_a_cache_line) {
  uv_loop_t loop2;
  uvctx_loop_t* l2;
  uvctx_t* r[4];
  uvctx_t *b, *c;
  int i;
  ck_assert_int_eq(uv_loop_init(&loop2), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop2, &l2), 0);
  for (i = 0; i < 4; i++) {
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &r[i]), 0);
    ck_assert_uint_eq((uintptr_t)r[i] % 64, 0);
  }
  for (i = 1; i < 4; i++) {
    uintptr_t d = (uintptr_t)r[i] > (uintptr_t)r[i - 1]
                      ? (uintptr_t)r[i] - (uintptr_t)r[i - 1]
                      : (uintptr_t)r[i - 1] - (uintptr_t)r[i];
    ck_assert_uint_ge(d, 128);
  }
  ck_assert_int_eq(uvctx_with_cancel_on(r[0], l2, &b), 0);
  ck_assert_uint_eq((uintptr_t)b % 64, 0);
  ck_assert_int_eq(uvctx_with_cancel(b, &c), 0);
  ck_assert_ptr_eq(uvctx_home(c), l2);
  ck_assert_int_eq(uvctx_cancel(r[0]), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  uvctx_unref(c);
  uvctx_unref(b);
  for (i = 0; i < 4; i++)
    uvctx_release(r[i]);
  ck_assert_int_eq(uvctx_loop_close(l2), 0);
  uvt_loop_finish(&loop2);
}
END_TEST

static Suite* ctx_suite(void) {
  Suite* s = suite_create("ctx");
  TCase* tc = tcase_create("ctx");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, cancel_basic);
  tcase_add_test(tc, first_cancel_wins);
  tcase_add_test(tc, cancel_propagates_synchronously);
  tcase_add_test(tc, cancel_goes_down_only);
  tcase_add_test(tc, child_of_done_parent_is_born_done);
  tcase_add_test(tc, cancel_cause_copies_message);
  tcase_add_test(tc, cancel_cause_rejects_nonnegative_cause);
  tcase_add_test(tc, uncancellable_kinds);
  tcase_add_test(tc, without_cancel_is_never_done);
  tcase_add_test(tc, references);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, chain_of_a_million_cancels_iteratively);
  tcase_add_test(tc, mixed_chain_cancels_iteratively);
  tcase_add_test(tc, live_chain_frees_iteratively);
  tcase_add_test(tc, wide_fan_out_cancels);
  tcase_add_test(tc, dropped_children_unlink);
  tcase_add_test(tc, roots_and_branches_start_a_cache_line);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(ctx_suite());
}
