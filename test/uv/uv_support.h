/* uv_support.h owns what the uv suites share on top of helpers.h: the
 * record every callback writes (exactly once, on the loop's thread, never
 * inside the starting or cancelling call), loopback listeners, a thread
 * that cancels a context after a delay, and a blocking thread-pool job. */
#ifndef UVCTX_TEST_UV_SUPPORT_H
#define UVCTX_TEST_UV_SUPPORT_H

#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "uvctx/uv.h"

/* ---- the callback record ------------------------------------------------- */

/* Non-zero while a test is inside a call that must not run a callback
 * (the start of an operation, a cancel). */
static int uvt_in_call;

/* UVT_CALL(expr): evaluates expr with uvt_in_call set. */
#define UVT_CALL(expr) (uvt_in_call = 1, uvt_call_end__((expr)))
static inline long uvt_call_end__(long v) {
  uvt_in_call = 0;
  return v;
}

typedef struct uvt_op_s {
  int calls;
  long status;
  int off_thread; /* a callback ran on another thread */
  int in_call;    /* a callback ran inside a start or cancel call */
} uvt_op_t;

static inline void uvt_op_record(uvt_op_t* op, long status) {
  op->calls++;
  op->status = status;
  if (!uvt_on_main_thread())
    op->off_thread++;
  if (uvt_in_call)
    op->in_call++;
}

/* Asserts: exactly one callback, with `status`, on the loop thread,
 * outside every start and cancel call. */
#define UVT_OP_CHECK(op, st)                    \
  do {                                          \
    ck_assert_int_eq((op)->calls, 1);           \
    ck_assert_int_eq((op)->status, (long)(st)); \
    ck_assert_int_eq((op)->off_thread, 0);      \
    ck_assert_int_eq((op)->in_call, 0);         \
  } while (0)

/* After calls that had to fail: nothing was allocated since
 * `allocs_before`, and no callback comes. */
static inline void uvt_check_nothing(uint64_t allocs_before,
                                     const uvt_op_t* op) {
  ck_assert_uint_eq(uvctx_live_allocations(), allocs_before);
  uvt_run_for(5);
  ck_assert_int_eq(op->calls, 0);
}

/* Cancels with UVT_CALL, so that a callback inside it is caught. */
static inline void uvt_cancel(uvctx_t* c) {
  ck_assert_int_eq(UVT_CALL(uvctx_cancel(c)), 0);
}

/* ---- loopback listeners -------------------------------------------------- */

/* A TCP listener on 127.0.0.1 or ::1, port 0. Accepted connections are
 * kept open (up to 8) until the listener is closed. */
#define UVT_MAX_ACCEPTED 8
typedef struct uvt_listener_s {
  uv_tcp_t server;
  uv_tcp_t accepted[UVT_MAX_ACCEPTED];
  int naccepted;
  int closes;
  int port;
  int no_accept; /* leave connections in the accept queue */
} uvt_listener_t;

static inline void uvt_listener_conn_cb__(uv_stream_t* s, int status) {
  uvt_listener_t* L = s->data;
  if (status != 0 || L->no_accept || L->naccepted == UVT_MAX_ACCEPTED)
    return;
  ck_assert_int_eq(uv_tcp_init(s->loop, &L->accepted[L->naccepted]), 0);
  ck_assert_int_eq(uv_accept(s, (uv_stream_t*)&L->accepted[L->naccepted]), 0);
  L->naccepted++;
}

static inline int uvt_listener_start(uvt_listener_t* L, const char* ip,
                                     int backlog) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  memset(L, 0, sizeof(*L));
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &L->server), 0);
  L->server.data = L;
  if (strchr(ip, ':') != NULL) {
    struct sockaddr_in6 a6;
    ck_assert_int_eq(uv_ip6_addr(ip, 0, &a6), 0);
    ck_assert_int_eq(uv_tcp_bind(&L->server, (struct sockaddr*)&a6, 0), 0);
  } else {
    struct sockaddr_in a4;
    ck_assert_int_eq(uv_ip4_addr(ip, 0, &a4), 0);
    ck_assert_int_eq(uv_tcp_bind(&L->server, (struct sockaddr*)&a4, 0), 0);
  }
  ck_assert_int_eq(
      uv_listen((uv_stream_t*)&L->server, backlog, uvt_listener_conn_cb__), 0);
  ck_assert_int_eq(uv_tcp_getsockname(&L->server, (struct sockaddr*)&ss, &len),
                   0);
  L->port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&ss)->sin6_port
                                     : ((struct sockaddr_in*)&ss)->sin_port);
  return L->port;
}

static inline void uvt_listener_closed__(uv_handle_t* h) {
  uvt_listener_t* L = h->data;
  L->closes--;
}

static inline void uvt_listener_close(uvt_listener_t* L) {
  int i;
  L->closes = 1 + L->naccepted;
  for (i = 0; i < L->naccepted; i++) {
    L->accepted[i].data = L;
    uv_close((uv_handle_t*)&L->accepted[i], uvt_listener_closed__);
  }
  uv_close((uv_handle_t*)&L->server, uvt_listener_closed__);
  UVT_RUN_UNTIL(L->closes == 0);
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed: the
 * kernel refuses connects to it). */
static inline int uvt_refused_port(const char* ip) {
  uvt_listener_t L;
  int port = uvt_listener_start(&L, ip, 1);
  uvt_listener_close(&L);
  return port;
}

static inline void uvt_addr(const char* ip, int port,
                            struct sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  if (strchr(ip, ':') != NULL)
    ck_assert_int_eq(uv_ip6_addr(ip, port, (struct sockaddr_in6*)ss), 0);
  else
    ck_assert_int_eq(uv_ip4_addr(ip, port, (struct sockaddr_in*)ss), 0);
}

/* A listener whose accept queue is full: a plain socket (not a libuv
 * server, which would accept behind our back) listening with backlog 0,
 * its one queue slot taken by a connection nobody accepts. A further
 * connect to it hangs, as to a blackholed host, but on loopback. */
typedef struct uvt_hanging_s {
  int fd;
  int port;
  uv_tcp_t filler;
  uv_connect_t creq;
  int connected;
} uvt_hanging_t;

static inline void uvt_hanging_connected__(uv_connect_t* c, int status) {
  uvt_hanging_t* h = c->data;
  ck_assert_int_eq(status, 0);
  h->connected = 1;
}

static inline int uvt_hanging_start(uvt_hanging_t* h, const char* ip) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  uvt_addr(ip, 0, &ss);
  h->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(h->fd, 0);
  ck_assert_int_eq(bind(h->fd, (struct sockaddr*)&ss,
                        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in)),
                   0);
  ck_assert_int_eq(listen(h->fd, 0), 0);
  ck_assert_int_eq(getsockname(h->fd, (struct sockaddr*)&ss, &len), 0);
  h->port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&ss)->sin6_port
                                     : ((struct sockaddr_in*)&ss)->sin_port);
  h->connected = 0;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &h->filler), 0);
  h->creq.data = h;
  ck_assert_int_eq(uv_tcp_connect(&h->creq, &h->filler, (struct sockaddr*)&ss,
                                  uvt_hanging_connected__),
                   0);
  UVT_RUN_UNTIL(h->connected);
  return h->port;
}

static inline void uvt_hanging_close(uvt_hanging_t* h) {
  uvt_close_and_wait((uv_handle_t*)&h->filler);
  close(h->fd);
}

/* ---- handles left open --------------------------------------------------- */

static inline void uvt_count_open__(uv_handle_t* h, void* arg) {
  if (!uv_is_closing(h))
    (*(int*)arg)++;
}

/* Handles on the fixture's loop that are not closing: an operation that
 * says it closed what it opened leaves this number as it found it. */
static inline int uvt_open_handles(void) {
  int n = 0;
  uv_walk(uvt_loop, uvt_count_open__, &n);
  return n;
}

typedef struct uvt_range_s {
  const char* lo;
  const char* hi;
  int n;
} uvt_range_t;

static inline void uvt_count_in__(uv_handle_t* h, void* arg) {
  uvt_range_t* r = arg;
  if (!uv_is_closing(h) && (const char*)h >= r->lo && (const char*)h < r->hi)
    r->n++;
}

/* Handles not closing whose memory lies in [p, p + size): those a request
 * still has open inside itself. */
static inline int uvt_open_handles_in(const void* p, size_t size) {
  uvt_range_t r = {(const char*)p, (const char*)p + size, 0};
  uv_walk(uvt_loop, uvt_count_in__, &r);
  return r.n;
}

/* ---- a connected TCP pair ---------------------------------------------- */

static inline void uvt_pair_connected__(uv_connect_t* c, int status) {
  ck_assert_int_eq(status, 0);
  *(int*)c->data = 1;
}

/* Connects `a` to a listener on 127.0.0.1 (started in *L, to be closed
 * with uvt_listener_close()) and opens `b` on a duplicate of the accepted
 * socket: two initialized, connected handles of the fixture's loop. */
static inline void uvt_tcp_pair(uvt_listener_t* L, uv_tcp_t* a, uv_tcp_t* b) {
  struct sockaddr_storage ss;
  uv_connect_t creq;
  uv_os_fd_t fd;
  int connected = 0;
  uvt_listener_start(L, "127.0.0.1", 4);
  uvt_addr("127.0.0.1", L->port, &ss);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, a), 0);
  creq.data = &connected;
  ck_assert_int_eq(
      uv_tcp_connect(&creq, a, (struct sockaddr*)&ss, uvt_pair_connected__), 0);
  UVT_RUN_UNTIL(connected && L->naccepted == 1);
  ck_assert_int_eq(uv_fileno((uv_handle_t*)&L->accepted[0], &fd), 0);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, b), 0);
  ck_assert_int_eq(uv_tcp_open(b, dup(fd)), 0);
}

/* ---- cancelling from another thread -------------------------------------- */

typedef struct uvt_canceller_s {
  uv_thread_t thread;
  uvctx_t* ctx;
  uint64_t delay_ns; /* spin this long, then cancel */
  atomic_int done;
} uvt_canceller_t;

static inline void uvt_canceller_main__(void* arg) {
  uvt_canceller_t* c = arg;
  uint64_t until = uv_hrtime() + c->delay_ns;
  while (uv_hrtime() < until)
    ;
  uvctx_cancel(c->ctx);
  atomic_store(&c->done, 1);
}

/* Cancels `ctx` from a new thread after `delay_ns` (busy wait, so that the
 * delay is not rounded up to the scheduler's tick). */
static inline void uvt_canceller_start(uvt_canceller_t* c, uvctx_t* ctx,
                                       uint64_t delay_ns) {
  c->ctx = ctx;
  c->delay_ns = delay_ns;
  atomic_store(&c->done, 0);
  ck_assert_int_eq(uv_thread_create(&c->thread, uvt_canceller_main__, c), 0);
}

static inline void uvt_canceller_join(uvt_canceller_t* c) {
  ck_assert_int_eq(uv_thread_join(&c->thread), 0);
}

/* ---- a thread-pool job that blocks until released ------------------------ */

typedef struct uvt_blocker_s {
  uv_work_t req;
  uv_sem_t go;
  atomic_int running;
  int after;
} uvt_blocker_t;

static inline void uvt_blocker_work__(uv_work_t* w) {
  uvt_blocker_t* b = w->data;
  atomic_store(&b->running, 1);
  uv_sem_wait(&b->go);
}

static inline void uvt_blocker_after__(uv_work_t* w, int status) {
  uvt_blocker_t* b = w->data;
  (void)status;
  b->after = 1;
}

/* Occupies a pool thread (all of them with UV_THREADPOOL_SIZE=1) until
 * uvt_blocker_release(). */
static inline void uvt_blocker_start(uvt_blocker_t* b) {
  memset(b, 0, sizeof(*b));
  ck_assert_int_eq(uv_sem_init(&b->go, 0), 0);
  b->req.data = b;
  ck_assert_int_eq(
      uv_queue_work(uvt_loop, &b->req, uvt_blocker_work__, uvt_blocker_after__),
      0);
  UVT_RUN_UNTIL(atomic_load(&b->running));
}

static inline void uvt_blocker_release(uvt_blocker_t* b) {
  uv_sem_post(&b->go);
  UVT_RUN_UNTIL(b->after);
  uv_sem_destroy(&b->go);
}

/* ---- suites ------------------------------------------------------------- */

/* Adds a test case of `tests` (NULL-terminated, the names START_TEST
 * defines) with the fixture setup/uvt_teardown. */
static inline void uvt_add_tcase(Suite* s, const char* name,
                                 void (*setup)(void),
                                 const TTest* const* tests) {
  TCase* tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, uvt_teardown);
  for (; *tests != NULL; tests++)
    tcase_add_test(tc, *tests);
  suite_add_tcase(s, tc);
}

/* The setup of the allocation-failure cases: the counting allocator
 * first, then the fixture. */
static inline void uvt_alloc_setup(void) {
  uvt_alloc_install();
  uvt_setup();
}

#endif /* UVCTX_TEST_UV_SUPPORT_H */
