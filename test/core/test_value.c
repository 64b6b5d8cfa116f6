/* test_value.c pins lib/core/value.c: keys compare by address, the innermost
 * binding wins, a NULL value shadows, values stay readable after cancel,
 * a key's free_value runs exactly once when the context holding the value
 * is freed, and lookups and frees of deep chains are iterative. */
#include "helpers.h"

static atomic_int freed;
static atomic_int freed_off_main;

static void count_free(void* v) {
  (void)v;
  atomic_fetch_add(&freed, 1);
  if (!uvt_on_main_thread())
    atomic_fetch_add(&freed_off_main, 1);
}

static void free_heap_value(void* v) {
  free(v);
  atomic_fetch_add(&freed, 1);
}

/* Two keys with the same name are different keys. */
static const uvctx_key_t key_user = {.name = "user_id"};
static const uvctx_key_t key_user2 = {.name = "user_id"};
static const uvctx_key_t key_counted = {.name = "counted",
                                        .free_value = count_free};
static const uvctx_key_t key_heap = {.name = "heap",
                                     .free_value = free_heap_value};

static void setup(void) {
  atomic_store(&freed, 0);
  atomic_store(&freed_off_main, 0);
  uvt_setup();
}

START_TEST(keys_compare_by_address) {
  uvctx_t *a, *b;
  int one = 1, two = 2;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_user, &one, &a), 0);
  ck_assert_ptr_eq(uvctx_value(a, &key_user), &one);
  ck_assert_ptr_null(uvctx_value(a, &key_user2));
  ck_assert_int_eq(uvctx_with_value(a, &key_user2, &two, &b), 0);
  ck_assert_ptr_eq(uvctx_value(b, &key_user), &one);
  ck_assert_ptr_eq(uvctx_value(b, &key_user2), &two);
  ck_assert_ptr_null(uvctx_value(uvt_bg, &key_user));
  ck_assert_ptr_null(uvctx_value(b, &key_counted));
  uvctx_unref(b);
  uvctx_unref(a);
}
END_TEST

START_TEST(innermost_wins_and_null_shadows) {
  uvctx_t *a, *k, *b, *n, *below;
  int one = 1, two = 2;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_user, &one, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(a, &k), 0);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  ck_assert_int_eq(uvctx_with_value(k, &key_user, &two, &b), 0);
  ck_assert_ptr_eq(uvctx_value(b, &key_user), &two);
  ck_assert_int_eq(uvctx_with_value(b, &key_user, NULL, &n), 0);
  ck_assert_ptr_null(uvctx_value(n, &key_user));
  ck_assert_int_eq(uvctx_with_timeout(n, 100000, &below), 0);
  ck_assert_ptr_null(uvctx_value(below, &key_user));
  ck_assert_ptr_eq(uvctx_value(b, &key_user), &two);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  uvctx_release(below);
  uvctx_unref(n);
  uvctx_unref(b);
  uvctx_release(k);
  uvctx_unref(a);
}
END_TEST

START_TEST(readable_after_cancel) {
  uvctx_t *p, *v, *k;
  int one = 1;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_value(p, &key_user, &one, &v), 0);
  ck_assert_int_eq(uvctx_with_cancel(v, &k), 0);
  ck_assert_int_eq(uvctx_err(v), 0);
  ck_assert_int_eq(uvctx_cancel(p), 0);
  /* A value context is done when its parent is. */
  ck_assert_int_eq(uvctx_err(v), UV_ECANCELED);
  ck_assert_int_eq(uvctx_err(k), UV_ECANCELED);
  ck_assert_ptr_eq(uvctx_value(v, &key_user), &one);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  uvctx_unref(p);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  uvctx_unref(v);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  uvctx_unref(k);

  /* Born done under a done parent, with its value. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &p), 0);
  ck_assert_int_eq(uvctx_with_value(p, &key_user, &one, &v), 0);
  ck_assert_int_eq(uvctx_err(v), UV_ETIMEDOUT);
  ck_assert_ptr_eq(uvctx_value(v, &key_user), &one);
  uvctx_unref(v);
  uvctx_unref(p);
}
END_TEST

START_TEST(free_value_runs_once_when_freed) {
  uvctx_t *v, *k, *p;
  int* heap = malloc(sizeof(*heap));
  ck_assert_ptr_nonnull(heap);
  *heap = 7;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_heap, heap, &v), 0);
  ck_assert_int_eq(uvctx_with_cancel(v, &k), 0);
  uvctx_unref(v);
  ck_assert_int_eq(atomic_load(&freed), 0); /* k still holds it */
  ck_assert_int_eq(*(int*)uvctx_value(k, &key_heap), 7);
  ck_assert_int_eq(uvctx_cancel(k), 0);
  ck_assert_int_eq(atomic_load(&freed), 0); /* cancel frees nothing */
  uvctx_unref(k);
  ck_assert_int_eq(atomic_load(&freed), 1);

  /* A value freed under a parent cancelled long before. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_value(p, &key_counted, &freed, &v), 0);
  uvctx_release(p);
  uvt_run_for(2);
  ck_assert_int_eq(atomic_load(&freed), 1);
  uvctx_ref(v);
  uvctx_unref(v);
  ck_assert_int_eq(atomic_load(&freed), 1);
  uvctx_release(v);
  ck_assert_int_eq(atomic_load(&freed), 2);
}
END_TEST

static void drop_on_thread(void* arg) {
  uvctx_unref(arg);
}

START_TEST(free_value_on_the_dropping_thread) {
  uvctx_t* v;
  uv_thread_t t;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_counted, &freed, &v), 0);
  ck_assert_int_eq(uv_thread_create(&t, drop_on_thread, v), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
  ck_assert_int_eq(atomic_load(&freed), 1);
  ck_assert_int_eq(atomic_load(&freed_off_main), 1);
}
END_TEST

START_TEST(many_values_each_freed_once) {
  enum { N = 5000 };
  uvctx_t *top, *c, *m, *d, *ps[2];
  int i;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &top), 0);
  for (i = 0; i < N; i++) {
    ck_assert_int_eq(uvctx_with_value(top, &key_counted, &freed, &c), 0);
    if (i % 2) {
      /* Under a merge and a without_cancel: still freed once. */
      ps[0] = c;
      ps[1] = top;
      ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
      ck_assert_int_eq(uvctx_without_cancel(m, &d), 0);
      ck_assert_ptr_eq(uvctx_value(d, &key_counted), &freed);
      uvctx_unref(c);
      uvctx_release(m);
      c = d;
    }
    uvctx_unref(c);
  }
  ck_assert_int_eq(atomic_load(&freed), N);
  uvctx_release(top);
  ck_assert_int_eq(atomic_load(&freed), N);
}
END_TEST

START_TEST(values_through_every_kind) {
  uvctx_t *v, *k, *d, *w, *on, *ps[2], *m, *other;
  int one = 1;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_user, &one, &v), 0);
  ck_assert_int_eq(uvctx_with_cancel(v, &k), 0);
  ck_assert_int_eq(uvctx_with_timeout(k, 100000, &d), 0);
  ck_assert_int_eq(uvctx_without_cancel(d, &w), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(w, uvt_l, &on), 0);
  ck_assert_ptr_eq(uvctx_value(k, &key_user), &one);
  ck_assert_ptr_eq(uvctx_value(d, &key_user), &one);
  ck_assert_ptr_eq(uvctx_value(w, &key_user), &one);
  ck_assert_ptr_eq(uvctx_value(on, &key_user), &one);
  /* A merge takes values from parents[0] only. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &other), 0);
  ps[0] = other;
  ps[1] = on;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_ptr_null(uvctx_value(m, &key_user));
  uvctx_unref(m);
  ps[0] = on;
  ps[1] = other;
  ck_assert_int_eq(uvctx_any(ps, 2, &m), 0);
  ck_assert_ptr_eq(uvctx_value(m, &key_user), &one);
  uvctx_release(m);
  uvctx_release(other);
  uvctx_release(on);
  uvctx_release(w);
  uvctx_release(d);
  uvctx_release(k);
  uvctx_release(v);
}
END_TEST

START_TEST(bad_input) {
  uvctx_t *v, *o = NULL;
  uint64_t before = uvctx_live_allocations();
  int one = 1;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, NULL, &one, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_value(NULL, &key_user, &one, &o), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_user, &one, NULL), UV_EINVAL);
  ck_assert_ptr_null(o);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_user, &one, &v), 0);
  ck_assert_int_eq(uvctx_cancel(v), UV_EINVAL);
  ck_assert_int_eq(uvctx_err(v), 0);
  uvctx_release(v);
}
END_TEST

/* A chain of value contexts: the lookup of the outermost key and the free
 * run on a 64 KiB stack. */
typedef struct deep_s {
  uvctx_t* leaf;
  void* found;
  void* found_missing;
} deep_t;

static void deep_lookup_and_free(void* arg) {
  deep_t* d = arg;
  d->found = uvctx_value(d->leaf, &key_counted);
  d->found_missing = uvctx_value(d->leaf, &key_user2);
  uvctx_unref(d->leaf);
}

START_TEST(deep_chain_is_iterative) {
  deep_t d;
  uvctx_t *c, *next;
  size_t i, n = UVT_SCALE(1000000, 100000);
  int one = 1;
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_counted, &freed, &c), 0);
  for (i = 1; i < n; i++) {
    if (i % 3 == 0)
      ck_assert_int_eq(uvctx_with_cancel(c, &next), 0);
    else
      ck_assert_int_eq(uvctx_with_value(c, &key_user, &one, &next), 0);
    uvctx_unref(c);
    c = next;
  }
  d.leaf = c;
  uvt_run_on_small_stack(deep_lookup_and_free, &d, 64);
  ck_assert_ptr_eq(d.found, &freed);
  ck_assert_ptr_null(d.found_missing);
  ck_assert_int_eq(atomic_load(&freed), 1);
}
END_TEST

static Suite* value_suite(void) {
  Suite* s = suite_create("value");
  TCase* tc = tcase_create("value");
  tcase_add_checked_fixture(tc, setup, uvt_teardown);
  tcase_add_test(tc, keys_compare_by_address);
  tcase_add_test(tc, innermost_wins_and_null_shadows);
  tcase_add_test(tc, readable_after_cancel);
  tcase_add_test(tc, free_value_runs_once_when_freed);
  tcase_add_test(tc, free_value_on_the_dropping_thread);
  tcase_add_test(tc, many_values_each_freed_once);
  tcase_add_test(tc, values_through_every_kind);
  tcase_add_test(tc, bad_input);
  tcase_add_test(tc, deep_chain_is_iterative);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(value_suite());
}
