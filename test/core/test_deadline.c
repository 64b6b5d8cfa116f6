/* test_deadline.c pins lib/core/deadline.c: deadlines never fire early, a
 * deadline at or before now cancels during construction, a later child
 * takes no heap entry, deadlines are armed before the call returns, a
 * pending deadline keeps uv_run() alive only while a watch could be fired
 * by it, and causes are recorded only when the deadline fires. */
#include "core/internal.h" /* the binding's timer, to see that it is armed */
#include "helpers.h"

#define MS 1000000ull

static const uvctx_key_t key_a = {.name = "a", .free_value = NULL};

static uvctx_loop_counts_t counts(void) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(uvt_l, &n);
  return n;
}

/* A watch that records when and how it fired. */
typedef struct probe_s {
  uvctx_watch_t w;
  uint64_t deadline; /* expected earliest firing time, or 0 */
  uint64_t fired_at;
  int calls;
  int err;
  int early;
} probe_t;

static void probe_cb(uvctx_watch_t* w, int err) {
  probe_t* p = (probe_t*)w;
  p->fired_at = uv_hrtime();
  p->calls++;
  p->err = err;
  if (p->deadline != 0 && p->fired_at < p->deadline)
    p->early = 1;
}

START_TEST(zero_timeout_is_done_on_return) {
  uvctx_t* c;
  probe_t p;
  const char* msg = "x";
  uint64_t dl;

  memset(&p, 0, sizeof(p));
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ETIMEDOUT);
  ck_assert_ptr_null(msg);
  ck_assert_int_eq(uvctx_deadline(c, &dl), 1);
  ck_assert_uint_le(dl, uv_hrtime());
  ck_assert_uint_eq(counts().deadlines, 0);
  /* A watch on it fires later, on the loop, not inside the start. */
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_int_eq(p.calls, 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ETIMEDOUT);
  uvctx_unref(c);

  /* Deadlines in the past, and 0. */
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, uv_hrtime() - 1, &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  uvctx_unref(c);
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, uv_hrtime(), &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  uvctx_unref(c);
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, 0, &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  uvctx_unref(c);
  ck_assert_uint_eq(counts().deadlines, 0);
}
END_TEST

START_TEST(past_deadline_records_cause) {
  uvctx_t *c, *k;
  const char* msg;
  char buf[16] = "too late";
  ck_assert_int_eq(uvctx_with_deadline_cause(uvt_bg, 1, -321, buf, &c), 0);
  strcpy(buf, "changed");
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(c, &msg), -321);
  ck_assert_str_eq(msg, "too late");
  ck_assert_int_eq(uvctx_with_cancel(c, &k), 0);
  ck_assert_int_eq(uvctx_err(k), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(k, &msg), -321);
  ck_assert_str_eq(msg, "too late");
  uvctx_unref(k);
  uvctx_unref(c);
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 0, -5, NULL, &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  msg = "x";
  ck_assert_int_eq(uvctx_cause(c, &msg), -5);
  ck_assert_ptr_null(msg);
  uvctx_unref(c);
}
END_TEST

START_TEST(fires_never_early) {
  uvctx_t* c;
  probe_t p;
  uint64_t t0 = uv_hrtime();
  memset(&p, 0, sizeof(p));
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 30, &c), 0);
  ck_assert_int_eq(uvctx_deadline(c, &p.deadline), 1);
  ck_assert_uint_ge(p.deadline, t0 + 30 * MS);
  ck_assert_uint_le(p.deadline, uv_hrtime() + 30 * MS);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  uvctx_unref(c); /* the watch keeps it alive */
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ETIMEDOUT);
  ck_assert_int_eq(p.early, 0);
  if (!UVCTX_TEST_SANITIZED)
    ck_assert_msg(p.fired_at - p.deadline < 500 * MS, "late by %" PRIu64 " ns",
                  p.fired_at - p.deadline);
  ck_assert_uint_eq(counts().contexts, 0);
  ck_assert_uint_eq(counts().deadlines, 0);
}
END_TEST

START_TEST(sub_millisecond_deadlines_never_early) {
  enum { N = 50 };
  probe_t p[N];
  uvctx_t* c;
  int i;
  memset(p, 0, sizeof(p));
  for (i = 0; i < N; i++) {
    /* Odd nanosecond offsets: libuv timers are whole milliseconds. */
    p[i].deadline = uv_hrtime() + (uint64_t)i * 97777 + 1;
    ck_assert_int_eq(uvctx_with_deadline(uvt_bg, p[i].deadline, &c), 0);
    ck_assert_int_eq(uvctx_watch_start(&p[i].w, c, probe_cb), 0);
    uvctx_unref(c);
  }
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  for (i = 0; i < N; i++) {
    ck_assert_int_eq(p[i].calls, 1);
    ck_assert_int_eq(p[i].err, UV_ETIMEDOUT);
    ck_assert_msg(!p[i].early, "deadline %d fired %" PRId64 " ns early", i,
                  (int64_t)(p[i].deadline - p[i].fired_at));
  }
}
END_TEST

START_TEST(later_child_takes_no_heap_entry) {
  uvctx_t *d1, *later, *earlier, *k, *v, *w, *bgc;
  uint64_t now = uv_hrtime(), dl;
  uint64_t t1 = now + 10000 * MS, t2 = now + 20000 * MS, t3 = now + 5000 * MS;

  ck_assert_int_eq(uvctx_deadline(uvt_bg, &dl), 0);
  ck_assert_int_eq(uvctx_with_deadline(uvt_bg, t1, &d1), 0);
  ck_assert_uint_eq(counts().deadlines, 1);
  ck_assert_int_eq(uvctx_deadline(d1, &dl), 1);
  ck_assert_uint_eq(dl, t1);

  ck_assert_int_eq(uvctx_with_deadline(d1, t2, &later), 0);
  ck_assert_uint_eq(counts().deadlines, 1);
  ck_assert_int_eq(uvctx_deadline(later, &dl), 1);
  ck_assert_uint_eq(dl, t1);

  ck_assert_int_eq(uvctx_with_deadline(d1, t1, &k), 0); /* equal: no entry */
  ck_assert_uint_eq(counts().deadlines, 1);
  uvctx_release(k);

  ck_assert_int_eq(uvctx_with_deadline(d1, t3, &earlier), 0);
  ck_assert_uint_eq(counts().deadlines, 2);
  ck_assert_int_eq(uvctx_deadline(earlier, &dl), 1);
  ck_assert_uint_eq(dl, t3);

  /* Descendants of other kinds report the earliest deadline in force. */
  ck_assert_int_eq(uvctx_with_cancel(later, &k), 0);
  ck_assert_int_eq(uvctx_deadline(k, &dl), 1);
  ck_assert_uint_eq(dl, t1);
  ck_assert_int_eq(uvctx_with_value(earlier, &key_a, NULL, &v), 0);
  ck_assert_int_eq(uvctx_deadline(v, &dl), 1);
  ck_assert_uint_eq(dl, t3);
  ck_assert_int_eq(uvctx_without_cancel(earlier, &w), 0);
  ck_assert_int_eq(uvctx_deadline(w, &dl), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &bgc), 0);
  ck_assert_int_eq(uvctx_deadline(bgc, &dl), 0);
  ck_assert_uint_eq(counts().deadlines, 2);

  /* A cancelled or freed deadline leaves the heap. */
  ck_assert_int_eq(uvctx_cancel(earlier), 0);
  ck_assert_uint_eq(counts().deadlines, 1);
  uvctx_release(v);
  uvctx_release(w);
  uvctx_release(earlier);
  uvctx_release(k);
  uvctx_release(later);
  ck_assert_uint_eq(counts().deadlines, 1);
  uvctx_unref(d1); /* freed without a cancel */
  ck_assert_uint_eq(counts().deadlines, 0);
  uvctx_release(bgc);
}
END_TEST

START_TEST(armed_before_return) {
  uvctx_t* c;
  uvctx_loop_t* l = uvt_l;
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 1000, &c), 0);
  ck_assert_uint_eq(counts().deadlines, 1);
  /* Armed: the source's due time is set, and with the default source the
   * libuv timer is active (the timerfd source has no libuv timer). */
  ck_assert_uint_ne(l->timer_due, 0);
  if (l->hires_fd < 0)
    ck_assert_int_ne(uv_is_active((uv_handle_t*)&l->timer), 0);
  uvctx_release(c);
  ck_assert_uint_eq(counts().deadlines, 0);
}
END_TEST

/* uv_run() with a pending deadline and nobody watching returns at once:
 * the context is still live when it returns. */
START_TEST(unwatched_deadline_does_not_hold_the_loop) {
  uvctx_t *c, *k;
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 10000, &c), 0);
  ck_assert_int_eq(uvctx_with_cancel(c, &k), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uvctx_err(c), 0);
  ck_assert_int_eq(uvctx_err(k), 0);
  uvctx_release(k);
  uvctx_release(c);
}
END_TEST

/* A watch on the context or on any descendant the deadline would cancel
 * keeps uv_run() alive, and its callback runs before uv_run() returns. */
START_TEST(watched_deadline_holds_the_loop) {
  uvctx_t *c, *k, *v;
  probe_t pc, pk, pv;
  int round;
  for (round = 0; round < 3; round++) {
    memset(&pc, 0, sizeof(pc));
    memset(&pk, 0, sizeof(pk));
    memset(&pv, 0, sizeof(pv));
    ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 20, &c), 0);
    ck_assert_int_eq(uvctx_deadline(c, &pc.deadline), 1);
    pk.deadline = pv.deadline = pc.deadline;
    ck_assert_int_eq(uvctx_with_cancel(c, &k), 0);
    ck_assert_int_eq(uvctx_with_value(c, &key_a, NULL, &v), 0);
    /* Round 0 watches the deadline context, 1 a cancel child, 2 a value
     * child. */
    if (round == 0)
      ck_assert_int_eq(uvctx_watch_start(&pc.w, c, probe_cb), 0);
    if (round == 1)
      ck_assert_int_eq(uvctx_watch_start(&pk.w, k, probe_cb), 0);
    if (round == 2)
      ck_assert_int_eq(uvctx_watch_start(&pv.w, v, probe_cb), 0);
    ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(pc.calls + pk.calls + pv.calls, 1);
    ck_assert_int_eq(pc.early + pk.early + pv.early, 0);
    ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
    ck_assert_int_eq(uvctx_err(k), UV_ETIMEDOUT);
    ck_assert_int_eq(uvctx_err(v), UV_ETIMEDOUT);
    uvctx_unref(v);
    uvctx_unref(k);
    uvctx_unref(c);
  }
}
END_TEST

START_TEST(stopped_watch_releases_the_loop) {
  uvctx_t* c;
  probe_t p;
  memset(&p, 0, sizeof(p));
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 10000, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, c, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_stop(&p.w), 1);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uvctx_err(c), 0);
  ck_assert_int_eq(p.calls, 0);
  uvctx_release(c);
}
END_TEST

START_TEST(cause_recorded_only_when_fired) {
  uvctx_t *c, *k;
  probe_t p;
  const char* msg;
  char buf[32] = "upstream slow";

  memset(&p, 0, sizeof(p));
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 10, UV_EPIPE, buf, &c), 0);
  strcpy(buf, "changed");
  ck_assert_int_eq(uvctx_cause(c, &msg), 0);
  ck_assert_int_eq(uvctx_with_cancel(c, &k), 0);
  ck_assert_int_eq(uvctx_watch_start(&p.w, k, probe_cb), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p.calls, 1);
  ck_assert_int_eq(p.err, UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_EPIPE);
  ck_assert_str_eq(msg, "upstream slow");
  ck_assert_int_eq(uvctx_cause(k, &msg), UV_EPIPE);
  ck_assert_str_eq(msg, "upstream slow");
  uvctx_unref(k);
  uvctx_unref(c);

  /* Cancelled by hand first: UV_ECANCELED, no message. */
  ck_assert_int_eq(uvctx_with_deadline_cause(uvt_bg, uv_hrtime() + 10 * MS,
                                             UV_EPIPE, "never", &c),
                   0);
  ck_assert_int_eq(uvctx_cancel(c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  msg = "x";
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECANCELED);
  ck_assert_ptr_null(msg);
  uvt_run_for(30);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_ECANCELED);
  ck_assert_ptr_null(msg);
  uvctx_unref(c);
}
END_TEST

START_TEST(parent_deadline_cancels_children) {
  uvctx_t *d, *own_later, *k;
  probe_t p1, p2;
  const char* msg;
  memset(&p1, 0, sizeof(p1));
  memset(&p2, 0, sizeof(p2));
  ck_assert_int_eq(uvctx_with_timeout_cause(uvt_bg, 15, -77, "outer", &d), 0);
  ck_assert_int_eq(uvctx_with_timeout_cause(d, 10000, -88, "inner", &own_later),
                   0);
  ck_assert_int_eq(uvctx_with_cancel(own_later, &k), 0);
  ck_assert_int_eq(uvctx_deadline(k, &p2.deadline), 1);
  p1.deadline = p2.deadline;
  ck_assert_int_eq(uvctx_watch_start(&p1.w, own_later, probe_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&p2.w, k, probe_cb), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(p1.calls, 1);
  ck_assert_int_eq(p2.calls, 1);
  ck_assert_int_eq(p1.early + p2.early, 0);
  ck_assert_int_eq(uvctx_err(own_later), UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_cause(own_later, &msg), -77);
  ck_assert_str_eq(msg, "outer");
  ck_assert_int_eq(uvctx_cause(k, &msg), -77);
  uvctx_unref(k);
  uvctx_unref(own_later);
  uvctx_unref(d);
}
END_TEST

START_TEST(freed_before_firing) {
  uvctx_t* c;
  int i;
  for (i = 0; i < 100; i++) {
    ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 5 + i % 7, &c), 0);
    uvctx_unref(c);
  }
  ck_assert_uint_eq(counts().deadlines, 0);
  uvt_run_for(20);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

/* Randomized: 10,000 deadlines between 0 and 200 ms; each watch checks
 * uv_hrtime() against the deadline in force, and (without sanitizers) that
 * it was not left waiting. */
START_TEST(random_deadlines_never_early) {
  enum { N = 10000 };
  probe_t* p = calloc(N, sizeof(*p));
  uint64_t rng = uvt_seed("random_deadlines_never_early");
  uvctx_t* c;
  uvctx_t* parent;
  uint64_t t_run;
  int i;
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 150, &parent), 0);
  for (i = 0; i < N; i++) {
    uint64_t r = uvt_rand(&rng);
    int rc;
    switch (r % 4) {
      case 0:
        rc = uvctx_with_timeout(uvt_bg, (r >> 8) % 201, &c);
        break;
      case 1:
        rc = uvctx_with_deadline(uvt_bg, uv_hrtime() + (r >> 8) % (200 * MS),
                                 &c);
        break;
      case 2: /* under a 150 ms parent: its deadline may be in force */
        rc = uvctx_with_deadline(parent, uv_hrtime() + (r >> 8) % (200 * MS),
                                 &c);
        break;
      default:
        rc = uvctx_with_timeout_cause(uvt_bg, (r >> 8) % 201, -1, "r", &c);
        break;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(uvctx_deadline(c, &p[i].deadline), 1);
    ck_assert_int_eq(uvctx_watch_start(&p[i].w, c, probe_cb), 0);
    uvctx_unref(c);
  }
  uvctx_unref(parent);
  t_run = uv_hrtime();
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  /* Every probe's callback ran exactly once (checked one by one: a count
   * of the passes would prove nothing). */
  for (i = 0; i < N; i++) {
    ck_assert_msg(p[i].calls == 1, "deadline %d: %d calls", i, p[i].calls);
    ck_assert_int_eq(p[i].err, UV_ETIMEDOUT);
    ck_assert_msg(!p[i].early, "deadline %d fired %" PRId64 " ns early", i,
                  (int64_t)(p[i].deadline - p[i].fired_at));
    /* A timer left armed for an earlier deadline must still be re-armed
     * for the ones after it: none is left waiting (lateness counted from
     * when the loop started running, since setting up 10k takes a while). */
    if (!UVCTX_TEST_SANITIZED) {
      uint64_t from = p[i].deadline > t_run ? p[i].deadline : t_run;
      ck_assert_msg(p[i].fired_at - from < 50 * MS,
                    "deadline %d late by %" PRIu64 " ns", i,
                    p[i].fired_at - from);
    }
  }
  ck_assert_uint_eq(counts().contexts, 0);
  ck_assert_uint_eq(counts().deadlines, 0);
  free(p);
}
END_TEST

/* A deadline made from another thread on a loop that another thread runs
 * goes through the mailbox, and fires on the loop's thread. */
typedef struct xprobe_s {
  uvctx_watch_t w;
  uvt_loop_thread_t* t;
  uint64_t deadline;
  atomic_int calls;
  atomic_int on_thread;
  atomic_int early;
  atomic_int err;
} xprobe_t;

static void xprobe_cb(uvctx_watch_t* w, int err) {
  xprobe_t* p = (xprobe_t*)w;
  if (uv_hrtime() < p->deadline)
    atomic_store(&p->early, 1);
  atomic_store(&p->on_thread,
               uvt_on_loop_thread(p->t) && !uvt_on_main_thread());
  atomic_store(&p->err, err);
  atomic_fetch_add(&p->calls, 1);
}

START_TEST(deadline_from_another_thread) {
  uvt_loop_thread_t t;
  uvctx_t *c, *bg2;
  xprobe_t p[3];
  int i;
  memset(p, 0, sizeof(p));
  uvt_loop_thread_start(&t);
  bg2 = uvctx_background(t.l);
  for (i = 0; i < 3; i++) {
    p[i].t = &t;
    ck_assert_int_eq(uvctx_with_timeout(bg2, 10 + 10 * i, &c), 0);
    ck_assert_ptr_eq(uvctx_home(c), t.l);
    ck_assert_int_eq(uvctx_deadline(c, &p[i].deadline), 1);
    ck_assert_int_eq(uvctx_watch_start(&p[i].w, c, xprobe_cb), 0);
    uvctx_unref(c);
  }
  UVT_RUN_UNTIL(atomic_load(&p[0].calls) + atomic_load(&p[1].calls) +
                    atomic_load(&p[2].calls) ==
                3);
  for (i = 0; i < 3; i++) {
    ck_assert_int_eq(atomic_load(&p[i].calls), 1);
    ck_assert_int_eq(atomic_load(&p[i].on_thread), 1);
    ck_assert_int_eq(atomic_load(&p[i].early), 0);
    ck_assert_int_eq(atomic_load(&p[i].err), UV_ETIMEDOUT);
  }
  uvt_loop_thread_stop(&t);
}
END_TEST

static Suite* deadline_suite(void) {
  Suite* s = suite_create("deadline");
  TCase* tc = tcase_create("deadline");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, zero_timeout_is_done_on_return);
  tcase_add_test(tc, past_deadline_records_cause);
  tcase_add_test(tc, fires_never_early);
  tcase_add_test(tc, sub_millisecond_deadlines_never_early);
  tcase_add_test(tc, later_child_takes_no_heap_entry);
  tcase_add_test(tc, armed_before_return);
  tcase_add_test(tc, unwatched_deadline_does_not_hold_the_loop);
  tcase_add_test(tc, watched_deadline_holds_the_loop);
  tcase_add_test(tc, stopped_watch_releases_the_loop);
  tcase_add_test(tc, cause_recorded_only_when_fired);
  tcase_add_test(tc, parent_deadline_cancels_children);
  tcase_add_test(tc, freed_before_firing);
  tcase_add_test(tc, random_deadlines_never_early);
  tcase_add_test(tc, deadline_from_another_thread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(deadline_suite());
}
