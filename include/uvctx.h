/* uvctx: Go-style contexts (cancellation, deadlines, request-scoped values)
 * for programs built on libuv.
 *
 * Conventions, as in libuv: functions return 0 or a negative libuv error
 * code (UV_EINVAL, UV_ENOMEM, ...). A context is done with UV_ECANCELED
 * (cancelled) or UV_ETIMEDOUT (its deadline passed). Every function that
 * takes a callback and returns an error never calls that callback.
 *
 * See docs/design.md for lifetimes, ownership and threading, and
 * docs/context.md for the reference of every function declared here.
 */
#ifndef UVCTX_H
#define UVCTX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define UVCTX_EXTERN __attribute__((visibility("default")))
#else
#define UVCTX_EXTERN /* nothing */
#endif

#define UVCTX_VERSION_MAJOR 0
#define UVCTX_VERSION_MINOR 1
#define UVCTX_VERSION_PATCH 0

/* The binding of uvctx to one uv_loop_t. Opaque. */
typedef struct uvctx_loop_s uvctx_loop_t;

/* A context. Opaque and reference counted; see uvctx_ref()/uvctx_unref(). */
typedef struct uvctx_s uvctx_t;

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

typedef void* (*uvctx_malloc_func)(size_t size);
typedef void* (*uvctx_realloc_func)(void* ptr, size_t size);
typedef void* (*uvctx_calloc_func)(size_t count, size_t size);
typedef void (*uvctx_free_func)(void* ptr);

/* Replaces the allocator uvctx uses for everything it allocates, like
 * uv_replace_allocator(). Call it before any other uvctx function, while no
 * uvctx object is alive: memory allocated by one allocator must not be freed
 * by another. Returns UV_EINVAL if any function is NULL, else 0. Allocation
 * failures are reported as UV_ENOMEM and never abort. */
UVCTX_EXTERN int uvctx_replace_allocator(uvctx_malloc_func malloc_func,
                                         uvctx_realloc_func realloc_func,
                                         uvctx_calloc_func calloc_func,
                                         uvctx_free_func free_func);

/* ------------------------------------------------------------------------ */
/* Loop binding                                                             */
/* ------------------------------------------------------------------------ */

/* Attaches uvctx to `loop`: one mailbox (an unreferenced uv_async_t), one
 * deadline timer and one unreferenced uv_prepare_t are initialized on it.
 * Call it on the thread that will run `loop`, or while nobody runs it.
 * On success stores the binding in *out and returns 0; UV_EINVAL for NULL
 * arguments, UV_ENOMEM, or the error of the libuv handle initialization.
 *
 * uvctx learns which thread runs the loop from its own callbacks; until the
 * loop has run once, the thread that called uvctx_loop_init() counts as the
 * loop's thread. */
UVCTX_EXTERN int uvctx_loop_init(uv_loop_t* loop, uvctx_loop_t** out);

/* uvctx_loop_init() with options. UVCTX_LOOP_HIRES_DEADLINES drives the
 * loop's deadlines from a Linux timerfd (CLOCK_MONOTONIC, nanosecond
 * expiry) under a uv_poll_t instead of a uv_timer_t, whose whole cached
 * milliseconds add up to a millisecond of lateness; deadlines are still
 * never early. It costs a timerfd_settime() system call whenever the
 * earliest deadline moves earlier. UV_ENOTSUP where there is no timerfd
 * (not Linux, or a kernel without it), UV_EINVAL for unknown flags. Other
 * timerfd_create() errors are returned as libuv codes (UV_EMFILE,
 * UV_ENOMEM, ...); otherwise as uvctx_loop_init(). */
enum { UVCTX_LOOP_HIRES_DEADLINES = 1u << 0 };
UVCTX_EXTERN int uvctx_loop_init_ex(uv_loop_t* loop, unsigned flags,
                                    uvctx_loop_t** out);

/* Makes the calling thread the loop's thread. Call it first thing on a
 * thread that takes over a loop from another one (a loop set up on the main
 * thread and run by a worker), before uv_run(): uvctx otherwise learns the
 * new thread only from its own first callback, and until then would treat
 * the old thread as the loop's. Loop thread only (by definition). */
UVCTX_EXTERN int uvctx_loop_adopt(uvctx_loop_t* l);

/* Detaches uvctx from its loop. Returns UV_EBUSY, closing nothing, while any
 * context homed on the loop is still referenced, any watch homed on it is
 * pending, a context homed on another loop still has this loop's
 * background as its parent (use uvctx_loop_dump() to see which), or a trace
 * is still running on it (see uvctx_loop_trace_stop()); UV_EINVAL for NULL
 * or a binding already closing. On 0 the binding's handles are closing: run
 * the loop once more (uv_run(loop, UV_RUN_DEFAULT)) before uv_loop_close();
 * the binding is freed in the last close callback. The binding's life ends
 * when this returns 0: making contexts or watches on its background, or any
 * other use of it, is then undefined, as with a libuv handle after
 * uv_close(). Nothing checks this. Loop thread only. */
UVCTX_EXTERN int uvctx_loop_close(uvctx_loop_t* l);

/* Writes one line per live context homed on `l` (kind, parent, reference
 * count, state, where it was created) and the pending watch count to `out`.
 * Loop thread only. The report is composed in memory under the library
 * lock and written to `out` after it is released, so a slow or blocking
 * stream stalls only the caller (without memory for that, it is written
 * under the lock). */
UVCTX_EXTERN void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out);

/* The uv_loop_t the binding was made for. */
UVCTX_EXTERN uv_loop_t* uvctx_loop_uv(const uvctx_loop_t* l);

/* Live objects on a loop, for tests and health checks: a subset of
 * uvctx_loop_stats(), cheaper to take. Any thread. Returns 0, or UV_EINVAL
 * for a NULL `out` or a NULL `l` (then `out`, if given, is zeroed). */
typedef struct uvctx_loop_counts_s {
  uint64_t contexts;  /* contexts homed on the loop still referenced */
  uint64_t watches;   /* watches homed on the loop that have not fired */
  uint64_t deadlines; /* armed deadline entries in the loop's heap */
} uvctx_loop_counts_t;
UVCTX_EXTERN int uvctx_loop_counts(const uvctx_loop_t* l,
                                   uvctx_loop_counts_t* out);

/* A latency histogram in constant memory: 64 log-spaced buckets (two per
 * power of two, from 128 ns up to about 4.6 minutes, then everything
 * above). Bucket i counts values v with bound(i-1) < v <= bound(i). */
#define UVCTX_HISTOGRAM_BUCKETS 64
typedef struct uvctx_histogram_s {
  uint64_t count;
  uint64_t sum_ns;
  uint64_t max_ns;
  uint64_t buckets[UVCTX_HISTOGRAM_BUCKETS];
} uvctx_histogram_t;

/* The inclusive upper bound of bucket i in nanoseconds; UINT64_MAX for the
 * last bucket and beyond. */
UVCTX_EXTERN uint64_t uvctx_histogram_bound(unsigned i);

/* Adds one value. Not thread-safe: the library records into its own
 * histograms under its lock; use this for your own copies. */
UVCTX_EXTERN void uvctx_histogram_record(uvctx_histogram_t* h, uint64_t ns);

/* The upper bound of the bucket holding quantile q (0 < q <= 1), capped at
 * the maximum seen; 0 for an empty histogram. */
UVCTX_EXTERN uint64_t uvctx_histogram_quantile(const uvctx_histogram_t* h,
                                               double q);

/* Always-on counters of one loop binding. Gauges are current values;
 * totals count since uvctx_loop_init(). */
typedef struct uvctx_loop_stats_s {
  /* gauges */
  uint64_t contexts; /* contexts homed on the loop still referenced */
  uint64_t contexts_cancel;
  uint64_t contexts_deadline;
  uint64_t contexts_any;
  uint64_t contexts_value;
  uint64_t contexts_without_cancel;
  uint64_t watches;   /* watches homed on the loop that have not fired */
  uint64_t deadlines; /* armed deadline entries */
  /* totals */
  uint64_t created;         /* contexts created homed on the loop */
  uint64_t cancels;         /* contexts homed here that became done */
  uint64_t remote_wakeups;  /* callbacks queued here by other threads */
  uint64_t callbacks;       /* watch callbacks run */
  uint64_t deadlines_fired; /* deadline entries that expired */
  /* From the cancel (or deadline expiry) that made a watch due to the start
   * of its callback. */
  uvctx_histogram_t propagation;
  /* From a deadline to the moment the timer callback cancelled it. */
  uvctx_histogram_t lateness;
} uvctx_loop_stats_t;

/* Copies the loop's counters into *out. Any thread. UV_EINVAL for NULL. */
UVCTX_EXTERN int uvctx_loop_stats(const uvctx_loop_t* l,
                                  uvctx_loop_stats_t* out);

/* Number of blocks the library currently has allocated, over all loops
 * (contexts, messages, loop bindings, heaps). Zero when everything has been
 * released and every binding closed. Any thread. */
UVCTX_EXTERN uint64_t uvctx_live_allocations(void);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* A key for request-scoped values. Keys compare by address: two keys are
 * the same key only if they are the same object, so declare each key once,
 * usually `static const uvctx_key_t my_key = {.name = "my.key", .free_value
 * = free};`. The key
 * must outlive every context that binds a value to it. */
typedef struct uvctx_key_s {
  const char* name;                /* for dumps, traces and log fields */
  void (*free_value)(void* value); /* NULL: the caller owns values */
  /* Optional. Makes the key loggable: writes `value` as text into buf
   * (at most size bytes, NUL-terminated) and returns the length it needed,
   * snprintf-style, or a negative number to skip the value. */
  int (*format)(const void* value, char* buf, size_t size);
} uvctx_key_t;

/* The loop's root context: never done, no deadline, no values. It is not
 * reference counted: uvctx_ref(), uvctx_unref() and uvctx_release() are
 * no-ops on it, and it lives as long as the binding: until
 * uvctx_loop_close() returns 0. Making a context or a watch on it after that
 * is undefined. Any thread. */
UVCTX_EXTERN uvctx_t* uvctx_background(uvctx_loop_t* l);

/* The constructors below are callable from any thread. Each stores in *out
 * a new context holding one reference for the caller, and the new context
 * holds a reference to its parent(s). They return 0, UV_EINVAL for a NULL
 * parent or out (nothing is allocated then), or UV_ENOMEM. On error *out is
 * left untouched. A child of a done context is born done with its parent's
 * err and cause. */

/* A child that can be cancelled with uvctx_cancel(), homed on its parent's
 * loop. */
UVCTX_EXTERN int uvctx_with_cancel(uvctx_t* parent, uvctx_t** out);

/* Like uvctx_with_cancel(), but homed on `home`: its watch callbacks (and
 * the deadline timers of its deadline descendants) run on home's thread.
 * This is how a worker thread gets its own branch of a server-wide root. */
UVCTX_EXTERN int uvctx_with_cancel_on(uvctx_t* parent, uvctx_loop_t* home,
                                      uvctx_t** out);

/* A child that is cancelled with UV_ETIMEDOUT once uv_hrtime() reaches
 * `deadline_ns` (never earlier). A deadline at or before the current
 * uv_hrtime() cancels the child before the call returns. If the parent's
 * deadline is sooner or equal, the child takes no timer entry of its own.
 * Called on the thread uvctx has recorded as the home loop's (see
 * uvctx_loop_init() and uvctx_loop_adopt()), the deadline is armed before
 * the call returns. From any other thread, even while nobody runs the loop,
 * it is armed by the loop's thread when the loop handles its mailbox (or by
 * uvctx_loop_adopt()). */
UVCTX_EXTERN int uvctx_with_deadline(uvctx_t* parent, uint64_t deadline_ns,
                                     uvctx_t** out);

/* uvctx_with_deadline() at uv_hrtime() + timeout_ms milliseconds. A zero
 * timeout makes a child that is done when the call returns. */
UVCTX_EXTERN int uvctx_with_timeout(uvctx_t* parent, uint64_t timeout_ms,
                                    uvctx_t** out);

/* As above, but when the deadline fires the context's cause is `cause` (a
 * negative code) with a copy of `msg` (may be NULL). Cancelling it by hand
 * still records UV_ECANCELED. If the parent's deadline is earlier or equal,
 * the child has no timer entry of its own and is cancelled with the
 * parent's cause when that deadline fires. UV_EINVAL if cause >= 0. */
UVCTX_EXTERN int uvctx_with_deadline_cause(uvctx_t* parent,
                                           uint64_t deadline_ns, int cause,
                                           const char* msg, uvctx_t** out);
UVCTX_EXTERN int uvctx_with_timeout_cause(uvctx_t* parent, uint64_t timeout_ms,
                                          int cause, const char* msg,
                                          uvctx_t** out);

/* A child carrying `value` under `key` (a NULL value shadows an outer
 * binding). When the context is freed, key->free_value(value) runs if
 * free_value is set and value is not NULL, on the thread that drops the last
 * reference. The context is done when its parent is; it cannot be cancelled
 * by itself. UV_EINVAL for a NULL key. */
UVCTX_EXTERN int uvctx_with_value(uvctx_t* parent, const uvctx_key_t* key,
                                  void* value, uvctx_t** out);

/* A child with the parent's values and home that is never done and has no
 * deadline: for work that must finish even when the request that started
 * it is gone (a cache write, an audit log). */
UVCTX_EXTERN int uvctx_without_cancel(uvctx_t* parent, uvctx_t** out);

/* A merge of `n` parents: done as soon as the first of them is done, with
 * that parent's err and cause (if several are already done, the first in
 * argument order). Its deadline is the earliest of the parents'; its values
 * and home are those of parents[0]. It can also be cancelled by itself. It
 * unlinks from every parent when done or freed, so long-lived parents never
 * accumulate dead merges. UV_EINVAL for NULL or empty `parents` or a NULL
 * element. */
UVCTX_EXTERN int uvctx_any(uvctx_t* const* parents, size_t n, uvctx_t** out);

/* Cancels `c` and every descendant with UV_ECANCELED. When the call returns,
 * c and all its descendants, on every loop, report the error; watch
 * callbacks run later, on each context's home loop thread. The first cancel
 * wins: cancelling a done context does nothing and returns 0. UV_EINVAL if
 * c cannot be cancelled (background, value and without_cancel contexts).
 * Iterative: a chain of any length is cancelled without recursion. */
UVCTX_EXTERN int uvctx_cancel(uvctx_t* c);

/* uvctx_cancel() recording `cause` (negative; UV_EINVAL otherwise) and a
 * copy of `msg` (may be NULL) as the cause, inherited by descendants. The
 * error is still UV_ECANCELED. If the message cannot be copied the context
 * is cancelled all the same, without it, and UV_ENOMEM is returned. */
UVCTX_EXTERN int uvctx_cancel_cause(uvctx_t* c, int cause, const char* msg);

/* 0 while `c` is not done, else UV_ECANCELED or UV_ETIMEDOUT. Lock-free. */
UVCTX_EXTERN int uvctx_err(const uvctx_t* c);

/* 0 while `c` is not done; else the cause (equal to the error when no cause
 * was given). If msg is not NULL it receives the cause's message or NULL;
 * the string lives as long as `c`. */
UVCTX_EXTERN int uvctx_cause(const uvctx_t* c, const char** msg);

/* Returns 1 and stores the earliest deadline in force (absolute uv_hrtime()
 * nanoseconds) if `c` or an ancestor has one, else 0. */
UVCTX_EXTERN int uvctx_deadline(const uvctx_t* c, uint64_t* deadline_ns);

/* The innermost value bound to `key` in `c` or its ancestors, or NULL. The
 * value stays readable after cancellation, as long as `c` is referenced. */
UVCTX_EXTERN void* uvctx_value(const uvctx_t* c, const uvctx_key_t* key);

/* The loop whose thread runs c's watch callbacks and deadline timer. */
UVCTX_EXTERN uvctx_loop_t* uvctx_home(const uvctx_t* c);

/* Adds a reference and returns `c`. */
UVCTX_EXTERN uvctx_t* uvctx_ref(uvctx_t* c);

/* Drops a reference; the last one frees the context, its deadline entry
 * and its value (through the key's free_value), then drops its reference to
 * its parent(s). Freeing a long chain is iterative. NULL is ignored. */
UVCTX_EXTERN void uvctx_unref(uvctx_t* c);

/* Go's `defer cancel()`: cancels `c` if it can be cancelled, then drops a
 * reference. NULL is ignored. */
UVCTX_EXTERN void uvctx_release(uvctx_t* c);

/* ------------------------------------------------------------------------ */
/* Watches                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_watch_s uvctx_watch_t;
typedef void (*uvctx_watch_cb)(uvctx_watch_t* w, int err);

/* A caller-allocated watch, like a libuv handle: `data` is yours, the rest
 * is private. */
struct uvctx_watch_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_watch_cb cb_;
  uvctx_loop_t* home_;
  struct uvctx_watch_s* next_;
  struct uvctx_watch_s** pprev_;
  uint64_t queued_at_; /* uv_hrtime() when the callback became due */
  uint64_t cause_id_;  /* the cancel that made it due, for traces */
  int state_;
  int err_;
  int flags_;
};

/* Calls cb(w, err) once `c` is done, on c's home loop thread, with c's
 * error. Never inside this call: if `c` is already done, the callback is
 * queued for the loop. `w` may be uninitialized memory, or a watch that has
 * fired or been stopped; it must stay valid until the callback has run or
 * uvctx_watch_stop() returned 1. The watch holds a reference to `c` until
 * then. Starting a watch that is still pending is undefined, as with libuv
 * handles. Any thread. UV_EINVAL for NULL arguments. */
UVCTX_EXTERN int uvctx_watch_start(uvctx_watch_t* w, uvctx_t* c,
                                   uvctx_watch_cb cb);

/* Stops a watch that was started at least once. Returns 1 if this call
 * prevented the callback (then it will never run and the reference to the
 * context is dropped), 0 if the callback already ran or is running, or the
 * watch was already stopped. NULL returns 0. Any thread; from another
 * thread, 0 does not mean that the callback has finished. */
UVCTX_EXTERN int uvctx_watch_stop(uvctx_watch_t* w);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_H */
