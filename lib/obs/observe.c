/* observe.c owns the text forms of what uvctx knows: log fields made of
 * context values (logfmt and JSON) and the Prometheus text exposition of
 * uvctx_loop_stats(). Tracing lives in trace.c; escaping in common/text.c. */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/debug.h"
#include "common/text.h"
#include "core/internal.h"
#include "uvctx/metrics.h"

/* ---- text sinks ---------------------------------------------------------- */

/* snprintf-style output: counts every byte, stores what fits. */
typedef struct fixed_s {
  char* buf;
  size_t size;
  size_t len;
} fixed_t;

static void fx_put(fixed_t* o, const char* s, size_t n) {
  if (o->len < o->size) {
    size_t room = o->size - o->len;
    memcpy(o->buf + o->len, s, n < room ? n : room);
  }
  o->len += n;
}

static void fx_ch(fixed_t* o, char ch) {
  fx_put(o, &ch, 1);
}

static void fx_sink(void* o, const char* s, size_t n) {
  fx_put(o, s, n);
}

/* Writes s[0..n) escaped for a double-quoted JSON or logfmt string (both
 * use the same escapes). */
static void put_escaped(fixed_t* o, const char* s, size_t n) {
  uvctx__text_escape(UVCTX__TEXT_JSON, s, n, fx_sink, o);
}

/* ---- log fields ---------------------------------------------------------- */

/* Is `v` the innermost binding of its key seen from `c`? */
static int innermost(const uvctx_t* c, const uvctx__value_t* v) {
  for (; c != NULL && c != &v->base; c = c->parent)
    if (c->kind == UVCTX__VALUE && ((const uvctx__value_t*)c)->key == v->key)
      return 0;
  return 1;
}

static int loggable(const uvctx_t* from, const uvctx_t* c) {
  const uvctx__value_t* v;
  if (c->kind != UVCTX__VALUE)
    return 0;
  v = (const uvctx__value_t*)c;
  return v->key->format != NULL && v->value != NULL && innermost(from, v);
}

static int logfmt_needs_quotes(const char* s, size_t n) {
  size_t i;
  if (n == 0)
    return 1;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
      return 1;
  }
  return 0;
}

static void put_logfmt_name(fixed_t* o, const char* name) {
  if (name[0] == '\0')
    fx_ch(o, '_');
  else
    uvctx__text_escape(UVCTX__TEXT_LOGFMT_NAME, name, strlen(name), fx_sink, o);
}

/* Formats one value through its key; 1 if written, 0 if skipped, or an
 * error. Values longer than the stack buffer are formatted again into a
 * block of the right size. */
static int put_field(fixed_t* o, int format, const uvctx__value_t* v,
                     int first) {
  char stack[1024];
  char* text = stack;
  const char* name = v->key->name != NULL ? v->key->name : "";
  int n = v->key->format(v->value, stack, sizeof(stack));
  if (n < 0)
    return 0;
  if ((size_t)n >= sizeof(stack)) {
    int again;
    text = uvctx__malloc((size_t)n + 1);
    if (text == NULL)
      return UV_ENOMEM;
    again = v->key->format(v->value, text, (size_t)n + 1);
    if (again < 0) {
      uvctx__free(text);
      return 0;
    }
    if (again < n) /* a value that shrank between the two calls */
      n = again;
  }
  if (!first)
    fx_ch(o, format == UVCTX_LOG_JSON ? ',' : ' ');
  if (format == UVCTX_LOG_JSON) {
    fx_ch(o, '"');
    put_escaped(o, name, strlen(name));
    fx_put(o, "\":\"", 3);
    put_escaped(o, text, (size_t)n);
    fx_ch(o, '"');
  } else {
    put_logfmt_name(o, name);
    fx_ch(o, '=');
    if (logfmt_needs_quotes(text, (size_t)n)) {
      fx_ch(o, '"');
      put_escaped(o, text, (size_t)n);
      fx_ch(o, '"');
    } else {
      put_escaped(o, text, (size_t)n);
    }
  }
  if (text != stack)
    uvctx__free(text);
  return 1;
}

int uvctx_log_fields(const uvctx_t* c, int format, char* buf, size_t size) {
  const uvctx_t* small[32];
  const uvctx_t** list = small;
  const uvctx_t* it;
  size_t count = 0, i;
  fixed_t o;
  int rc = 0, first = 1;

  if (c == NULL)
    return UVCTX__EINVAL("the context is NULL");
  if (format != UVCTX_LOG_LOGFMT && format != UVCTX_LOG_JSON)
    return UVCTX__EINVAL("unknown format (UVCTX_LOG_LOGFMT or _JSON)");
  if (buf == NULL && size != 0)
    return UVCTX__EINVAL("buf is NULL but size is not 0");
  o.buf = buf;
  o.size = size;
  o.len = 0;

  /* The walk runs innermost first; fields are written outermost first, so
   * the loggable contexts are listed, then written in reverse. */
  for (it = c; it != NULL; it = it->parent)
    if (loggable(c, it))
      count++;
  if (count > sizeof(small) / sizeof(small[0])) {
    list = uvctx__malloc(count * sizeof(*list));
    if (list == NULL)
      return UV_ENOMEM;
  }
  i = 0;
  for (it = c; it != NULL && i < count; it = it->parent)
    if (loggable(c, it))
      list[i++] = it;

  while (i-- > 0) {
    int r = put_field(&o, format, (const uvctx__value_t*)list[i], first);
    if (r < 0) {
      rc = r;
      break;
    }
    if (r > 0)
      first = 0;
  }
  if (list != small)
    uvctx__free(list);
  if (rc != 0)
    return rc;
  if (size > 0)
    buf[o.len < size ? o.len : size - 1] = '\0';
  if (o.len > INT_MAX)
    return UV_E2BIG;
  return (int)o.len;
}

/* ---- Prometheus text exposition ------------------------------------------ */

/* A growing text in library memory. */
typedef struct text_s {
  char* p;
  size_t len;
  size_t cap;
  int oom;
} text_t;

static void tx_grow(text_t* t, size_t need) {
  size_t cap;
  char* p;
  if (t->oom || t->len + need < t->cap)
    return;
  cap = t->cap != 0 ? t->cap : 4096;
  while (cap <= t->len + need)
    cap *= 2;
  p = uvctx__realloc(t->p, cap);
  if (p == NULL) {
    t->oom = 1;
    return;
  }
  t->p = p;
  t->cap = cap;
}

static void tx_put(text_t* t, const char* s, size_t n) {
  tx_grow(t, n);
  if (t->oom)
    return;
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

static void tx_printf(text_t* t, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tx_printf(text_t* t, const char* fmt, ...) {
  char tmp[256];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(tmp)) { /* only short pieces are made */
    t->oom = 1;
    return;
  }
  tx_put(t, tmp, (size_t)n);
}

static void tx_sink(void* t, const char* s, size_t n) {
  tx_put(t, s, n);
}

/* A label value, escaped as the exposition format requires. */
static void tx_label(text_t* t, const char* s) {
  uvctx__text_escape(UVCTX__TEXT_PROM_LABEL, s, strlen(s), tx_sink, t);
}

/* Nanoseconds as exact decimal seconds, without trailing zeros. */
static void seconds_str(char* buf, size_t size, uint64_t ns) {
  char frac[16];
  int end;
  snprintf(frac, sizeof(frac), "%09u", (unsigned)(ns % 1000000000u));
  for (end = 9; end > 0 && frac[end - 1] == '0'; end--)
    ;
  frac[end] = '\0';
  snprintf(buf, size, "%" PRIu64 "%s%s", ns / 1000000000u, end ? "." : "",
           frac);
}

static void tx_seconds(text_t* t, uint64_t ns) {
  char buf[40];
  seconds_str(buf, sizeof(buf), ns);
  tx_put(t, buf, strlen(buf));
}

typedef struct prom_s {
  text_t t;
  const void* const* rows;
  const char* label; /* the name of the label that tells rows apart */
  const char* const* labels;
  size_t n;
} prom_t;

static void family(prom_t* p, const char* name, const char* type,
                   const char* help) {
  tx_printf(&p->t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{<label>="...",<extra>} — extra is a preformatted label or NULL. */
static void series(prom_t* p, const char* name, size_t i, const char* extra) {
  tx_printf(&p->t, "%s{", name);
  tx_put(&p->t, p->label, strlen(p->label));
  tx_put(&p->t, "=\"", 2);
  if (p->labels != NULL && p->labels[i] != NULL)
    tx_label(&p->t, p->labels[i]);
  else
    tx_printf(&p->t, "%zu", i);
  tx_put(&p->t, "\"", 1);
  if (extra != NULL)
    tx_printf(&p->t, ",%s", extra);
  tx_put(&p->t, "} ", 2);
}

#define FIELD(s, off) (*(const uint64_t*)((const char*)(s) + (off)))

static void scalar(prom_t* p, const char* name, const char* type,
                   const char* help, size_t off) {
  size_t i;
  family(p, name, type, help);
  for (i = 0; i < p->n; i++) {
    series(p, name, i, NULL);
    tx_printf(&p->t, "%" PRIu64 "\n", FIELD(p->rows[i], off));
  }
}

static void histogram(prom_t* p, const char* name, const char* help,
                      size_t off) {
  char sub[96];
  char le[64];
  char secs[40];
  size_t i;
  unsigned b;
  family(p, name, "histogram", help);
  for (i = 0; i < p->n; i++) {
    const uvctx_histogram_t* h =
        (const uvctx_histogram_t*)((const char*)p->rows[i] + off);
    uint64_t cum = 0;
    snprintf(sub, sizeof(sub), "%s_bucket", name);
    /* The last bucket has no finite bound: it is the +Inf one. */
    for (b = 0; b + 1 < UVCTX_HISTOGRAM_BUCKETS; b++) {
      cum += h->buckets[b];
      seconds_str(secs, sizeof(secs), uvctx_histogram_bound(b));
      snprintf(le, sizeof(le), "le=\"%s\"", secs);
      series(p, sub, i, le);
      tx_printf(&p->t, "%" PRIu64 "\n", cum);
    }
    cum += h->buckets[UVCTX_HISTOGRAM_BUCKETS - 1];
    series(p, sub, i, "le=\"+Inf\"");
    tx_printf(&p->t, "%" PRIu64 "\n", cum);
    snprintf(sub, sizeof(sub), "%s_sum", name);
    series(p, sub, i, NULL);
    tx_seconds(&p->t, h->sum_ns);
    tx_put(&p->t, "\n", 1);
    snprintf(sub, sizeof(sub), "%s_count", name);
    series(p, sub, i, NULL);
    tx_printf(&p->t, "%" PRIu64 "\n", h->count);
  }
}

static void max_gauge(prom_t* p, const char* name, const char* help,
                      size_t off) {
  size_t i;
  family(p, name, "gauge", help);
  for (i = 0; i < p->n; i++) {
    const uvctx_histogram_t* h =
        (const uvctx_histogram_t*)((const char*)p->rows[i] + off);
    series(p, name, i, NULL);
    tx_seconds(&p->t, h->max_ns);
    tx_put(&p->t, "\n", 1);
  }
}

/* The index of the first NULL row, or n. */
static size_t first_null(const void* const* rows, size_t n) {
  size_t i;
  for (i = 0; i < n && rows[i] != NULL; i++)
    ;
  return i;
}

/* Starts the text (an empty exposition is still a string). */
static void prom_begin(prom_t* p, const char* label, const void* const* rows,
                       const char* const* labels, size_t n) {
  memset(p, 0, sizeof(*p));
  p->rows = rows;
  p->label = label;
  p->labels = labels;
  p->n = n;
  tx_grow(&p->t, 1);
  if (!p->t.oom)
    p->t.p[0] = '\0';
}

static void prom_table(prom_t* p, const uvctx_metric_t* m, size_t nm) {
  size_t i;
  for (i = 0; i < nm; i++) {
    switch (m[i].type) {
      case UVCTX_METRIC_GAUGE:
        scalar(p, m[i].name, "gauge", m[i].help, m[i].offset);
        break;
      case UVCTX_METRIC_COUNTER:
        scalar(p, m[i].name, "counter", m[i].help, m[i].offset);
        break;
      case UVCTX_METRIC_HISTOGRAM:
        histogram(p, m[i].name, m[i].help, m[i].offset);
        break;
      default:
        max_gauge(p, m[i].name, m[i].help, m[i].offset);
        break;
    }
  }
}

static int prom_end(prom_t* p, char** out, size_t* len) {
  if (p->t.oom) {
    uvctx__free(p->t.p);
    return UV_ENOMEM;
  }
  *out = p->t.p;
  if (len != NULL)
    *len = p->t.len;
  return 0;
}

#define LOOP_FIELD(f) offsetof(uvctx_loop_stats_t, f)

static const uvctx_metric_t loop_metrics[] = {
    {"uvctx_watches", "Watches homed on the loop whose callback has not run.",
     UVCTX_METRIC_GAUGE, LOOP_FIELD(watches)},
    {"uvctx_deadlines_armed",
     "Deadline entries armed in the loop's timer heap.", UVCTX_METRIC_GAUGE,
     LOOP_FIELD(deadlines)},
    {"uvctx_contexts_created_total", "Contexts created homed on the loop.",
     UVCTX_METRIC_COUNTER, LOOP_FIELD(created)},
    {"uvctx_cancels_total", "Contexts homed on the loop that became done.",
     UVCTX_METRIC_COUNTER, LOOP_FIELD(cancels)},
    {"uvctx_remote_wakeups_total",
     "Watch callbacks queued on the loop by other threads.",
     UVCTX_METRIC_COUNTER, LOOP_FIELD(remote_wakeups)},
    {"uvctx_callbacks_total", "Watch callbacks run on the loop.",
     UVCTX_METRIC_COUNTER, LOOP_FIELD(callbacks)},
    {"uvctx_deadlines_fired_total",
     "Deadline entries that expired on the loop.", UVCTX_METRIC_COUNTER,
     LOOP_FIELD(deadlines_fired)},
    {"uvctx_cancel_propagation_seconds",
     "From a cancel or deadline expiry to the start of each watch callback "
     "it caused.",
     UVCTX_METRIC_HISTOGRAM, LOOP_FIELD(propagation)},
    {"uvctx_cancel_propagation_max_seconds",
     "Largest cancel propagation delay seen on the loop.",
     UVCTX_METRIC_MAX_GAUGE, LOOP_FIELD(propagation)},
    {"uvctx_deadline_lateness_seconds",
     "From a deadline to the timer callback that cancelled it.",
     UVCTX_METRIC_HISTOGRAM, LOOP_FIELD(lateness)},
    {"uvctx_deadline_lateness_max_seconds",
     "Largest deadline lateness seen on the loop.", UVCTX_METRIC_MAX_GAUGE,
     LOOP_FIELD(lateness)},
};

int uvctx_metrics_format(const uvctx_loop_stats_t* const* stats,
                         const char* const* labels, size_t n, char** out,
                         size_t* len) {
  static const struct {
    const char* kind;
    size_t off;
  } kinds[] = {
      {"cancel", LOOP_FIELD(contexts_cancel)},
      {"deadline", LOOP_FIELD(contexts_deadline)},
      {"any", LOOP_FIELD(contexts_any)},
      {"value", LOOP_FIELD(contexts_value)},
      {"without_cancel", LOOP_FIELD(contexts_without_cancel)},
  };
  prom_t p;
  size_t i, k;

  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  if (stats == NULL && n > 0)
    return UVCTX__EINVAL("stats is NULL but n is not 0");
  if (n > 0 && first_null((const void* const*)stats, n) != n)
    return UVCTX__EINVAL("an element of stats is NULL");
  prom_begin(&p, "loop", (const void* const*)stats, labels, n);
  family(&p, "uvctx_contexts", "gauge",
         "Contexts homed on the loop that are still referenced, by kind.");
  for (i = 0; i < n; i++) {
    for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
      char extra[48];
      snprintf(extra, sizeof(extra), "kind=\"%s\"", kinds[k].kind);
      series(&p, "uvctx_contexts", i, extra);
      tx_printf(&p.t, "%" PRIu64 "\n", FIELD(stats[i], kinds[k].off));
    }
  }
  prom_table(&p, loop_metrics, sizeof(loop_metrics) / sizeof(loop_metrics[0]));
  return prom_end(&p, out, len);
}

int uvctx_metrics_format_table(const uvctx_metric_t* metrics, size_t nmetrics,
                               const char* label, const void* const* rows,
                               const char* const* labels, size_t n, char** out,
                               size_t* len) {
  prom_t p;
  size_t i;
  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  if (rows == NULL && n > 0)
    return UVCTX__EINVAL("rows is NULL but n is not 0");
  if (n > 0 && first_null(rows, n) != n)
    return UVCTX__EINVAL("an element of rows is NULL");
  if (label == NULL || label[0] == '\0')
    return UVCTX__EINVAL("label is NULL or empty");
  if (metrics == NULL && nmetrics > 0)
    return UVCTX__EINVAL("metrics is NULL but nmetrics is not 0");
  for (i = 0; i < nmetrics; i++)
    if (metrics[i].name == NULL || metrics[i].help == NULL ||
        metrics[i].type < UVCTX_METRIC_GAUGE ||
        metrics[i].type > UVCTX_METRIC_MAX_GAUGE)
      return UVCTX__EINVAL("a metric has no name or help, or a bad type");
  prom_begin(&p, label, rows, labels, n);
  prom_table(&p, metrics, nmetrics);
  return prom_end(&p, out, len);
}

void uvctx_metrics_free(char* text) {
  uvctx__free(text);
}
