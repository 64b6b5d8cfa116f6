/* test_uv_signals.c owns the Check suite of uvctx_with_signals() (real
 * signals sent with kill() to the test process) and of uvctx_group_*
 * (errgroup.WithContext) with members of every operation kind: sleep,
 * work, connect, getaddrinfo, dial and spawn, a failure in each. */
#include <signal.h>

#include "gai_gate.h"
#include "uv_support.h"

/* ---- signals ------------------------------------------------------------- */

typedef struct sigwatch_s {
  uvctx_watch_t w;
  int fired;
  int err;
  int off_thread;
} sigwatch_t;

static void sigwatch_cb(uvctx_watch_t* w, int err) {
  sigwatch_t* s = w->data;
  s->fired++;
  s->err = err;
  if (!uvt_on_main_thread())
    s->off_thread++;
}

/* A plain libuv handle on the same signal for the whole test: libuv puts
 * the default action back only when the last handle of a signal stops, so
 * a retried signal that arrives late cannot kill the test. */
static uv_signal_t guard;

static void guard_cb(uv_signal_t* h, int signum) {
  (void)h;
  (void)signum;
}

static void guard_start(int signum) {
  ck_assert_int_eq(uv_signal_init(uvt_loop, &guard), 0);
  ck_assert_int_eq(uv_signal_start(&guard, guard_cb, signum), 0);
  uv_unref((uv_handle_t*)&guard);
}

static void guard_stop(int signum) {
  uvt_close_and_wait((uv_handle_t*)&guard);
  signal(signum, SIG_IGN); /* a signal still on its way is harmless */
}

/* Sends `signum` to the process with kill() until `c` is done: one signal
 * normally; under ThreadSanitizer, which defers signals to its own safe
 * points, a bounded number of retries 200 ms apart. */
static void kill_until_done(uvctx_t* c, int signum) {
  int tries;
  for (tries = 0; tries < 25 && uvctx_err(c) == 0; tries++) {
    ck_assert_int_eq(kill(getpid(), signum), 0);
    uvt_wait_begin__(200);
    while (uvctx_err(c) == 0 && uvt_wait_step__())
      ;
    uv_timer_stop(&uvt_fx__.tick);
  }
  ck_assert_int_ne(uvctx_err(c), 0);
}

START_TEST(signals_cancel_with_eintr_and_name) {
  static const int sigs[] = {SIGUSR1, SIGUSR2};
  uvctx_t* c;
  sigwatch_t sw;
  const char* msg = NULL;
  int open = uvt_open_handles();
  guard_start(SIGUSR2);
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), 0);
  ck_assert_int_eq(uvt_open_handles(), open + 2 + 1 /* guard */);
  memset(&sw, 0, sizeof(sw));
  sw.w.data = &sw;
  ck_assert_int_eq(uvctx_watch_start(&sw.w, c, sigwatch_cb), 0);
  uvt_run_for(5);
  ck_assert_int_eq(uvctx_err(c), 0);
  kill_until_done(c, SIGUSR2);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  ck_assert_int_eq(uvctx_cause(c, &msg), UV_EINTR);
  ck_assert_str_eq(msg, "SIGUSR2");
  UVT_RUN_UNTIL(sw.fired == 1);
  ck_assert_int_eq(sw.off_thread, 0);
  /* The handles close once it is done, even while it is referenced. */
  UVT_RUN_UNTIL(uvt_open_handles() == open + 1);
  uvctx_release(c);
  guard_stop(SIGUSR2);
}
END_TEST

START_TEST(signals_closed_when_parent_done_or_freed) {
  static const int sig = SIGUSR1;
  uvctx_t *p, *c;
  int open = uvt_open_handles();
  uint64_t allocs = uvctx_live_allocations();
  /* The parent is done: the child is, and its handle closes. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  ck_assert_int_eq(uvctx_with_signals(p, &sig, 1, &c), 0);
  ck_assert_int_eq(uvt_open_handles(), open + 1);
  uvt_cancel(p);
  ck_assert_int_eq(uvctx_err(c), UV_ECANCELED);
  UVT_RUN_UNTIL(uvt_open_handles() == open);
  uvctx_release(c);
  uvctx_release(p);
  UVT_RUN_UNTIL(uvctx_live_allocations() == allocs);
  /* Freed without a cancel (the last unref): the handle closes too. */
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, &sig, 1, &c), 0);
  ck_assert_int_eq(uvt_open_handles(), open + 1);
  uvctx_unref(c);
  UVT_RUN_UNTIL(uvt_open_handles() == open);
  UVT_RUN_UNTIL(uvctx_live_allocations() == allocs);
  /* Released (Go's stop()). */
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, &sig, 1, &c), 0);
  uvctx_release(c);
  UVT_RUN_UNTIL(uvt_open_handles() == open);
  UVT_RUN_UNTIL(uvctx_live_allocations() == allocs);
}
END_TEST

START_TEST(signals_under_done_parent) {
  static const int sig = SIGUSR1;
  uvctx_t *p, *c;
  int open = uvt_open_handles();
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &p), 0);
  ck_assert_int_eq(uvctx_with_signals(p, &sig, 1, &c), 0);
  ck_assert_int_eq(uvctx_err(c), UV_ETIMEDOUT);
  ck_assert_int_eq(uvt_open_handles(), open); /* no handle made */
  uvctx_release(c);
  uvctx_release(p);
}
END_TEST

START_TEST(signals_bad_args) {
  int sigs[] = {SIGUSR1, 0};
  uvctx_t* c = NULL;
  uint64_t allocs = uvctx_live_allocations();
  int open = uvt_open_handles();
  ck_assert_int_eq(uvctx_with_signals(NULL, sigs, 1, &c), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, NULL, 1, &c), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 1, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 0, &c), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), UV_EINVAL);
  sigs[1] = NSIG;
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), UV_EINVAL);
  sigs[1] = -1;
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), UV_EINVAL);
  sigs[1] = SIGKILL;
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), UV_EINVAL);
  sigs[1] = SIGSTOP;
  ck_assert_int_eq(uvctx_with_signals(uvt_bg, sigs, 2, &c), UV_EINVAL);
  ck_assert_ptr_null(c);
  ck_assert_uint_eq(uvctx_live_allocations(), allocs);
  ck_assert_int_eq(uvt_open_handles(), open);
}
END_TEST

START_TEST(signals_enomem) {
  static const int sigs[] = {SIGUSR1, SIGUSR2};
  uint64_t allocs = uvctx_live_allocations();
  int open = uvt_open_handles();
  long n;
  int ok = 0;
  for (n = 1; n < 40 && !ok; n++) {
    uvctx_t* c = NULL;
    int rc;
    uvt_alloc_fail_nth(n);
    rc = uvctx_with_signals(uvt_bg, sigs, 2, &c);
    ok = !uvt_alloc_failed();
    uvt_alloc_disarm();
    if (rc == 0) {
      ck_assert_ptr_nonnull(c);
      uvctx_release(c);
    } else {
      ck_assert_int_eq(rc, UV_ENOMEM);
      ck_assert_ptr_null(c);
    }
    UVT_RUN_UNTIL(uvt_open_handles() == open);
    UVT_RUN_UNTIL(uvctx_live_allocations() == allocs);
  }
  ck_assert(ok);
}
END_TEST

/* ---- groups -------------------------------------------------------------- */

typedef struct group_s {
  uvctx_group_t g;
  uvt_op_t op;
  int ctx_done_in_cb;
} group_t;

static void group_cb(uvctx_group_t* g, int status) {
  group_t* t = g->data;
  t->ctx_done_in_cb = uvctx_err(uvctx_group_context(g)) != 0;
  uvt_op_record(&t->op, status);
}

static void group_start(group_t* t, uvctx_t* parent) {
  memset(t, 0, sizeof(*t));
  t->g.data = t;
  ck_assert_int_eq(UVT_CALL(uvctx_group_init(&t->g, parent, group_cb)), 0);
}

START_TEST(group_empty_and_plain_members) {
  group_t t;
  uvctx_t* p;
  group_start(&t, uvt_bg);
  UVT_CALL((uvctx_group_close(&t.g), 0));
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, 0);
  ck_assert_int_eq(t.ctx_done_in_cb, 1); /* cancelled when due */

  group_start(&t, uvt_bg);
  uvctx_group_add(&t.g, 3);
  UVT_CALL((uvctx_group_done(&t.g, 0), 0));
  UVT_CALL((uvctx_group_close(&t.g), 0));
  UVT_CALL((uvctx_group_done(&t.g, 0), 0));
  uvt_run_for(5);
  ck_assert_int_eq(t.op.calls, 0); /* one member still runs */
  ck_assert_int_eq(uvctx_err(uvctx_group_context(&t.g)), 0);
  UVT_CALL((uvctx_group_done(&t.g, 0), 0));
  UVT_CALL((uvctx_group_done(&t.g, UV_EIO), 0)); /* extra: ignored */
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, 0);

  /* The parent done, no members: 0 all the same. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  group_start(&t, p);
  uvt_cancel(p);
  uvt_run_for(5);
  ck_assert_int_eq(t.op.calls, 0); /* not closed yet */
  uvctx_group_close(&t.g);
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, 0);
  uvctx_release(p);
}
END_TEST

START_TEST(group_bad_args_and_enomem) {
  group_t t;
  uint64_t allocs = uvctx_live_allocations();
  memset(&t, 0, sizeof(t));
  ck_assert_int_eq(uvctx_group_init(NULL, uvt_bg, group_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_group_init(&t.g, NULL, group_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_group_init(&t.g, uvt_bg, NULL), UV_EINVAL);
  ck_assert_ptr_null(uvctx_group_context(NULL));
  uvt_alloc_fail_nth(1);
  ck_assert_int_eq(uvctx_group_init(&t.g, uvt_bg, group_cb), UV_ENOMEM);
  uvt_alloc_disarm();
  uvt_check_nothing(allocs, &t.op);
}
END_TEST

/* Members of every kind. Each either blocks until the group's context
 * ends it, or fails at once with its own error. */
enum { K_SLEEP, K_WORK, K_CONNECT, K_GAI, K_DIAL, K_SPAWN, K_COUNT };

typedef struct member_s {
  uvctx_group_t* g;
  int kind;
  int status;
  int calls;
  uvctx_t* own; /* the sleep's own deadline when it fails */
  union {
    uvctx_sleep_t sleep;
    uvctx_work_t work;
    uvctx_connect_t connect;
    uvctx_getaddrinfo_t gai;
    uvctx_dial_t dial;
    uvctx_process_t proc;
  } u;
  uv_tcp_t tcp;
  int fail;
} member_t;

static void member_end(member_t* m, int status) {
  m->status = status;
  m->calls++;
  if (m->own != NULL)
    uvctx_release(m->own);
  m->own = NULL;
  uvctx_group_done(m->g, status);
}

static void m_sleep_cb(uvctx_sleep_t* r, int st) {
  member_end(r->data, st);
}
static int m_work(uvctx_work_t* r) {
  member_t* m = r->data;
  if (m->fail)
    return UV_EIO;
  while (uvctx_err(uvctx_work_context(r)) == 0)
    uv_sleep(1);
  return 0;
}
static void m_work_cb(uvctx_work_t* r, int st) {
  member_end(r->data, st);
}
static void m_connect_cb(uvctx_connect_t* r, int st) {
  member_end(r->data, st);
}
static void m_gai_cb(uvctx_getaddrinfo_t* r, int st, struct addrinfo* res) {
  if (res != NULL)
    uv_freeaddrinfo(res);
  member_end(r->data, st);
}
static void m_dial_cb(uvctx_dial_t* r, int st, uv_tcp_t* tcp) {
  ck_assert_ptr_null(tcp);
  member_end(r->data, st);
}
static void m_proc_cb(uvctx_process_t* p, int st, int64_t es, int ts) {
  (void)es;
  (void)ts;
  member_end(p->data, st);
}

static int member_expected(int kind) {
  static const int errs[K_COUNT] = {UV_ETIMEDOUT,    UV_EIO,
                                    UV_ECONNREFUSED, UV_EAI_NONAME,
                                    UV_ECONNREFUSED, UV_ENOENT};
  return errs[kind];
}

static void member_start(member_t* m, uvctx_group_t* g, int kind, int fail,
                         int hang_port, int refused_port) {
  uvctx_t* ctx = uvctx_group_context(g);
  struct sockaddr_storage ss;
  char port[16];
  char* sleep_argv[] = {"/bin/sleep", "30", NULL};
  char* bad_argv[] = {"/nonexistent/uvctx-member", NULL};
  uv_process_options_t o;
  memset(m, 0, sizeof(*m));
  m->g = g;
  m->kind = kind;
  m->fail = fail;
  m->u.sleep.data = m; /* data is first in every request */
  switch (kind) {
    case K_SLEEP:
      if (fail)
        ck_assert_int_eq(uvctx_with_timeout(ctx, 5, &m->own), 0);
      ck_assert_int_eq(
          uvctx_sleep(&m->u.sleep, fail ? m->own : ctx, 60000, m_sleep_cb), 0);
      break;
    case K_WORK:
      ck_assert_int_eq(uvctx_queue_work(&m->u.work, ctx, m_work, m_work_cb), 0);
      break;
    case K_CONNECT:
      uvt_addr("127.0.0.1", fail ? refused_port : hang_port, &ss);
      ck_assert_int_eq(uv_tcp_init(uvt_loop, &m->tcp), 0);
      ck_assert_int_eq(uvctx_tcp_connect(&m->u.connect, ctx, &m->tcp,
                                         (struct sockaddr*)&ss, m_connect_cb),
                       0);
      break;
    case K_GAI:
      ck_assert_int_eq(uvctx_getaddrinfo(&m->u.gai, ctx,
                                         fail ? "none.test" : "gate.test", "80",
                                         NULL, m_gai_cb),
                       0);
      break;
    case K_DIAL:
      snprintf(port, sizeof(port), "%d", fail ? refused_port : hang_port);
      ck_assert_int_eq(uvctx_dial(&m->u.dial, ctx, "127.0.0.1", port, NULL,
                                  &m->tcp, m_dial_cb),
                       0);
      break;
    case K_SPAWN:
      memset(&o, 0, sizeof(o));
      o.file = fail ? bad_argv[0] : sleep_argv[0];
      o.args = fail ? bad_argv : sleep_argv;
      ck_assert_int_eq(uvctx_spawn(&m->u.proc, ctx, &o, NULL, m_proc_cb), 0);
      break;
  }
}

START_TEST(group_every_kind_a_failure_in_each) {
  uvt_hanging_t H;
  int refused = uvt_refused_port("127.0.0.1");
  int failing;
  uvt_hanging_start(&H, "127.0.0.1");
  for (failing = 0; failing < K_COUNT; failing++) {
    member_t m[K_COUNT];
    group_t t;
    int k;
    uvt_gai_gate_close();
    group_start(&t, uvt_bg);
    uvctx_group_add(&t.g, K_COUNT);
    /* The failing member last, so that every other one is in flight. */
    for (k = 0; k < K_COUNT; k++)
      if (k != failing)
        member_start(&m[k], &t.g, k, 0, H.port, refused);
    member_start(&m[failing], &t.g, failing, 1, H.port, refused);
    uvctx_group_close(&t.g);
    UVT_RUN_UNTIL(t.op.calls == 1);
    UVT_OP_CHECK(&t.op, member_expected(failing));
    for (k = 0; k < K_COUNT; k++) {
      ck_assert_int_eq(m[k].calls, 1);
      ck_assert_int_eq(m[k].status,
                       k == failing ? member_expected(k) : UV_ECANCELED);
    }
    uvt_gai_gate_open();
    uvt_run_for(5);
  }
  uvt_hanging_close(&H);
}
END_TEST

START_TEST(group_parent_cancelled) {
  member_t m[K_COUNT];
  uvt_hanging_t H;
  group_t t;
  uvctx_t* p;
  int k;
  uvt_hanging_start(&H, "127.0.0.1");
  uvt_gai_gate_close();
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &p), 0);
  group_start(&t, p);
  uvctx_group_add(&t.g, K_COUNT);
  for (k = 0; k < K_COUNT; k++)
    member_start(&m[k], &t.g, k, 0, H.port, 1);
  uvctx_group_close(&t.g);
  uvt_run_for(20);
  ck_assert_int_eq(t.op.calls, 0);
  uvt_cancel(p);
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, UV_ECANCELED);
  for (k = 0; k < K_COUNT; k++)
    ck_assert_int_eq(m[k].status, UV_ECANCELED);
  uvctx_release(p);
  uvt_gai_gate_open();
  uvt_run_for(5);
  uvt_hanging_close(&H);
}
END_TEST

static Suite* uv_signals_suite(void) {
  const TTest* const sig_tests[] = {signals_cancel_with_eintr_and_name,
                                    signals_closed_when_parent_done_or_freed,
                                    signals_under_done_parent, signals_bad_args,
                                    NULL};
  const TTest* const alloc_tests[] = {signals_enomem, group_bad_args_and_enomem,
                                      NULL};
  const TTest* const group_tests[] = {group_empty_and_plain_members,
                                      group_every_kind_a_failure_in_each,
                                      group_parent_cancelled, NULL};
  Suite* s = suite_create("uv_signals");
  uvt_add_tcase(s, "signals", uvt_setup, sig_tests);
  uvt_add_tcase(s, "alloc", uvt_alloc_setup, alloc_tests);
  uvt_add_tcase(s, "group", uvt_setup, group_tests);
  return s;
}

int main(void) {
  return uvt_main(uv_signals_suite());
}
