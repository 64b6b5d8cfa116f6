/* uv_support.h declares what the uv suites share on top of helpers.h
 * (compiled in uv_support.c): the record every callback writes (exactly
 * once, on the loop's thread, never inside the starting or cancelling
 * call), loopback listeners (one whose accept queue is full), a connected
 * TCP pair, a thread that cancels a context after a delay, a blocking
 * thread-pool job, and the suites' test-case plumbing. */
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
extern int uvt_in_call;

/* UVT_CALL(expr): evaluates expr with uvt_in_call set. */
#define UVT_CALL(expr) (uvt_in_call = 1, uvt_call_end__((expr)))
long uvt_call_end__(long v);

typedef struct uvt_op_s {
  int calls;
  long status;
  int off_thread; /* a callback ran on another thread */
  int in_call;    /* a callback ran inside a start or cancel call */
} uvt_op_t;

void uvt_op_record(uvt_op_t* op, long status);

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
void uvt_check_nothing(uint64_t allocs_before, const uvt_op_t* op);

/* Cancels with UVT_CALL, so that a callback inside it is caught. */
void uvt_cancel(uvctx_t* c);

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

void uvt_listener_conn_cb__(uv_stream_t* s, int status);

int uvt_listener_start(uvt_listener_t* L, const char* ip, int backlog);

void uvt_listener_closed__(uv_handle_t* h);

void uvt_listener_close(uvt_listener_t* L);

/* A port on 127.0.0.1 where nothing listens (bound, then closed: the
 * kernel refuses connects to it). */
int uvt_refused_port(const char* ip);

void uvt_addr(const char* ip, int port, struct sockaddr_storage* ss);

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

void uvt_hanging_connected__(uv_connect_t* c, int status);

int uvt_hanging_start(uvt_hanging_t* h, const char* ip);

void uvt_hanging_close(uvt_hanging_t* h);

/* ---- handles left open --------------------------------------------------- */

void uvt_count_open__(uv_handle_t* h, void* arg);

/* Handles on the fixture's loop that are not closing: an operation that
 * says it closed what it opened leaves this number as it found it. */
int uvt_open_handles(void);

typedef struct uvt_range_s {
  const char* lo;
  const char* hi;
  int n;
} uvt_range_t;

void uvt_count_in__(uv_handle_t* h, void* arg);

/* Handles not closing whose memory lies in [p, p + size): those a request
 * still has open inside itself. */
int uvt_open_handles_in(const void* p, size_t size);

/* ---- a connected TCP pair ---------------------------------------------- */

void uvt_pair_connected__(uv_connect_t* c, int status);

/* Connects `a` to a listener on 127.0.0.1 (started in *L, to be closed
 * with uvt_listener_close()) and opens `b` on a duplicate of the accepted
 * socket: two initialized, connected handles of the fixture's loop. */
void uvt_tcp_pair(uvt_listener_t* L, uv_tcp_t* a, uv_tcp_t* b);

/* ---- cancelling from another thread -------------------------------------- */

typedef struct uvt_canceller_s {
  uv_thread_t thread;
  uvctx_t* ctx;
  uint64_t delay_ns; /* spin this long, then cancel */
  atomic_int done;
} uvt_canceller_t;

void uvt_canceller_main__(void* arg);

/* Cancels `ctx` from a new thread after `delay_ns` (busy wait, so that the
 * delay is not rounded up to the scheduler's tick). */
void uvt_canceller_start(uvt_canceller_t* c, uvctx_t* ctx, uint64_t delay_ns);

void uvt_canceller_join(uvt_canceller_t* c);

/* ---- a thread-pool job that blocks until released ------------------------ */

typedef struct uvt_blocker_s {
  uv_work_t req;
  uv_sem_t go;
  atomic_int running;
  int after;
} uvt_blocker_t;

void uvt_blocker_work__(uv_work_t* w);

void uvt_blocker_after__(uv_work_t* w, int status);

/* Occupies a pool thread (all of them with UV_THREADPOOL_SIZE=1) until
 * uvt_blocker_release(). */
void uvt_blocker_start(uvt_blocker_t* b);

void uvt_blocker_release(uvt_blocker_t* b);

/* ---- suites ------------------------------------------------------------- */

/* Adds a test case of `tests` (NULL-terminated, the names START_TEST
 * defines) with the fixture setup/uvt_teardown. */
void uvt_add_tcase(Suite* s, const char* name, void (*setup)(void),
                   const TTest* const* tests);

/* The setup of the allocation-failure cases: the counting allocator
 * first, then the fixture. */
void uvt_alloc_setup(void);

#endif /* UVCTX_TEST_UV_SUPPORT_H */
