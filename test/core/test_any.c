/* test_any.c pins uvctx_any(), the merge: done with the first parent to
 * finish (the first in argument order among parents already done), the
 * earliest deadline of its parents, values and home from parents[0], and
 * no growth of a long-lived parent however many merges come and go. */
#include "core/internal.h" /* to count the links on a parent's children list */
#include "helpers.h"

static const uvctx_key_t key_a = {.name = "a"};

static uvctx_loop_counts_t counts(void) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(uvt_l, &n);
  return n;
}

/* Links currently on c's children list (c must be live). */
static size_t children_of(uvctx_t* c) {
  size_t n = 0;
  uvctx__link_t* l;
  uvctx__lock();
  if (atomic_load(&c->err) == UVCTX__LIVE)
    for (l = c->u1.children; l != NULL; l = l->next)
      n++;
  uvctx__unlock();
  return n;
}

START_TEST(first_parent_to_finish) {
  uvctx_t *a, *b, *m, *ps[2];
  const char* msg;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &b), 0);
  ps[0] = a;
  ps[1] = b;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_int_eq(uvctx_err(m), 0);
  ck_assert_ptr_eq(uvctx_home(m), uvt_l);
  ck_assert_int_eq(uvctx_cancel_cause(b, -11, "b went away"), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(m, &msg), -11);
  ck_assert_str_eq(msg, "b went away");
  ck_assert_int_eq(uvctx_err(a), 0);
  ck_assert_int_eq(uvctx_cancel_cause(a, -22, "a too"), 0);
  ck_assert_int_eq(uvctx_cause(m, &msg), -11);
  ck_assert_str_eq(msg, "b went away");
  uvctx_unref(m);
  uvctx_unref(a);
  uvctx_unref(b);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

START_TEST(already_done_first_in_argument_order) {
  uvctx_t *live, *a, *b, *t, *m, *ps[4];
  const char* msg;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &live), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &b), 0);
  ck_assert_int_eq(uvctx_cancel_cause(a, -1, "a"), 0);
  ck_assert_int_eq(uvctx_cancel_cause(b, -2, "b"), 0);
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 0, -3, "t", &t), 0);

  ps[0] = live;
  ps[1] = b;
  ps[2] = a;
  ps[3] = t;
  ck_assert_int_eq(uvctx_any(ps, 4, &m), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(m, &msg), -2);
  ck_assert_str_eq(msg, "b");
  uvctx_unref(m);

  ps[1] = t;
  ps[3] = b;
  ck_assert_int_eq(uvctx_any(ps, 4, &m), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(m, &msg), -3);
  ck_assert_str_eq(msg, "t");
  uvctx_unref(m);

  ck_assert_int_eq(uvctx_err(live), 0);
  uvctx_release(live);
  uvctx_unref(a);
  uvctx_unref(b);
  uvctx_unref(t);
}
END_TEST

START_TEST(deadline_is_the_earliest) {
  uvctx_t *d1, *d2, *k, *m, *ps[3];
  uint64_t now = uv_hrtime(), dl;
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, now + 9000000000ull, &d1), 0);
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, now + 4000000000ull, &d2), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &k), 0);
  ps[0] = k;
  ps[1] = d1;
  ps[2] = d2;
  ck_assert_int_eq(uvctx_any(ps, 3, &m), 0);
  ck_assert_int_eq(uvctx_deadline(m, &dl), 1);
  ck_assert_uint_eq(dl, now + 4000000000ull);
  uvctx_unref(m);
  ck_assert_int_eq(uvctx_any(ps, 1, &m), 0);
  ck_assert_int_eq(uvctx_deadline(m, &dl), 0);
  uvctx_unref(m);
  uvctx_release(k);
  uvctx_release(d1);
  uvctx_release(d2);
}
END_TEST

/* The merge is cancelled by the deadline of one of its parents. */
typedef struct probe_s {
  uvctx_watch_t w;
  int calls;
  int err;
} probe_t;

static void probe_cb(uvctx_watch_t* w, int err) {
  probe_t* p = (probe_t*)w;
  p->calls++;
  p->err = err;
}

START_TEST(parent_deadline_fires_the_merge) {
  uvctx_t *d, *k, *m, *ps[2];
  probe_t p;
  memset(&p, 0, sizeof(p));
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 10, -9, "dl", &d), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &k), 0);
  ps[0] = k;
  ps[1] = d;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, m, probe_cb), 0);
  uvctx_unref(m);
  uvctx_unref(d);
  /* The deadline of a parent keeps uv_run() alive for the merge's watch. */
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_err(k), 0);
  uvctx_release(k);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

START_TEST(values_and_home_from_first_parent) {
  uv_loop_t loop2;
  uvctx_loop_t* l2;
  uvctx_t *v1, *v2, *m, *ps[2];
  int one = 1, two = 2;
  ck_assert_int_eq(uv_loop_init(&loop2), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop2, &l2), 0);
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_a, &one, &v1), 0);
  ck_assert_int_eq(uvctx_with_value(uvctx_background(l2), &key_a, &two, &v2),
                   0);
  ps[0] = v2;
  ps[1] = v1;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_ptr_eq(uvctx_home(m), l2);
  ck_assert_ptr_eq(uvctx_value(m, &key_a), &two);
  uvctx_unref(m);
  ps[0] = v1;
  ps[1] = v2;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_ptr_eq(uvctx_home(m), uvt_l);
  ck_assert_ptr_eq(uvctx_value(m, &key_a), &one);
  uvctx_unref(m);
  uvctx_unref(v1);
  uvctx_unref(v2);
  ck_assert_int_eq(uvctx_loop_close(l2), 0);
  uvt_loop_finish(&loop2);
}
END_TEST

START_TEST(cancel_the_merge_itself) {
  uvctx_t *a, *b, *m, *k, *ps[2];
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &b), 0);
  ps[0] = a;
  ps[1] = b;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_int_eq(uvctx_with_cancel(m, &k), 0);
  ck_assert_uint_eq(children_of(a), 1);
  ck_assert_uint_eq(children_of(b), 1);
  ck_assert_int_eq(uvctx_cancel(m), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(k), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(a), 0);
  ck_assert_int_eq(uvctx_err(b), 0);
  /* Done: it left both parents' lists. */
  ck_assert_uint_eq(children_of(a), 0);
  ck_assert_uint_eq(children_of(b), 0);
  uvctx_unref(k);
  uvctx_unref(m);
  uvctx_release(a);
  uvctx_release(b);
}
END_TEST

/* The same state reached twice: the same parent, a value child of it, or
 * a descendant. Cancelling must reach the merge once. */
START_TEST(same_parent_twice) {
  uvctx_t *p, *v, *c, *m, *ps[3];
  probe_t w;
  int shape;
  for (shape = 0; shape < 4; shape++) {
    memset(&w, 0, sizeof(w));
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
    ck_assert_int_eq(uvctx_with_value(p, &key_a, NULL, &v), 0);
    ck_assert_int_eq(uvctx_with_cancel(p, &c), 0);
    ps[0] = p;
    ps[1] = shape == 0 ? p : shape == 1 ? v : c;
    ps[2] = shape == 3 ? v : p;
    ck_assert_int_eq(uvctx_any(ps, shape == 3 ? 3 : 2, &m), 0);
    ck_assert_int_eq(uvctx_watch_start(&w.w, m, probe_cb), 0);
    ck_assert_int_eq(uvctx_cancel(p), 0);
    ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
    ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(w.calls, 1);
    uvctx_unref(m);
    uvctx_unref(c);
    uvctx_unref(v);
    uvctx_unref(p);
    ck_assert_uint_eq(counts().contexts, 0);
  }
}
END_TEST

START_TEST(never_done_parents) {
  uvctx_t *d, *k, *m, *ps[3];
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &k), 0);
  ck_assert_int_eq(uvctx_without_cancel(k, &d), 0);
  ps[0] = uvt_bg;
  ps[1] = d;
  ps[2] = k;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_int_eq(uvctx_cancel(k), 0);
  ck_assert_int_eq(uvctx_err(m), 0); /* neither parent can be done */
  ck_assert_int_eq(uvctx_cancel(m), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
  uvctx_unref(m);

  /* A cancellable third parent makes it done. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ps[2]), 0);
  ck_assert_int_eq(uvctx_any(ps, 3, &m), 0);
  ck_assert_int_eq(uvctx_cancel(ps[2]), 0);
  ck_assert_int_eq(uvctx_err(m), UV_ECANCELED);
  uvctx_unref(m);
  uvctx_unref(ps[2]);
  uvctx_unref(d);
  uvctx_unref(k);
}
END_TEST

START_TEST(bad_input) {
  uvctx_t *k, *o = NULL, *ps[2];
  uint64_t before;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &k), 0);
  before = uvctx_live_allocations();
  ps[0] = k;
  ps[1] = NULL;
  ck_assert_int_eq(uvctx_any(NULL, 2, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_any(ps, 0, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_any(ps, 2, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_any(ps, 1, NULL), UV_EINVAL);
  ck_assert_ptr_null(o);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_uint_eq(children_of(k), 0);
  uvctx_release(k);
}
END_TEST

/* A long-lived parent does not grow while merges and their children come
 * and go: allocations flat, RSS flat, its children list empty. */
START_TEST(long_lived_parent_does_not_grow) {
  uvctx_t *root, *other, *m, *k, *ps[2];
  size_t i, n = UVT_SCALE(1000000, 100000);
  uint64_t base, rss0 = 0, rss1;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &root), 0);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3600 * 1000, &other), 0);
  base = uvctx_live_allocations();
  ps[0] = root;
  ps[1] = other;
  for (i = 0; i < n; i++) {
    ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
    ck_assert_int_eq(uvctx_with_cancel(m, &k), 0);
    switch (i % 3) {
      case 0: /* freed live */
        uvctx_unref(k);
        uvctx_unref(m);
        break;
      case 1: /* cancelled, then freed */
        uvctx_release(k);
        uvctx_release(m);
        break;
      default: /* the child first */
        uvctx_release(m);
        uvctx_release(k);
        break;
    }
    if (i == n / 10)
      rss0 = uvt_rss_kib();
    if (i % 4096 == 0)
      ck_assert_uint_eq(uvctx_live_allocations(), base);
  }
  rss1 = uvt_rss_kib();
  ck_assert_uint_eq(uvctx_live_allocations(), base);
  ck_assert_uint_eq(children_of(root), 0);
  ck_assert_uint_eq(children_of(other), 0);
  ck_assert_uint_eq(counts().contexts, 2);
  /* ASan's quarantine holds freed memory: RSS is meaningful only in plain
   * builds. */
  if (!UVCTX_TEST_SANITIZED)
    ck_assert_msg(rss1 <= rss0 + 4096,
                  "RSS grew from %" PRIu64 " to %" PRIu64 " KiB", rss0, rss1);
  uvctx_release(root);
  uvctx_release(other);
}
END_TEST

static Suite* any_suite(void) {
  Suite* s = suite_create("any");
  TCase* tc = tcase_create("any");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, first_parent_to_finish);
  tcase_add_test(tc, already_done_first_in_argument_order);
  tcase_add_test(tc, deadline_is_the_earliest);
  tcase_add_test(tc, parent_deadline_fires_the_merge);
  tcase_add_test(tc, values_and_home_from_first_parent);
  tcase_add_test(tc, cancel_the_merge_itself);
  tcase_add_test(tc, same_parent_twice);
  tcase_add_test(tc, never_done_parents);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, long_lived_parent_does_not_grow);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(any_suite());
}
