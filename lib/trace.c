/* trace.c owns tracing: the hooks the core calls while some loop is traced,
 * the per-loop tracers (a fixed ring of event records and the loop-thread
 * writer that drains it) and the Chrome Trace Event JSON they write.
 *
 * Producers are the hooks, on any thread. They all push under the library
 * lock (those not already called under it take it), which serializes them:
 * the ring is single-producer/single-consumer, with the loop thread as the
 * consumer, and a producer never waits for the writer. A full ring drops
 * the event and counts it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "internal.h"
#include "uvctx/trace.h"

atomic_int uvctx__tracing;

enum { EV_CREATE = 1, EV_FREE, EV_CANCEL, EV_DEADLINE, EV_CALLBACK };

/* One event as recorded by a hook: fixed size, no pointers the writer must
 * follow (contexts may be gone when it runs), except creation sites, which
 * are code addresses. */
typedef struct ev_s {
  uint64_t ts;      /* uv_hrtime() */
  uintptr_t ctx;    /* the context; 0 if unknown */
  uintptr_t parent; /* create: parent; callback: the watch */
  uint64_t a;       /* create: deadline; cancel/callback: op; deadline: due */
  uint64_t b;       /* callback: queued at; deadline: lateness */
  void* site;       /* create */
  int32_t code;     /* cancel: cause; callback: err */
  uint16_t tid;
  uint8_t type;
  uint8_t kind; /* create/free: context kind; cancel: stored err */
  uint32_t depth;
} ev_t;

/* Slices (cancel, deadline, callback) are markers: their length is the time
 * to the next slice of the same thread, at most this long, so that slices
 * of one thread never overlap (Perfetto requires proper nesting). Flow
 * arrows bind 1 ns into their slices. */
#define SLICE_MAX_NS 1000
#define TIDS 256 /* thread numbers; later threads share the last one */
#define OPS 1024 /* cancel ops remembered for flow arrows */
#define DEPTH_CAP 1024
#define FLOW_BITS 20 /* flow id = op << FLOW_BITS | n-th callback of op */

typedef struct op_slot_s {
  uint64_t id;
  uint64_t ts;
  uint32_t flows;
  uint16_t tid;
} op_slot_t;

typedef struct tracer_s {
  uv_check_t check; /* drains after every loop iteration */
  uv_timer_t timer; /* drains and flushes while the loop idles */
  uvctx_loop_t* loop;
  struct tracer_s* next; /* [lock] the list of tracers */
  ev_t* ring;
  uint64_t mask;
  atomic_uint_fast64_t head; /* next record to write (loop thread) */
  atomic_uint_fast64_t tail; /* next free slot ([lock]) */
  uint64_t emitted;          /* [lock] */
  uint64_t dropped;          /* [lock] */
  atomic_uint_fast64_t written;
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

static tracer_t* tracers; /* [lock] */
static atomic_uint tid_next;
static _Thread_local unsigned tid_self;

/* A small number per thread, the same in every trace of the process. */
static uint16_t thread_number(void) {
  if (tid_self == 0) {
    unsigned n =
        atomic_fetch_add_explicit(&tid_next, 1, memory_order_relaxed) + 1;
    tid_self = n < TIDS ? n : TIDS - 1;
  }
  return (uint16_t)tid_self;
}

static tracer_t* find_locked(const uvctx_loop_t* l) {
  tracer_t* t;
  for (t = tracers; t != NULL; t = t->next)
    if (t->loop == l)
      return t;
  return NULL;
}

/* Parent pointers never change and every context references its parent,
 * so the chain can be read from any thread; the walk is capped so that a
 * traced chain of a million contexts costs no more than a constant. */
static uint32_t depth_of(const uvctx_t* c) {
  uint32_t d = 0;
  while (c != NULL && c->parent != NULL && d < DEPTH_CAP) {
    c = c->parent;
    d++;
  }
  return d;
}

static void push_locked(tracer_t* t, const ev_t* e) {
  uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
  t->emitted++;
  if (tail - head > t->mask) {
    t->dropped++;
    return;
  }
  t->ring[tail & t->mask] = *e;
  atomic_store_explicit(&t->tail, tail + 1, memory_order_release);
}

/* ---- the hooks ------------------------------------------------------------
 */

void uvctx__trace_create(const uvctx_t* c) {
  tracer_t* t;
  ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = EV_CREATE;
  e.ctx = (uintptr_t)c;
  e.parent = (uintptr_t)c->parent;
  e.a = uvctx__deadline_of(c);
  e.site = c->site;
  e.kind = c->kind;
  e.depth = depth_of(c);
  e.tid = thread_number();
  e.ts = uv_hrtime();
  uvctx__lock();
  t = find_locked(c->home);
  if (t != NULL)
    push_locked(t, &e);
  uvctx__unlock();
}

void uvctx__trace_free(const uvctx_t* c) {
  tracer_t* t = find_locked(c->home);
  ev_t e;
  if (t == NULL)
    return;
  memset(&e, 0, sizeof(e));
  e.type = EV_FREE;
  e.ctx = (uintptr_t)c;
  e.kind = c->kind;
  e.tid = thread_number();
  e.ts = uv_hrtime();
  push_locked(t, &e);
}

void uvctx__trace_cancel(const uvctx_t* root, int err, intptr_t cause,
                         const uvctx__cancel_op_t* op) {
  tracer_t* t = find_locked(root->home);
  ev_t e;
  if (t == NULL)
    return;
  memset(&e, 0, sizeof(e));
  e.type = EV_CANCEL;
  e.ctx = (uintptr_t)root;
  e.a = op->id;
  e.code = (int32_t)cause;
  e.kind = (uint8_t)err;
  e.depth = depth_of(root);
  e.tid = thread_number();
  e.ts = uv_hrtime();
  push_locked(t, &e);
}

void uvctx__trace_deadline(const uvctx_t* c, uint64_t lateness_ns) {
  tracer_t* t = find_locked(c->home);
  ev_t e;
  if (t == NULL)
    return;
  memset(&e, 0, sizeof(e));
  e.type = EV_DEADLINE;
  e.ctx = (uintptr_t)c;
  e.a = uvctx__deadline_of(c);
  e.b = lateness_ns;
  e.depth = depth_of(c);
  e.tid = thread_number();
  e.ts = uv_hrtime();
  push_locked(t, &e);
}

/* The core calls this before it clears the watch's context (lib/watch.c),
 * so the event names the watched context and its depth. A NULL ctx_ is
 * still handled: the event then names the watch only. */
void uvctx__trace_callback(const uvctx_watch_t* w, int err) {
  tracer_t* t;
  ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = EV_CALLBACK;
  e.ctx = (uintptr_t)w->ctx_;
  e.parent = (uintptr_t)w;
  e.a = w->cause_id_;
  e.b = w->queued_at_;
  e.code = err;
  e.depth = w->ctx_ != NULL ? depth_of(w->ctx_) : 0;
  e.tid = thread_number();
  e.ts = uv_hrtime();
  uvctx__lock();
  t = find_locked(w->home_);
  if (t != NULL)
    push_locked(t, &e);
  uvctx__unlock();
}

/* ---- the writer ------------------------------------------------------------
 */

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

/* Paths may hold anything: valid UTF-8 is kept, control characters are
 * escaped, and every byte that is not part of valid UTF-8 becomes U+FFFD,
 * as in log fields. */
static void out_str(tracer_t* t, const char* s) {
  const unsigned char* p = (const unsigned char*)s;
  size_t n = strlen(s);
  size_t i = 0;
  size_t len;

  out(t, "\"");
  while (i < n) {
    unsigned char ch = p[i];
    if (ch == '"' || ch == '\\') {
      out(t, "\\%c", ch);
      i++;
    } else if (ch < 0x20 || ch == 0x7f) {
      out(t, "\\u%04x", ch);
      i++;
    } else if ((len = uvctx__utf8_len(p + i, n - i)) == 0) {
      out(t, "\\ufffd");
      i++;
    } else {
      out(t, "%.*s", (int)len, s + i);
      i += len;
    }
  }
  out(t, "\"");
}

static const char* kind_name(unsigned kind) {
  static const char* const names[] = {"background", "cancel", "deadline",
                                      "any",        "value",  "without_cancel"};
  return kind <= UVCTX__DETACHED ? names[kind] : "?";
}

static void out_err(tracer_t* t, const char* key, int code) {
  char name[64];
  uv_err_name_r(code, name, sizeof(name));
  out(t, ",\"%s\":", key);
  out_str(t, name);
}

static void out_site(tracer_t* t, void* site) {
  char buf[512];
  Dl_info info;
  if (site != NULL && dladdr(site, &info) != 0 && info.dli_fname != NULL) {
    if (info.dli_sname != NULL)
      snprintf(buf, sizeof(buf), "%s+0x%" PRIxPTR " in %s", info.dli_sname,
               (uintptr_t)site - (uintptr_t)info.dli_saddr, info.dli_fname);
    else
      snprintf(buf, sizeof(buf), "0x%" PRIxPTR " in %s",
               (uintptr_t)site - (uintptr_t)info.dli_fbase, info.dli_fname);
  } else {
    snprintf(buf, sizeof(buf), "%p", site);
  }
  out(t, ",\"site\":");
  out_str(t, buf);
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
  if (tid == thread_number())
    out(t, ",\"args\":{\"name\":\"uvctx loop thread %u\"}}", tid);
  else
    out(t, ",\"args\":{\"name\":\"thread %u\"}}", tid);
}

static void write_slice(tracer_t* t, const ev_t* e, uint64_t dur) {
  switch (e->type) {
    case EV_CANCEL:
      out_head(t, "cancel", "uvctx", "X", e->tid);
      out_ts(t, "ts", e->ts);
      out_us(t, "dur", dur);
      out(t, ",\"args\":{\"op\":%" PRIu64 ",\"ctx\":\"0x%" PRIxPTR "\"", e->a,
          e->ctx);
      out_err(t, "err", uvctx__err_code(e->kind));
      out_err(t, "cause", e->code);
      out(t, ",\"cause_code\":%d,\"depth\":%u}}", (int)e->code, e->depth);
      break;
    case EV_DEADLINE:
      out_head(t, "deadline", "uvctx", "X", e->tid);
      out_ts(t, "ts", e->ts);
      out_us(t, "dur", dur);
      out(t, ",\"args\":{\"ctx\":\"0x%" PRIxPTR "\"", e->ctx);
      out_us(t, "lateness_us", e->b);
      out(t, ",\"depth\":%u}}", e->depth);
      break;
    case EV_CALLBACK:
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
    case EV_CREATE:
      out_head(t, kind_name(e->kind), "uvctx.ctx", "b", e->tid);
      out(t, ",\"id\":\"0x%" PRIxPTR "\"", e->ctx);
      out_ts(t, "ts", e->ts);
      out(t,
          ",\"args\":{\"ctx\":\"0x%" PRIxPTR "\",\"parent\":\"0x%" PRIxPTR
          "\",\"kind\":\"%s\",\"depth\":%u",
          e->ctx, e->parent, kind_name(e->kind), e->depth);
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
    case EV_FREE:
      out_head(t, kind_name(e->kind), "uvctx.ctx", "e", e->tid);
      out(t, ",\"id\":\"0x%" PRIxPTR "\"", e->ctx);
      out_ts(t, "ts", e->ts);
      out(t, "}");
      break;
    case EV_CANCEL: {
      op_slot_t* op = &t->ops[e->a & (OPS - 1)];
      op->id = e->a;
      op->ts = e->ts;
      op->tid = e->tid;
      op->flows = 0;
      slice(t, e);
      break;
    }
    case EV_DEADLINE:
      slice(t, e);
      break;
    case EV_CALLBACK:
      slice(t, e);
      flow(t, e);
      break;
    default:
      break;
  }
}

static void drain(tracer_t* t) {
  uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
  uint64_t n = tail - head;
  while (head != tail) {
    write_event(t, &t->ring[head & t->mask]);
    head++;
    /* Each slot goes back to the producers as soon as it is written. */
    atomic_store_explicit(&t->head, head, memory_order_release);
  }
  if (n != 0)
    atomic_fetch_add_explicit(&t->written, n, memory_order_relaxed);
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
  uvctx__free(t->ring);
  uvctx__free(t);
}

static void close_cb(uv_handle_t* h) {
  tracer_t* t = h->data;
  if (--t->handles_open == 0)
    tracer_free(t);
}

/* ---- the public API --------------------------------------------------------
 */

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

  if (l == NULL || sink == NULL || l->closing || cap == 0)
    return UV_EINVAL;
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
  t->ring = uvctx__malloc(cap * sizeof(*t->ring));
  if (t->ring == NULL)
    goto fail_ring;
  t->pending = uvctx__calloc(TIDS, sizeof(*t->pending));
  if (t->pending == NULL)
    goto fail_pending;
  t->ops = uvctx__calloc(OPS, sizeof(*t->ops));
  if (t->ops == NULL)
    goto fail_ops;
  t->mask = cap - 1;
  t->loop = l;
  t->sink = sink;
  atomic_init(&t->head, 0);
  atomic_init(&t->tail, 0);
  atomic_init(&t->written, 0);
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
  name_thread(t, thread_number());

  uvctx__lock();
  t->next = tracers;
  tracers = t;
  atomic_fetch_add_explicit(&uvctx__tracing, 1, memory_order_relaxed);
  uvctx__unlock();
  return 0;

fail_handles:
  uvctx__free(t->ops);
fail_ops:
  uvctx__free(t->pending);
fail_pending:
  uvctx__free(t->ring);
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
  if (l == NULL || path == NULL || l->closing || ring_cap(opts) == 0)
    return UV_EINVAL;
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
    return UV_EINVAL;
  uvctx__lock();
  t = find_locked(l);
  if (t != NULL) {
    c->emitted = t->emitted;
    c->dropped = t->dropped;
    c->written = atomic_load_explicit(&t->written, memory_order_relaxed);
  }
  uvctx__unlock();
  return t != NULL ? 0 : UV_EINVAL;
}

int uvctx_loop_trace_stop(uvctx_loop_t* l, uvctx_trace_counts_t* counts) {
  tracer_t** pp;
  tracer_t* t = NULL;
  uvctx_trace_counts_t c;
  int rc;

  if (l == NULL)
    return UV_EINVAL;
  /* Out of the list first: from here on no hook can reach the ring, so
   * what it holds is all there will ever be. */
  uvctx__lock();
  for (pp = &tracers; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->loop == l) {
      t = *pp;
      *pp = t->next;
      atomic_fetch_sub_explicit(&uvctx__tracing, 1, memory_order_relaxed);
      break;
    }
  }
  uvctx__unlock();
  if (t == NULL)
    return UV_EINVAL;

  drain(t);
  flush_slices(t);
  c.emitted = t->emitted;
  c.dropped = t->dropped;
  c.written = atomic_load_explicit(&t->written, memory_order_relaxed);
  out_head(t, "trace stop", "uvctx", "i", thread_number());
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
      c.written, c.dropped, t->mask + 1);
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

int uvctx__trace_attached_locked(const uvctx_loop_t* l) {
  return find_locked(l) != NULL;
}
