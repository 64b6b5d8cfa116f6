/* uvctx observability: tracing of context trees (Chrome Trace Event JSON,
 * for Perfetto and chrome://tracing), log fields from context values, and
 * the Prometheus text exposition of uvctx_loop_stats().
 *
 * Include <uvctx/trace.h>; it includes <uvctx.h>.
 *
 * Tracing is off by default and costs one relaxed atomic load per traced
 * operation while off. Switched on for a loop, every context homed on it
 * records its creation, cancellation and freeing, and every watch homed on
 * it the dispatch of its callback, into a fixed-size ring that the loop's
 * thread drains to the sink. Producers never block: when the ring is full
 * the event is counted as dropped, and the count is written into the trace
 * when it stops.
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

/* ------------------------------------------------------------------------ */
/* Log fields                                                               */
/* ------------------------------------------------------------------------ */

enum {
  UVCTX_LOG_LOGFMT = 1, /* name=value name2="two words" */
  UVCTX_LOG_JSON = 2    /* "name":"value","name2":"two words" */
};

/* Formats the values visible from `c` whose keys have a `format` callback:
 * the innermost binding of each key, outermost key first (the order in which
 * the request bound them). A key bound innermost to NULL, or whose format
 * callback returns a negative number, is left out.
 *
 * LOGFMT writes `name=value` pairs separated by one space; a value is
 * quoted when empty or when it holds a space, '=', '"', a backslash or a
 * control character, and inside quotes '"' '\\' and control characters are
 * escaped (\n \r \t \u00XX). Characters of a name that logfmt cannot carry
 * (space, '=', '"', control characters) become '_'.
 *
 * JSON writes `"name":"value"` members separated by ',' and no braces, so
 * that they can be spliced into an object; names and values are escaped
 * as RFC 8259 requires. In both formats a byte sequence that is not valid
 * UTF-8 is replaced by U+FFFD.
 *
 * snprintf-style: writes at most `size` bytes including a terminating NUL
 * (buf may be NULL when size is 0) and returns the length the whole text
 * needs, excluding the NUL. Returns UV_EINVAL for a NULL context, an unknown
 * format or a NULL buf with a non-zero size, UV_ENOMEM if a value longer
 * than 1 KiB could not be formatted for lack of memory, or UV_E2BIG if the
 * text would exceed INT_MAX. Any thread; the format callbacks run on the
 * calling thread. */
UVCTX_EXTERN int uvctx_log_fields(const uvctx_t* c, int format, char* buf,
                                  size_t size);

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

/* Formats the stats of `n` loops (n may be 0) in the Prometheus text
 * exposition format 0.0.4, each sample labelled loop="labels[i]" (escaped
 * as the format requires; a NULL labels array, or a NULL element, labels
 * loop i with its index). Families, each with # HELP and # TYPE:
 *
 *   uvctx_contexts{kind=...}              gauge, by kind
 *   uvctx_watches, uvctx_deadlines_armed  gauges
 *   uvctx_contexts_created_total, uvctx_cancels_total,
 *   uvctx_remote_wakeups_total, uvctx_callbacks_total,
 *   uvctx_deadlines_fired_total           counters
 *   uvctx_cancel_propagation_seconds,
 *   uvctx_deadline_lateness_seconds       histograms: cumulative
 *                                         _bucket{le=...} (the 63 finite
 *                                         bounds and +Inf), _sum, _count
 *   uvctx_cancel_propagation_max_seconds,
 *   uvctx_deadline_lateness_max_seconds   gauges
 *
 * On success stores a NUL-terminated text in *out (free it with
 * uvctx_metrics_free()) and its length in *len (len may be NULL), and
 * returns 0. UV_EINVAL for a NULL out, a NULL stats with n > 0 or a NULL
 * element; UV_ENOMEM. Any thread. */
UVCTX_EXTERN int
uvctx_loop_stats_format_prometheus(const uvctx_loop_stats_t* const* stats,
                                   const char* const* labels, size_t n,
                                   char** out, size_t* len);

/* Frees a text returned by uvctx_loop_stats_format_prometheus(). NULL is
 * ignored. */
UVCTX_EXTERN void uvctx_metrics_free(char* text);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_TRACE_H */
