/* helpers.h owns the fixture every Check suite shares: a loop and its uvctx
 * binding created inside the checked fixture (Check forks each test, so the
 * loop lives in the child), a watchdog that fails a test instead of letting
 * it hang, bounded waits, a close-everything teardown that proves nothing
 * leaked, seeds for randomized tests, a loop run by a second thread and a
 * counting allocator that fails the Nth allocation.
 *
 * Header only: every function is static inline, so a suite pays only for
 * what it uses and -Wunused-function stays quiet.
 *
 *   tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
 *   ...
 *   UVT_RUN_UNTIL(done == 1);         run uvt_loop until true or fail
 */
#ifndef UVCTX_TEST_HELPERS_H
#define UVCTX_TEST_HELPERS_H

#include <check.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "uvctx.h"

/* ---- build mode ---------------------------------------------------------- */

/* Sanitized builds run several times slower: scale counts down with
 * UVT_SCALE() and assert timing windows only when UVCTX_TEST_SANITIZED is
 * 0. */
#if defined(__SANITIZE_ADDRESS__)
#define UVCTX_TEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define UVCTX_TEST_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(UVCTX_TEST_ASAN)
#define UVCTX_TEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(UVCTX_TEST_TSAN)
#define UVCTX_TEST_TSAN 1
#endif
#endif
#ifndef UVCTX_TEST_ASAN
#define UVCTX_TEST_ASAN 0
#endif
#ifndef UVCTX_TEST_TSAN
#define UVCTX_TEST_TSAN 0
#endif
#define UVCTX_TEST_SANITIZED (UVCTX_TEST_ASAN || UVCTX_TEST_TSAN)

/* `plain` in plain builds, `sanitized` under ASan or TSan. */
#define UVT_SCALE(plain, sanitized) \
  (UVCTX_TEST_SANITIZED ? (sanitized) : (plain))

/* ---- the fixture --------------------------------------------------------- */

/* Default budget of one test: the watchdog fails it after this long. */
#ifndef UVT_WATCHDOG_MS
#define UVT_WATCHDOG_MS 60000
#endif
/* Default budget of one UVT_RUN_UNTIL(). */
#ifndef UVT_WAIT_MS
#define UVT_WAIT_MS 20000
#endif

typedef struct uvt_fixture_s {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uv_thread_t main_thread; /* the thread that ran the setup */
  /* Unreferenced: it never keeps uv_run() alive by itself, so tests can
   * still check that uv_run() returns at once. */
  uv_timer_t watchdog;
  /* Referenced, repeating, only during a bounded wait: it wakes uv_run()
   * so that conditions set by other threads are seen, and measures the
   * wait. */
  uv_timer_t tick;
  uint64_t wait_until; /* uv_hrtime() deadline of the current wait */
  int wait_expired;
  int ready;
} uvt_fixture_t;

static uvt_fixture_t uvt_fx__;

#define uvt_loop (&uvt_fx__.loop)
#define uvt_l (uvt_fx__.l)
#define uvt_bg (uvctx_background(uvt_fx__.l))

static inline void uvt_watchdog_cb__(uv_timer_t* t) {
  (void)t;
  ck_abort_msg("watchdog: the test ran longer than its budget");
}

/* Restarts the test's watchdog with a budget of `ms` from now. */
static inline void uvt_watchdog_set(uint64_t ms) {
  uv_update_time(&uvt_fx__.loop);
  ck_assert_int_eq(uv_timer_start(&uvt_fx__.watchdog, uvt_watchdog_cb__, ms, 0),
                   0);
}

/* Creates the loop and binding. Use as the setup of a checked fixture. */
static inline void uvt_setup(void) {
  memset(&uvt_fx__, 0, sizeof(uvt_fx__));
  uvt_fx__.main_thread = uv_thread_self();
  ck_assert_int_eq(uv_loop_init(&uvt_fx__.loop), 0);
  /* UVCTX_TEST_LOOP_FLAGS runs a suite again with uvctx_loop_init_ex()
   * flags, e.g. 1 for UVCTX_LOOP_HIRES_DEADLINES. */
  ck_assert_int_eq(uvctx_loop_init_ex(&uvt_fx__.loop,
                                      getenv("UVCTX_TEST_LOOP_FLAGS") != NULL
                                          ? (unsigned)atoi(getenv(
                                                "UVCTX_TEST_LOOP_FLAGS"))
                                          : 0,
                                      &uvt_fx__.l),
                   0);
  ck_assert_ptr_nonnull(uvt_fx__.l);
  ck_assert_int_eq(uv_timer_init(&uvt_fx__.loop, &uvt_fx__.watchdog), 0);
  ck_assert_int_eq(uv_timer_init(&uvt_fx__.loop, &uvt_fx__.tick), 0);
  uv_unref((uv_handle_t*)&uvt_fx__.watchdog);
  uvt_watchdog_set(UVT_WATCHDOG_MS);
  uvt_fx__.ready = 1;
}

/* Prints the binding's live objects to stderr (a test's diagnostic). */
static inline void uvt_dump(uvctx_loop_t* l, const char* why) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(l, &n);
  fprintf(stderr,
          "%s: contexts=%" PRIu64 " watches=%" PRIu64 " deadlines=%" PRIu64
          " live_allocations=%" PRIu64 "\n",
          why, n.contexts, n.watches, n.deadlines, uvctx_live_allocations());
  uvctx_loop_dump(l, stderr);
}

static inline void uvt_close_walk_cb__(uv_handle_t* h, void* arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes every handle left on `loop` (the binding must be closed first)
 * and the loop itself, asserting that nothing stays behind. */
static inline void uvt_loop_finish(uv_loop_t* loop) {
  uv_walk(loop, uvt_close_walk_cb__, NULL);
  ck_assert_int_eq(uv_run(loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(loop), 0);
}

/* The teardown of a checked fixture: closes the binding (asserting 0, so
 * every context and watch of the test must be gone), then every handle,
 * runs the loop once more, and asserts uv_loop_close() == 0 and
 * uvctx_live_allocations() == 0. */
static inline void uvt_teardown(void) {
  int rc;
  if (!uvt_fx__.ready)
    return;
  uv_timer_stop(&uvt_fx__.tick);
  rc = uvctx_loop_close(uvt_fx__.l);
  if (rc != 0)
    uvt_dump(uvt_fx__.l, "teardown: uvctx_loop_close failed");
  ck_assert_int_eq(rc, 0);
  uvt_fx__.l = NULL;
  uvt_loop_finish(&uvt_fx__.loop);
  ck_assert_uint_eq(uvctx_live_allocations(), 0);
  uvt_fx__.ready = 0;
}

/* The directory for a test's scratch files: $TMPDIR, else the system's. */
static inline const char* uvt_tmpdir(void) {
  const char* d = getenv("TMPDIR");
  return d != NULL && d[0] != '\0' ? d : P_tmpdir;
}

/* ---- bounded waits ------------------------------------------------------- */

static inline void uvt_tick_cb__(uv_timer_t* t) {
  (void)t;
  if (uv_hrtime() >= uvt_fx__.wait_until)
    uvt_fx__.wait_expired = 1;
}

static inline void uvt_wait_begin__(uint64_t ms) {
  uvt_fx__.wait_until = uv_hrtime() + ms * 1000000u;
  uvt_fx__.wait_expired = 0;
  ck_assert_int_eq(uv_timer_start(&uvt_fx__.tick, uvt_tick_cb__, 1, 1), 0);
}

static inline int uvt_wait_step__(void) {
  uv_run(&uvt_fx__.loop, UV_RUN_ONCE);
  return !uvt_fx__.wait_expired;
}

static inline void uvt_wait_end__(int ok, const char* what, const char* file,
                                  int line, uint64_t ms) {
  uv_timer_stop(&uvt_fx__.tick);
  if (!ok)
    ck_abort_msg("%s:%d: waited %" PRIu64 " ms for: %s", file, line, ms, what);
}

/* Runs the fixture's loop (UV_RUN_ONCE at a time, woken at least every
 * millisecond) until `cond` is true, or fails the test after `ms`. `cond`
 * may be set by another thread (use an atomic then). */
#define UVT_RUN_UNTIL_MS(cond, ms)                                 \
  do {                                                             \
    uint64_t uvt_ms__ = (ms);                                      \
    uvt_wait_begin__(uvt_ms__);                                    \
    while (!(cond))                                                \
      if (!uvt_wait_step__())                                      \
        break;                                                     \
    uvt_wait_end__(!!(cond), #cond, __FILE__, __LINE__, uvt_ms__); \
  } while (0)
#define UVT_RUN_UNTIL(cond) UVT_RUN_UNTIL_MS(cond, UVT_WAIT_MS)

/* Runs the loop for about `ms` milliseconds (to let callbacks that must
 * not happen have their chance). */
static inline void uvt_run_for(uint64_t ms) {
  uvt_wait_begin__(ms);
  while (uvt_wait_step__())
    ;
  uv_timer_stop(&uvt_fx__.tick);
}

static inline void uvt_closed_cb__(uv_handle_t* h) {
  *(int*)h->data = 1;
}

/* Closes a handle of the fixture's loop and waits for its close callback,
 * so that its memory (often on the test's stack) may go. Overwrites
 * h->data. */
static inline void uvt_close_and_wait(uv_handle_t* h) {
  int closed = 0;
  h->data = &closed;
  uv_close(h, uvt_closed_cb__);
  UVT_RUN_UNTIL(closed);
}

/* Is the calling thread the one that ran the fixture's setup (and runs
 * its loop)? */
static inline int uvt_on_main_thread(void) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &uvt_fx__.main_thread);
}

/* ---- seeds --------------------------------------------------------------- */

/* The seed of a randomized test: UVCTX_TEST_SEED if set, else from the
 * clock. Printed so that a failure can be replayed. */
static inline uint64_t uvt_seed(const char* test) {
  const char* s = getenv("UVCTX_TEST_SEED");
  uint64_t seed;
  if (s != NULL && *s != '\0')
    seed = strtoull(s, NULL, 0);
  else
    seed = uv_hrtime() ^ ((uint64_t)getpid() << 32);
  fprintf(stderr,
          "%s: seed %" PRIu64 " (replay: UVCTX_TEST_SEED=%" PRIu64 ")\n", test,
          seed, seed);
  return seed;
}

/* splitmix64: small, good enough, one state per thread. */
static inline uint64_t uvt_rand(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t uvt_rand_below(uint64_t* state, uint64_t n) {
  return n ? uvt_rand(state) % n : 0;
}

/* ---- a loop run by another thread ---------------------------------------- */

/* A second loop with its own binding, set up on the calling thread and run
 * by a thread of its own until uvt_loop_thread_stop(). */
typedef struct uvt_loop_thread_s {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uv_thread_t thread;
  uv_thread_t self; /* written by the thread itself before `started` */
  uv_sem_t started;
  uv_async_t stop; /* referenced: keeps the loop running until stopped */
  int close_rc;    /* uvctx_loop_close() as seen on the thread */
  void (*on_stop)(struct uvt_loop_thread_s* t); /* loop thread, optional */
  void* data;
} uvt_loop_thread_t;

static inline void uvt_loop_thread_stop_cb__(uv_async_t* a) {
  uvt_loop_thread_t* t = a->data;
  if (t->on_stop != NULL)
    t->on_stop(t);
  t->close_rc = uvctx_loop_close(t->l);
  if (t->close_rc != 0)
    uvt_dump(t->l, "loop thread: uvctx_loop_close failed");
  uv_close((uv_handle_t*)a, NULL);
}

static inline void uvt_loop_thread_main__(void* arg) {
  uvt_loop_thread_t* t = arg;
  t->self = uv_thread_self();
  uv_sem_post(&t->started);
  uv_run(&t->loop, UV_RUN_DEFAULT);
}

static inline void uvt_loop_thread_start(uvt_loop_thread_t* t) {
  memset(t, 0, sizeof(*t));
  ck_assert_int_eq(uv_loop_init(&t->loop), 0);
  ck_assert_int_eq(uvctx_loop_init(&t->loop, &t->l), 0);
  ck_assert_int_eq(uv_async_init(&t->loop, &t->stop, uvt_loop_thread_stop_cb__),
                   0);
  t->stop.data = t;
  ck_assert_int_eq(uv_sem_init(&t->started, 0), 0);
  ck_assert_int_eq(uv_thread_create(&t->thread, uvt_loop_thread_main__, t), 0);
  uv_sem_wait(&t->started);
}

/* Is the calling thread the one running t's loop? */
static inline int uvt_on_loop_thread(const uvt_loop_thread_t* t) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &t->self);
}

/* Closes the binding on the loop's own thread, joins the thread and closes
 * the loop, asserting both closes returned 0. */
static inline void uvt_loop_thread_stop(uvt_loop_thread_t* t) {
  int rc;
  ck_assert_int_eq(uv_async_send(&t->stop), 0);
  ck_assert_int_eq(uv_thread_join(&t->thread), 0);
  uv_sem_destroy(&t->started);
  rc = t->close_rc;
  if (rc != 0) {
    /* Leave the loop as is: the test fails on the next line. */
    ck_assert_int_eq(rc, 0);
  }
  uvt_loop_finish(&t->loop);
}

/* ---- threads with a small stack ------------------------------------------ */

/* Runs fn(arg) on a new thread with a `stack_kib` KiB stack and joins it:
 * proves that fn does not recurse deeply. */
static inline void uvt_run_on_small_stack(void (*fn)(void*), void* arg,
                                          size_t stack_kib) {
  uv_thread_t t;
  uv_thread_options_t opt;
  opt.flags = UV_THREAD_HAS_STACK_SIZE;
  opt.stack_size = stack_kib * 1024;
  ck_assert_int_eq(uv_thread_create_ex(&t, &opt, fn, arg), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
}

/* ---- memory -------------------------------------------------------------- */

/* Resident set size of the process in KiB (from /proc/self/statm), or 0. */
static inline uint64_t uvt_rss_kib(void) {
  unsigned long size = 0, resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2)
    resident = 0;
  fclose(f);
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

/* ---- a counting allocator that fails on demand --------------------------- */

/* Wraps libc, so it can be installed (uvctx_replace_allocator) at any time
 * without mixing allocators. Every malloc, calloc and realloc made by the
 * thread that called uvt_alloc_fail_nth() counts as one allocation, and
 * the Nth fails; other threads (a loop thread working concurrently) are
 * neither counted nor failed, so that the count is deterministic. */
static _Thread_local int uvt_alloc_armed__; /* this thread counts */
static atomic_long uvt_alloc_calls__;       /* allocations since arming */
static atomic_long uvt_alloc_fail_at__;     /* 0: never fail */
static atomic_long uvt_alloc_failures__;

static inline int uvt_alloc_should_fail__(void) {
  long at, n;
  if (!uvt_alloc_armed__)
    return 0;
  at = atomic_load(&uvt_alloc_fail_at__);
  n = atomic_fetch_add(&uvt_alloc_calls__, 1) + 1;
  if (at > 0 && n == at) {
    atomic_fetch_add(&uvt_alloc_failures__, 1);
    return 1;
  }
  return 0;
}

static inline void* uvt_malloc__(size_t size) {
  return uvt_alloc_should_fail__() ? NULL : malloc(size);
}

static inline void* uvt_realloc__(void* p, size_t size) {
  return uvt_alloc_should_fail__() ? NULL : realloc(p, size);
}

static inline void* uvt_calloc__(size_t n, size_t size) {
  return uvt_alloc_should_fail__() ? NULL : calloc(n, size);
}

static inline void uvt_free__(void* p) {
  free(p);
}

/* Installs the counting allocator (call it first in a setup). */
static inline void uvt_alloc_install(void) {
  ck_assert_int_eq(uvctx_replace_allocator(uvt_malloc__, uvt_realloc__,
                                           uvt_calloc__, uvt_free__),
                   0);
}

/* Makes the `n`th allocation the calling thread makes from now fail (0:
 * none, but still count). */
static inline void uvt_alloc_fail_nth(long n) {
  uvt_alloc_armed__ = 1;
  atomic_store(&uvt_alloc_fail_at__, 0);
  atomic_store(&uvt_alloc_calls__, 0);
  atomic_store(&uvt_alloc_failures__, 0);
  atomic_store(&uvt_alloc_fail_at__, n);
}

/* Stops counting and failing. */
static inline void uvt_alloc_disarm(void) {
  atomic_store(&uvt_alloc_fail_at__, 0);
  uvt_alloc_armed__ = 0;
}

/* Allocations made since the last uvt_alloc_fail_nth(). */
static inline long uvt_alloc_calls(void) {
  return atomic_load(&uvt_alloc_calls__);
}

/* Did the armed failure happen? */
static inline int uvt_alloc_failed(void) {
  return atomic_load(&uvt_alloc_failures__) != 0;
}

/* ---- main ---------------------------------------------------------------- */

/* The main() of a suite: runs it (CK_ENV verbosity) and exits non-zero if
 * a test failed. */
static inline int uvt_main(Suite* s) {
  SRunner* sr = srunner_create(s);
  int failed;
  srunner_run_all(sr, CK_ENV);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif /* UVCTX_TEST_HELPERS_H */
