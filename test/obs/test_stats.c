/* test_stats.c pins the always-on counters and their text forms: histogram
 * buckets and quantiles against known inputs, uvctx_loop_stats() counters
 * moving as the loop works, the Prometheus exposition (checked by a small
 * parser here, and by promtool when installed) and log fields
 * (lib/obs/observe.c) with their quoting and escaping. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>

#include "helpers.h"
#include "uvctx/metrics.h"
#include "uvctx/trace.h"

/* ---- histograms ---------------------------------------------------------- */

START_TEST(histogram_bounds) {
  unsigned i;
  ck_assert_uint_eq(uvctx_histogram_bound(0), 128);
  ck_assert_uint_eq(uvctx_histogram_bound(1), 192);
  ck_assert_uint_eq(uvctx_histogram_bound(2), 256);
  ck_assert_uint_eq(uvctx_histogram_bound(3), 384);
  ck_assert_uint_eq(uvctx_histogram_bound(20), 1u << 17);
  ck_assert_uint_eq(uvctx_histogram_bound(62), (uint64_t)1 << 38);
  ck_assert_uint_eq(uvctx_histogram_bound(63), UINT64_MAX);
  ck_assert_uint_eq(uvctx_histogram_bound(1000), UINT64_MAX);
  for (i = 1; i < UVCTX_HISTOGRAM_BUCKETS; i++)
    ck_assert_uint_gt(uvctx_histogram_bound(i), uvctx_histogram_bound(i - 1));
}
END_TEST

START_TEST(histogram_buckets_and_quantiles) {
  uvctx_histogram_t h;
  int i;
  memset(&h, 0, sizeof(h));
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.5), 0);
  ck_assert_uint_eq(uvctx_histogram_quantile(NULL, 0.5), 0);

  /* Bucket i holds bound(i-1) < v <= bound(i). */
  uvctx_histogram_record(&h, 0);
  uvctx_histogram_record(&h, 128);
  ck_assert_uint_eq(h.buckets[0], 2);
  uvctx_histogram_record(&h, 129);
  uvctx_histogram_record(&h, 192);
  ck_assert_uint_eq(h.buckets[1], 2);
  uvctx_histogram_record(&h, 193);
  ck_assert_uint_eq(h.buckets[2], 1);
  uvctx_histogram_record(&h, ((uint64_t)1 << 38) + 1);
  ck_assert_uint_eq(h.buckets[63], 1);
  ck_assert_uint_eq(h.count, 6);
  ck_assert_uint_eq(h.sum_ns,
                    0 + 128 + 129 + 192 + 193 + ((uint64_t)1 << 38) + 1);
  ck_assert_uint_eq(h.max_ns, ((uint64_t)1 << 38) + 1);

  /* 90 values of 1 us and 10 of 1 ms: quantiles are bucket bounds, capped
   * at the maximum. */
  memset(&h, 0, sizeof(h));
  for (i = 0; i < 90; i++)
    uvctx_histogram_record(&h, 1000);
  for (i = 0; i < 10; i++)
    uvctx_histogram_record(&h, 1000000);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.5), 1024);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.9), 1024);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.91), 1000000);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.99), 1000000);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 1.0), 1000000);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 0.0), 1024);
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, 7.0), 1000000);
  /* NaN is taken as 0 (UBSan flags the conversion otherwise). */
  ck_assert_uint_eq(uvctx_histogram_quantile(&h, NAN), 1024);
}
END_TEST

/* ---- loop stats ---------------------------------------------------------- */

static int fired;
static void count_cb(uvctx_watch_t* w, int err) {
  (void)w;
  (void)err;
  fired++;
}

static uvctx_loop_stats_t stats(void) {
  uvctx_loop_stats_t s;
  ck_assert_int_eq(uvctx_loop_stats(uvt_l, &s), 0);
  return s;
}

static void cancel_from_thread(void* arg) {
  uvctx_cancel(arg);
}

START_TEST(loop_stats_move) {
  uvctx_t *a, *b, *v, *d, *any, *wc;
  uvctx_t* pair[2];
  uvctx_watch_t w[3];
  uvctx_loop_stats_t s0 = stats(), s;
  uv_thread_t th;
  static const uvctx_key_t k = {.name = "k"};

  ck_assert_int_eq(uvctx_loop_stats(NULL, &s), UV_EINVAL);
  ck_assert_int_eq(uvctx_loop_stats(uvt_l, NULL), UV_EINVAL);
  ck_assert_uint_eq(s0.contexts, 0);
  ck_assert_uint_eq(s0.created, 0);

  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a), 0);
  ck_assert_int_eq(uvctx_with_cancel(a, &b), 0);
  ck_assert_int_eq(uvctx_with_value(b, &k, NULL, &v), 0);
  ck_assert_int_eq(uvctx_with_timeout(a, 1, &d), 0);
  pair[0] = a, pair[1] = b;
  ck_assert_int_eq(uvctx_any(pair, 2, &any), 0);
  ck_assert_int_eq(uvctx_without_cancel(a, &wc), 0);
  s = stats();
  ck_assert_uint_eq(s.contexts, 6);
  ck_assert_uint_eq(s.contexts_cancel, 2);
  ck_assert_uint_eq(s.contexts_value, 1);
  ck_assert_uint_eq(s.contexts_deadline, 1);
  ck_assert_uint_eq(s.contexts_any, 1);
  ck_assert_uint_eq(s.contexts_without_cancel, 1);
  ck_assert_uint_eq(s.created, 6);
  ck_assert_uint_eq(s.deadlines, 1);
  ck_assert_uint_eq(s.cancels, 0);

  /* The deadline fires: one expiry, one lateness sample, one callback. */
  fired = 0;
  ck_assert_int_eq(uvctx_watch_start(&w[0], d, count_cb), 0);
  ck_assert_uint_eq(stats().watches, 1);
  UVT_RUN_UNTIL(fired == 1);
  s = stats();
  ck_assert_uint_eq(s.deadlines_fired, 1);
  ck_assert_uint_eq(s.lateness.count, 1);
  ck_assert_uint_eq(s.deadlines, 0);
  ck_assert_uint_eq(s.cancels, 1);
  ck_assert_uint_eq(s.callbacks, 1);
  ck_assert_uint_eq(s.propagation.count, 1);
  ck_assert_uint_eq(s.watches, 0);
  ck_assert_uint_eq(s.remote_wakeups, 0);

  /* A cancel from another thread: a remote wake-up, and a, b and the merge
   * become done (three more cancels). */
  ck_assert_int_eq(uvctx_watch_start(&w[1], b, count_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&w[2], any, count_cb), 0);
  ck_assert_int_eq(uv_thread_create(&th, cancel_from_thread, a), 0);
  ck_assert_int_eq(uv_thread_join(&th), 0);
  UVT_RUN_UNTIL(fired == 3);
  s = stats();
  ck_assert_uint_eq(s.cancels, 4);
  ck_assert_uint_eq(s.callbacks, 3);
  ck_assert_uint_eq(s.remote_wakeups, 2);
  ck_assert_uint_eq(s.propagation.count, 3);
  ck_assert_uint_ge(s.propagation.max_ns, 1);

  uvctx_release(wc);
  uvctx_release(any);
  uvctx_release(d);
  uvctx_release(v);
  uvctx_release(b);
  uvctx_release(a);
  s = stats();
  ck_assert_uint_eq(s.contexts, 0);
  ck_assert_uint_eq(s.contexts_cancel + s.contexts_deadline + s.contexts_any +
                        s.contexts_value + s.contexts_without_cancel,
                    0);
  ck_assert_uint_eq(s.created, 6);
}
END_TEST

/* ---- Prometheus text ----------------------------------------------------- */

/* A checker for the text exposition format 0.0.4, strict enough to catch
 * what Prometheus would reject: metric and label names, quoted and escaped
 * label values, float sample values, a # TYPE before any sample of its
 * family (families not interleaved), no duplicate series, counters named
 * _total, and histograms with increasing `le`, cumulative bucket counts,
 * +Inf equal to _count. Returns NULL or what is wrong. */
#define MAXSERIES 4096
static char seen_series[MAXSERIES][512]; /* a line fits in 512 */
static size_t n_series;

static int name_ok(const char* s, size_t n) {
  size_t i;
  if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
    return 0;
  for (i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
      return 0;
  return 1;
}

static const char* check_exposition(const char* text) {
  static char why[256];
  char family[128] = "", type[32] = "";
  char done_families[64][128];
  size_t n_done = 0, i;
  double last_le = -1, last_bucket = -1, inf_count = -1;
  char last_hist_key[512] = "";
  const char* line = text;
  n_series = 0;
  while (*line != '\0') {
    const char* end = strchr(line, '\n');
    char buf[512];
    size_t len;
    if (end == NULL)
      return "text does not end with a newline";
    len = (size_t)(end - line);
    if (len >= sizeof(buf))
      return "line too long";
    memcpy(buf, line, len);
    buf[len] = '\0';
    line = end + 1;
    if (strncmp(buf, "# HELP ", 7) == 0)
      continue;
    if (strncmp(buf, "# TYPE ", 7) == 0) {
      char name[128], t[32];
      if (sscanf(buf + 7, "%127s %31s", name, t) != 2)
        return "bad # TYPE";
      for (i = 0; i < n_done; i++)
        if (strcmp(done_families[i], name) == 0)
          return "family declared twice";
      if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram"))
        return "unknown type";
      if (strcmp(t, "counter") == 0 &&
          (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
        return "counter not named _total";
      snprintf(done_families[n_done++], sizeof(done_families[0]), "%s", name);
      snprintf(family, sizeof(family), "%s", name);
      snprintf(type, sizeof(type), "%s", t);
      continue;
    }
    if (buf[0] == '#')
      return "unknown comment";
    {
      /* name{labels} value */
      char* p = buf;
      char* brace = strchr(buf, '{');
      char key[160];
      char le[160] = "";
      char nokey[512];
      size_t nlen;
      double value;
      char* vend;
      int is_bucket;
      if (brace == NULL)
        return "sample without labels";
      nlen = (size_t)(brace - p);
      if (!name_ok(p, nlen))
        return "bad metric name";
      snprintf(key, sizeof(key), "%.*s", (int)nlen, p);
      if (strcmp(type, "histogram") == 0) {
        size_t fl = strlen(family);
        if (strncmp(key, family, fl) != 0 ||
            (strcmp(key + fl, "_bucket") && strcmp(key + fl, "_sum") &&
             strcmp(key + fl, "_count")))
          return "histogram sample outside its family";
      } else if (strcmp(key, family) != 0) {
        return "sample before its # TYPE";
      }
      is_bucket = strlen(key) > 7 && !strcmp(key + strlen(key) - 7, "_bucket");
      /* labels */
      p = brace + 1;
      strcpy(nokey, key);
      strcat(nokey, "{");
      while (*p != '}') {
        char* eq = strchr(p, '=');
        char lname[64], lval[128];
        size_t vl = 0;
        if (eq == NULL || !name_ok(p, (size_t)(eq - p)))
          return "bad label name";
        snprintf(lname, sizeof(lname), "%.*s", (int)(eq - p), p);
        p = eq + 1;
        if (*p != '"')
          return "unquoted label value";
        p++;
        while (*p != '"') {
          if (*p == '\0')
            return "unterminated label value";
          if (*p == '\\') {
            p++;
            if (*p != '\\' && *p != '"' && *p != 'n')
              return "bad escape in label value";
          }
          if (vl + 1 < sizeof(lval))
            lval[vl++] = *p;
          p++;
        }
        lval[vl] = '\0';
        p++;
        if (strcmp(lname, "le") == 0) {
          strcpy(le, lval);
        } else if (strlen(nokey) + strlen(lname) + strlen(lval) + 3 <
                   sizeof(nokey)) {
          strcat(nokey, lname);
          strcat(nokey, "=");
          strcat(nokey, lval);
          strcat(nokey, ",");
        }
        if (*p == ',')
          p++;
        else if (*p != '}')
          return "bad label separator";
      }
      p++;
      if (*p != ' ')
        return "no space before value";
      value = strtod(p + 1, &vend);
      if (vend == p + 1 || *vend != '\0')
        return "bad sample value";
      if (value < 0)
        return "negative sample";
      /* duplicates: the series is the line up to the space before its
       * value (p), compared with the series seen before. */
      for (i = 0; i < n_series; i++)
        if (strlen(seen_series[i]) == (size_t)(p - buf) &&
            strncmp(seen_series[i], buf, (size_t)(p - buf)) == 0)
          return "duplicate series";
      if (n_series == MAXSERIES)
        return "too many series for the checker";
      snprintf(seen_series[n_series++], sizeof(seen_series[0]), "%.*s",
               (int)(p - buf), buf);
      if (is_bucket) {
        double lev;
        if (le[0] == '\0')
          return "bucket without le";
        lev = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        if (strcmp(last_hist_key, nokey) != 0) {
          strcpy(last_hist_key, nokey);
          last_le = -1;
          last_bucket = -1;
        }
        if (!(lev > last_le))
          return "le not increasing";
        if (value < last_bucket)
          return "buckets not cumulative";
        last_le = lev;
        last_bucket = value;
        if (isinf(lev))
          inf_count = value;
      } else if (strlen(key) > 6 &&
                 strcmp(key + strlen(key) - 6, "_count") == 0 &&
                 strcmp(type, "histogram") == 0) {
        if (value != inf_count) {
          snprintf(why, sizeof(why), "+Inf bucket %g != _count %g", inf_count,
                   value);
          return why;
        }
      }
    }
  }
  return NULL;
}

static int have_promtool(void) {
  return system("command -v promtool >/dev/null 2>&1") == 0;
}

static void promtool_check(const char* text) {
  char path[256];
  char cmd[512];
  int fd;
  snprintf(path, sizeof(path), "%s/uvctx-metrics-XXXXXX", uvt_tmpdir());
  fd = mkstemp(path);
  FILE* f;
  int rc;
  ck_assert_int_ge(fd, 0);
  f = fdopen(fd, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  /* promtool parses and lints (names, units, _total): both must pass. */
  snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s' >&2", path);
  rc = system(cmd);
  unlink(path);
  ck_assert_msg(rc == 0, "promtool check metrics failed on the exposition");
}

START_TEST(prometheus_text) {
  uvctx_loop_stats_t a, b;
  const uvctx_loop_stats_t* both[2] = {&a, &b};
  const char* labels[2] = {"main", "odd \"label\" \\ with\nnewline"};
  char* text = NULL;
  size_t len = 0;
  const char* why;
  int i;

  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.contexts_cancel = 3;
  a.contexts_value = 1;
  a.contexts = 4;
  a.watches = 2;
  a.deadlines = 1;
  a.created = 10;
  a.cancels = 5;
  a.remote_wakeups = 1;
  a.callbacks = 4;
  a.deadlines_fired = 1;
  uvctx_histogram_record(&a.propagation, 1234);
  uvctx_histogram_record(&a.propagation, 1000000000);
  uvctx_histogram_record(&a.propagation, (uint64_t)1 << 40); /* +Inf only */
  uvctx_histogram_record(&a.lateness, 250000);
  for (i = 0; i < 5; i++)
    uvctx_histogram_record(&b.propagation, 100);

  ck_assert_int_eq(uvctx_metrics_format(NULL, NULL, 1, &text, &len), UV_EINVAL);
  ck_assert_int_eq(uvctx_metrics_format(both, labels, 2, NULL, &len),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_metrics_format(both, labels, 2, &text, &len), 0);
  ck_assert_ptr_nonnull(text);
  ck_assert_uint_eq(strlen(text), len);
  why = check_exposition(text);
  if (why != NULL)
    ck_abort_msg("bad exposition: %s\n%s", why, text);
  if (have_promtool())
    promtool_check(text);
  else
    fprintf(stderr, "prometheus_text: no promtool, own checker only\n");

#define HAS(s)                                    \
  do {                                            \
    if (strstr(text, s) == NULL)                  \
      ck_abort_msg("missing %s in\n%s", s, text); \
  } while (0)
  HAS("# TYPE uvctx_cancels_total counter\n");
  HAS("uvctx_cancels_total{loop=\"main\"} 5\n");
  HAS("uvctx_cancels_total{loop=\"odd \\\"label\\\" \\\\ with\\nnewline\"} "
      "0\n");
  HAS("uvctx_contexts{loop=\"main\",kind=\"cancel\"} 3\n");
  HAS("uvctx_contexts{loop=\"main\",kind=\"without_cancel\"} 0\n");
  HAS("# TYPE uvctx_cancel_propagation_seconds histogram\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"main\",le="
      "\"0.000000128\"} 0\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"main\",le="
      "\"0.000001536\"} 1\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"main\",le="
      "\"1.073741824\"} 2\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"main\",le="
      "\"274.877906944\"} 2\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"main\",le=\"+Inf\"} "
      "3\n");
  HAS("uvctx_cancel_propagation_seconds_count{loop=\"main\"} 3\n");
  /* 1234 ns + 1 s + 2^40 ns, exactly. */
  HAS("uvctx_cancel_propagation_seconds_sum{loop=\"main\"} "
      "1100.51162901\n");
  HAS("uvctx_deadline_lateness_seconds_sum{loop=\"main\"} 0.00025\n");
  HAS("uvctx_deadline_lateness_max_seconds{loop=\"main\"} 0.00025\n");
  HAS("uvctx_cancel_propagation_seconds_bucket{loop=\"odd \\\"label\\\" "
      "\\\\ with\\nnewline\",le=\"0.000000128\"} 5\n");
  uvctx_metrics_free(text);

  /* The checker itself rejects what Prometheus would. */
  ck_assert_ptr_nonnull(check_exposition("x{a=\"b} 1\n"));
  ck_assert_ptr_nonnull(check_exposition("# TYPE x_total counter\n"
                                         "x_total{a=\"b\"} one\n"));
  ck_assert_ptr_nonnull(check_exposition("# TYPE x counter\nx{a=\"b\"} 1\n"));
  ck_assert_ptr_nonnull(check_exposition("# TYPE h histogram\n"
                                         "h_bucket{le=\"1\"} 2\n"
                                         "h_bucket{le=\"+Inf\"} 1\n"));
  ck_assert_ptr_nonnull(check_exposition("# TYPE h histogram\n"
                                         "h_bucket{le=\"+Inf\"} 2\n"
                                         "h_count{} 3\n"));
  /* The same series twice (labels and all, values differing) is rejected
   * as such; the same name with other labels is not. */
  why = check_exposition("# TYPE x_total counter\n"
                         "x_total{a=\"b\",c=\"d e\"} 1\n"
                         "x_total{a=\"b\",c=\"d e\"} 2\n");
  ck_assert_ptr_nonnull(why);
  ck_assert_str_eq(why, "duplicate series");
  ck_assert_ptr_null(check_exposition("# TYPE x_total counter\n"
                                      "x_total{a=\"b\",c=\"d e\"} 1\n"
                                      "x_total{a=\"b\",c=\"d f\"} 1\n"));

  /* No loops, no labels: families only. */
  ck_assert_int_eq(uvctx_metrics_format(NULL, NULL, 0, &text, NULL), 0);
  ck_assert_ptr_null(check_exposition(text));
  ck_assert_ptr_nonnull(strstr(text, "# TYPE uvctx_watches gauge\n"));
  uvctx_metrics_free(text);
  uvctx_metrics_free(NULL);
}
END_TEST

/* The exposition of a real loop, labelled by index. */
START_TEST(prometheus_real_loop) {
  uvctx_loop_stats_t s;
  const uvctx_loop_stats_t* one[1] = {&s};
  uvctx_t* c;
  uvctx_watch_t w;
  char* text;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  fired = 0;
  ck_assert_int_eq(uvctx_watch_start(&w, c, count_cb), 0);
  uvctx_release(c);
  UVT_RUN_UNTIL(fired == 1);
  ck_assert_int_eq(uvctx_loop_stats(uvt_l, &s), 0);
  ck_assert_int_eq(uvctx_metrics_format(one, NULL, 1, &text, NULL), 0);
  ck_assert_ptr_null(check_exposition(text));
  ck_assert_ptr_nonnull(strstr(text, "uvctx_callbacks_total{loop=\"0\"} 1\n"));
  ck_assert_ptr_nonnull(
      strstr(text, "uvctx_cancel_propagation_seconds_count{loop=\"0\"} 1\n"));
  if (have_promtool())
    promtool_check(text);
  uvctx_metrics_free(text);
}
END_TEST

/* ---- log fields ---------------------------------------------------------- */

static int fmt_str(const void* v, char* buf, size_t size) {
  return snprintf(buf, size, "%s", (const char*)v);
}

static int fmt_int(const void* v, char* buf, size_t size) {
  return snprintf(buf, size, "%d", *(const int*)v);
}

static int fmt_skip(const void* v, char* buf, size_t size) {
  (void)v;
  (void)buf;
  (void)size;
  return -1;
}

static const uvctx_key_t k_req = {"request_id", NULL, fmt_str};
static const uvctx_key_t k_user = {"user", NULL, fmt_str};
static const uvctx_key_t k_n = {"n", NULL, fmt_int};
static const uvctx_key_t k_secret = {"secret", NULL, NULL}; /* not loggable */
static const uvctx_key_t k_skip = {"skip", NULL, fmt_skip};
static const uvctx_key_t k_odd = {"we ird=\"name\"", NULL, fmt_str};

static void expect_fields(uvctx_t* c, int format, const char* want) {
  char buf[2048];
  int n = uvctx_log_fields(c, format, buf, sizeof(buf));
  ck_assert_int_eq(n, (int)strlen(want));
  ck_assert_str_eq(buf, want);
}

START_TEST(log_fields) {
  uvctx_t* chain[10];
  int n = 42;
  size_t k = 0;
  char small[8];
  int r;

  ck_assert_int_eq(uvctx_with_value(uvt_bg, &k_req, "r-1", &chain[k]), 0);
  k++;
  ck_assert_int_eq(uvctx_with_cancel(chain[k - 1], &chain[k]), 0);
  k++;
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_user, "alice", &chain[k]),
                   0);
  k++;
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_secret, "pw", &chain[k]),
                   0);
  k++;
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_n, &n, &chain[k]), 0);
  k++;
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_skip, "x", &chain[k]), 0);
  k++;

  expect_fields(uvt_bg, UVCTX_LOG_LOGFMT, "");
  expect_fields(chain[0], UVCTX_LOG_LOGFMT, "request_id=r-1");
  expect_fields(chain[k - 1], UVCTX_LOG_LOGFMT,
                "request_id=r-1 user=alice n=42");
  expect_fields(chain[k - 1], UVCTX_LOG_JSON,
                "\"request_id\":\"r-1\",\"user\":\"alice\",\"n\":\"42\"");

  /* The innermost binding wins, in the outer binding's place... */
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_user,
                                    "bob \"the\" builder=1", &chain[k]),
                   0);
  k++;
  expect_fields(chain[k - 1], UVCTX_LOG_LOGFMT,
                "request_id=r-1 n=42 user=\"bob \\\"the\\\" builder=1\"");
  expect_fields(chain[k - 1], UVCTX_LOG_JSON,
                "\"request_id\":\"r-1\",\"n\":\"42\",\"user\":\"bob "
                "\\\"the\\\" builder=1\"");
  /* ...and a NULL binding hides the key. */
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_req, NULL, &chain[k]), 0);
  k++;
  expect_fields(chain[k - 1], UVCTX_LOG_LOGFMT,
                "n=42 user=\"bob \\\"the\\\" builder=1\"");
  /* Escapes: control characters, backslash, invalid UTF-8, odd names. */
  ck_assert_int_eq(uvctx_with_value(chain[k - 1], &k_odd,
                                    "a\\b\n\t\x01 \xc3\xa9 \xff", &chain[k]),
                   0);
  k++;
  expect_fields(chain[k - 1], UVCTX_LOG_LOGFMT,
                "n=42 user=\"bob \\\"the\\\" builder=1\" "
                "we_ird__name_=\"a\\\\b\\n\\t\\u0001 \xc3\xa9 \xef\xbf\xbd\"");
  expect_fields(chain[k - 1], UVCTX_LOG_JSON,
                "\"n\":\"42\",\"user\":\"bob \\\"the\\\" builder=1\","
                "\"we ird=\\\"name\\\"\":\"a\\\\b\\n\\t\\u0001 \xc3\xa9 "
                "\xef\xbf\xbd\"");

  /* snprintf semantics. */
  r = uvctx_log_fields(chain[1], UVCTX_LOG_LOGFMT, small, sizeof(small));
  ck_assert_int_eq(r, (int)strlen("request_id=r-1"));
  ck_assert_str_eq(small, "request");
  ck_assert_int_eq(uvctx_log_fields(chain[1], UVCTX_LOG_LOGFMT, NULL, 0), r);
  ck_assert_int_eq(uvctx_log_fields(chain[1], UVCTX_LOG_JSON, small, 1),
                   (int)strlen("\"request_id\":\"r-1\""));
  ck_assert_str_eq(small, "");
  ck_assert_int_eq(uvctx_log_fields(NULL, UVCTX_LOG_LOGFMT, small, 8),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_log_fields(chain[1], 7, small, 8), UV_EINVAL);
  ck_assert_int_eq(uvctx_log_fields(chain[1], UVCTX_LOG_JSON, NULL, 8),
                   UV_EINVAL);

  while (k-- > 0)
    uvctx_release(chain[k]);
}
END_TEST

/* Values longer than the formatter's stack buffer, and an empty value. */
START_TEST(log_fields_long_and_empty) {
  char* big = malloc(5000);
  char* out = malloc(6000);
  uvctx_t *a, *b;
  int n;
  ck_assert_ptr_nonnull(big);
  ck_assert_ptr_nonnull(out);
  memset(big, 'x', 4999);
  big[4999] = '\0';
  ck_assert_int_eq(uvctx_with_value(uvt_bg, &k_req, big, &a), 0);
  ck_assert_int_eq(uvctx_with_value(a, &k_user, "", &b), 0);
  n = uvctx_log_fields(b, UVCTX_LOG_LOGFMT, out, 6000);
  ck_assert_int_eq(n, 11 + 4999 + 8);
  ck_assert(strncmp(out, "request_id=xxxx", 15) == 0);
  ck_assert_str_eq(out + 11 + 4999, " user=\"\"");
  uvctx_release(b);
  uvctx_release(a);
  free(big);
  free(out);
}
END_TEST

int main(void) {
  Suite* s = suite_create("stats");
  TCase* tc = tcase_create("stats");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, histogram_bounds);
  tcase_add_test(tc, histogram_buckets_and_quantiles);
  tcase_add_test(tc, loop_stats_move);
  tcase_add_test(tc, prometheus_text);
  tcase_add_test(tc, prometheus_real_loop);
  tcase_add_test(tc, log_fields);
  tcase_add_test(tc, log_fields_long_and_empty);
  suite_add_tcase(s, tc);
  return uvt_main(s);
}
