/* uvctx-demo: three things uvctx does, in a few printed lines, using only
 * the public API (it links the shared library):
 *
 *   1. a request timeout: a slow backend call (a 500 ms uv_timer) under a
 *      100 ms uvctx_with_timeout(); the watch fires with UV_ETIMEDOUT and
 *      stops the work;
 *   2. a cross-thread cancel: a worker thread runs its own loop with a
 *      branch of the server root made by uvctx_with_cancel_on(); the main
 *      thread cancels the root and the branch's watch runs on the worker;
 *   3. the leak report: uvctx_loop_close() refuses with UV_EBUSY while a
 *      forgotten context lives, and uvctx_loop_dump() says where it was
 *      made.
 *
 * It exits 1 as soon as anything does not behave as documented (its CTest
 * smoke run relies on that). It prints timings but never judges them: they
 * mean little under a sanitizer. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvctx.h>

#define CHECK(expr)                                                      \
  do {                                                                   \
    if (!(expr)) {                                                       \
      fprintf(stderr, "uvctx-demo: %s:%d: check failed: %s\n", __FILE__, \
              __LINE__, #expr);                                          \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

static double ms_since(uint64_t t0) {
  return (double)(uv_hrtime() - t0) / 1e6;
}

/* Closes a binding and its loop the way every uvctx program ends: the
 * binding first (it refuses while contexts live), one more run for its
 * close callbacks, then the loop. */
static void close_loop(uv_loop_t* loop, uvctx_loop_t* l) {
  CHECK(uvctx_loop_close(l) == 0);
  CHECK(uv_run(loop, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(loop) == 0);
}

/* ---- 1. a request timeout ------------------------------------------------ */

typedef struct request_s {
  uvctx_t* ctx;
  uvctx_watch_t watch;
  uv_timer_t work; /* the slow backend call */
  uint64_t start;
  double done_ms;
  int err;       /* what the watch reported */
  int completed; /* the work finished: it must not */
} request_t;

static void work_cb(uv_timer_t* t) {
  request_t* r = t->data;
  r->completed = 1;
  uv_close((uv_handle_t*)t, NULL);
}

/* The request's context is done: nobody waits for the answer any more, so
 * stop the work and release what it holds. */
static void request_done_cb(uvctx_watch_t* w, int err) {
  request_t* r = w->data;
  r->err = err;
  r->done_ms = ms_since(r->start);
  uv_close((uv_handle_t*)&r->work, NULL); /* also stops the timer */
}

static void demo_timeout(void) {
  uv_loop_t loop;
  uvctx_loop_t* l;
  request_t r;
  const char* msg;

  memset(&r, 0, sizeof(r));
  printf("1. request timeout: a 500 ms backend call under a 100 ms "
         "deadline\n");
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvctx_loop_init(&loop, &l) == 0);

  r.start = uv_hrtime();
  CHECK(uvctx_with_timeout_cause(uvctx_background(l), 100, UV_ETIMEDOUT,
                                 "request budget of 100 ms spent",
                                 &r.ctx) == 0);
  CHECK(uv_timer_init(&loop, &r.work) == 0);
  r.work.data = &r;
  CHECK(uv_timer_start(&r.work, work_cb, 500, 0) == 0);
  /* `data` is ours: uvctx_watch_start() leaves it alone. */
  r.watch.data = &r;
  CHECK(uvctx_watch_start(&r.watch, r.ctx, request_done_cb) == 0);

  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(r.err == UV_ETIMEDOUT);
  CHECK(!r.completed);
  CHECK(uvctx_err(r.ctx) == UV_ETIMEDOUT);
  CHECK(uvctx_cause(r.ctx, &msg) == UV_ETIMEDOUT && msg != NULL);
  printf("   watch fired after %.1f ms with %s (\"%s\")\n", r.done_ms,
         uv_err_name(r.err), msg);
  printf("   the work was stopped and the loop returned after %.1f ms\n",
         ms_since(r.start));

  uvctx_release(r.ctx);
  close_loop(&loop, l);
}

/* ---- 2. a cross-thread cancel -------------------------------------------- */

typedef struct worker_s {
  uvctx_t* root; /* the server root, homed on the main loop */
  uv_thread_t main_thread;
  uv_thread_t self;
  uv_sem_t ready;
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* branch;
  uvctx_watch_t watch;
  uv_timer_t watchdog; /* keeps the worker's loop alive, bounds the wait */
  _Atomic uint64_t cancelled_at;
  uint64_t latency_ns;
  int err;
  int on_worker; /* the callback ran on the worker's thread */
  int on_main;   /* ... or on the main thread: it must not */
  char cause[64];
} worker_t;

static void watchdog_cb(uv_timer_t* t) {
  (void)t;
  fprintf(stderr, "uvctx-demo: the worker saw no cancel in 10 s\n");
  exit(1);
}

static void branch_done_cb(uvctx_watch_t* wa, int err) {
  worker_t* w = wa->data;
  uv_thread_t me = uv_thread_self();
  const char* msg;

  w->latency_ns = uv_hrtime() - atomic_load(&w->cancelled_at);
  w->err = err;
  w->on_worker = uv_thread_equal(&me, &w->self);
  w->on_main = uv_thread_equal(&me, &w->main_thread);
  uvctx_cause(w->branch, &msg);
  snprintf(w->cause, sizeof(w->cause), "%s", msg ? msg : "(none)");
  uv_close((uv_handle_t*)&w->watchdog, NULL);
}

static void worker_main(void* arg) {
  worker_t* w = arg;

  w->self = uv_thread_self();
  CHECK(uv_loop_init(&w->loop) == 0);
  CHECK(uvctx_loop_init(&w->loop, &w->l) == 0);
  /* A child of a context homed on the main loop, homed here: its watch
   * callbacks run on this thread. */
  CHECK(uvctx_with_cancel_on(w->root, w->l, &w->branch) == 0);
  CHECK(uvctx_home(w->branch) == w->l);
  w->watch.data = w;
  CHECK(uvctx_watch_start(&w->watch, w->branch, branch_done_cb) == 0);
  CHECK(uv_timer_init(&w->loop, &w->watchdog) == 0);
  w->watchdog.data = w;
  CHECK(uv_timer_start(&w->watchdog, watchdog_cb, 10000, 0) == 0);
  uv_sem_post(&w->ready);

  CHECK(uv_run(&w->loop, UV_RUN_DEFAULT) == 0);
  uvctx_release(w->branch);
  close_loop(&w->loop, w->l);
}

static void demo_cross_thread(void) {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uv_thread_t thread;
  worker_t w;

  memset(&w, 0, sizeof(w));
  printf("2. cross-thread cancel: a worker thread runs its own loop with a "
         "branch\n   of the server root (uvctx_with_cancel_on)\n");
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvctx_loop_init(&loop, &l) == 0);
  CHECK(uvctx_with_cancel(uvctx_background(l), &w.root) == 0);
  w.main_thread = uv_thread_self();
  CHECK(uv_sem_init(&w.ready, 0) == 0);
  CHECK(uv_thread_create(&thread, worker_main, &w) == 0);
  uv_sem_wait(&w.ready);

  printf("   main thread: uvctx_cancel_cause(root, \"server shutting "
         "down\")\n");
  atomic_store(&w.cancelled_at, uv_hrtime());
  CHECK(uvctx_cancel_cause(w.root, UV_ECANCELED, "server shutting down") == 0);
  /* The state is synchronous: the whole tree is done now. */
  CHECK(uvctx_err(w.root) == UV_ECANCELED);
  CHECK(uv_thread_join(&thread) == 0);
  uv_sem_destroy(&w.ready);

  CHECK(w.err == UV_ECANCELED);
  CHECK(w.on_worker && !w.on_main);
  CHECK(strcmp(w.cause, "server shutting down") == 0);
  printf("   worker thread: watch fired with %s (\"%s\") %.0f us after the "
         "cancel\n",
         uv_err_name(w.err), w.cause, (double)w.latency_ns / 1e3);

  uvctx_release(w.root);
  close_loop(&loop, l);
}

/* ---- 3. the leak report -------------------------------------------------- */

/* A handler with the classic bug: it derives a context for a request and
 * forgets to release it. It returns the context only so that the demo can
 * clean up after showing the report. It is not static and not inlined so
 * that the dump can name it: the program links with -rdynamic and the dump
 * symbolizes the creator's address with dladdr(). */
uvctx_t* handle_request(uvctx_t* conn) __attribute__((noinline));
uvctx_t* handle_request(uvctx_t* conn) {
  uvctx_t* req;
  CHECK(uvctx_with_timeout(conn, 30000, &req) == 0);
  return req; /* no uvctx_release(req) */
}

/* Prints the dump indented under the demo's lines. */
static void print_dump(const uvctx_loop_t* l) {
  char* buf = NULL;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  char* line;
  char* save;

  CHECK(f != NULL);
  uvctx_loop_dump(l, f);
  CHECK(fclose(f) == 0);
  CHECK(len > 0);
  for (line = strtok_r(buf, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save))
    printf("     | %s\n", line);
  free(buf);
}

static void demo_leak_report(void) {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* conn;
  uvctx_t* forgotten;
  int rc;

  printf("3. leak report: a handler forgets to release its request "
         "context\n");
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvctx_loop_init(&loop, &l) == 0);
  CHECK(uvctx_with_cancel(uvctx_background(l), &conn) == 0);
  forgotten = handle_request(conn);
  /* The connection is released, but the request still holds it. */
  uvctx_release(conn);

  rc = uvctx_loop_close(l);
  CHECK(rc == UV_EBUSY);
  printf("   the connection was released (both are cancelled), but the "
         "forgotten\n   request still holds it: uvctx_loop_close() = %s; "
         "uvctx_loop_dump():\n",
         uv_err_name(rc));
  print_dump(l);

  uvctx_release(forgotten);
  close_loop(&loop, l);
  printf("   after releasing it: uvctx_loop_close() = 0, loop closed\n");
}

int main(void) {
  /* Line-buffered even into a pipe, so that the output reads in order. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  demo_timeout();
  demo_cross_thread();
  demo_leak_report();
  CHECK(uvctx_live_allocations() == 0);
  printf("done: every context released, every loop closed, "
         "0 live allocations\n");
  return 0;
}
