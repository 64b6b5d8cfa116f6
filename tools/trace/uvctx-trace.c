/* uvctx-trace: reads a trace written by uvctx_loop_trace_start() and
 *
 *   uvctx-trace summary FILE [--late-us N] [--top N]
 *       prints counts, the cancel propagation delay by tree depth
 *       (p50/p99/max), the slowest chains (cancel -> its last callback),
 *       the deadlines that fired late and the contexts never released;
 *   uvctx-trace heatmap FILE -o OUT.svg [--columns N]
 *       writes an SVG heatmap of callback propagation delays: trace time on
 *       x, log-spaced delay buckets on y, colour by count.
 *
 * Exit status: 0, 1 for an unreadable or malformed trace, 2 for usage. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heatmap.h"
#include "json.h"

/* ---- the trace model ----------------------------------------------------- */

typedef struct ctx_rec_s {
  uint64_t id;
  uint64_t parent;
  const char* kind;
  const char* site;
  double created_us;
  int depth;
  int freed;
} ctx_rec_t;

typedef struct cb_rec_s {
  double ts_us;
  double delay_us; /* < 0: unknown */
  uint64_t op;
  int depth; /* < 0: unknown */
} cb_rec_t;

typedef struct op_rec_s {
  uint64_t op;
  uint64_t ctx;
  double ts_us;
  int depth;
  const char* cause;
  size_t callbacks;
  double max_delay_us;
  double last_cb_us;
} op_rec_t;

typedef struct dl_rec_s {
  uint64_t ctx;
  double ts_us;
  double late_us;
} dl_rec_t;

typedef struct trace_s {
  json_t* doc;
  ctx_rec_t* ctx;
  size_t n_ctx, cap_ctx;
  cb_rec_t* cb;
  size_t n_cb, cap_cb;
  op_rec_t* ops;
  size_t n_ops, cap_ops;
  dl_rec_t* dl;
  size_t n_dl, cap_dl;
  size_t events, creates, frees, flows_s, flows_f;
  uint64_t emitted, written, dropped;
  int have_counts;
  /* id -> index of its latest ctx record (open addressing, ids != 0) */
  uint64_t* hkeys;
  size_t* hvals;
  size_t hcap;
} trace_t;

static void* xrealloc(void* p, size_t n) {
  void* q = realloc(p, n);
  if (q == NULL) {
    fprintf(stderr, "uvctx-trace: out of memory\n");
    exit(1);
  }
  return q;
}

#define PUSH(arr, n, cap)                              \
  do {                                                 \
    if ((n) == (cap)) {                                \
      (cap) = (cap) ? (cap)*2 : 64;                    \
      (arr) = xrealloc((arr), (cap) * sizeof(*(arr))); \
    }                                                  \
    memset(&(arr)[(n)], 0, sizeof(*(arr)));            \
    (n)++;                                             \
  } while (0)

static size_t hslot(const trace_t* t, uint64_t id) {
  uint64_t h = id * 0x9e3779b97f4a7c15u;
  size_t i = (size_t)(h >> 17) & (t->hcap - 1);
  while (t->hkeys[i] != 0 && t->hkeys[i] != id)
    i = (i + 1) & (t->hcap - 1);
  return i;
}

static void hput(trace_t* t, uint64_t id, size_t v) {
  size_t i;
  if (id == 0)
    return;
  if (t->hcap == 0 || (t->n_ctx + 1) * 2 > t->hcap) {
    uint64_t* ok = t->hkeys;
    size_t* ov = t->hvals;
    size_t oc = t->hcap, j;
    t->hcap = t->hcap ? t->hcap * 2 : 1024;
    t->hkeys = calloc(t->hcap, sizeof(*t->hkeys));
    t->hvals = calloc(t->hcap, sizeof(*t->hvals));
    if (t->hkeys == NULL || t->hvals == NULL) {
      fprintf(stderr, "uvctx-trace: out of memory\n");
      exit(1);
    }
    for (j = 0; j < oc; j++)
      if (ok[j] != 0) {
        size_t s = hslot(t, ok[j]);
        t->hkeys[s] = ok[j];
        t->hvals[s] = ov[j];
      }
    free(ok);
    free(ov);
  }
  i = hslot(t, id);
  t->hkeys[i] = id;
  t->hvals[i] = v;
}

static ctx_rec_t* hget(const trace_t* t, uint64_t id) {
  size_t i;
  if (id == 0 || t->hcap == 0)
    return NULL;
  i = hslot(t, id);
  return t->hkeys[i] == id ? &t->ctx[t->hvals[i]] : NULL;
}

static int load(trace_t* t, const char* path) {
  FILE* f = fopen(path, "rb");
  char* text = NULL;
  size_t len = 0, cap = 0, n, i;
  char err[128];
  const json_t* evs;
  const json_t* meta;

  memset(t, 0, sizeof(*t));
  if (f == NULL) {
    fprintf(stderr, "uvctx-trace: %s: %s\n", path, strerror(errno));
    return -1;
  }
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      text = xrealloc(text, cap);
    }
    n = fread(text + len, 1, cap - len, f);
    if (n == 0)
      break;
    len += n;
  }
  if (ferror(f)) {
    fprintf(stderr, "uvctx-trace: %s: read error\n", path);
    fclose(f);
    free(text);
    return -1;
  }
  fclose(f);
  t->doc = json_parse(text, len, err, sizeof(err));
  free(text);
  if (t->doc == NULL) {
    fprintf(stderr, "uvctx-trace: %s: not JSON: %s\n", path, err);
    return -1;
  }
  evs = json_get(t->doc, "traceEvents");
  if (evs == NULL || evs->type != JSON_ARRAY) {
    fprintf(stderr, "uvctx-trace: %s: no traceEvents array\n", path);
    return -1;
  }
  meta = json_get(t->doc, "metadata");
  if (json_get(meta, "uvctx-events-emitted") != NULL) {
    t->have_counts = 1;
    t->emitted = json_get_u64(meta, "uvctx-events-emitted", 0);
    t->written = json_get_u64(meta, "uvctx-events-written", 0);
    t->dropped = json_get_u64(meta, "uvctx-events-dropped", 0);
  }

  /* Context records are kept in file order: a creation and the free of
   * the same address are written in the order they happened, and an
   * address may be reused after a free. */
  for (i = 0; i < evs->n; i++) {
    const json_t* e = &evs->items[i];
    const char* ph = json_get_str(e, "ph");
    const char* cat = json_get_str(e, "cat");
    const char* name = json_get_str(e, "name");
    const json_t* args = json_get(e, "args");
    double ts = json_get_num(e, "ts", 0);
    if (ph == NULL || cat == NULL || name == NULL)
      continue;
    if (strcmp(cat, "uvctx.ctx") == 0 && strcmp(ph, "b") == 0) {
      ctx_rec_t* c;
      t->events++;
      t->creates++;
      PUSH(t->ctx, t->n_ctx, t->cap_ctx);
      c = &t->ctx[t->n_ctx - 1];
      c->id = json_get_u64(e, "id", 0);
      c->parent = json_get_u64(args, "parent", 0);
      c->kind = name;
      c->site = json_get_str(args, "site");
      c->created_us = ts;
      c->depth = (int)json_get_num(args, "depth", -1);
      hput(t, c->id, t->n_ctx - 1);
    } else if (strcmp(cat, "uvctx.ctx") == 0 && strcmp(ph, "e") == 0) {
      ctx_rec_t* c = hget(t, json_get_u64(e, "id", 0));
      t->events++;
      t->frees++;
      if (c != NULL)
        c->freed = 1;
    } else if (strcmp(cat, "uvctx") == 0 && strcmp(ph, "X") == 0) {
      t->events++;
      if (strcmp(name, "cancel") == 0) {
        op_rec_t* o;
        PUSH(t->ops, t->n_ops, t->cap_ops);
        o = &t->ops[t->n_ops - 1];
        o->op = json_get_u64(args, "op", 0);
        o->ctx = json_get_u64(args, "ctx", 0);
        o->ts_us = ts;
        o->depth = (int)json_get_num(args, "depth", -1);
        o->cause = json_get_str(args, "cause");
      } else if (strcmp(name, "deadline") == 0) {
        dl_rec_t* d;
        PUSH(t->dl, t->n_dl, t->cap_dl);
        d = &t->dl[t->n_dl - 1];
        d->ctx = json_get_u64(args, "ctx", 0);
        d->ts_us = ts;
        d->late_us = json_get_num(args, "lateness_us", 0);
      } else if (strcmp(name, "callback") == 0) {
        cb_rec_t* b;
        PUSH(t->cb, t->n_cb, t->cap_cb);
        b = &t->cb[t->n_cb - 1];
        b->ts_us = ts;
        b->delay_us = json_get_num(args, "delay_us", -1);
        b->op = json_get_u64(args, "op", 0);
        b->depth = (int)json_get_num(args, "depth", -1);
        if (b->depth < 0) {
          ctx_rec_t* c = hget(t, json_get_u64(args, "ctx", 0));
          if (c != NULL)
            b->depth = c->depth;
        }
      }
    } else if (strcmp(cat, "uvctx.flow") == 0) {
      if (strcmp(ph, "s") == 0)
        t->flows_s++;
      else if (strcmp(ph, "f") == 0)
        t->flows_f++;
    }
  }
  return 0;
}

static void unload(trace_t* t) {
  json_free(t->doc);
  free(t->ctx);
  free(t->cb);
  free(t->ops);
  free(t->dl);
  free(t->hkeys);
  free(t->hvals);
}

/* ---- summary ------------------------------------------------------------- */

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of sorted v[0..n). */
static double quantile(const double* v, size_t n, double q) {
  size_t rank = (size_t)ceil(q * (double)n);
  if (rank == 0)
    rank = 1;
  return v[rank - 1];
}

static int cmp_op_delay(const void* a, const void* b) {
  const op_rec_t* x = a;
  const op_rec_t* y = b;
  double dx = x->last_cb_us - x->ts_us, dy = y->last_cb_us - y->ts_us;
  return dx < dy ? 1 : dx > dy ? -1 : 0;
}

static int cmp_dl_late(const void* a, const void* b) {
  const dl_rec_t* x = a;
  const dl_rec_t* y = b;
  return x->late_us < y->late_us ? 1 : x->late_us > y->late_us ? -1 : 0;
}

static op_rec_t* find_op(trace_t* t, uint64_t op) {
  size_t i;
  /* Ops are few next to callbacks, and usually looked up in order. */
  static size_t hint;
  if (hint < t->n_ops && t->ops[hint].op == op)
    return &t->ops[hint];
  for (i = 0; i < t->n_ops; i++)
    if (t->ops[i].op == op) {
      hint = i;
      return &t->ops[i];
    }
  return NULL;
}

static void delay_row(const char* label, double* v, size_t n) {
  if (n == 0)
    return;
  qsort(v, n, sizeof(*v), cmp_double);
  printf("  %-6s %10zu %12.3f %12.3f %12.3f\n", label, n, quantile(v, n, 0.5),
         quantile(v, n, 0.99), v[n - 1]);
}

static int summary(trace_t* t, double late_us, size_t top) {
  size_t i, n_late = 0, never = 0, with_delay = 0, shown;
  int max_depth = -1, d;
  double* v;

  for (i = 0; i < t->n_ctx; i++)
    if (!t->ctx[i].freed)
      never++;
  for (i = 0; i < t->n_dl; i++)
    if (t->dl[i].late_us > late_us)
      n_late++;
  for (i = 0; i < t->n_cb; i++) {
    op_rec_t* o = t->cb[i].op != 0 ? find_op(t, t->cb[i].op) : NULL;
    if (t->cb[i].depth > max_depth)
      max_depth = t->cb[i].depth;
    if (t->cb[i].delay_us >= 0)
      with_delay++;
    if (o != NULL) {
      o->callbacks++;
      if (t->cb[i].delay_us > o->max_delay_us)
        o->max_delay_us = t->cb[i].delay_us;
      if (t->cb[i].ts_us > o->last_cb_us)
        o->last_cb_us = t->cb[i].ts_us;
    }
  }

  printf("events: %zu\n", t->events);
  if (t->have_counts)
    printf("events emitted: %" PRIu64 "\nevents written: %" PRIu64
           "\nevents dropped: %" PRIu64 "\n",
           t->emitted, t->written, t->dropped);
  else
    printf("events dropped: unknown (the trace was not stopped)\n");
  printf("contexts created: %zu\n", t->creates);
  printf("contexts freed: %zu\n", t->frees);
  printf("contexts never released: %zu\n", never);
  printf("cancels: %zu\n", t->n_ops);
  printf("callbacks: %zu\n", t->n_cb);
  printf("flows: %zu\n", t->flows_f < t->flows_s ? t->flows_f : t->flows_s);
  printf("deadlines fired: %zu\n", t->n_dl);
  printf("deadlines late: %zu (over %.3f us)\n", n_late, late_us);

  printf("\npropagation delay by depth (us), cancel to callback start:\n");
  printf("  %-6s %10s %12s %12s %12s\n", "depth", "callbacks", "p50", "p99",
         "max");
  v = malloc((with_delay ? with_delay : 1) * sizeof(*v));
  if (v == NULL)
    return 1;
  for (d = -1; d <= max_depth; d++) {
    size_t n = 0;
    char label[16];
    for (i = 0; i < t->n_cb; i++)
      if (t->cb[i].depth == d && t->cb[i].delay_us >= 0)
        v[n++] = t->cb[i].delay_us;
    if (d < 0)
      snprintf(label, sizeof(label), "?");
    else
      snprintf(label, sizeof(label), "%d", d);
    delay_row(label, v, n);
  }
  {
    size_t n = 0;
    for (i = 0; i < t->n_cb; i++)
      if (t->cb[i].delay_us >= 0)
        v[n++] = t->cb[i].delay_us;
    delay_row("all", v, n);
  }
  free(v);

  printf("\nslowest chains (cancel to its last callback):\n");
  if (t->n_ops > 0)
    qsort(t->ops, t->n_ops, sizeof(*t->ops), cmp_op_delay);
  for (i = 0, shown = 0; i < t->n_ops && shown < top; i++) {
    const op_rec_t* o = &t->ops[i];
    if (o->callbacks == 0)
      continue;
    printf("  op %" PRIu64 " ctx 0x%" PRIx64 " depth %d cause %s at %.3f us:"
           " %zu callbacks, last after %.3f us, max delay %.3f us\n",
           o->op, o->ctx, o->depth, o->cause != NULL ? o->cause : "?", o->ts_us,
           o->callbacks, o->last_cb_us - o->ts_us, o->max_delay_us);
    shown++;
  }
  if (shown == 0)
    printf("  none\n");

  printf("\ndeadlines that fired late (over %.3f us):\n", late_us);
  if (t->n_dl > 0)
    qsort(t->dl, t->n_dl, sizeof(*t->dl), cmp_dl_late);
  for (i = 0, shown = 0; i < t->n_dl && shown < top; i++) {
    if (t->dl[i].late_us <= late_us)
      break;
    printf("  ctx 0x%" PRIx64 " at %.3f us: %.3f us late\n", t->dl[i].ctx,
           t->dl[i].ts_us, t->dl[i].late_us);
    shown++;
  }
  if (shown == 0)
    printf("  none\n");

  printf("\ncontexts never released (created during the trace, not freed "
         "before it stopped):\n");
  for (i = 0, shown = 0; i < t->n_ctx && shown < top; i++) {
    const ctx_rec_t* c = &t->ctx[i];
    if (c->freed)
      continue;
    printf("  ctx 0x%" PRIx64 " %s depth %d parent 0x%" PRIx64
           " created at %.3f us by %s\n",
           c->id, c->kind, c->depth, c->parent, c->created_us,
           c->site != NULL ? c->site : "?");
    shown++;
  }
  if (never > shown)
    printf("  ... and %zu more\n", never - shown);
  if (never == 0)
    printf("  none\n");
  return 0;
}

/* ---- heatmap ------------------------------------------------------------- */

/* The rendering is tools/common/heatmap.c, shared with uvctx-relay. */
static int heatmap(trace_t* t, const char* out_path, int cols) {
  heatmap_point_t* pts = calloc(t->n_cb > 0 ? t->n_cb : 1, sizeof(*pts));
  size_t i;
  FILE* f;
  int rc;

  if (pts == NULL) {
    fprintf(stderr, "uvctx-trace: out of memory\n");
    return 1;
  }
  for (i = 0; i < t->n_cb; i++) {
    pts[i].ts_us = t->cb[i].ts_us;
    pts[i].delay_us = t->cb[i].delay_us;
  }
  f = fopen(out_path, "w");
  if (f == NULL) {
    fprintf(stderr, "uvctx-trace: %s: %s\n", out_path, strerror(errno));
    free(pts);
    return 1;
  }
  rc = heatmap_write_svg(f, pts, t->n_cb, cols);
  free(pts);
  if (fclose(f) != 0 || rc != 0) {
    fprintf(stderr, "uvctx-trace: %s: write error\n", out_path);
    return 1;
  }
  return 0;
}

/* ---- main ---------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: uvctx-trace summary FILE [--late-us N] [--top N]\n"
                  "       uvctx-trace heatmap FILE -o OUT.svg [--columns N]\n");
  return 2;
}

int main(int argc, char** argv) {
  const char* out = NULL;
  double late_us = 1000;
  long top = 10, cols = 120;
  trace_t t;
  int i, rc;

  if (argc < 3)
    return usage();
  for (i = 3; i < argc; i++) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
      out = argv[++i];
    else if (strcmp(argv[i], "--late-us") == 0 && i + 1 < argc)
      late_us = atof(argv[++i]);
    else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc)
      top = atol(argv[++i]);
    else if (strcmp(argv[i], "--columns") == 0 && i + 1 < argc)
      cols = atol(argv[++i]);
    else
      return usage();
  }
  if (top < 0 || cols < 1 || cols > 4096 || late_us < 0)
    return usage();
  if (strcmp(argv[1], "summary") != 0 &&
      (strcmp(argv[1], "heatmap") != 0 || out == NULL))
    return usage();
  if (load(&t, argv[2]) != 0) {
    unload(&t);
    return 1;
  }
  if (strcmp(argv[1], "summary") == 0)
    rc = summary(&t, late_us, (size_t)top);
  else
    rc = heatmap(&t, out, (int)cols);
  unload(&t);
  return rc;
}
