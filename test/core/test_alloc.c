/* test_alloc.c pins lib/common/alloc.c and the UV_ENOMEM contract of every
 * allocating call: with an allocator that fails the Nth allocation, each
 * allocation site of each call fails in turn until the call succeeds; every
 * failure returns UV_ENOMEM, leaves *out untouched and leaks nothing. */
#include "helpers.h"

static const uvctx_key_t key_a = {.name = "a"};

static char sentinel_storage[8];
#define SENTINEL ((uvctx_t*)(void*)sentinel_storage)

/* Allocation sites any call may have: a bound on the loops below. */
#define MAX_SITES 64

static void setup(void) {
  uvt_alloc_install();
  uvt_setup();
}

static void teardown(void) {
  uvt_alloc_disarm();
  uvt_teardown();
}

static uint64_t contexts(uvctx_loop_t* l) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(l, &n);
  return n.contexts;
}

START_TEST(replace_allocator_rejects_null) {
  ck_assert_int_eq(uvctx_replace_allocator(NULL, realloc, calloc, free),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_replace_allocator(malloc, NULL, calloc, free),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_replace_allocator(malloc, realloc, NULL, free),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_replace_allocator(malloc, realloc, calloc, NULL),
                   UV_EINVAL);
  /* The library uses the installed allocator. */
  {
    uvctx_t* c;
    uvt_alloc_fail_nth(0);
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
    ck_assert_int_ge(uvt_alloc_calls(), 1);
    uvt_alloc_disarm();
    ck_assert_uint_ge(uvctx_live_allocations(), 1);
    uvctx_release(c);
  }
}
END_TEST

/* One constructor under test. */
typedef int (*ctor_fn)(void* arg, uvctx_t** out);

typedef struct ctor_case_s {
  const char* name;
  ctor_fn fn;
} ctor_case_t;

/* Fails each allocation of `fn` in turn until it succeeds. Returns the
 * number of failures seen. */
static int fail_each_site(const char* name, ctor_fn fn, void* arg,
                          uvctx_loop_t* home) {
  long n;
  int enomem = 0;
  for (n = 1; n <= MAX_SITES; n++) {
    uvctx_t* out = SENTINEL;
    uint64_t live = uvctx_live_allocations();
    uint64_t ctxs = contexts(home);
    int rc, failed;
    uvt_alloc_fail_nth(n);
    rc = fn(arg, &out);
    failed = uvt_alloc_failed();
    uvt_alloc_disarm();
    if (rc != 0) {
      ck_assert_msg(rc == UV_ENOMEM, "%s: site %ld: rc %d", name, n, rc);
      ck_assert_msg(failed, "%s: UV_ENOMEM without a failed allocation", name);
      ck_assert_msg(out == SENTINEL, "%s: *out written on failure", name);
      ck_assert_msg(uvctx_live_allocations() == live,
                    "%s: site %ld leaked %" PRIu64 " block(s)", name, n,
                    uvctx_live_allocations() - live);
      ck_assert_uint_eq(contexts(home), ctxs);
      enomem++;
      continue;
    }
    ck_assert_ptr_ne(out, SENTINEL);
    ck_assert_ptr_nonnull(out);
    uvctx_release(out);
    if (!failed)
      return enomem; /* every site has been failed once */
    /* A failed allocation the call could do without: it succeeded all the
     * same; go on with the next site. */
  }
  ck_abort_msg("%s: more than %d allocations", name, MAX_SITES);
  return enomem;
}

static uvctx_t* parent_of(void* arg) {
  return arg;
}

static int c_with_cancel(void* arg, uvctx_t** out) {
  return uvctx_with_cancel(parent_of(arg), out);
}

static int c_with_deadline(void* arg, uvctx_t** out) {
  return uvctx_with_deadline(parent_of(arg), uv_hrtime() + 60000000000ull, out);
}

static int c_with_timeout(void* arg, uvctx_t** out) {
  return uvctx_with_timeout(parent_of(arg), 60000, out);
}

static int c_with_deadline_cause(void* arg, uvctx_t** out) {
  return uvctx_with_deadline_cause(parent_of(arg), uv_hrtime() + 60000000000ull,
                                   -7, "cause text", out);
}

static int c_with_timeout_cause(void* arg, uvctx_t** out) {
  return uvctx_with_timeout_cause(parent_of(arg), 60000, -7, "cause text", out);
}

/* A deadline already passed: born done, the cause message copied. Only a
 * failed allocation (the copy's) excuses a missing message. */
static int c_past_deadline_cause(void* arg, uvctx_t** out) {
  int rc = uvctx_with_deadline_cause(parent_of(arg), 1, -9, "past", out);
  int failed = uvt_alloc_failed();
  const char* msg;
  if (rc == 0) {
    ck_assert_int_eq(uvctx_err(*out), UV_ETIMEDOUT);
    ck_assert_int_eq(uvctx_cause(*out, &msg), -9);
    if (!failed)
      ck_assert_msg(msg != NULL, "past_deadline_cause: no message, and no "
                                 "allocation failed");
    if (msg != NULL)
      ck_assert_str_eq(msg, "past");
  }
  return rc;
}

static int c_with_value(void* arg, uvctx_t** out) {
  return uvctx_with_value(parent_of(arg), &key_a, arg, out);
}

static int c_without_cancel(void* arg, uvctx_t** out) {
  return uvctx_without_cancel(parent_of(arg), out);
}

static const ctor_case_t ctors[] = {
    {"with_cancel", c_with_cancel},
    {"with_deadline", c_with_deadline},
    {"with_timeout", c_with_timeout},
    {"with_deadline_cause", c_with_deadline_cause},
    {"with_timeout_cause", c_with_timeout_cause},
    {"past_deadline_cause", c_past_deadline_cause},
    {"with_value", c_with_value},
    {"without_cancel", c_without_cancel},
};

/* Each constructor, under a cancellable parent and under the background
 * of a fresh binding (whose deadline heap is not allocated yet). */
START_TEST(constructors) {
  size_t i;
  for (i = 0; i < sizeof(ctors) / sizeof(ctors[0]); i++) {
    uv_loop_t loop2;
    uvctx_loop_t* l2;
    uvctx_t* p;
    ck_assert_int_eq(uv_loop_init(&loop2), 0);
    ck_assert_int_eq(uvctx_loop_init(&loop2, &l2), 0);
    ck_assert_int_ge(
        fail_each_site(ctors[i].name, ctors[i].fn, uvctx_background(l2), l2),
        1);
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
    ck_assert_int_ge(fail_each_site(ctors[i].name, ctors[i].fn, p, uvt_l), 1);
    uvctx_release(p);
    ck_assert_int_eq(uvctx_loop_close(l2), 0);
    uvt_loop_finish(&loop2);
  }
}
END_TEST

typedef struct on_arg_s {
  uvctx_t* parent;
  uvctx_loop_t* home;
} on_arg_t;

static int c_with_cancel_on(void* arg, uvctx_t** out) {
  on_arg_t* a = arg;
  return uvctx_with_cancel_on(a->parent, a->home, out);
}

START_TEST(with_cancel_on) {
  uv_loop_t loop2;
  on_arg_t a;
  ck_assert_int_eq(uv_loop_init(&loop2), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop2, &a.home), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a.parent), 0);
  ck_assert_int_ge(
      fail_each_site("with_cancel_on", c_with_cancel_on, &a, a.home), 1);
  uvctx_release(a.parent);
  ck_assert_int_eq(uvctx_loop_close(a.home), 0);
  uvt_loop_finish(&loop2);
}
END_TEST

typedef struct any_arg_s {
  uvctx_t* ps[3];
} any_arg_t;

static int c_any(void* arg, uvctx_t** out) {
  any_arg_t* a = arg;
  return uvctx_any(a->ps, 3, out);
}

START_TEST(any) {
  any_arg_t a;
  int i;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a.ps[0]), 0);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 60000, &a.ps[1]), 0);
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_a, &a, &a.ps[2]), 0);
  ck_assert_int_ge(fail_each_site("any", c_any, &a, uvt_l), 1);
  /* With a parent already done. */
  ck_assert_int_eq(uvctx_cancel_cause(a.ps[1], -3, "m"), 0);
  ck_assert_int_ge(fail_each_site("any(done)", c_any, &a, uvt_l), 1);
  for (i = 0; i < 3; i++)
    uvctx_release(a.ps[i]);
}
END_TEST

/* Many deadlines held at once: whenever the heap must grow, that growth
 * fails in turn too. */
START_TEST(deadline_heap_growth) {
  enum { N = 300 };
  uvctx_t* held[N];
  uint64_t far = uv_hrtime() + 3600000000000ull;
  int i, failures = 0;
  for (i = 0; i < N; i++) {
    long n;
    for (n = 1; n <= MAX_SITES; n++) {
      uvctx_t* out = SENTINEL;
      uint64_t live = uvctx_live_allocations();
      int rc, failed;
      uvt_alloc_fail_nth(n);
      /* Decreasing deadlines: each takes a heap entry of its own. */
      rc = uvctx_with_deadline(uvt_bg, far - (uint64_t)i, &out);
      failed = uvt_alloc_failed();
      uvt_alloc_disarm();
      if (rc == 0) {
        held[i] = out;
        if (!failed)
          break;
        uvctx_release(out);
        continue;
      }
      ck_assert_int_eq(rc, UV_ENOMEM);
      ck_assert_ptr_eq(out, SENTINEL);
      ck_assert_uint_eq(uvctx_live_allocations(), live);
      failures++;
    }
    {
      uvctx_loop_counts_t c;
      uvctx_loop_counts(uvt_l, &c);
      ck_assert_uint_eq(c.deadlines, (uint64_t)i + 1);
    }
  }
  ck_assert_int_ge(failures, N);
  for (i = 0; i < N; i++)
    uvctx_release(held[i]);
}
END_TEST

static void count_open(uv_handle_t* h, void* arg) {
  if (!uv_is_closing(h))
    ++*(int*)arg;
}

START_TEST(loop_init) {
  long n;
  int enomem = 0;
  for (n = 1; n <= MAX_SITES; n++) {
    uv_loop_t loop2;
    uvctx_loop_t* l2 = (uvctx_loop_t*)(void*)sentinel_storage;
    uint64_t live = uvctx_live_allocations();
    int rc, failed;
    ck_assert_int_eq(uv_loop_init(&loop2), 0);
    uvt_alloc_fail_nth(n);
    rc = uvctx_loop_init(&loop2, &l2);
    failed = uvt_alloc_failed();
    uvt_alloc_disarm();
    if (rc != 0) {
      ck_assert_int_eq(rc, UV_ENOMEM);
      ck_assert_ptr_eq(l2, (uvctx_loop_t*)(void*)sentinel_storage);
      /* Handles the failed call initialized are closing (their memory
       * goes in their close callbacks, on the next run). */
      {
        int open = 0;
        uv_walk(&loop2, count_open, &open);
        ck_assert_int_eq(open, 0);
      }
      uvt_loop_finish(&loop2);
      ck_assert_uint_eq(uvctx_live_allocations(), live);
      enomem++;
      continue;
    }
    ck_assert_int_eq(uvctx_loop_close(l2), 0);
    uvt_loop_finish(&loop2);
    ck_assert_uint_eq(uvctx_live_allocations(), live);
    if (!failed)
      break;
  }
  ck_assert_int_le(n, MAX_SITES);
  ck_assert_int_ge(enomem, 1);
}
END_TEST

START_TEST(cancel_cause_message) {
  long n;
  int enomem = 0;
  for (n = 1; n <= MAX_SITES; n++) {
    uvctx_t *c, *k;
    const char* msg = "x";
    uint64_t live;
    int rc, failed;
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
    ck_assert_int_eq(uvctx_with_cancel(c, &k), 0);
    live = uvctx_live_allocations();
    uvt_alloc_fail_nth(n);
    rc = uvctx_cancel_cause(c, -12, "the message");
    failed = uvt_alloc_failed();
    uvt_alloc_disarm();
    /* Cancelled either way. */
    ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
    ck_assert_int_eq(uvctx_err(k), UV_ECANCELED);
    ck_assert_int_eq(uvctx_cause(c, &msg), -12);
    ck_assert_int_eq(uvctx_cause(k, NULL), -12);
    if (rc != 0) {
      ck_assert_int_eq(rc, UV_ENOMEM);
      ck_assert_ptr_null(msg);
      ck_assert_uint_eq(uvctx_live_allocations(), live);
      enomem++;
    } else {
      ck_assert_str_eq(msg, "the message");
    }
    uvctx_unref(k);
    uvctx_unref(c);
    if (rc == 0 && !failed)
      break;
  }
  ck_assert_int_le(n, MAX_SITES);
  ck_assert_int_ge(enomem, 1);
}
END_TEST

/* Watches allocate nothing on the loop's thread (uvctx_watch_start() has
 * no UV_ENOMEM to return): with the first allocation set to fail, a start
 * on each kind of context attempts none, returns 0, and the callback runs
 * once when the context is done. */
typedef struct probe_s {
  uvctx_watch_t w;
  int calls;
} probe_t;

static void probe_cb(uvctx_watch_t* w, int err) {
  (void)err;
  ((probe_t*)w)->calls++;
}

START_TEST(watch_start) {
  static const char* const kinds[] = {"cancel", "deadline", "done",
                                      "never done"};
  int k;
  for (k = 0; k < 4; k++) {
    uvctx_t* c = NULL;
    probe_t p;
    long calls;
    int rc, failed;
    memset(&p, 0, sizeof(p));
    switch (k) {
      case 0:
        ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
        break;
      case 1: /* the first deadline watch touches the loop's timer */
        ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 60000, &c), 0);
        break;
      case 2: /* done already: the callback is queued */
        ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
        ck_assert_int_eq(uvctx_cancel(c), 0);
        break;
      default:
        ck_assert_int_eq(uvctx_with_value(uvt_bg, &key_a, &p, &c), 0);
        break;
    }
    uvt_alloc_fail_nth(1);
    rc = uvctx_watch_start(&p.w, c, probe_cb);
    calls = uvt_alloc_calls();
    failed = uvt_alloc_failed();
    uvt_alloc_disarm();
    ck_assert_msg(rc == 0, "%s: rc %d", kinds[k], rc);
    ck_assert_msg(calls == 0, "%s: %ld allocation(s) attempted", kinds[k],
                  calls);
    ck_assert(!failed);
    if (k == 3)
      ck_assert_int_eq(uvctx_watch_stop(&p.w), 1); /* would never fire */
    uvctx_release(c);
    ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(p.calls, k == 3 ? 0 : 1);
  }
}
END_TEST

/* From a thread that does not run the loop, while another thread runs it:
 * deadlines go through the mailbox. */
typedef struct remote_s {
  uvt_loop_thread_t* t;
  int enomem;
  int ok;
  int bad;
} remote_t;

static void remote_main(void* arg) {
  remote_t* r = arg;
  uvctx_t* bg = uvctx_background(r->t->l);
  long n;
  int i;
  for (i = 0; i < 20; i++) {
    for (n = 1; n <= MAX_SITES; n++) {
      uvctx_t* out = SENTINEL;
      int rc, failed;
      uvt_alloc_fail_nth(n);
      rc = uvctx_with_timeout(bg, i % 2 ? 60000 : 1, &out);
      failed = uvt_alloc_failed();
      uvt_alloc_disarm();
      if (rc == UV_ENOMEM && out == SENTINEL) {
        r->enomem++;
        continue;
      }
      if (rc != 0 || out == SENTINEL) {
        r->bad++;
        return;
      }
      r->ok++;
      uvctx_release(out);
      if (!failed)
        break;
    }
  }
}

START_TEST(deadline_from_another_thread) {
  uvt_loop_thread_t t;
  remote_t r;
  uv_thread_t th;
  memset(&r, 0, sizeof(r));
  uvt_loop_thread_start(&t);
  r.t = &t;
  ck_assert_int_eq(uv_thread_create(&th, remote_main, &r), 0);
  ck_assert_int_eq(uv_thread_join(&th), 0);
  ck_assert_int_eq(r.bad, 0);
  ck_assert_int_ge(r.ok, 20);
  ck_assert_int_ge(r.enomem, 20);
  UVT_RUN_UNTIL(contexts(t.l) == 0);
  uvt_loop_thread_stop(&t);
}
END_TEST

/* The live count is striped per thread (common/alloc.c): a thread owns
 * its stripe until it exits, then the stripe goes to a later thread with
 * the count in it; threads beyond the stripes share one. More threads at
 * once than there are stripes, then as many one after another, each
 * freeing blocks others made: the total must come out exact. */
enum { COUNT_THREADS = 100, KEPT = 2 };

typedef struct counting_s {
  uv_barrier_t all_alive;
  void* kept[COUNT_THREADS][KEPT];
} counting_t;

typedef struct counting_arg_s {
  counting_t* c;
  int id;
} counting_arg_t;

static void keep_blocks(void* arg) {
  counting_arg_t* a = arg;
  void* own = uvctx_malloc(16);
  int i;
  for (i = 0; i < KEPT; i++)
    a->c->kept[a->id][i] = uvctx_malloc(16);
  uvctx_free(own);
  uv_barrier_wait(&a->c->all_alive);
}

static void free_others_blocks(void* arg) {
  counting_arg_t* a = arg;
  int i;
  for (i = 0; i < KEPT; i++)
    uvctx_free(a->c->kept[COUNT_THREADS - 1 - a->id][i]);
  uvctx_free(uvctx_malloc(16));
}

START_TEST(live_count_across_thread_exits) {
  static counting_t c;
  static counting_arg_t args[COUNT_THREADS];
  uv_thread_t th[COUNT_THREADS];
  uint64_t base = uvctx_live_allocations();
  int i, j;

  ck_assert_int_eq(uv_barrier_init(&c.all_alive, COUNT_THREADS), 0);
  for (i = 0; i < COUNT_THREADS; i++) {
    args[i].c = &c;
    args[i].id = i;
    ck_assert_int_eq(uv_thread_create(&th[i], keep_blocks, &args[i]), 0);
  }
  for (i = 0; i < COUNT_THREADS; i++)
    ck_assert_int_eq(uv_thread_join(&th[i]), 0);
  uv_barrier_destroy(&c.all_alive);
  for (i = 0; i < COUNT_THREADS; i++)
    for (j = 0; j < KEPT; j++)
      ck_assert_ptr_nonnull(c.kept[i][j]);
  ck_assert_uint_eq(uvctx_live_allocations(), base + COUNT_THREADS * KEPT);

  for (i = 0; i < COUNT_THREADS; i++) {
    ck_assert_int_eq(uv_thread_create(&th[i], free_others_blocks, &args[i]), 0);
    ck_assert_int_eq(uv_thread_join(&th[i]), 0);
  }
  ck_assert_uint_eq(uvctx_live_allocations(), base);
}
END_TEST

static Suite* alloc_suite(void) {
  Suite* s = suite_create("alloc");
  TCase* tc = tcase_create("alloc");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, replace_allocator_rejects_null);
  tcase_add_test(tc, constructors);
  tcase_add_test(tc, with_cancel_on);
  tcase_add_test(tc, any);
  tcase_add_test(tc, deadline_heap_growth);
  tcase_add_test(tc, loop_init);
  tcase_add_test(tc, cancel_cause_message);
  tcase_add_test(tc, watch_start);
  tcase_add_test(tc, deadline_from_another_thread);
  tcase_add_test(tc, live_count_across_thread_exits);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(alloc_suite());
}
