/* helpers.h owns the fixture every Check suite shares: a loop and its uvctx
 * binding created inside the checked fixture (Check forks each test, so the
 * loop lives in the child), a watchdog that fails a test instead of letting
 * it hang, bounded waits, a close-everything teardown that proves nothing
 * leaked, seeds for randomized tests, a loop run by a second thread and a
 * counting allocator that fails the Nth allocation.
 *
 * Compiled once into the test-support library (helpers.c) and linked into
 * every suite.
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

extern uvt_fixture_t uvt_fx__;

#define uvt_loop (&uvt_fx__.loop)
#define uvt_l (uvt_fx__.l)
#define uvt_bg (uvctx_background(uvt_fx__.l))

void uvt_watchdog_cb__(uv_timer_t* t);

/* Restarts the test's watchdog with a budget of `ms` from now. */
void uvt_watchdog_set(uint64_t ms);

/* Creates the loop and binding. Use as the setup of a checked fixture. */
void uvt_setup(void);

/* Prints the binding's live objects to stderr (a test's diagnostic). */
void uvt_dump(uvctx_loop_t* l, const char* why);

void uvt_close_walk_cb__(uv_handle_t* h, void* arg);

/* Closes every handle left on `loop` (the binding must be closed first)
 * and the loop itself, asserting that nothing stays behind. */
void uvt_loop_finish(uv_loop_t* loop);

/* The teardown of a checked fixture: closes the binding (asserting 0, so
 * every context and watch of the test must be gone), then every handle,
 * runs the loop once more, and asserts uv_loop_close() == 0 and
 * uvctx_live_allocations() == 0. */
void uvt_teardown(void);

/* The directory for a test's scratch files: $TMPDIR, else the system's. */
const char* uvt_tmpdir(void);

/* ---- bounded waits ------------------------------------------------------- */

void uvt_tick_cb__(uv_timer_t* t);

void uvt_wait_begin__(uint64_t ms);

int uvt_wait_step__(void);

void uvt_wait_end__(int ok, const char* what, const char* file, int line,
                    uint64_t ms);

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
void uvt_run_for(uint64_t ms);

void uvt_closed_cb__(uv_handle_t* h);

/* Closes a handle of the fixture's loop and waits for its close callback,
 * so that its memory (often on the test's stack) may go. Overwrites
 * h->data. */
void uvt_close_and_wait(uv_handle_t* h);

/* Is the calling thread the one that ran the fixture's setup (and runs
 * its loop)? */
int uvt_on_main_thread(void);

/* ---- seeds --------------------------------------------------------------- */

/* The seed of a randomized test: UVCTX_TEST_SEED if set, else from the
 * clock. Printed so that a failure can be replayed. */
uint64_t uvt_seed(const char* test);

/* splitmix64: small, good enough, one state per thread. */
uint64_t uvt_rand(uint64_t* state);

/* Uniform in [0, n). */
uint64_t uvt_rand_below(uint64_t* state, uint64_t n);

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

void uvt_loop_thread_stop_cb__(uv_async_t* a);

void uvt_loop_thread_main__(void* arg);

void uvt_loop_thread_start(uvt_loop_thread_t* t);

/* Is the calling thread the one running t's loop? */
int uvt_on_loop_thread(const uvt_loop_thread_t* t);

/* Closes the binding on the loop's own thread, joins the thread and closes
 * the loop, asserting both closes returned 0. */
void uvt_loop_thread_stop(uvt_loop_thread_t* t);

/* ---- threads with a small stack ------------------------------------------ */

/* Runs fn(arg) on a new thread with a `stack_kib` KiB stack and joins it:
 * proves that fn does not recurse deeply. */
void uvt_run_on_small_stack(void (*fn)(void*), void* arg, size_t stack_kib);

/* ---- memory -------------------------------------------------------------- */

/* Resident set size of the process in KiB (from /proc/self/statm), or 0. */
uint64_t uvt_rss_kib(void);

/* ---- a counting allocator that fails on demand --------------------------- */

/* Wraps libc, so it can be installed (uvctx_replace_allocator) at any time
 * without mixing allocators. Every malloc, calloc and realloc made by the
 * thread that called uvt_alloc_fail_nth() counts as one allocation, and
 * the Nth fails; other threads (a loop thread working concurrently) are
 * neither counted nor failed, so that the count is deterministic. */
extern _Thread_local int uvt_alloc_armed__; /* this thread counts */
extern atomic_long uvt_alloc_calls__;       /* allocations since arming */
extern atomic_long uvt_alloc_fail_at__;     /* 0: never fail */
extern atomic_long uvt_alloc_failures__;

int uvt_alloc_should_fail__(void);

void* uvt_malloc__(size_t size);

void* uvt_realloc__(void* p, size_t size);

void* uvt_calloc__(size_t n, size_t size);

void uvt_free__(void* p);

/* Installs the counting allocator (call it first in a setup). */
void uvt_alloc_install(void);

/* Makes the `n`th allocation the calling thread makes from now fail (0:
 * none, but still count). */
void uvt_alloc_fail_nth(long n);

/* Stops counting and failing. */
void uvt_alloc_disarm(void);

/* Allocations made since the last uvt_alloc_fail_nth(). */
long uvt_alloc_calls(void);

/* Did the armed failure happen? */
int uvt_alloc_failed(void);

/* ---- main ---------------------------------------------------------------- */

/* The main() of a suite: runs it (CK_ENV verbosity) and exits non-zero if
 * a test failed. */
int uvt_main(Suite* s);

#endif /* UVCTX_TEST_HELPERS_H */
