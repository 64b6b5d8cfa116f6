/* uvctx metrics: what a loop knows, in the forms monitoring takes: log
 * fields made of context values (logfmt and JSON) and the Prometheus text
 * exposition of uvctx_loop_stats() (uvctx_metrics_format(), whose text
 * uvctx_metrics_free() frees).
 *
 * Include <uvctx/metrics.h>; it includes <uvctx.h>. See
 * docs/observability.md for the guide. */
#ifndef UVCTX_METRICS_H
#define UVCTX_METRICS_H

#include <uvctx.h>

#ifdef __cplusplus
extern "C" {
#endif

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
 * Bucket bounds are exact decimals of the nanosecond bounds of
 * uvctx_histogram_bound(), in seconds.
 *
 * On success stores a NUL-terminated text in *out (free it with
 * uvctx_metrics_free()) and its length in *len (len may be NULL), and
 * returns 0. UV_EINVAL for a NULL out, a NULL stats with n > 0 or a NULL
 * element; UV_ENOMEM. Any thread. */
UVCTX_EXTERN int uvctx_metrics_format(const uvctx_loop_stats_t* const* stats,
                                      const char* const* labels, size_t n,
                                      char** out, size_t* len);

/* The kinds of family of uvctx_metrics_format_table(). */
enum {
  UVCTX_METRIC_GAUGE = 1,     /* a uint64_t */
  UVCTX_METRIC_COUNTER = 2,   /* a uint64_t; name it ..._total */
  UVCTX_METRIC_HISTOGRAM = 3, /* a uvctx_histogram_t of nanoseconds, in
                                 seconds: _bucket{le=...}, _sum, _count */
  UVCTX_METRIC_MAX_GAUGE = 4  /* the max_ns of a uvctx_histogram_t, a gauge
                                 in seconds */
};

/* One family of a table: the field at `offset` of every row. */
typedef struct uvctx_metric_s {
  const char* name; /* a Prometheus metric name, used as it is */
  const char* help; /* one line */
  int type;         /* UVCTX_METRIC_* */
  size_t offset;    /* of the uint64_t or uvctx_histogram_t in a row */
} uvctx_metric_t;

/* The formatter behind uvctx_metrics_format(), for the stats structs of
 * other modules (the connection pool's, yours): writes each of the
 * `nmetrics` families, in order, with one sample per row labelled
 * <label>="labels[i]" (escaped; a NULL labels array or element: the row's
 * index). `label` must be a valid label name. Output, errors and freeing
 * as uvctx_metrics_format(); UV_EINVAL also for a NULL or empty label,
 * NULL metrics with nmetrics > 0, a NULL name or help, or an unknown type.
 * Any thread. */
UVCTX_EXTERN int uvctx_metrics_format_table(const uvctx_metric_t* metrics,
                                            size_t nmetrics, const char* label,
                                            const void* const* rows,
                                            const char* const* labels, size_t n,
                                            char** out, size_t* len);

/* Frees a text returned by uvctx_metrics_format() or
 * uvctx_metrics_format_table(). NULL is ignored. */
UVCTX_EXTERN void uvctx_metrics_free(char* text);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_METRICS_H */
