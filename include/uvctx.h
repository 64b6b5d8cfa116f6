/* uvctx: Go-style contexts (cancellation, deadlines, request-scoped values)
 * for programs built on libuv.
 *
 * Conventions, as in libuv: functions return 0 or a negative libuv error
 * code (UV_EINVAL, UV_ENOMEM, ...). A context is done with UV_ECANCELED
 * (cancelled) or UV_ETIMEDOUT (its deadline passed). Every function that
 * takes a callback and returns an error never calls that callback.
 *
 * "Any thread" below means any thread, whatever loop the context is homed
 * on. "Loop thread" means the thread running uv_run() on that loop, or any
 * thread while nobody runs it (see uvctx_loop_adopt()). A broken
 * precondition is UV_EINVAL; with the environment variable UVCTX_DEBUG=1,
 * the functions that report misuse also write one line to stderr saying
 * which precondition broke.
 *
 * The contract of each function is the paragraph above its declaration.
 * docs/design.md explains the model (lifetimes, ownership, threading);
 * docs/context.md is the guide, by task.
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
 * by another. It is not synchronised. uvctx never asks for zero bytes (a
 * zero-size request becomes one byte). Returns UV_EINVAL if any function is
 * NULL (nothing is changed then), else 0. Allocation failures are reported
 * as UV_ENOMEM by the call that needed the memory, and never abort. */
UVCTX_EXTERN int uvctx_replace_allocator(uvctx_malloc_func malloc_func,
                                         uvctx_realloc_func realloc_func,
                                         uvctx_calloc_func calloc_func,
                                         uvctx_free_func free_func);

/* Allocate and free through the library's allocator (the one
 * uvctx_replace_allocator() installed), counted by
 * uvctx_live_allocations(): for modules built on the public API and for
 * users who want their blocks in the same count. uvctx_malloc() returns
 * NULL when out of memory; uvctx_free(NULL) does nothing. Any thread. */
UVCTX_EXTERN void* uvctx_malloc(size_t size);
UVCTX_EXTERN void uvctx_free(void* ptr);

/* ------------------------------------------------------------------------ */
/* Loop binding                                                             */
/* ------------------------------------------------------------------------ */

/* Attaches uvctx to `loop`: five handles are initialized on it, a mailbox
 * (an unreferenced uv_async_t, and a uv_idle_t and a uv_check_t that run
 * only while callbacks made due on the loop's thread wait), a deadline
 * timer (uv_timer_t) and a uv_prepare_t that records which thread runs
 * the loop. Call it on the
 * thread that will run `loop`, or while nobody runs it. On success stores
 * the binding in *out (its background context is ready at once) and returns
 * 0; UV_EINVAL for NULL arguments, UV_ENOMEM, or the error of a libuv handle
 * initialization (then the handles already initialized are closing: run the
 * loop once more before uv_loop_close()).
 *
 * uvctx learns which thread runs the loop from its own callbacks; until the
 * loop has run once, the thread that called uvctx_loop_init() counts as the
 * loop's thread. */
UVCTX_EXTERN int uvctx_loop_init(uv_loop_t* loop, uvctx_loop_t** out);

/* uvctx_loop_init() with options; uvctx_loop_init(loop, out) is
 * uvctx_loop_init_ex(loop, 0, out). UVCTX_LOOP_HIRES_DEADLINES drives the
 * loop's deadlines from a Linux timerfd (CLOCK_MONOTONIC, nanosecond
 * expiry) under a uv_poll_t instead of a uv_timer_t, whose whole cached
 * milliseconds add up to a millisecond of lateness; deadlines are still
 * never early. The binding then has six handles instead of five. It
 * costs a timerfd_settime() system call whenever the earliest deadline
 * moves earlier. UV_ENOTSUP where there is no timerfd (not Linux, or a
 * kernel without it), UV_EINVAL for unknown flags. Other timerfd_create()
 * errors are returned as libuv codes (UV_EMFILE, UV_ENOMEM, ...); otherwise
 * as uvctx_loop_init(). */
enum { UVCTX_LOOP_HIRES_DEADLINES = 1u << 0 };
UVCTX_EXTERN int uvctx_loop_init_ex(uv_loop_t* loop, unsigned flags,
                                    uvctx_loop_t** out);

/* Makes the calling thread the loop's thread. Call it first thing on a
 * thread that takes over a loop from another one (a loop set up on the main
 * thread and run by a worker), before uv_run(): uvctx otherwise learns the
 * new thread only from its own first callback, and until then would treat
 * the old thread as the loop's. What was queued for the loop meanwhile is
 * taken up: a deadline armed through the mailbox is armed, and queued watch
 * callbacks keep the loop alive until they have run, from the loop (never
 * from this call). Returns 0, or UV_EINVAL for NULL. Loop thread only (by
 * definition). */
UVCTX_EXTERN int uvctx_loop_adopt(uvctx_loop_t* l);

/* Detaches uvctx from its loop. Returns UV_EBUSY, closing nothing, while any
 * context homed on the loop is still referenced, any watch homed on it is
 * pending (armed, or queued with its callback not yet run), a context homed
 * on another loop still has this loop's background as its parent (use
 * uvctx_loop_dump() to see which), or a trace is still running on it (see
 * uvctx_loop_trace_stop()); UV_EINVAL for NULL or a binding already
 * closing. On 0 the binding's handles are closing: run the loop once more
 * (uv_run(loop, UV_RUN_DEFAULT)) before uv_loop_close(); the deadline heap
 * is freed at once, the binding in the last close callback. The binding's
 * life ends when this returns 0: making contexts or watches on its
 * background, or any other use of it, is then undefined, as with a libuv
 * handle after uv_close(). Nothing checks this. Loop thread only. */
UVCTX_EXTERN int uvctx_loop_close(uvctx_loop_t* l);

/* Writes a leak report to `out`: a header line with the number of live
 * contexts homed on `l`, pending watches, armed deadline entries and
 * contexts of other loops whose parent is l's background (printed even when
 * 0), then one line per live context homed on `l`, found in every tree,
 * trees that span loops included. Each line gives the context's address,
 * kind (cancel, deadline, any, value, without_cancel), parent's address,
 * reference count, state (live, canceled, timedout; a value context shows
 * the state it shares), the key name of a value context, the absolute
 * deadline of a deadline context, and where it was created: the return
 * address of the constructor call, as `symbol+offset in module` when
 * dladdr() names an exported symbol (link executables with -rdynamic;
 * static functions are never named), else as `offset in module`; subtract
 * 1 and pass it to addr2line for a file and line. Watches are counted, not
 * listed. Nothing is written if `l` or `out` is NULL; if memory for the walk
 * runs out, the report ends with a line saying it is incomplete.
 *
 * Loop thread only. The report is composed in memory, each loop's part
 * under that loop's lock only (other threads that create, cancel or free
 * contexts homed on that loop wait that long; other loops do not), and
 * written to `out` after every lock is released, so a slow or blocking
 * stream stalls only the caller (without memory for that, it is written
 * under the locks). */
UVCTX_EXTERN void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out);

/* The uv_loop_t the binding was made for; NULL for a NULL `l`. Any
 * thread. */
UVCTX_EXTERN uv_loop_t* uvctx_loop_uv(const uvctx_loop_t* l);

/* Live objects on a loop, for tests and health checks: a subset of
 * uvctx_loop_stats(), cheaper to take. `contexts` counts every referenced
 * context homed on `l`, done or not, the background excluded; `watches`
 * armed and queued watches; `deadlines` heap entries, which only deadline
 * contexts whose deadline is earlier than their ancestors' take.
 * uvctx_loop_close() needs `contexts` and `watches` at zero, and more (see
 * there). Any thread (it takes l's lock). Returns 0, or UV_EINVAL
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
 * above). Bucket 0 counts values up to 128 ns and bucket i values v with
 * bound(i-1) < v <= bound(i), where bound(2k) = 2^(k+7) ns and
 * bound(2k+1) = 1.5 * 2^(k+7) ns; bucket 62 ends at 2^38 ns and bucket 63
 * takes the rest. A zeroed histogram is empty. */
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

/* The upper bound of the bucket holding quantile q, capped at the maximum
 * seen: q is clamped to [0, 1] (NaN counts as 0) and the rank is q * count
 * rounded, at least 1. For values above 128 ns the answer is at most 50 %
 * above the true quantile. 0 for a NULL or empty histogram. Reads `h`
 * without a lock: not while another thread records into it. */
UVCTX_EXTERN uint64_t uvctx_histogram_quantile(const uvctx_histogram_t* h,
                                               double q);

/* Always-on counters of one loop binding. Gauges are current values, as in
 * uvctx_loop_counts(), in total and by kind; totals count since
 * uvctx_loop_init(). */
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
  uint64_t cancels;         /* contexts homed here that a cancel or a
                               deadline reached (one per context) */
  uint64_t remote_wakeups;  /* callbacks queued here by other threads */
  uint64_t callbacks;       /* watch callbacks run */
  uint64_t deadlines_fired; /* deadline entries that expired */
  /* From the cancel (or deadline expiry) that made a watch due to the start
   * of its callback; for a watch started on a context already done, from
   * the start. */
  uvctx_histogram_t propagation;
  /* From a deadline to the moment the timer callback cancelled it (never
   * negative: deadlines never fire early). */
  uvctx_histogram_t lateness;
} uvctx_loop_stats_t;

/* Copies the loop's counters into *out. Any thread (it takes the library
 * lock while it copies). UV_EINVAL for NULL. */
UVCTX_EXTERN int uvctx_loop_stats(const uvctx_loop_t* l,
                                  uvctx_loop_stats_t* out);

/* Number of blocks the library currently has allocated through its
 * allocator, over all loops and modules (contexts, messages, loop bindings,
 * heaps, copies, TLS sessions, traces). Zero when everything has been
 * released and every binding closed, including the uv_run() that runs the
 * bindings' close callbacks. Any thread; the count is relaxed, so read it
 * after joining the threads that changed it. */
UVCTX_EXTERN uint64_t uvctx_live_allocations(void);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* A key for request-scoped values. Keys compare by address: two keys are
 * the same key only if they are the same object, whatever their names, so
 * declare each key once, usually
 * `static const uvctx_key_t my_key = {.name = "my.key", .free_value = free};`
 * (designated initializers: with positional ones -Wextra warns about the
 * fields left out). The key must outlive every context that binds a value
 * to it. free_value, if set, makes every context that binds a non-NULL
 * value under the key the value's owner (see uvctx_with_value()). `format`
 * is used only by uvctx_log_fields() (uvctx/metrics.h); the leak report
 * prints the name alone. */
typedef struct uvctx_key_s {
  const char* name;                /* for dumps, traces and log fields */
  void (*free_value)(void* value); /* NULL: the caller owns values */
  /* Optional. Makes the key loggable: writes `value` as text into buf
   * (at most size bytes, NUL-terminated) and returns the length it needed,
   * snprintf-style, or a negative number to skip the value. */
  int (*format)(const void* value, char* buf, size_t size);
} uvctx_key_t;

/* The loop's root context (NULL for a NULL `l`): never done, no deadline,
 * no values, homed on `l`. It is not reference counted: uvctx_ref(),
 * uvctx_unref() and uvctx_release() are no-ops on it, uvctx_cancel()
 * returns UV_EINVAL, a watch on it never fires, and it lives as long as the
 * binding: until uvctx_loop_close() returns 0. Making a context or a watch
 * on it after that is undefined. Any thread. */
UVCTX_EXTERN uvctx_t* uvctx_background(uvctx_loop_t* l);

/* The constructors below are callable from any thread. Each stores in *out
 * a new context holding one reference for the caller, and the new context
 * holds a reference to its parent(s); a parent only links its cancellable
 * children, and a child unlinks itself when it is done or freed. They
 * return 0, UV_EINVAL for a NULL parent or out (nothing is allocated then),
 * or UV_ENOMEM. On error *out is left untouched and nothing is allocated.
 * A child of a done context is born done with its parent's err, cause and
 * message. Unless said otherwise, a child's deadline and values are its
 * parent's. */

/* A child that can be cancelled with uvctx_cancel(), homed on its parent's
 * loop. It is done when it is cancelled or its parent is done, whichever
 * comes first. */
UVCTX_EXTERN int uvctx_with_cancel(uvctx_t* parent, uvctx_t** out);

/* Like uvctx_with_cancel(), but homed on `home` (UV_EINVAL if NULL): its
 * watch callbacks (and the deadline timers of its deadline descendants) run
 * on home's thread, and it is counted on `home`. This is how a worker
 * thread gets its own branch of a server-wide root. A parent that is
 * another binding's background is not reference counted, so such a child
 * is also counted on that binding, whose uvctx_loop_close() returns
 * UV_EBUSY until the child is freed (its uvctx_loop_dump() shows the
 * count): release such children before closing the parent's binding. */
UVCTX_EXTERN int uvctx_with_cancel_on(uvctx_t* parent, uvctx_loop_t* home,
                                      uvctx_t** out);

/* A cancellable child that is also cancelled with UV_ETIMEDOUT once
 * uv_hrtime() reaches `deadline_ns` (never earlier). Its deadline in force
 * (uvctx_deadline()) is the earlier of deadline_ns and the parent's. A
 * deadline at or before the current uv_hrtime() cancels the child before
 * the call returns. If the parent's deadline is sooner or equal, the child
 * takes no timer entry of its own: the parent's expiry reaches it, with the
 * parent's cause. UINT64_MAX adds no deadline of its own. A child done or
 * freed before its deadline loses its entry. UV_ENOMEM also if the loop's
 * deadline heap cannot grow.
 * Called on the thread uvctx has recorded as the home loop's (see
 * uvctx_loop_init() and uvctx_loop_adopt()), the deadline is armed before
 * the call returns. From any other thread, even while nobody runs the loop,
 * it is armed by the loop's thread when the loop handles its mailbox (or by
 * uvctx_loop_adopt()). A pending deadline keeps uv_run() alive only while a
 * watch on a context with a deadline is pending on the same loop. */
UVCTX_EXTERN int uvctx_with_deadline(uvctx_t* parent, uint64_t deadline_ns,
                                     uvctx_t** out);

/* uvctx_with_deadline() at uv_hrtime() + timeout_ms milliseconds (the
 * clock read once; a sum too large to represent saturates). A zero timeout
 * makes a child that is done when the call returns. */
UVCTX_EXTERN int uvctx_with_timeout(uvctx_t* parent, uint64_t timeout_ms,
                                    uvctx_t** out);

/* As above, but when the child's own deadline fires (or has passed at
 * creation) its cause is `cause` (a negative code) with a copy of `msg`
 * (may be NULL), inherited by its descendants; its error is still
 * UV_ETIMEDOUT. Cancelling it by hand still records UV_ECANCELED. If the
 * parent's deadline is earlier or equal, the child has no timer entry of
 * its own and is cancelled with the parent's cause when that deadline
 * fires. UV_EINVAL if cause >= 0; UV_ENOMEM also if `msg` cannot be copied
 * (nothing is created). */
UVCTX_EXTERN int uvctx_with_deadline_cause(uvctx_t* parent,
                                           uint64_t deadline_ns, int cause,
                                           const char* msg, uvctx_t** out);
UVCTX_EXTERN int uvctx_with_timeout_cause(uvctx_t* parent, uint64_t timeout_ms,
                                          int cause, const char* msg,
                                          uvctx_t** out);

/* A child carrying `value` under `key` (a NULL value shadows an outer
 * binding). On success, if key->free_value is set and value is not NULL,
 * the context owns the value: key->free_value(value) runs when the context
 * is freed, on the thread that drops the last reference, outside every
 * lock. On error the value stays the caller's. The context is done
 * exactly when its nearest non-value ancestor is, with its err and cause;
 * it cannot be cancelled by itself (uvctx_cancel() returns UV_EINVAL,
 * uvctx_release() only unrefs). Its home and deadline are its parent's.
 * UV_EINVAL for a NULL key. */
UVCTX_EXTERN int uvctx_with_value(uvctx_t* parent, const uvctx_key_t* key,
                                  void* value, uvctx_t** out);

/* A child with the parent's values and home that is never done and has no
 * deadline, whatever happens to the parent: for work that must finish even
 * when the request that started it is gone (a cache write, an audit log).
 * Cancellable or deadline children made under it start a fresh scope. It
 * cannot be cancelled (uvctx_cancel() returns UV_EINVAL) and a watch on it
 * never fires. Its reference keeps the parent allocated, done or not. */
UVCTX_EXTERN int uvctx_without_cancel(uvctx_t* parent, uvctx_t** out);

/* A merge of `n` parents: done as soon as the first of them is done, with
 * that parent's err and cause (if several are already done, the first in
 * argument order). Its deadline is the earliest of the parents'; its values
 * and home are those of parents[0] (uvctx_value() continues through
 * parents[0] only). It can also be cancelled by itself. It holds a
 * reference on every element of `parents`, which may repeat and may be
 * homed on different loops (another loop's background among them counts as
 * in uvctx_with_cancel_on()). It takes no deadline entry of its own and
 * unlinks from every parent when done or freed, so long-lived parents never
 * accumulate dead merges. UV_EINVAL for NULL or empty `parents` or a NULL
 * element. */
UVCTX_EXTERN int uvctx_any(uvctx_t* const* parents, size_t n, uvctx_t** out);

/* Cancels `c` and every descendant with UV_ECANCELED. When the call returns,
 * c and all its descendants, on every loop, report the error; watch
 * callbacks run later, on each context's home loop thread. The first cancel
 * wins: cancelling a done context does nothing and returns 0. UV_EINVAL if
 * c is NULL or cannot be cancelled (background, value and without_cancel
 * contexts). Iterative: a chain of any length is cancelled without
 * recursion. The walk holds the lock of c's home loop (and, for parts of
 * the subtree homed on other loops, theirs afterwards, one at a time), so
 * its cost, linear in the size of the subtree, delays only other threads'
 * calls on contexts homed on the loops it reaches. */
UVCTX_EXTERN int uvctx_cancel(uvctx_t* c);

/* uvctx_cancel() recording `cause` (negative; UV_EINVAL otherwise) and a
 * copy of `msg` (may be NULL) as the cause, inherited by descendants. The
 * error is still UV_ECANCELED. If `c` is already done, nothing is recorded
 * and 0 is returned. If the message cannot be copied the context is
 * cancelled all the same, without it, and UV_ENOMEM is returned. */
UVCTX_EXTERN int uvctx_cancel_cause(uvctx_t* c, int cause, const char* msg);

/* 0 while `c` is not done, else UV_ECANCELED or UV_ETIMEDOUT; final once
 * non-zero. UV_EINVAL for a NULL `c` (which `uvctx_err(c) != 0` takes for
 * done). Lock-free. */
UVCTX_EXTERN int uvctx_err(const uvctx_t* c);

/* 0 while `c` is not done; else the cause (equal to the error when no cause
 * was given). If msg is not NULL it receives the cause's message or NULL
 * (always NULL while `c` is not done); the string lives as long as `c` is
 * referenced. UV_EINVAL (and *msg = NULL) for a NULL `c`. Lock-free. */
UVCTX_EXTERN int uvctx_cause(const uvctx_t* c, const char** msg);

/* Returns 1 and stores the earliest deadline in force (absolute uv_hrtime()
 * nanoseconds) in *deadline_ns, if not NULL, when `c` or an ancestor has
 * one; else 0 (also for a NULL `c`; a without_cancel context inherits no
 * deadline). It is fixed when the context is made, passed or not.
 * Lock-free. */
UVCTX_EXTERN int uvctx_deadline(const uvctx_t* c, uint64_t* deadline_ns);

/* The innermost value bound to `key` in `c` or its ancestors, or NULL (also
 * for a NULL `c` or `key`). Keys compare by address; a merge continues
 * through parents[0]. The value stays readable after cancellation, as long
 * as `c` is referenced; it is shared as it is, and its own thread safety is
 * the caller's business. Iterative and lock-free. */
UVCTX_EXTERN void* uvctx_value(const uvctx_t* c, const uvctx_key_t* key);

/* The loop whose thread runs c's watch callbacks and deadline timer; NULL
 * for a NULL `c`. Any thread. */
UVCTX_EXTERN uvctx_loop_t* uvctx_home(const uvctx_t* c);

/* Adds a reference and returns `c`; NULL and the background are returned
 * unchanged. Drop each reference with uvctx_unref(). */
UVCTX_EXTERN uvctx_t* uvctx_ref(uvctx_t* c);

/* Drops a reference; the last one frees the context, its deadline entry,
 * its cause message and its value (through the key's free_value, on the
 * calling thread, outside every lock), then drops its reference to
 * its parent(s), which may free them in turn, the outermost first. Freeing
 * a long chain is iterative. Dropping a reference cancels nothing. NULL and
 * the background are ignored. */
UVCTX_EXTERN void uvctx_unref(uvctx_t* c);

/* Go's `defer cancel()`: cancels `c` if it can be cancelled (cancel,
 * deadline and merge contexts), even if others still hold references, then
 * drops a reference. Use it on the reference a constructor returned, once
 * the work it scoped is over; use uvctx_unref() for those taken with
 * uvctx_ref(). NULL and the background are ignored. */
UVCTX_EXTERN void uvctx_release(uvctx_t* c);

/* ------------------------------------------------------------------------ */
/* Watches                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_watch_s uvctx_watch_t;
typedef void (*uvctx_watch_cb)(uvctx_watch_t* w, int err);

/* A caller-allocated watch, like a libuv handle: `data` is yours and never
 * touched by uvctx, the rest is private. Embed it in the object whose work
 * the context scopes. */
struct uvctx_watch_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_watch_cb cb_;
  uvctx_loop_t* home_;
  struct uvctx_watch_s* next_;
  struct uvctx_watch_s** pprev_;
  uint64_t queued_at_; /* when the callback became due: a propagation stamp */
  uint64_t cause_id_;  /* the cancel that made it due, for traces */
  int state_;
  int err_;
  int flags_;
};

/* Calls cb(w, err) once `c` is done, on c's home loop thread, with c's
 * error (UV_ECANCELED or UV_ETIMEDOUT), exactly once unless
 * uvctx_watch_stop() returns 1 first. Never inside this call: if `c` is
 * already done, the callback is queued for the loop. `w` may be
 * uninitialized memory, or a watch that has fired or been stopped (a
 * callback may restart its own watch); it must stay valid until the
 * callback has run or uvctx_watch_stop() returned 1. The watch holds a
 * reference to `c` until just after the callback returns (or until the
 * stop). Starting a watch that is still pending is undefined, as with libuv
 * handles. On a context that is never done (background, without_cancel, or
 * a value context over one) the watch never fires and stays pending, which
 * keeps uvctx_loop_close() busy, until it is stopped. A pending watch on a
 * context with a deadline keeps uv_run() on its home loop alive while that
 * loop has a deadline armed; other watches do not. Callbacks queued from
 * the loop's own thread run before uv_run() returns; those queued from
 * other threads wake the loop but do not keep it alive. Any thread.
 * UV_EINVAL for NULL arguments (the callback will not run). */
UVCTX_EXTERN int uvctx_watch_start(uvctx_watch_t* w, uvctx_t* c,
                                   uvctx_watch_cb cb);

/* Stops a watch that was started at least once (on memory never started it
 * is undefined). Returns 1 if this call prevented the callback, also when
 * it was queued but had not run: it will never run, and the reference to
 * the context is dropped (which may free the context and run a value
 * destructor in this call). Returns 0 if the callback already ran or is
 * running, or the watch was already stopped; NULL returns 0. Any thread; on
 * the home loop's thread 0 means the callback has returned (or is the
 * caller), from another thread it does not: do not free `w` or what its
 * callback uses until you know it has returned. */
UVCTX_EXTERN int uvctx_watch_stop(uvctx_watch_t* w);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_H */
