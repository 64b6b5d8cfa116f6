/* test_uv_stream.c owns the Check suite of uvctx_recv() and uvctx_send()
 * over a real loopback TCP connection and over a TLS session on one (each
 * test runs both ways): bytes and EOF, a receive that its context ends
 * with nothing lost, a send that a peer which never reads holds until its
 * context closes the stream, already-done contexts, busy streams and bad
 * arguments. */
#include "tlsutil.h"
#include "uv_support.h"

enum { PLAIN_TCP = 0, OVER_TLS = 1 };

typedef struct end_s {
  uv_tcp_t tcp;
  uvctx_stream_t tr;
  uvctx_tls_t tls;
  uvctx_stream_t* s;
  int closed;
  int hs_calls;
  int hs_status;
} end_t;

static uvt_listener_t L;
static end_t* A; /* the client end: what the operations run on */
static end_t* B; /* the server end: the peer */
static uvctx_tls_config_t* srv_cfg;
static uvctx_tls_config_t* cli_cfg;

static void end_hs_cb(uvctx_tls_t* tls, int status) {
  end_t* e = tls->stream.data;
  e->hs_calls++;
  e->hs_status = status;
}

static void end_wrap(end_t* e, int tls, int server) {
  ck_assert_int_eq(uvctx_stream_init_uv(&e->tr, (uv_stream_t*)&e->tcp), 0);
  e->s = &e->tr;
  if (tls) {
    ck_assert_int_eq(uvctx_tls_init(&e->tls, server ? srv_cfg : cli_cfg, &e->tr,
                                    server ? NULL : "localhost"),
                     0);
    e->s = &e->tls.stream;
  }
  e->s->data = e;
}

static void pair_open(int tls) {
  A = calloc(1, sizeof(*A));
  B = calloc(1, sizeof(*B));
  uvt_tcp_pair(&L, &A->tcp, &B->tcp);
  end_wrap(A, tls, 0);
  end_wrap(B, tls, 1);
  if (tls) {
    ck_assert_int_eq(uvctx_tls_handshake(&A->tls, NULL, end_hs_cb), 0);
    ck_assert_int_eq(uvctx_tls_handshake(&B->tls, NULL, end_hs_cb), 0);
    UVT_RUN_UNTIL(A->hs_calls == 1 && B->hs_calls == 1);
    ck_assert_int_eq(A->hs_status, 0);
    ck_assert_int_eq(B->hs_status, 0);
  }
}

static void end_closed_cb(uvctx_stream_t* s) {
  end_t* e = s->data;
  e->closed = 1;
}

static void end_close(end_t* e) {
  if (e == NULL)
    return;
  if (!uvctx_stream_is_closing(e->s))
    uvctx_stream_close(e->s, end_closed_cb);
  UVT_RUN_UNTIL(e->closed);
  free(e);
}

static void stream_setup(void) {
  uvctx_t* warm;
  uvt_setup();
  /* The deadline heap's array, made now so that allocation counts below
   * see only the tests' own blocks. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 3600 * 1000, &warm), 0);
  uvctx_release(warm);
  srv_cfg = tu_server_cfg(0);
  cli_cfg = tu_client_cfg(0);
  A = B = NULL;
}

static void stream_teardown(void) {
  end_close(A);
  end_close(B);
  A = B = NULL;
  uvt_listener_close(&L);
  uvctx_tls_config_unref(srv_cfg);
  uvctx_tls_config_unref(cli_cfg);
  uvt_teardown();
}

/* ---- helpers: one receive, one send -------------------------------------- */

typedef struct rx_s {
  uvctx_recv_t req;
  uvt_op_t op;
  char buf[256];
} rx_t;

static void rx_cb(uvctx_recv_t* req, ssize_t n) {
  rx_t* r = req->data;
  if (n > 0 && n < (ssize_t)sizeof(r->buf))
    r->buf[n] = '\0';
  uvt_op_record(&r->op, (long)n);
}

static int rx_start(rx_t* r, uvctx_t* ctx, end_t* e) {
  memset(r, 0, sizeof(*r));
  r->req.data = r;
  return (int)UVT_CALL(uvctx_recv(
      &r->req, ctx, e->s, uv_buf_init(r->buf, sizeof(r->buf) - 1), rx_cb));
}

/* Receives on `e` until `want` bytes came (several receives may be
 * needed) and checks them. */
static void rx_expect(end_t* e, const char* want) {
  char got[256];
  size_t len = 0, n = strlen(want);
  while (len < n) {
    rx_t r;
    ck_assert_int_eq(rx_start(&r, uvt_bg, e), 0);
    UVT_RUN_UNTIL(r.op.calls == 1);
    ck_assert_int_gt(r.op.status, 0);
    ck_assert_int_eq(r.op.in_call, 0);
    memcpy(got + len, r.buf, (size_t)r.op.status);
    len += (size_t)r.op.status;
  }
  ck_assert_uint_eq(len, n);
  ck_assert_int_eq(memcmp(got, want, n), 0);
}

typedef struct tx_s {
  uvctx_send_t req;
  uvt_op_t op;
  int stream_closed_in_cb;
  void* stream_data_in_cb;
  void* end_in_cb;
  int free_end; /* free A in the callback (it was closed) */
} tx_t;

static void tx_cb(uvctx_send_t* req, int status) {
  tx_t* t = req->data;
  t->stream_closed_in_cb = A->closed || uvctx_stream_is_closing(A->s);
  t->stream_data_in_cb = A->s->data;
  t->end_in_cb = A;
  if (t->free_end && status != 0) {
    /* The stream and its handle were closed before this callback: their
     * memory may go now (ASan proves nothing touches it later). */
    free(A);
    A = NULL;
  }
  uvt_op_record(&t->op, status);
}

static int tx_start(tx_t* t, uvctx_t* ctx, const char* bytes, size_t n) {
  uv_buf_t b = uv_buf_init((char*)bytes, (unsigned)n);
  memset(t, 0, sizeof(*t));
  t->req.data = t;
  return (int)UVT_CALL(uvctx_send(&t->req, ctx, A->s, &b, 1, tx_cb));
}

/* ---- receive ------------------------------------------------------------- */

static int sd_calls;

static void sd_cb(uvctx_shutdown_t* req, int status) {
  (void)req;
  ck_assert_int_eq(status, 0);
  sd_calls++;
}

START_TEST(recv_bytes_then_eof) {
  uvctx_shutdown_t sd;
  tx_t t;
  rx_t r;
  pair_open(_i);
  A->s->data = A;
  /* A sends to B through uvctx_send; B receives with uvctx_recv. */
  ck_assert_int_eq(tx_start(&t, uvt_bg, "hello", 5), 0);
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, 0);
  rx_expect(B, "hello");
  /* A shuts its write half (TLS: close_notify first): B's next receive
   * ends with UV_EOF. */
  ck_assert_int_eq(uvctx_stream_shutdown(&sd, A->s, sd_cb), 0);
  ck_assert_int_eq(rx_start(&r, uvt_bg, B), 0);
  UVT_RUN_UNTIL(r.op.calls == 1 && sd_calls == 1);
  ck_assert_int_eq(r.op.status, UV_EOF);
  ck_assert_int_eq(r.op.in_call, 0);
}
END_TEST

static void peer_write(end_t* e, const char* text) {
  tx_t t;
  end_t* saved = A;
  A = e; /* tx_start writes on A */
  ck_assert_int_eq(tx_start(&t, uvt_bg, text, strlen(text)), 0);
  UVT_RUN_UNTIL(t.op.calls == 1);
  A = saved;
  UVT_OP_CHECK(&t.op, 0);
}

START_TEST(recv_ended_by_context_loses_nothing) {
  rx_t r;
  uvctx_t* c;
  pair_open(_i);
  /* Nothing arrives: the deadline ends the receive, the stream stays
   * open, and what arrives later is there for the next receive. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 20, &c), 0);
  ck_assert_int_eq(rx_start(&r, c, A), 0);
  UVT_RUN_UNTIL(r.op.calls == 1);
  UVT_OP_CHECK(&r.op, UV_ETIMEDOUT);
  ck_assert_int_eq(uvctx_stream_is_closing(A->s), 0);
  peer_write(B, "abc");
  rx_expect(A, "abc");
  /* Bytes already in the transport when a done context receives: nothing
   * is read, and the next receive gets them all. */
  peer_write(B, "xyz");
  uvt_run_for(30);
  ck_assert_int_eq(rx_start(&r, c, A), 0);
  UVT_RUN_UNTIL(r.op.calls == 1);
  UVT_OP_CHECK(&r.op, UV_ETIMEDOUT);
  rx_expect(A, "xyz");
  uvctx_release(c);
}
END_TEST

START_TEST(recv_cancel_while_waiting) {
  rx_t r;
  uvctx_t* c;
  pair_open(_i);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(rx_start(&r, c, A), 0);
  uvt_run_for(5);
  ck_assert_int_eq(r.op.calls, 0);
  uvt_cancel(c);
  UVT_RUN_UNTIL(r.op.calls == 1);
  UVT_OP_CHECK(&r.op, UV_ECANCELED);
  uvctx_release(c);
  peer_write(B, "after");
  rx_expect(A, "after");
}
END_TEST

START_TEST(recv_busy_and_bad_args) {
  rx_t r, r2;
  char buf[4];
  uvt_loop_thread_t t;
  uvctx_t* c;
  uint64_t allocs;
  pair_open(_i);
  allocs = uvctx_live_allocations();
  memset(&r2, 0, sizeof(r2));
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(rx_start(&r, c, A), 0);
  ck_assert_int_eq(
      uvctx_recv(&r2.req, uvt_bg, A->s, uv_buf_init(buf, 4), rx_cb), UV_EBUSY);
  uvt_cancel(c);
  UVT_RUN_UNTIL(r.op.calls == 1);
  uvctx_release(c);
  ck_assert_int_eq(uvctx_recv(NULL, uvt_bg, A->s, uv_buf_init(buf, 4), rx_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_recv(&r2.req, NULL, A->s, uv_buf_init(buf, 4), rx_cb),
                   UV_EINVAL);
  ck_assert_int_eq(
      uvctx_recv(&r2.req, uvt_bg, NULL, uv_buf_init(buf, 4), rx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_recv(&r2.req, uvt_bg, A->s, uv_buf_init(buf, 4), NULL),
                   UV_EINVAL);
  ck_assert_int_eq(
      uvctx_recv(&r2.req, uvt_bg, A->s, uv_buf_init(buf, 0), rx_cb), UV_EINVAL);
  ck_assert_int_eq(
      uvctx_recv(&r2.req, uvt_bg, A->s, uv_buf_init(NULL, 4), rx_cb),
      UV_EINVAL);
  uvt_loop_thread_start(&t);
  ck_assert_int_eq(uvctx_recv(&r2.req, uvctx_background(t.l), A->s,
                              uv_buf_init(buf, 4), rx_cb),
                   UV_EINVAL);
  uvt_loop_thread_stop(&t);
  uvt_check_nothing(allocs, &r2.op);
}
END_TEST

/* ---- send ---------------------------------------------------------------- */

START_TEST(send_to_peer_that_never_reads) {
  enum { BIG = 32 * 1024 * 1024 };
  char* big = calloc(1, BIG);
  tx_t t;
  uvctx_t* c;
  pair_open(_i);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 100, &c), 0);
  ck_assert_int_eq(tx_start(&t, c, big, BIG), 0);
  t.free_end = 1;
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, UV_ETIMEDOUT);
  /* Closed before the callback, and the stream's data put back. */
  ck_assert_int_eq(t.stream_closed_in_cb, 1);
  ck_assert_ptr_eq(t.stream_data_in_cb, t.end_in_cb);
  ck_assert_ptr_null(A); /* freed in the callback */
  uvctx_release(c);
  free(big);
}
END_TEST

START_TEST(send_already_done_writes_nothing) {
  tx_t t;
  rx_t r;
  uvctx_t* c;
  pair_open(_i);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  uvt_cancel(c);
  ck_assert_int_eq(tx_start(&t, c, "nope", 4), 0);
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, UV_ECANCELED);
  ck_assert_int_eq(uvctx_stream_is_closing(A->s), 0);
  uvctx_release(c);
  /* Nothing reached the peer. */
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 50, &c), 0);
  ck_assert_int_eq(rx_start(&r, c, B), 0);
  UVT_RUN_UNTIL(r.op.calls == 1);
  UVT_OP_CHECK(&r.op, UV_ETIMEDOUT);
  uvctx_release(c);
  /* The stream still works. */
  ck_assert_int_eq(tx_start(&t, uvt_bg, "yes", 3), 0);
  UVT_RUN_UNTIL(t.op.calls == 1);
  UVT_OP_CHECK(&t.op, 0);
  rx_expect(B, "yes");
}
END_TEST

START_TEST(send_bad_args) {
  tx_t t;
  uv_buf_t b = uv_buf_init("x", 1);
  uint64_t allocs;
  pair_open(_i);
  allocs = uvctx_live_allocations();
  memset(&t, 0, sizeof(t));
  ck_assert_int_eq(uvctx_send(NULL, uvt_bg, A->s, &b, 1, tx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_send(&t.req, NULL, A->s, &b, 1, tx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_send(&t.req, uvt_bg, NULL, &b, 1, tx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_send(&t.req, uvt_bg, A->s, NULL, 1, tx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_send(&t.req, uvt_bg, A->s, &b, 0, tx_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_send(&t.req, uvt_bg, A->s, &b, 1, NULL), UV_EINVAL);
  uvt_check_nothing(allocs, &t.op);
}
END_TEST

/* ---- uvctx_stream_init_uv refuses an unconnected handle ------------------ */

START_TEST(init_uv_refuses_unconnected) {
  uv_tcp_t tcp;
  uvctx_stream_t s;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &tcp), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, (uv_stream_t*)&tcp), UV_ENOTCONN);
  uvt_close_and_wait((uv_handle_t*)&tcp);
}
END_TEST

static Suite* uv_stream_suite(void) {
  const TTest* const tests[] = {recv_bytes_then_eof,
                                recv_ended_by_context_loses_nothing,
                                recv_cancel_while_waiting,
                                recv_busy_and_bad_args,
                                send_to_peer_that_never_reads,
                                send_already_done_writes_nothing,
                                send_bad_args,
                                NULL};
  const TTest* const* t;
  Suite* s = suite_create("uv_stream");
  TCase* tc = tcase_create("recv_send");
  tcase_add_checked_fixture(tc, stream_setup, stream_teardown);
  for (t = tests; *t != NULL; t++)
    tcase_add_loop_test(tc, *t, PLAIN_TCP, OVER_TLS + 1);
  suite_add_tcase(s, tc);
  tc = tcase_create("init_uv");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, init_uv_refuses_unconnected);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(uv_stream_suite());
}
