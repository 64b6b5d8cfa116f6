/* test_uv_dial.c owns the Check suite of uvctx_dial(): names and numeric
 * addresses, IPv4 and IPv6, refused ports, the fallback to the other
 * family (at once when the first family fails, after the delay when it
 * hangs), a hanging connect, deadlines in the resolve, in the connect and
 * after a failed attempt, each address's share of a deadline, an already-done
 * context, bad arguments and allocation failure. Every attempt is checked
 * closed before the callback and the caller's storage untouched on failure.
 * Loopback only. */
#include "gai_gate.h"
#include "uv_support.h"

typedef struct dialer_s {
  uvctx_dial_t req;
  uv_tcp_t tcp;
  uvt_op_t op;
  uv_tcp_t* got;
  int open_at_cb; /* handles open inside the request in the callback */
  int peer_family;
  int peer_port;
  uint64_t started, ended;
} dialer_t;

static void dial_cb(uvctx_dial_t* req, int status, uv_tcp_t* tcp) {
  dialer_t* d = req->data;
  d->got = tcp;
  d->ended = uv_hrtime();
  d->open_at_cb = uvt_open_handles_in(req, sizeof(*req));
  if (status == 0) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    ck_assert_ptr_eq(tcp, &d->tcp);
    ck_assert_int_eq(uv_tcp_getpeername(tcp, (struct sockaddr*)&ss, &len), 0);
    d->peer_family = ss.ss_family;
    d->peer_port =
        ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&ss)->sin6_port
                                       : ((struct sockaddr_in*)&ss)->sin_port);
  } else {
    ck_assert_ptr_null(tcp);
  }
  uvt_op_record(&d->op, status);
}

static int dial_start(dialer_t* d, uvctx_t* ctx, const char* host, int port,
                      const uvctx_dial_options_t* opts) {
  char p[16];
  memset(d, 0, sizeof(*d));
  memset(&d->tcp, 0xab, sizeof(d->tcp)); /* must stay so on failure */
  d->req.data = d;
  snprintf(p, sizeof(p), "%d", port);
  d->started = uv_hrtime();
  return (int)UVT_CALL(
      uvctx_dial(&d->req, ctx, host, p, opts, &d->tcp, dial_cb));
}

static void dial_wait(dialer_t* d, int status) {
  UVT_RUN_UNTIL(d->op.calls == 1);
  UVT_OP_CHECK(&d->op, status);
  /* Every attempt is closed before the callback. */
  ck_assert_int_eq(d->open_at_cb, 0);
}

static void dial_check_untouched(const dialer_t* d) {
  const unsigned char* p = (const unsigned char*)&d->tcp;
  size_t i;
  for (i = 0; i < sizeof(d->tcp); i++)
    ck_assert_uint_eq(p[i], 0xab);
}

static void dial_close(dialer_t* d) {
  uvt_close_and_wait((uv_handle_t*)&d->tcp);
}

START_TEST(dial_numeric_and_names) {
  static const struct {
    const char* listen;
    const char* host;
    int family;
  } cases[] = {{"127.0.0.1", "127.0.0.1", AF_INET},
               {"::1", "::1", AF_INET6},
               {"127.0.0.1", "localhost", AF_INET}};
  size_t i;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uvt_listener_t L;
    dialer_t d;
    uvt_listener_start(&L, cases[i].listen, 16);
    ck_assert_int_eq(dial_start(&d, uvt_bg, cases[i].host, L.port, NULL), 0);
    dial_wait(&d, 0);
    ck_assert_int_eq(d.peer_family, cases[i].family);
    ck_assert_int_eq(d.peer_port, L.port);
    /* The connection works: the listener accepts it. */
    UVT_RUN_UNTIL(L.naccepted == 1);
    dial_close(&d);
    uvt_listener_close(&L);
  }
}
END_TEST

START_TEST(dial_refused) {
  dialer_t d;
  int port = uvt_refused_port("127.0.0.1");
  ck_assert_int_eq(dial_start(&d, uvt_bg, "127.0.0.1", port, NULL), 0);
  dial_wait(&d, UV_ECONNREFUSED);
  dial_check_untouched(&d);
}
END_TEST

START_TEST(dial_falls_back_at_once_when_first_family_fails) {
  /* dual.test: ::1 first (nothing there), then 127.0.0.1 (listening). */
  uvt_listener_t L;
  dialer_t d;
  uvctx_dial_options_t o = {0, 10000};
  uvt_listener_start(&L, "127.0.0.1", 16);
  ck_assert_int_eq(dial_start(&d, uvt_bg, "dual.test", L.port, &o), 0);
  dial_wait(&d, 0);
  ck_assert_int_eq(d.peer_family, AF_INET);
  /* Far sooner than the 10 s delay: the refused primary started it. */
  ck_assert_uint_lt(d.ended - d.started, 5000000000ull);
  dial_close(&d);
  uvt_listener_close(&L);
}
END_TEST

START_TEST(dial_races_other_family_after_delay) {
  /* ::1 hangs (full accept queue), 127.0.0.1 listens on the same port
   * number: the fallback wins after the delay, the hanging attempt is
   * closed. */
  uvt_hanging_t H;
  uvt_listener_t L;
  dialer_t d;
  uvctx_dial_options_t o = {0, 30};
  struct sockaddr_in a4;
  uvt_hanging_start(&H, "::1");
  memset(&L, 0, sizeof(L));
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &L.server), 0);
  L.server.data = &L;
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", H.port, &a4), 0);
  if (uv_tcp_bind(&L.server, (struct sockaddr*)&a4, 0) != 0 ||
      uv_listen((uv_stream_t*)&L.server, 16, uvt_listener_conn_cb__) != 0) {
    /* The v4 port is taken by someone else: try again with another. */
    uvt_close_and_wait((uv_handle_t*)&L.server);
    uvt_hanging_close(&H);
    ck_abort_msg("127.0.0.1:%d is in use; rerun", H.port);
  }
  L.port = H.port;
  ck_assert_int_eq(dial_start(&d, uvt_bg, "dual.test", H.port, &o), 0);
  dial_wait(&d, 0);
  ck_assert_int_eq(d.peer_family, AF_INET);
  ck_assert_uint_ge(d.ended - d.started, 30 * 1000000ull);
  dial_close(&d);
  uvt_listener_close(&L);
  uvt_hanging_close(&H);
}
END_TEST

START_TEST(dial_one_at_a_time) {
  /* UINT64_MAX: no race; dual4.test gives 127.0.0.1 (refused), then ::1
   * (listening): the second address wins after the first fails. */
  uvt_listener_t L;
  dialer_t d;
  uvctx_dial_options_t o = {0, UINT64_MAX};
  int port = uvt_listener_start(&L, "::1", 16);
  ck_assert_int_eq(dial_start(&d, uvt_bg, "dual4.test", port, &o), 0);
  dial_wait(&d, 0);
  ck_assert_int_eq(d.peer_family, AF_INET6);
  dial_close(&d);
  uvt_listener_close(&L);
  /* AF_INET only: just the refused address. */
  o.family = AF_INET;
  port = uvt_refused_port("127.0.0.1");
  ck_assert_int_eq(dial_start(&d, uvt_bg, "dual.test", port, &o), 0);
  dial_wait(&d, UV_ECONNREFUSED);
  dial_check_untouched(&d);
}
END_TEST

START_TEST(dial_deadline_in_resolve) {
  dialer_t d;
  uvctx_t* c;
  uint64_t base;
  uvt_gai_gate_close();
  /* Long enough for a pool thread to take the lookup (it then blocks in
   * the resolver) before the deadline, even under a sanitizer. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, UVT_SCALE(200, 1000), &c), 0);
  base = uvctx_live_allocations() - 1; /* c, freed below */
  ck_assert_int_eq(dial_start(&d, c, "gate.test", 1, NULL), 0);
  UVT_RUN_UNTIL(uvt_gai_gate_waiting() == 1 || d.op.calls == 1);
  ck_assert_int_eq(d.op.calls, 0);
  dial_wait(&d, UV_ETIMEDOUT);
  ck_assert_int_eq(uvt_gai_gate_waiting(), 1); /* the lookup still runs */
  dial_check_untouched(&d);
  uvctx_release(c);
  uvt_gai_gate_open();
  UVT_RUN_UNTIL(uvctx_live_allocations() == base);
}
END_TEST

START_TEST(dial_deadline_in_connect) {
  uvt_hanging_t H;
  dialer_t d;
  uvctx_t* c;
  uint64_t t0;
  uvt_hanging_start(&H, "127.0.0.1");
  t0 = uv_hrtime(); /* the deadline counts from here */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 50, &c), 0);
  ck_assert_int_eq(dial_start(&d, c, "127.0.0.1", H.port, NULL), 0);
  dial_wait(&d, UV_ETIMEDOUT);
  ck_assert_uint_ge(d.ended - t0, 50 * 1000000ull);
  dial_check_untouched(&d);
  uvctx_release(c);
  uvt_hanging_close(&H);
}
END_TEST

START_TEST(dial_deadline_after_failed_attempt) {
  /* dual4.test one at a time: 127.0.0.1 refused, then ::1 hangs until the
   * deadline: ctx's err, not the first address's. */
  uvt_hanging_t H;
  dialer_t d;
  uvctx_t* c;
  uvctx_dial_options_t o = {0, UINT64_MAX};
  int port = uvt_hanging_start(&H, "::1");
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 50, &c), 0);
  ck_assert_int_eq(dial_start(&d, c, "dual4.test", port, &o), 0);
  dial_wait(&d, UV_ETIMEDOUT);
  dial_check_untouched(&d);
  uvctx_release(c);
  uvt_hanging_close(&H);
}
END_TEST

/* Go's partial deadline: one at a time, dual.test gives ::1 first, which
 * hangs, then 127.0.0.1 on the same port, which listens. Under a 3 s
 * deadline the first attempt gets max(3 s / 2, 2 s) = 2 s, not all 3: the
 * second address is still tried, and wins. */
START_TEST(dial_hanging_first_address_leaves_time_for_the_next) {
  uvt_hanging_t H;
  dialer_t d;
  uvctx_t* c;
  uvctx_dial_options_t o = {0, UINT64_MAX};
  struct sockaddr_storage ss;
  int fd = -1;
  int tries;
  for (tries = 0; tries < 20 && fd < 0; tries++) {
    uvt_hanging_start(&H, "::1");
    uvt_addr("127.0.0.1", H.port, &ss);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (bind(fd, (struct sockaddr*)&ss, sizeof(struct sockaddr_in)) != 0 ||
        listen(fd, 16) != 0) {
      close(fd); /* that port is taken on 127.0.0.1: another one */
      fd = -1;
      uvt_hanging_close(&H);
    }
  }
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3000, &c), 0);
  ck_assert_int_eq(dial_start(&d, c, "dual.test", H.port, &o), 0);
  dial_wait(&d, 0);
  ck_assert_int_eq(d.peer_family, AF_INET);
  ck_assert_int_eq(d.peer_port, H.port);
  /* The first attempt had its whole share. */
  ck_assert_uint_ge(d.ended - d.started,
                    (uint64_t)UVCTX_DIAL_MIN_ATTEMPT_MS * 1000000);
  dial_close(&d);
  uvctx_release(c);
  close(fd);
  uvt_hanging_close(&H);
}
END_TEST

START_TEST(dial_cancel_wins) {
  uvt_listener_t L;
  dialer_t d;
  uvctx_t* c;
  int i;
  uvt_listener_start(&L, "127.0.0.1", 64);
  for (i = 0; i < 8; i++) {
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
    ck_assert_int_eq(dial_start(&d, c, "127.0.0.1", L.port, NULL), 0);
    uvt_cancel(c);
    dial_wait(&d, UV_ECANCELED);
    dial_check_untouched(&d);
    uvctx_release(c);
  }
  uvt_run_for(10);
  uvt_listener_close(&L);
}
END_TEST

START_TEST(dial_already_done) {
  dialer_t d;
  uvctx_t* c;
  int calls = uvt_gai_calls();
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  uvt_cancel(c);
  ck_assert_int_eq(dial_start(&d, c, "dual.test", 1, NULL), 0);
  dial_wait(&d, UV_ECANCELED);
  ck_assert_int_eq(uvt_gai_calls(), calls); /* not even resolved */
  dial_check_untouched(&d);
  uvctx_release(c);
}
END_TEST

START_TEST(dial_no_address) {
  dialer_t d;
  ck_assert_int_eq(dial_start(&d, uvt_bg, "none.test", 1, NULL), 0);
  dial_wait(&d, UV_EAI_NONAME);
  dial_check_untouched(&d);
}
END_TEST

START_TEST(dial_bad_args) {
  dialer_t d;
  uvctx_dial_options_t o = {12345, 0};
  uint64_t before = uvctx_live_allocations();
  memset(&d, 0, sizeof(d));
  ck_assert_int_eq(uvctx_dial(NULL, uvt_bg, "h", "1", NULL, &d.tcp, dial_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, NULL, "h", "1", NULL, &d.tcp, dial_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, uvt_bg, NULL, "1", NULL, &d.tcp, dial_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, uvt_bg, "h", NULL, NULL, &d.tcp, dial_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, uvt_bg, "h", "1", NULL, NULL, dial_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, uvt_bg, "h", "1", NULL, &d.tcp, NULL),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_dial(&d.req, uvt_bg, "h", "1", &o, &d.tcp, dial_cb),
                   UV_EINVAL);
  uvt_check_nothing(before, &d.op);
}
END_TEST

START_TEST(dial_enomem) {
  /* Fail each allocation of a dial in turn: the call fails with
   * UV_ENOMEM (then no callback) or the callback reports it; nothing
   * leaks either way, and the dial that needs no failure succeeds. */
  uvt_listener_t L;
  long n;
  int ok = 0;
  uint64_t base = uvctx_live_allocations();
  uvt_listener_start(&L, "127.0.0.1", 64);
  for (n = 1; n < 20 && !ok; n++) {
    dialer_t d;
    int rc;
    uvt_alloc_fail_nth(n);
    rc = dial_start(&d, uvt_bg, "127.0.0.1", L.port, NULL);
    if (rc == 0) {
      UVT_RUN_UNTIL(d.op.calls == 1);
      ck_assert(d.op.status == 0 || d.op.status == UV_ENOMEM);
      ck_assert_int_eq(d.op.in_call, 0);
      if (d.op.status == 0) {
        ok = !uvt_alloc_failed();
        dial_close(&d);
      }
    } else {
      ck_assert_int_eq(rc, UV_ENOMEM);
      uvt_run_for(2);
      ck_assert_int_eq(d.op.calls, 0);
    }
    uvt_alloc_disarm();
    ck_assert_uint_eq(uvctx_live_allocations(), base);
  }
  ck_assert(ok);
  uvt_listener_close(&L);
}
END_TEST

static Suite* uv_dial_suite(void) {
  const TTest* const dial_tests[] = {
      dial_numeric_and_names,
      dial_refused,
      dial_falls_back_at_once_when_first_family_fails,
      dial_races_other_family_after_delay,
      dial_one_at_a_time,
      dial_deadline_in_resolve,
      dial_deadline_in_connect,
      dial_deadline_after_failed_attempt,
      dial_hanging_first_address_leaves_time_for_the_next,
      dial_cancel_wins,
      dial_already_done,
      dial_no_address,
      dial_bad_args,
      NULL};
  const TTest* const dial_alloc_tests[] = {dial_enomem, NULL};
  Suite* s = suite_create("uv_dial");
  uvt_add_tcase(s, "dial", uvt_setup, dial_tests);
  uvt_add_tcase(s, "dial_alloc", uvt_alloc_setup, dial_alloc_tests);
  return s;
}

int main(void) {
  return uvt_main(uv_dial_suite());
}
