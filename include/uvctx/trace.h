/* uvctx tracing: traces of context trees (Chrome Trace Event JSON, for
 * Perfetto and chrome://tracing). Log fields and the Prometheus exposition
 * of uvctx_loop_stats() are in <uvctx/metrics.h>.
 *
 * Include <uvctx/trace.h>; it includes <uvctx.h>.
 *
 * Tracing is off by default and costs one relaxed atomic load per traced
 * operation while off. Switched on for a loop, every context homed on it
 * records its creation and freeing, every cancel whose root is homed on it
 * and every deadline of it that fires record an event, and every watch
 * homed on it the dispatch of its callback, into a fixed-size ring that the
 * loop's thread drains to the sink. Events go to the tracer of the home
 * loop only; a loop that is not traced records nothing. Producers on any
 * thread never block: when the ring is full the event is counted as
 * dropped, and the count is written into the trace when it stops. Writing
 * happens on the loop's thread, so a slow sink slows that loop, not the
 * threads that cancel. One sink per loop: trace each loop into its own
 * file.
 *
 * See docs/observability.md for the guide: counters, tracing, Perfetto, the
 * uvctx-trace tool, log fields and a scrape configuration. */
#ifndef UVCTX_TRACE_H
#define UVCTX_TRACE_H

#include <uvctx.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Tracing                                                                  */
/* ------------------------------------------------------------------------ */

/* Default and bounds of uvctx_trace_options_t.ring_events. */
#define UVCTX_TRACE_DEFAULT_RING (1u << 16)
#define UVCTX_TRACE_MIN_RING 16u
#define UVCTX_TRACE_MAX_RING (1u << 24)
/* Default of uvctx_trace_options_t.flush_ms. */
#define UVCTX_TRACE_DEFAULT_FLUSH_MS 10

typedef struct uvctx_trace_options_s {
  /* Capacity of the event ring in events (about 64 bytes each), rounded up
   * to a power of two; 0 for UVCTX_TRACE_DEFAULT_RING. UV_EINVAL outside
   * [UVCTX_TRACE_MIN_RING, UVCTX_TRACE_MAX_RING]. */
  unsigned ring_events;
  /* The ring is drained after every loop iteration and at least every
   * flush_ms milliseconds while the loop runs (the sink is fflush()ed
   * then); 0 for UVCTX_TRACE_DEFAULT_FLUSH_MS. */
  unsigned flush_ms;
} uvctx_trace_options_t;

/* Event counts of a tracer. Every event a hook produced for the loop is
 * either written or dropped: emitted == written + dropped once the tracer
 * has stopped (while it runs, the difference is still in the ring). */
typedef struct uvctx_trace_counts_s {
  uint64_t emitted;
  uint64_t written;
  uint64_t dropped; /* the ring was full */
} uvctx_trace_counts_t;

/* Starts tracing the contexts and watches homed on `l` into `sink`, which
 * stays the caller's: it is flushed but not closed by
 * uvctx_loop_trace_stop(). `opts` may be NULL for the defaults. The ring is
 * allocated here, and two unreferenced handles (a uv_check_t and a
 * uv_timer_t) are added to the loop; they never keep uv_run() alive.
 *
 * Loop thread only. Returns 0, UV_EINVAL (NULL argument, bad option, or a
 * loop being closed: uvctx_loop_close() has succeeded on it), UV_EBUSY if
 * `l` is already traced, UV_ENOMEM, or a libuv error. Write
 * errors on the sink are not reported here: they make
 * uvctx_loop_trace_stop() return UV_EIO. */
UVCTX_EXTERN int uvctx_loop_trace_start(uvctx_loop_t* l, FILE* sink,
                                        const uvctx_trace_options_t* opts);

/* uvctx_loop_trace_start() into a file created (or truncated) at `path`,
 * closed by uvctx_loop_trace_stop(). UV_EINVAL, UV_EBUSY, UV_ENOMEM, or the
 * error of fopen() as a libuv code. The checks behind UV_EINVAL and UV_EBUSY
 * (arguments, options, a closing loop, a loop already traced) are all made
 * before the file is created or truncated: a call refused with either
 * leaves an existing file alone. */
UVCTX_EXTERN int uvctx_loop_trace_open(uvctx_loop_t* l, const char* path,
                                       const uvctx_trace_options_t* opts);

/* Stops tracing `l`: no event is recorded for it after this call begins.
 * Drains the ring, writes the end of the JSON document (with the event
 * counts), flushes the sink (closes it if uvctx_loop_trace_open() opened
 * it) and closes the tracer's handles; their memory is released once the
 * loop has run again, as with uv_close(). If `counts` is not NULL it
 * receives the final counts.
 *
 * Loop thread only; call it before uvctx_loop_close(), then run the loop
 * once more as uvctx_loop_close() requires anyway. Returns 0, UV_EINVAL if
 * `l` is NULL or not traced, or UV_EIO if writing to the sink failed at any
 * point (the trace is then incomplete). */
UVCTX_EXTERN int uvctx_loop_trace_stop(uvctx_loop_t* l,
                                       uvctx_trace_counts_t* counts);

/* The counts of the tracer running on `l` so far. Any thread. UV_EINVAL if
 * `l` or `out` is NULL or `l` is not traced. */
UVCTX_EXTERN int uvctx_loop_trace_counts(const uvctx_loop_t* l,
                                         uvctx_trace_counts_t* out);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_TRACE_H */
