/* test_uv_threads.c owns the cross-thread cancellation tests of the uv
 * operations: each operation is started on the loop and its context is
 * cancelled by another thread at a random point (seeded: UVCTX_TEST_SEED
 * replays a run), many times over: 1,000 times for connect, dial, work and
 * recv (100 under sanitizers), fewer for sleep, getaddrinfo, spawn, send
 * and a group under a signal context. Every run must call back exactly once, on
 * the loop thread, with the operation's result or the context's error, and
 * leave nothing open; a receive that the cancel ends must lose no byte. */
#include <signal.h>

#include "uv_support.h"

#define MANY UVT_SCALE(1000, 100)
#define FEW UVT_SCALE(200, 30)

static uint64_t rng;

/* One run: ctx, a thread that cancels it after a random delay below
 * max_ns (started first, so that the delay counts from about the start of
 * the operation), the operation, and the loop until its callback. */
typedef struct run_s {
  uvctx_t* ctx;
  uvt_canceller_t k;
} run_t;

static void run_begin(run_t* r, uint64_t max_ns) {
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &r->ctx), 0);
  r->k.delay_ns = uvt_rand_below(&rng, max_ns);
}

static void run_cancel(run_t* r) {
  uvt_canceller_start(&r->k, r->ctx, r->k.delay_ns);
}

static void run_end(run_t* r, uvt_op_t* op, long ok_status, int* cancelled) {
  UVT_RUN_UNTIL(op->calls == 1);
  uvt_canceller_join(&r->k);
  ck_assert_int_eq(op->calls, 1);
  ck_assert_int_eq(op->off_thread, 0);
  ck_assert_int_eq(op->in_call, 0);
  if (op->status == UV_ECANCELED)
    (*cancelled)++;
  else
    ck_assert_int_eq(op->status, ok_status);
  uvctx_release(r->ctx);
}

static void report(const char* what, int n, int cancelled) {
  fprintf(stderr, "%s: %d runs, %d ended by the cancel\n", what, n, cancelled);
}

/* ---- connect and dial ---------------------------------------------------- */

typedef struct cx_s {
  uvctx_connect_t req;
  uvctx_dial_t dial;
  uv_tcp_t tcp;
  uvt_op_t op;
} cx_t;

static void cx_cb(uvctx_connect_t* req, int status) {
  cx_t* c = req->data;
  if (status != 0)
    ck_assert(uv_is_closing((uv_handle_t*)&c->tcp));
  uvt_op_record(&c->op, status);
}

static void cx_dial_cb(uvctx_dial_t* req, int status, uv_tcp_t* tcp) {
  cx_t* c = req->data;
  ck_assert_ptr_eq(tcp, status == 0 ? &c->tcp : NULL);
  ck_assert_int_eq(uvt_open_handles_in(req, sizeof(*req)), 0);
  uvt_op_record(&c->op, status);
}

/* Closes what the listener accepted, so that its slots never run out. */
static void drain(uvt_listener_t* L) {
  int i;
  for (i = 0; i < L->naccepted; i++)
    uvt_close_and_wait((uv_handle_t*)&L->accepted[i]);
  L->naccepted = 0;
}

START_TEST(connect_random_cancel) {
  uvt_listener_t L;
  struct sockaddr_storage ss;
  int i, cancelled = 0;
  rng = uvt_seed("connect_random_cancel");
  uvt_listener_start(&L, "127.0.0.1", 128);
  uvt_addr("127.0.0.1", L.port, &ss);
  for (i = 0; i < MANY; i++) {
    run_t r;
    cx_t c;
    memset(&c, 0, sizeof(c));
    c.req.data = &c;
    run_begin(&r, 25000);
    run_cancel(&r);
    ck_assert_int_eq(uv_tcp_init(uvt_loop, &c.tcp), 0);
    ck_assert_int_eq(
        uvctx_tcp_connect(&c.req, r.ctx, &c.tcp, (struct sockaddr*)&ss, cx_cb),
        0);
    run_end(&r, &c.op, 0, &cancelled);
    if (c.op.status == 0)
      uvt_close_and_wait((uv_handle_t*)&c.tcp);
    drain(&L);
  }
  report("connect", MANY, cancelled);
  uvt_run_for(5);
  uvt_listener_close(&L);
}
END_TEST

START_TEST(dial_random_cancel) {
  uvt_listener_t L;
  char port[16];
  int i, cancelled = 0;
  rng = uvt_seed("dial_random_cancel");
  uvt_listener_start(&L, "127.0.0.1", 128);
  snprintf(port, sizeof(port), "%d", L.port);
  for (i = 0; i < MANY; i++) {
    run_t r;
    cx_t c;
    memset(&c, 0, sizeof(c));
    c.dial.data = &c;
    run_begin(&r, 300000);
    run_cancel(&r);
    ck_assert_int_eq(uvctx_dial(&c.dial, r.ctx,
                                i % 2 ? "localhost" : "127.0.0.1", port, NULL,
                                &c.tcp, cx_dial_cb),
                     0);
    run_end(&r, &c.op, 0, &cancelled);
    if (c.op.status == 0)
      uvt_close_and_wait((uv_handle_t*)&c.tcp);
    drain(&L);
  }
  report("dial", MANY, cancelled);
  uvt_run_for(5);
  uvt_listener_close(&L);
}
END_TEST

/* ---- work ---------------------------------------------------------------- */

typedef struct wk_s {
  uvctx_work_t req;
  uvt_op_t op;
  uint64_t spin_ns;
} wk_t;

static int wk_work(uvctx_work_t* req) {
  wk_t* w = req->data;
  uint64_t until = uv_hrtime() + w->spin_ns;
  while (uv_hrtime() < until && uvctx_err(uvctx_work_context(req)) == 0)
    ;
  return 0;
}

static void wk_after(uvctx_work_t* req, int status) {
  wk_t* w = req->data;
  uvt_op_record(&w->op, status);
}

START_TEST(work_random_cancel) {
  int i, cancelled = 0;
  rng = uvt_seed("work_random_cancel");
  for (i = 0; i < MANY; i++) {
    run_t r;
    wk_t w;
    memset(&w, 0, sizeof(w));
    w.req.data = &w;
    w.spin_ns = uvt_rand_below(&rng, 100000);
    run_begin(&r, 150000);
    run_cancel(&r);
    ck_assert_int_eq(uvctx_queue_work(&w.req, r.ctx, wk_work, wk_after), 0);
    run_end(&r, &w.op, 0, &cancelled);
  }
  report("work", MANY, cancelled);
}
END_TEST

/* ---- recv and send ------------------------------------------------------- */

typedef struct pair_s {
  uvt_listener_t L;
  uv_tcp_t a, b;
  uvctx_stream_t sa, sb;
} pair_t;

static void pair_open(pair_t* p) {
  memset(p, 0, sizeof(*p));
  uvt_tcp_pair(&p->L, &p->a, &p->b);
  ck_assert_int_eq(uvctx_stream_init_uv(&p->sa, (uv_stream_t*)&p->a), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&p->sb, (uv_stream_t*)&p->b), 0);
}

static int closes;
static void stream_closed(uvctx_stream_t* s) {
  (void)s;
  closes++;
}

static void pair_close(pair_t* p) {
  closes = 0;
  if (!uvctx_stream_is_closing(&p->sa))
    uvctx_stream_close(&p->sa, stream_closed);
  else
    closes++;
  uvctx_stream_close(&p->sb, stream_closed);
  UVT_RUN_UNTIL(closes == 2);
  uvt_listener_close(&p->L);
}

typedef struct rv_s {
  uvctx_recv_t req;
  uvt_op_t op;
  char buf[16];
} rv_t;

static void rv_cb(uvctx_recv_t* req, ssize_t n) {
  rv_t* r = req->data;
  uvt_op_record(&r->op, (long)n);
}

static int writes_done;
static void peer_wrote(uvctx_write_t* w, int status) {
  (void)w;
  ck_assert_int_eq(status, 0);
  writes_done++;
}

START_TEST(recv_random_cancel) {
  pair_t p;
  uvctx_write_t w;
  uv_buf_t one = uv_buf_init("x", 1);
  int i, cancelled = 0, got = 0, sent;
  rng = uvt_seed("recv_random_cancel");
  pair_open(&p);
  writes_done = 0;
  for (i = 0; i < MANY; i++) {
    run_t r;
    rv_t rv;
    memset(&rv, 0, sizeof(rv));
    rv.req.data = &rv;
    run_begin(&r, 50000);
    run_cancel(&r); /* the thread is on its way before the receive */
    ck_assert_int_eq(uvctx_recv(&rv.req, r.ctx, &p.sa,
                                uv_buf_init(rv.buf, sizeof(rv.buf)), rv_cb),
                     0);
    /* Half the runs have a byte on its way while the cancel comes; in the
     * others only the cancel can end the receive. */
    sent = uvt_rand_below(&rng, 2) == 0;
    if (sent)
      ck_assert_int_eq(uvctx_stream_write(&w, &p.sb, &one, 1, peer_wrote), 0);
    run_end(&r, &rv.op, 1, &cancelled);
    if (!sent) {
      ck_assert_int_eq(rv.op.status, UV_ECANCELED);
      ck_assert_int_eq(uvctx_stream_write(&w, &p.sb, &one, 1, peer_wrote), 0);
    }
    UVT_RUN_UNTIL(writes_done == i + 1);
    if (rv.op.status == 1) {
      got++;
      continue;
    }
    /* Ended by the cancel: the byte is there for the next receive. */
    memset(&rv, 0, sizeof(rv));
    rv.req.data = &rv;
    ck_assert_int_eq(uvctx_recv(&rv.req, uvt_bg, &p.sa,
                                uv_buf_init(rv.buf, sizeof(rv.buf)), rv_cb),
                     0);
    UVT_RUN_UNTIL(rv.op.calls == 1);
    ck_assert_int_eq(rv.op.status, 1);
    got++;
  }
  ck_assert_int_eq(got, MANY); /* no byte lost */
  report("recv", MANY, cancelled);
  pair_close(&p);
}
END_TEST

typedef struct sd_s {
  uvctx_send_t req;
  uvt_op_t op;
} sd_t;

static char sink[65536];
static void sink_alloc(uvctx_stream_t* s, size_t n, uv_buf_t* b) {
  (void)s;
  (void)n;
  *b = uv_buf_init(sink, sizeof(sink));
}
static void sink_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)n;
  (void)b;
}

static void sd_cb(uvctx_send_t* req, int status) {
  sd_t* s = req->data;
  uvt_op_record(&s->op, status);
}

START_TEST(send_random_cancel) {
  int i, cancelled = 0;
  enum { SIZE = 1024 * 1024 };
  char* buf = malloc(SIZE);
  uv_buf_t b = uv_buf_init(buf, SIZE);
  rng = uvt_seed("send_random_cancel");
  memset(buf, 'y', SIZE);
  for (i = 0; i < FEW; i++) {
    pair_t p;
    run_t r;
    sd_t s;
    int done_after_call;
    pair_open(&p);
    /* The peer reads (and drops) everything: a send takes a while, and
     * the cancel comes before, during or after it. */
    ck_assert_int_eq(uvctx_stream_read_start(&p.sb, sink_alloc, sink_read), 0);
    memset(&s, 0, sizeof(s));
    s.req.data = &s;
    run_begin(&r, 300000);
    run_cancel(&r);
    ck_assert_int_eq(uvctx_send(&s.req, r.ctx, &p.sa, &b, 1, sd_cb), 0);
    done_after_call = uvctx_err(r.ctx) != 0;
    run_end(&r, &s.op, 0, &cancelled);
    /* Ended by the cancel: the stream was closed before the callback,
     * unless the context was done before the send started (then nothing
     * was written and the stream stays open). */
    if (s.op.status != 0)
      ck_assert(uvctx_stream_is_closing(&p.sa) || done_after_call);
    pair_close(&p);
  }
  report("send", FEW, cancelled);
  free(buf);
}
END_TEST

/* ---- sleep, getaddrinfo, spawn ------------------------------------------- */

typedef struct misc_s {
  uvctx_sleep_t sleep;
  uvctx_getaddrinfo_t gai;
  uvctx_process_t proc;
  uvt_op_t op;
} misc_t;

static void m_sleep_cb(uvctx_sleep_t* r, int st) {
  uvt_op_record(&((misc_t*)r->data)->op, st);
}
static void m_gai_cb(uvctx_getaddrinfo_t* r, int st, struct addrinfo* res) {
  if (res != NULL)
    uv_freeaddrinfo(res);
  uvt_op_record(&((misc_t*)r->data)->op, st);
}
static void m_proc_cb(uvctx_process_t* p, int st, int64_t es, int ts) {
  (void)es;
  (void)ts;
  ck_assert_int_eq(uvctx_process_pid(p), 0);
  uvt_op_record(&((misc_t*)p->data)->op, st);
}

START_TEST(sleep_gai_spawn_random_cancel) {
  char* argv[] = {"/bin/true", NULL};
  uv_process_options_t o;
  int i, cancelled = 0;
  rng = uvt_seed("sleep_gai_spawn_random_cancel");
  memset(&o, 0, sizeof(o));
  o.file = argv[0];
  o.args = argv;
  for (i = 0; i < FEW; i++) {
    run_t r;
    misc_t m;
    memset(&m, 0, sizeof(m));
    m.sleep.data = m.gai.data = m.proc.data = &m;
    switch (i % 3) {
      case 0:
        run_begin(&r, 2000000);
        run_cancel(&r);
        ck_assert_int_eq(uvctx_sleep(&m.sleep, r.ctx, 1, m_sleep_cb), 0);
        break;
      case 1:
        run_begin(&r, 200000);
        run_cancel(&r);
        ck_assert_int_eq(
            uvctx_getaddrinfo(&m.gai, r.ctx, "localhost", "80", NULL, m_gai_cb),
            0);
        break;
      default:
        run_begin(&r, 2000000);
        run_cancel(&r);
        ck_assert_int_eq(uvctx_spawn(&m.proc, r.ctx, &o, NULL, m_proc_cb), 0);
        break;
    }
    run_end(&r, &m.op, 0, &cancelled);
  }
  report("sleep/getaddrinfo/spawn", FEW, cancelled);
  uvt_run_for(20); /* abandoned lookups finish and are freed */
}
END_TEST

/* ---- groups and signal contexts ----------------------------------------- */

typedef struct gs_s {
  uvctx_group_t g;
  uvctx_sleep_t sleep;
  uvt_op_t op;
} gs_t;

static void gs_sleep_cb(uvctx_sleep_t* r, int st) {
  gs_t* t = r->data;
  uvctx_group_done(&t->g, st);
}

static void gs_group_cb(uvctx_group_t* g, int st) {
  uvt_op_record(&((gs_t*)g->data)->op, st);
}

START_TEST(group_and_signals_random_cancel) {
  static const int sig = SIGUSR1;
  int open = uvt_open_handles();
  int i, cancelled = 0;
  rng = uvt_seed("group_and_signals_random_cancel");
  for (i = 0; i < FEW; i++) {
    run_t r;
    gs_t t;
    uvctx_t* sctx;
    memset(&t, 0, sizeof(t));
    t.g.data = t.sleep.data = &t;
    /* The thread cancels the parent of a signal context, under which a
     * group runs one long sleep. */
    run_begin(&r, 100000);
    ck_assert_int_eq(uvctx_with_signals(r.ctx, &sig, 1, &sctx), 0);
    run_cancel(&r);
    ck_assert_int_eq(uvctx_group_init(&t.g, sctx, gs_group_cb), 0);
    uvctx_group_add(&t.g, 1);
    ck_assert_int_eq(
        uvctx_sleep(&t.sleep, uvctx_group_context(&t.g), 60000, gs_sleep_cb),
        0);
    uvctx_group_close(&t.g);
    run_end(&r, &t.op, 0, &cancelled);
    ck_assert_int_eq(t.op.status, UV_ECANCELED); /* only the cancel ends it */
    ck_assert_int_ne(uvctx_err(sctx), 0);
    uvctx_release(sctx);
    UVT_RUN_UNTIL(uvt_open_handles() == open); /* its signal handle closed */
  }
  report("group/with_signals", FEW, cancelled);
}
END_TEST

static Suite* uv_threads_suite(void) {
  const TTest* const tests[] = {connect_random_cancel,
                                dial_random_cancel,
                                work_random_cancel,
                                recv_random_cancel,
                                send_random_cancel,
                                sleep_gai_spawn_random_cancel,
                                group_and_signals_random_cancel,
                                NULL};
  Suite* s = suite_create("uv_threads");
  uvt_add_tcase(s, "random_cancel", uvt_setup, tests);
  return s;
}

int main(void) {
  return uvt_main(uv_threads_suite());
}
