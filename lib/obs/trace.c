/* trace.c owns the trace writer: starting and stopping a loop's trace, the
 * writer that drains the loop's event ring (lib/core/trace_hooks.c) on the loop
 * thread, and the Chrome Trace Event JSON it writes. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "common/debug.h"
#include "common/text.h"
#include "core/internal.h"
#include "obs/obs.h"
#include "uvctx/trace.h"

typedef uvctx__trace_ev_t ev_t;

/* Slices (cancel, deadline, callback) are markers: their length is the time
 * to the next slice of the same thread, at most this long, so that slices
 * of one thread never overlap (Perfetto requires proper nesting). Flow
 * arrows bind 1 ns into their slices. */
#define SLICE_MAX_NS 1000
#define TIDS UVCTX__TRACE_TIDS
#define OPS 1024     /* cancel ops remembered for flow arrows */
#define FLOW_BITS 20 /* flow id = op << FLOW_BITS | n-th callback of op */

typedef struct op_slot_s {
  uint64_t id;
  uint64_t ts;
  uint32_t flows;
  uint16_t tid;
} op_slot_t;

typedef struct tracer_s {
  uvctx__trace_ring_t r; /* first: the hooks' view of this tracer */
  uv_check_t check;      /* drains after every loop iteration */
  uv_timer_t timer;      /* drains and flushes while the loop idles */
  /* The writer: loop thread only. */
  FILE* sink;
  int own_sink;
  int io_error;
  int handles_open;
  uint64_t t0;
  char pid[2 + 2 * sizeof(uintptr_t) + 1];
  ev_t* pending;  /* [TIDS] the last slice of each thread, dur unknown */
  op_slot_t* ops; /* [OPS] */
  uint8_t named[TIDS / 8];
} tracer_t;

static tracer_t* find_locked(const uvctx_loop_t* l) {
  return (tracer_t*)uvctx__trace_ring_find_locked(l);
}

/* ---- the writer ---------------------------------------------------------- */

static void out(tracer_t* t, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void out(tracer_t* t, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (vfprintf(t->sink, fmt, ap) < 0)
    t->io_error = 1;
  va_end(ap);
}

/* Trace time: microseconds since the trace started, exact to the ns. */
static void out_ts(tracer_t* t, const char* key, uint64_t ns) {
  uint64_t rel = ns > t->t0 ? ns - t->t0 : 0;
  out(t, ",\"%s\":%" PRIu64 ".%03u", key, rel / 1000, (unsigned)(rel % 1000));
}

static void out_us(tracer_t* t, const char* key, uint64_t ns) {
  out(t, ",\"%s\":%" PRIu64 ".%03u", key, ns / 1000, (unsigned)(ns % 1000));
}

static void out_sink(void* t, const char* s, size_t n) {
  out(t, "%.*s", (int)n, s);
}

/* Paths may hold anything: valid UTF-8 is kept, control characters are
 * escaped, and every byte that is not part of valid UTF-8 becomes U+FFFD,
 * as in log fields. */
static void out_str(tracer_t* t, const char* s) {
  out(t, "\"");
  uvctx__text_escape(UVCTX__TEXT_JSON, s, strlen(s), out_sink, t);
  out(t, "\"");
}

static void out_err(tracer_t* t, const char* key, int code) {
  char name[64];
  uv_err_name_r(code, name, sizeof(name));
  out(t, ",\"%s\":", key);
  out_str(t, name);
}

static void out_site(tracer_t* t, void* site) {
  char buf[512];
  out(t, ",\"site\":");
  out_str(t, uvctx__site_format(site, buf, sizeof(buf)));
}

/* Common head of an event: `,\n{"name":...,"ph":...,"pid":...,"tid":...`. */
static void out_head(tracer_t* t, const char* name, const char* cat,
                     const char* ph, unsigned tid) {
  out(t,
      ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"%s\",\"pid\":\"%s\","
      "\"tid\":%u",
      name, cat, ph, t->pid, tid);
}

static void name_thread(tracer_t* t, unsigned tid) {
  if (t->named[tid / 8] & (1u << (tid % 8)))
    return;
  t->named[tid / 8] |= (uint8_t)(1u << (tid % 8));
  out_head(t, "thread_name", "__metadata", "M", tid);
  if (tid == uvctx__trace_thread())
    out(t, ",\"args\":{\"name\":\"uvctx loop thread %u\"}}", tid);
  else
    out(t, ",\"args\":{\"name\":\"thread %u\"}}", tid);
}

static void write_slice(tracer_t* t, const ev_t* e, uint64_t dur) {
  switch (e->type) {
    case UVCTX__EV_CANCEL:
      out_head(t, "cancel", "uvctx", "X", e->tid);
      out_ts(t, "ts", e->ts);
      out_us(t, "dur", dur);
      out(t, ",\"args\":{\"op\":%" PRIu64 ",\"ctx\":\"0x%" PRIxPTR "\"", e->a,
          e->ctx);
      out_err(t, "err", uvctx__err_code(e->kind));
      out_err(t, "cause", e->code);
      out(t, ",\"cause_code\":%d,\"depth\":%u}}", (int)e->code, e->depth);
      break;
    case UVCTX__EV_DEADLINE:
      out_head(t, "deadline", "uvctx", "X", e->tid);
      out_ts(t, "ts", e->ts);
      out_us(t, "dur", dur);
      out(t, ",\"args\":{\"ctx\":\"0x%" PRIxPTR "\"", e->ctx);
      out_us(t, "lateness_us", e->b);
      out(t, ",\"depth\":%u}}", e->depth);
      break;
    case UVCTX__EV_CALLBACK:
      out_head(t, "callback", "uvctx", "X", e->tid);
      out_ts(t, "ts", e->ts);
      out_us(t, "dur", dur);
      out(t, ",\"args\":{\"watch\":\"0x%" PRIxPTR "\"", e->parent);
      if (e->ctx != 0)
        out(t, ",\"ctx\":\"0x%" PRIxPTR "\",\"depth\":%u", e->ctx, e->depth);
      out_err(t, "err", e->code);
      out(t, ",\"op\":%" PRIu64, e->a);
      if (e->b != 0 && e->b <= e->ts)
        out_us(t, "delay_us", e->ts - e->b);
      out(t, "}}");
      break;
    default:
      break;
  }
}

/* A slice is written once the next slice of its thread is known (or at
 * stop), which fixes its length. */
static void slice(tracer_t* t, const ev_t* e) {
  ev_t* p = &t->pending[e->tid];
  if (p->type != 0) {
    uint64_t gap = e->ts > p->ts ? e->ts - p->ts : 0;
    write_slice(t, p, gap < SLICE_MAX_NS ? gap : SLICE_MAX_NS);
  }
  if (e != p)
    *p = *e;
}

static void flush_slices(tracer_t* t) {
  unsigned i;
  for (i = 0; i < TIDS; i++) {
    if (t->pending[i].type != 0) {
      write_slice(t, &t->pending[i], SLICE_MAX_NS);
      t->pending[i].type = 0;
    }
  }
}

/* One arrow per callback, from the cancel that made it due: Perfetto and
 * chrome://tracing pair one "s" with one "f", so fan-outs need an id each.
 * The id carries the op in its high bits. Cancels this writer has not seen
 * (another loop's, or evicted from the table) get no arrow; their
 * callbacks still name the op in their args. */
static void flow(tracer_t* t, const ev_t* cb) {
  op_slot_t* op = &t->ops[cb->a & (OPS - 1)];
  uint64_t id;
  if (cb->a == 0 || op->id != cb->a || op->flows >= (1u << FLOW_BITS))
    return;
  id = cb->a << FLOW_BITS | op->flows++;
  out_head(t, "cancel", "uvctx.flow", "s", op->tid);
  out(t, ",\"id\":\"0x%" PRIx64 "\"", id);
  out_ts(t, "ts", op->ts + 1);
  out(t, "}");
  out_head(t, "cancel", "uvctx.flow", "f", cb->tid);
  out(t, ",\"bp\":\"e\",\"id\":\"0x%" PRIx64 "\"", id);
  out_ts(t, "ts", cb->ts + 1);
  out(t, "}");
}

static void write_event(tracer_t* t, const ev_t* e) {
  name_thread(t, e->tid);
  switch (e->type) {
    case UVCTX__EV_CREATE:
      out_head(t, uvctx__kind_name(e->kind), "uvctx.ctx", "b", e->tid);
      out(t, ",\"id\":\"0x%" PRIxPTR "\"", e->ctx);
      out_ts(t, "ts", e->ts);
      out(t,
          ",\"args\":{\"ctx\":\"0x%" PRIxPTR "\",\"parent\":\"0x%" PRIxPTR
          "\",\"kind\":\"%s\",\"depth\":%u",
          e->ctx, e->parent, uvctx__kind_name(e->kind), e->depth);
      if (e->a != UVCTX__NO_DEADLINE) {
        if (e->a >= e->ts)
          out_us(t, "deadline_in_us", e->a - e->ts);
        else
          out(t, ",\"deadline_in_us\":-%" PRIu64 ".%03u", (e->ts - e->a) / 1000,
              (unsigned)((e->ts - e->a) % 1000));
      }
      out_site(t, e->site);
      out(t, "}}");
      break;
    case UVCTX__EV_FREE:
      out_head(t, uvctx__kind_name(e->kind), "uvctx.ctx", "e", e->tid);
      out(t, ",\"id\":\"0x%" PRIxPTR "\"", e->ctx);
      out_ts(t, "ts", e->ts);
      out(t, "}");
      break;
    case UVCTX__EV_CANCEL: {
      op_slot_t* op = &t->ops[e->a & (OPS - 1)];
      op->id = e->a;
      op->ts = e->ts;
      op->tid = e->tid;
      op->flows = 0;
      slice(t, e);
      break;
    }
    case UVCTX__EV_DEADLINE:
      slice(t, e);
      break;
    case UVCTX__EV_CALLBACK:
      slice(t, e);
      flow(t, e);
      break;
    default:
      break;
  }
}

static void drain(tracer_t* t) {
  uint64_t head = atomic_load_explicit(&t->r.head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&t->r.tail, memory_order_acquire);
  uint64_t n = tail - head;
  while (head != tail) {
    write_event(t, &t->r.ring[head & t->r.mask]);
    head++;
    /* Each slot goes back to the producers as soon as it is written. */
    atomic_store_explicit(&t->r.head, head, memory_order_release);
  }
  if (n != 0)
    atomic_fetch_add_explicit(&t->r.written, n, memory_order_relaxed);
}

static void check_cb(uv_check_t* h) {
  drain(h->data);
}

static void timer_cb(uv_timer_t* h) {
  tracer_t* t = h->data;
  drain(t);
  if (fflush(t->sink) != 0)
    t->io_error = 1;
}

static void tracer_free(tracer_t* t) {
  uvctx__free(t->ops);
  uvctx__free(t->pending);
  uvctx__free(t->r.ring);
  uvctx__free(t);
}

static void close_cb(uv_handle_t* h) {
  tracer_t* t = h->data;
  if (--t->handles_open == 0)
    tracer_free(t);
}

/* ---- the public API ------------------------------------------------------ */

/* The ring's capacity for `opts`, or 0 if they are out of range. */
static uint64_t ring_cap(const uvctx_trace_options_t* opts) {
  uint64_t cap = 1;

  if (opts == NULL || opts->ring_events == 0)
    return UVCTX_TRACE_DEFAULT_RING;
  if (opts->ring_events < UVCTX_TRACE_MIN_RING ||
      opts->ring_events > UVCTX_TRACE_MAX_RING)
    return 0;
  while (cap < opts->ring_events)
    cap <<= 1;
  return cap;
}

int uvctx_loop_trace_start(uvctx_loop_t* l, FILE* sink,
                           const uvctx_trace_options_t* opts) {
  tracer_t* t;
  uint64_t cap = ring_cap(opts);
  unsigned flush_ms = UVCTX_TRACE_DEFAULT_FLUSH_MS;
  int busy, rc;

  if (l == NULL || sink == NULL)
    return UVCTX__EINVAL("the loop binding or the sink is NULL");
  if (l->closing)
    return UVCTX__EINVAL("the loop binding is closing");
  if (cap == 0)
    return UVCTX__EINVAL("ring_events out of range");
  if (opts != NULL && opts->flush_ms != 0)
    flush_ms = opts->flush_ms;
  uvctx__lock();
  busy = find_locked(l) != NULL;
  uvctx__unlock();
  if (busy)
    return UV_EBUSY;

  rc = UV_ENOMEM;
  t = uvctx__calloc(1, sizeof(*t));
  if (t == NULL)
    goto fail_tracer;
  t->r.ring = uvctx__malloc(cap * sizeof(*t->r.ring));
  if (t->r.ring == NULL)
    goto fail_ring;
  t->pending = uvctx__calloc(TIDS, sizeof(*t->pending));
  if (t->pending == NULL)
    goto fail_pending;
  t->ops = uvctx__calloc(OPS, sizeof(*t->ops));
  if (t->ops == NULL)
    goto fail_ops;
  t->r.mask = cap - 1;
  t->r.loop = l;
  t->sink = sink;
  atomic_init(&t->r.head, 0);
  atomic_init(&t->r.tail, 0);
  atomic_init(&t->r.written, 0);
  snprintf(t->pid, sizeof(t->pid), "0x%" PRIxPTR, (uintptr_t)l);

  /* uv_check_init() and uv_timer_init() cannot fail in libuv 1.44; if
   * they did, the tracer would have to outlive a close callback, so the
   * failure is simply reported before anything else is set up. */
  rc = uv_check_init(l->uv, &t->check);
  if (rc != 0)
    goto fail_handles;
  rc = uv_timer_init(l->uv, &t->timer);
  if (rc != 0) {
    t->handles_open = 1;
    t->check.data = t;
    uv_close((uv_handle_t*)&t->check, close_cb);
    return rc;
  }
  t->handles_open = 2;
  t->check.data = t;
  t->timer.data = t;
  uv_check_start(&t->check, check_cb);
  uv_timer_start(&t->timer, timer_cb, flush_ms, flush_ms);
  uv_unref((uv_handle_t*)&t->check);
  uv_unref((uv_handle_t*)&t->timer);

  t->t0 = uv_hrtime();
  out(t, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
  out(t,
      "{\"name\":\"process_name\",\"cat\":\"__metadata\",\"ph\":\"M\","
      "\"pid\":\"%s\",\"tid\":0,\"args\":{\"name\":\"uvctx loop %s\"}}",
      t->pid, t->pid);
  name_thread(t, uvctx__trace_thread());

  uvctx__lock();
  uvctx__trace_ring_attach_locked(&t->r);
  uvctx__unlock();
  return 0;

fail_handles:
  uvctx__free(t->ops);
fail_ops:
  uvctx__free(t->pending);
fail_pending:
  uvctx__free(t->r.ring);
fail_ring:
  uvctx__free(t);
fail_tracer:
  return rc;
}

int uvctx_loop_trace_open(uvctx_loop_t* l, const char* path,
                          const uvctx_trace_options_t* opts) {
  FILE* f;
  int rc;
  tracer_t* t;
  /* Every check that can be made before the file is created or truncated
   * is made first: a refused call leaves an existing file alone. */
  if (l == NULL || path == NULL)
    return UVCTX__EINVAL("the loop binding or the path is NULL");
  if (l->closing)
    return UVCTX__EINVAL("the loop binding is closing");
  if (ring_cap(opts) == 0)
    return UVCTX__EINVAL("ring_events out of range");
  uvctx__lock();
  t = find_locked(l);
  uvctx__unlock();
  if (t != NULL)
    return UV_EBUSY;
  f = fopen(path, "w");
  if (f == NULL)
    return errno != 0 ? uv_translate_sys_error(errno) : UV_EIO;
  rc = uvctx_loop_trace_start(l, f, opts);
  if (rc != 0) {
    fclose(f);
    return rc;
  }
  uvctx__lock();
  find_locked(l)->own_sink = 1;
  uvctx__unlock();
  return 0;
}

int uvctx_loop_trace_counts(const uvctx_loop_t* l, uvctx_trace_counts_t* c) {
  tracer_t* t;
  if (l == NULL || c == NULL)
    return UVCTX__EINVAL("the loop binding or out is NULL");
  uvctx__lock();
  t = find_locked(l);
  if (t != NULL) {
    c->emitted = t->r.emitted;
    c->dropped = t->r.dropped;
    c->written = atomic_load_explicit(&t->r.written, memory_order_relaxed);
  }
  uvctx__unlock();
  return t != NULL ? 0 : UVCTX__EINVAL("the loop is not traced");
}

int uvctx_loop_trace_stop(uvctx_loop_t* l, uvctx_trace_counts_t* counts) {
  tracer_t* t;
  uvctx_trace_counts_t c;
  int rc;

  if (l == NULL)
    return UVCTX__EINVAL("the loop binding is NULL");
  /* Out of the list first: from here on no hook can reach the ring, so
   * what it holds is all there will ever be. */
  uvctx__lock();
  t = (tracer_t*)uvctx__trace_ring_detach_locked(l);
  uvctx__unlock();
  if (t == NULL)
    return UVCTX__EINVAL("the loop is not traced");

  drain(t);
  flush_slices(t);
  c.emitted = t->r.emitted;
  c.dropped = t->r.dropped;
  c.written = atomic_load_explicit(&t->r.written, memory_order_relaxed);
  out_head(t, "trace stop", "uvctx", "i", uvctx__trace_thread());
  out(t, ",\"s\":\"p\"");
  out_ts(t, "ts", uv_hrtime());
  out(t,
      ",\"args\":{\"emitted\":%" PRIu64 ",\"written\":%" PRIu64
      ",\"dropped\":%" PRIu64 "}}",
      c.emitted, c.written, c.dropped);
  out(t,
      "\n],\n\"metadata\":{\"uvctx-version\":\"%d.%d.%d\","
      "\"uvctx-events-emitted\":%" PRIu64 ",\"uvctx-events-written\":%" PRIu64
      ",\"uvctx-events-dropped\":%" PRIu64 ",\"uvctx-ring-events\":%" PRIu64
      "}}\n",
      UVCTX_VERSION_MAJOR, UVCTX_VERSION_MINOR, UVCTX_VERSION_PATCH, c.emitted,
      c.written, c.dropped, t->r.mask + 1);
  if (fflush(t->sink) != 0 || ferror(t->sink))
    t->io_error = 1;
  if (t->own_sink && fclose(t->sink) != 0)
    t->io_error = 1;
  rc = t->io_error ? UV_EIO : 0;
  if (counts != NULL)
    *counts = c;

  uv_close((uv_handle_t*)&t->check, close_cb);
  uv_close((uv_handle_t*)&t->timer, close_cb);
  return rc;
}
