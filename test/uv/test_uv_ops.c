/* test_uv_ops.c owns the Check suite of uvctx_sleep(), uvctx_queue_work(),
 * uvctx_tcp_connect()/uvctx_pipe_connect() and uvctx_getaddrinfo(): each
 * operation's result, its context ending it (cancel, deadline, another
 * thread, already done), done winning a race, bad arguments and allocation
 * failure. It runs with UV_THREADPOOL_SIZE=1, so that a blocking job in
 * front of the pool makes "still queued" deterministic. */
#include "gai_gate.h"
#include "uv_support.h"

static uint64_t base_allocs;

/* ---- sleep --------------------------------------------------------------- */

typedef struct sleeper_s {
  uvctx_sleep_t req;
  uvt_op_t op;
  uint64_t started, ended;
} sleeper_t;

static void sleep_cb(uvctx_sleep_t* req, int status) {
  sleeper_t* s = req->data;
  s->ended = uv_hrtime();
  uvt_op_record(&s->op, status);
}

static void sleeper_start(sleeper_t* s, uvctx_t* ctx, uint64_t ms) {
  memset(s, 0, sizeof(*s));
  s->req.data = s;
  s->started = uv_hrtime();
  ck_assert_int_eq(UVT_CALL(uvctx_sleep(&s->req, ctx, ms, sleep_cb)), 0);
}

START_TEST(sleep_fires_never_early) {
  sleeper_t s;
  uint64_t ms;
  for (ms = 0; ms <= 12; ms += 3) {
    sleeper_start(&s, uvt_bg, ms);
    UVT_RUN_UNTIL(s.op.calls == 1);
    UVT_OP_CHECK(&s.op, 0);
    ck_assert_uint_ge(s.ended - s.started, ms * 1000000);
  }
}
END_TEST

START_TEST(sleep_cancelled) {
  sleeper_t s;
  uvctx_t* c;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  sleeper_start(&s, c, 60000);
  uvt_run_for(5);
  ck_assert_int_eq(s.op.calls, 0);
  uvt_cancel(c);
  UVT_RUN_UNTIL(s.op.calls == 1);
  UVT_OP_CHECK(&s.op, UV_ECANCELED);
  uvctx_release(c);
}
END_TEST

START_TEST(sleep_deadline) {
  sleeper_t s;
  uvctx_t* c;
  uint64_t t0 = uv_hrtime(); /* the deadline counts from here */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 10, &c), 0);
  sleeper_start(&s, c, 60000);
  UVT_RUN_UNTIL(s.op.calls == 1);
  UVT_OP_CHECK(&s.op, UV_ETIMEDOUT);
  ck_assert_uint_ge(s.ended - t0, 10 * 1000000);
  uvctx_release(c);
}
END_TEST

START_TEST(sleep_already_done) {
  sleeper_t s;
  uvctx_t* c;
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &c), 0);
  sleeper_start(&s, c, 0);
  ck_assert_int_eq(s.op.calls, 0);
  UVT_RUN_UNTIL(s.op.calls == 1);
  UVT_OP_CHECK(&s.op, UV_ETIMEDOUT);
  uvctx_release(c);
}
END_TEST

/* A 0 ms sleep has no watch (its timer comes first): the context done
 * before the timer fires still wins, the callback comes from the loop,
 * and the request holds its reference on the context until then. */
START_TEST(sleep_zero_done_before_it_fires) {
  sleeper_t s;
  uvctx_t* c;
  uvctx_loop_counts_t n;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  sleeper_start(&s, c, 0);
  uvt_cancel(c);
  uvctx_unref(c); /* the request's reference keeps it */
  ck_assert_int_eq(uvctx_loop_counts(uvctx_home(uvt_bg), &n), 0);
  ck_assert_uint_eq(n.contexts, 1);
  ck_assert_int_eq(s.op.calls, 0);
  UVT_RUN_UNTIL(s.op.calls == 1);
  UVT_OP_CHECK(&s.op, UV_ECANCELED);
  ck_assert_int_eq(uvctx_loop_counts(uvctx_home(uvt_bg), &n), 0);
  ck_assert_uint_eq(n.contexts, 0);
}
END_TEST

/* A 0 ms sleep on a background context, which counts no references, keeps
 * uvctx_loop_close() from closing the binding until its callback. */
START_TEST(sleep_zero_on_background_keeps_binding) {
  sleeper_t s;
  sleeper_start(&s, uvt_bg, 0);
  ck_assert_int_eq(uvctx_loop_close(uvctx_home(uvt_bg)), UV_EBUSY);
  UVT_RUN_UNTIL(s.op.calls == 1);
  UVT_OP_CHECK(&s.op, 0);
}
END_TEST

START_TEST(sleep_cancel_other_thread) {
  sleeper_t s;
  uvctx_t* c;
  uvt_canceller_t k;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  sleeper_start(&s, c, 60000);
  uvt_canceller_start(&k, c, 1000000);
  UVT_RUN_UNTIL(s.op.calls == 1);
  uvt_canceller_join(&k);
  UVT_OP_CHECK(&s.op, UV_ECANCELED);
  uvctx_release(c);
}
END_TEST

START_TEST(sleep_bad_args) {
  sleeper_t s;
  uint64_t before = uvctx_live_allocations();
  memset(&s, 0, sizeof(s));
  ck_assert_int_eq(uvctx_sleep(NULL, uvt_bg, 1, sleep_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_sleep(&s.req, NULL, 1, sleep_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_sleep(&s.req, uvt_bg, 1, NULL), UV_EINVAL);
  uvt_check_nothing(before, &s.op);
}
END_TEST

/* ---- thread-pool work ---------------------------------------------------- */

typedef struct job_s {
  uvctx_work_t req;
  uvt_op_t op;
  atomic_int ran;
  atomic_int started;
  int result;      /* what the work returns */
  int wait_cancel; /* spin until the context is done first */
} job_t;

static int job_work(uvctx_work_t* req) {
  job_t* j = req->data;
  atomic_store(&j->started, 1);
  if (j->wait_cancel) {
    uint64_t until = uv_hrtime() + 20000000000ull;
    while (uvctx_err(uvctx_work_context(req)) == 0 && uv_hrtime() < until)
      uv_sleep(1);
  }
  atomic_store(&j->ran, 1);
  return j->result;
}

static void job_after(uvctx_work_t* req, int status) {
  job_t* j = req->data;
  /* The context stays valid in after(). */
  ck_assert_ptr_nonnull(uvctx_work_context(req));
  uvt_op_record(&j->op, status);
}

static void job_start(job_t* j, uvctx_t* ctx, int result, int wait_cancel) {
  memset(j, 0, sizeof(*j));
  j->req.data = j;
  j->result = result;
  j->wait_cancel = wait_cancel;
  ck_assert_int_eq(
      UVT_CALL(uvctx_queue_work(&j->req, ctx, job_work, job_after)), 0);
}

START_TEST(work_result_is_status) {
  job_t j;
  job_start(&j, uvt_bg, 0, 0);
  UVT_RUN_UNTIL(j.op.calls == 1);
  UVT_OP_CHECK(&j.op, 0);
  ck_assert_int_eq(atomic_load(&j.ran), 1);
  job_start(&j, uvt_bg, UV_EIO, 0);
  UVT_RUN_UNTIL(j.op.calls == 1);
  UVT_OP_CHECK(&j.op, UV_EIO);
}
END_TEST

START_TEST(work_cancelled_while_queued) {
  uvt_blocker_t b;
  job_t j;
  uvctx_t* c;
  uvt_blocker_start(&b);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  job_start(&j, c, 0, 0);
  uvt_cancel(c);
  /* The callback comes while the pool's only thread is still blocked. */
  UVT_RUN_UNTIL(j.op.calls == 1);
  UVT_OP_CHECK(&j.op, UV_ECANCELED);
  uvt_blocker_release(&b);
  uvt_run_for(5);
  ck_assert_int_eq(atomic_load(&j.started), 0);
  uvctx_release(c);
}
END_TEST

START_TEST(work_running_runs_to_its_end) {
  job_t j;
  uvctx_t* c;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  job_start(&j, c, 0, 1);
  UVT_RUN_UNTIL(atomic_load(&j.started));
  uvt_cancel(c);
  UVT_RUN_UNTIL(j.op.calls == 1);
  /* It returned 0 after ctx was done: ctx's err. */
  UVT_OP_CHECK(&j.op, UV_ECANCELED);
  ck_assert_int_eq(atomic_load(&j.ran), 1);
  uvctx_release(c);

  /* A non-zero result stands. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 5, &c), 0);
  job_start(&j, c, UV_EIO, 1);
  UVT_RUN_UNTIL(j.op.calls == 1);
  UVT_OP_CHECK(&j.op, UV_EIO);
  uvctx_release(c);
}
END_TEST

START_TEST(work_already_done) {
  job_t j;
  uvctx_t* c;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  uvt_cancel(c);
  job_start(&j, c, 0, 0);
  UVT_RUN_UNTIL(j.op.calls == 1);
  UVT_OP_CHECK(&j.op, UV_ECANCELED);
  uvt_run_for(5);
  ck_assert_int_eq(atomic_load(&j.started), 0);
  uvctx_release(c);
}
END_TEST

START_TEST(work_bad_args) {
  job_t j;
  uint64_t before = uvctx_live_allocations();
  memset(&j, 0, sizeof(j));
  ck_assert_int_eq(uvctx_queue_work(NULL, uvt_bg, job_work, job_after),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_queue_work(&j.req, NULL, job_work, job_after),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_queue_work(&j.req, uvt_bg, NULL, job_after),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_queue_work(&j.req, uvt_bg, job_work, NULL), UV_EINVAL);
  ck_assert_ptr_null(uvctx_work_context(NULL));
  uvt_check_nothing(before, &j.op);
}
END_TEST

/* ---- connect ------------------------------------------------------------- */

typedef struct conn_s {
  uvctx_connect_t req;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uvt_op_t op;
  int data_back; /* the handle's data was put back before cb */
  int closed;    /* the handle was closed before cb */
} conn_t;

static int conn_marker;

static void conn_cb(uvctx_connect_t* req, int status) {
  conn_t* c = req->data;
  uv_handle_t* h =
      c->tcp.type == UV_TCP ? (uv_handle_t*)&c->tcp : (uv_handle_t*)&c->pipe;
  c->data_back = h->data == &conn_marker;
  c->closed = uv_is_closing(h);
  uvt_op_record(&c->op, status);
}

static void conn_tcp(conn_t* c, uvctx_t* ctx, const char* ip, int port) {
  struct sockaddr_storage ss;
  memset(c, 0, sizeof(*c));
  c->req.data = c;
  uvt_addr(ip, port, &ss);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &c->tcp), 0);
  c->tcp.data = &conn_marker;
  ck_assert_int_eq(UVT_CALL(uvctx_tcp_connect(&c->req, ctx, &c->tcp,
                                              (struct sockaddr*)&ss, conn_cb)),
                   0);
}

START_TEST(connect_tcp_ok) {
  uvt_listener_t L;
  conn_t c;
  struct sockaddr_storage peer;
  int len = sizeof(peer);
  uvt_listener_start(&L, "127.0.0.1", 16);
  conn_tcp(&c, uvt_bg, "127.0.0.1", L.port);
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, 0);
  ck_assert_int_eq(c.closed, 0);
  ck_assert_int_eq(c.data_back, 1);
  ck_assert_int_eq(uv_tcp_getpeername(&c.tcp, (struct sockaddr*)&peer, &len),
                   0);
  uvt_close_and_wait((uv_handle_t*)&c.tcp);
  uvt_listener_close(&L);
}
END_TEST

START_TEST(connect_tcp_refused_closes) {
  conn_t c;
  conn_tcp(&c, uvt_bg, "127.0.0.1", uvt_refused_port("127.0.0.1"));
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, UV_ECONNREFUSED);
  ck_assert_int_eq(c.closed, 1);
  ck_assert_int_eq(c.data_back, 1);
}
END_TEST

START_TEST(connect_tcp_cancel_wins) {
  /* Cancelled right after the start, the connect may well have succeeded
   * in the kernel by the time libuv reports it: done wins all the same. */
  uvt_listener_t L;
  conn_t c;
  uvctx_t* ctx;
  int i;
  uvt_listener_start(&L, "127.0.0.1", 64);
  for (i = 0; i < 20; i++) {
    ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
    conn_tcp(&c, ctx, "127.0.0.1", L.port);
    if (i % 2)
      uv_run(uvt_loop, UV_RUN_NOWAIT);
    if (c.op.calls == 0) {
      uvt_cancel(ctx);
      UVT_RUN_UNTIL(c.op.calls == 1);
      UVT_OP_CHECK(&c.op, UV_ECANCELED);
      ck_assert_int_eq(c.closed, 1);
    } else {
      UVT_OP_CHECK(&c.op, 0);
      uvt_close_and_wait((uv_handle_t*)&c.tcp);
    }
    ck_assert_int_eq(c.data_back, 1);
    uvctx_release(ctx);
  }
  uvt_listener_close(&L);
}
END_TEST

START_TEST(connect_tcp_already_done) {
  uvt_listener_t L;
  conn_t c;
  uvctx_t* ctx;
  uvt_listener_start(&L, "127.0.0.1", 16);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &ctx), 0);
  conn_tcp(&c, ctx, "127.0.0.1", L.port);
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, UV_ETIMEDOUT);
  ck_assert_int_eq(c.closed, 1);
  uvt_run_for(20);
  ck_assert_int_eq(L.naccepted, 0); /* no connection was attempted */
  uvctx_release(ctx);
  uvt_listener_close(&L);
}
END_TEST

START_TEST(connect_tcp_sync_error_keeps_handle) {
  conn_t c;
  struct sockaddr_storage ss;
  memset(&c, 0, sizeof(c));
  memset(&ss, 0, sizeof(ss));
  ss.ss_family = AF_UNIX; /* libuv refuses it before starting anything */
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &c.tcp), 0);
  c.req.data = &c;
  ck_assert_int_ne(
      uvctx_tcp_connect(&c.req, uvt_bg, &c.tcp, (struct sockaddr*)&ss, conn_cb),
      0);
  ck_assert_int_eq(uv_is_closing((uv_handle_t*)&c.tcp), 0);
  uvt_run_for(5);
  ck_assert_int_eq(c.op.calls, 0);
  uvt_close_and_wait((uv_handle_t*)&c.tcp);
}
END_TEST

START_TEST(connect_bad_args) {
  uvt_loop_thread_t t;
  conn_t c;
  struct sockaddr_storage ss;
  uint64_t before = uvctx_live_allocations();
  memset(&c, 0, sizeof(c));
  uvt_addr("127.0.0.1", 1, &ss);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &c.tcp), 0);
  ck_assert_int_eq(
      uvctx_tcp_connect(NULL, uvt_bg, &c.tcp, (struct sockaddr*)&ss, conn_cb),
      UV_EINVAL);
  ck_assert_int_eq(
      uvctx_tcp_connect(&c.req, NULL, &c.tcp, (struct sockaddr*)&ss, conn_cb),
      UV_EINVAL);
  ck_assert_int_eq(
      uvctx_tcp_connect(&c.req, uvt_bg, NULL, (struct sockaddr*)&ss, conn_cb),
      UV_EINVAL);
  ck_assert_int_eq(uvctx_tcp_connect(&c.req, uvt_bg, &c.tcp, NULL, conn_cb),
                   UV_EINVAL);
  ck_assert_int_eq(
      uvctx_tcp_connect(&c.req, uvt_bg, &c.tcp, (struct sockaddr*)&ss, NULL),
      UV_EINVAL);
  ck_assert_int_eq(uvctx_pipe_connect(&c.req, uvt_bg, &c.pipe, NULL, conn_cb),
                   UV_EINVAL);
  /* A context homed on another loop than the handle's. */
  uvt_loop_thread_start(&t);
  ck_assert_int_eq(uvctx_tcp_connect(&c.req, uvctx_background(t.l), &c.tcp,
                                     (struct sockaddr*)&ss, conn_cb),
                   UV_EINVAL);
  uvt_loop_thread_stop(&t);
  uvt_check_nothing(before, &c.op);
  ck_assert_int_eq(uv_is_closing((uv_handle_t*)&c.tcp), 0);
  uvt_close_and_wait((uv_handle_t*)&c.tcp);
}
END_TEST

static void pipe_conn_cb(uv_stream_t* server, int status) {
  (void)server;
  (void)status; /* left pending: the connect succeeded all the same */
}

START_TEST(connect_pipe) {
  conn_t c;
  uv_pipe_t server;
  char path[256];
  uvctx_t* ctx;
  snprintf(path, sizeof(path), "%s/uvctx-uv-%d.sock", uvt_tmpdir(),
           (int)getpid());
  unlink(path);
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &server, 0), 0);
  ck_assert_int_eq(uv_pipe_bind(&server, path), 0);
  ck_assert_int_eq(uv_listen((uv_stream_t*)&server, 4, pipe_conn_cb), 0);

  memset(&c, 0, sizeof(c));
  c.req.data = &c;
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &c.pipe, 0), 0);
  c.pipe.data = &conn_marker;
  ck_assert_int_eq(
      UVT_CALL(uvctx_pipe_connect(&c.req, uvt_bg, &c.pipe, path, conn_cb)), 0);
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, 0);
  uvt_close_and_wait((uv_handle_t*)&c.pipe);

  /* Cancelled at once: closed, ctx's err. */
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  memset(&c, 0, sizeof(c));
  c.req.data = &c;
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &c.pipe, 0), 0);
  c.pipe.data = &conn_marker;
  ck_assert_int_eq(
      UVT_CALL(uvctx_pipe_connect(&c.req, ctx, &c.pipe, path, conn_cb)), 0);
  uvt_cancel(ctx);
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, UV_ECANCELED);
  ck_assert_int_eq(c.closed, 1);
  ck_assert_int_eq(c.data_back, 1);
  uvctx_release(ctx);
  uvt_close_and_wait((uv_handle_t*)&server);
  unlink(path);

  /* Nobody there: the error through the callback, handle closed. */
  memset(&c, 0, sizeof(c));
  c.req.data = &c;
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &c.pipe, 0), 0);
  c.pipe.data = &conn_marker;
  ck_assert_int_eq(
      UVT_CALL(uvctx_pipe_connect(&c.req, uvt_bg, &c.pipe, path, conn_cb)), 0);
  UVT_RUN_UNTIL(c.op.calls == 1);
  UVT_OP_CHECK(&c.op, UV_ENOENT);
  ck_assert_int_eq(c.closed, 1);
}
END_TEST

/* ---- getaddrinfo --------------------------------------------------------- */

typedef struct lookup_s {
  uvctx_getaddrinfo_t req;
  uvt_op_t op;
  struct addrinfo* res;
} lookup_t;

static void lookup_cb(uvctx_getaddrinfo_t* req, int status,
                      struct addrinfo* res) {
  lookup_t* l = req->data;
  l->res = res;
  if (status != 0)
    ck_assert_ptr_null(res);
  uvt_op_record(&l->op, status);
}

static int lookup_start(lookup_t* l, uvctx_t* ctx, const char* node) {
  struct addrinfo hints;
  memset(l, 0, sizeof(*l));
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  l->req.data = l;
  return (int)UVT_CALL(
      uvctx_getaddrinfo(&l->req, ctx, node, "80", &hints, lookup_cb));
}

START_TEST(gai_resolves) {
  lookup_t l;
  ck_assert_int_eq(lookup_start(&l, uvt_bg, "localhost"), 0);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, 0);
  ck_assert_ptr_nonnull(l.res);
  uv_freeaddrinfo(l.res);
  ck_assert_int_eq(lookup_start(&l, uvt_bg, "none.test"), 0);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, UV_EAI_NONAME);
}
END_TEST

START_TEST(gai_cancelled_while_queued) {
  uvt_blocker_t b;
  lookup_t l;
  uvctx_t* c;
  int calls;
  base_allocs = uvctx_live_allocations();
  uvt_blocker_start(&b);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  calls = uvt_gai_calls();
  ck_assert_int_eq(lookup_start(&l, c, "dual.test"), 0);
  uvt_cancel(c);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, UV_ECANCELED);
  /* uv_cancel() took it out of the queue: it never runs, and its block
   * is freed without the pool. */
  UVT_RUN_UNTIL(uvctx_live_allocations() == base_allocs + 1 /* c */);
  uvt_blocker_release(&b);
  uvt_run_for(5);
  ck_assert_int_eq(uvt_gai_calls(), calls);
  uvctx_release(c);
}
END_TEST

START_TEST(gai_abandoned_while_running) {
  lookup_t l;
  uvctx_t* c;
  base_allocs = uvctx_live_allocations();
  uvt_gai_gate_close();
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(lookup_start(&l, c, "gate.test"), 0);
  UVT_RUN_UNTIL(uvt_gai_gate_waiting() == 1);
  uvt_cancel(c);
  /* The callback comes at once, though the lookup is still running. */
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, UV_ECANCELED);
  ck_assert_int_eq(uvt_gai_gate_waiting(), 1);
  uvctx_release(c);
  uvt_gai_gate_open();
  /* The late result is freed (LeakSanitizer checks the addrinfo too). */
  UVT_RUN_UNTIL(uvctx_live_allocations() == base_allocs);
}
END_TEST

START_TEST(gai_deadline_and_done) {
  lookup_t l;
  uvctx_t* c;
  int calls;
  uvt_gai_gate_close();
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 10, &c), 0);
  ck_assert_int_eq(lookup_start(&l, c, "gate.test"), 0);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, UV_ETIMEDOUT);
  uvt_gai_gate_open();
  /* Already done: no lookup at all. */
  calls = uvt_gai_calls();
  ck_assert_int_eq(lookup_start(&l, c, "dual.test"), 0);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, UV_ETIMEDOUT);
  ck_assert_int_eq(uvt_gai_calls(), calls);
  uvctx_release(c);
  uvt_run_for(20);
}
END_TEST

START_TEST(gai_bad_args) {
  lookup_t l;
  uint64_t before = uvctx_live_allocations();
  memset(&l, 0, sizeof(l));
  ck_assert_int_eq(uvctx_getaddrinfo(NULL, uvt_bg, "x", NULL, NULL, lookup_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_getaddrinfo(&l.req, NULL, "x", NULL, NULL, lookup_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_getaddrinfo(&l.req, uvt_bg, "x", NULL, NULL, NULL),
                   UV_EINVAL);
  ck_assert_int_eq(
      uvctx_getaddrinfo(&l.req, uvt_bg, NULL, NULL, NULL, lookup_cb),
      UV_EINVAL);
  uvt_check_nothing(before, &l.op);
}
END_TEST

START_TEST(gai_enomem) {
  lookup_t l;
  uint64_t before = uvctx_live_allocations();
  uvt_alloc_fail_nth(1);
  ck_assert_int_eq(lookup_start(&l, uvt_bg, "localhost"), UV_ENOMEM);
  ck_assert(uvt_alloc_failed());
  uvt_alloc_disarm();
  uvt_check_nothing(before, &l.op);
  /* The same request works once memory is back. */
  ck_assert_int_eq(lookup_start(&l, uvt_bg, "localhost"), 0);
  UVT_RUN_UNTIL(l.op.calls == 1);
  UVT_OP_CHECK(&l.op, 0);
  uv_freeaddrinfo(l.res);
}
END_TEST

static Suite* uv_ops_suite(void) {
  const TTest* const sleep_tests[] = {sleep_fires_never_early,
                                      sleep_cancelled,
                                      sleep_deadline,
                                      sleep_already_done,
                                      sleep_zero_done_before_it_fires,
                                      sleep_zero_on_background_keeps_binding,
                                      sleep_cancel_other_thread,
                                      sleep_bad_args,
                                      NULL};
  const TTest* const work_tests[] = {work_result_is_status,
                                     work_cancelled_while_queued,
                                     work_running_runs_to_its_end,
                                     work_already_done,
                                     work_bad_args,
                                     NULL};
  const TTest* const connect_tests[] = {connect_tcp_ok,
                                        connect_tcp_refused_closes,
                                        connect_tcp_cancel_wins,
                                        connect_tcp_already_done,
                                        connect_tcp_sync_error_keeps_handle,
                                        connect_bad_args,
                                        connect_pipe,
                                        NULL};
  const TTest* const getaddrinfo_tests[] = {gai_resolves,
                                            gai_cancelled_while_queued,
                                            gai_abandoned_while_running,
                                            gai_deadline_and_done,
                                            gai_bad_args,
                                            NULL};
  const TTest* const getaddrinfo_alloc_tests[] = {gai_enomem, NULL};
  Suite* s = suite_create("uv_ops");
  uvt_add_tcase(s, "sleep", uvt_setup, sleep_tests);
  uvt_add_tcase(s, "work", uvt_setup, work_tests);
  uvt_add_tcase(s, "connect", uvt_setup, connect_tests);
  uvt_add_tcase(s, "getaddrinfo", uvt_setup, getaddrinfo_tests);
  uvt_add_tcase(s, "getaddrinfo_alloc", uvt_alloc_setup,
                getaddrinfo_alloc_tests);
  return s;
}

int main(void) {
  return uvt_main(uv_ops_suite());
}
