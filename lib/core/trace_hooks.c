/* trace_hooks.c owns the trace hooks: the points where the core reports what it
 * does while some loop is traced, and the per-loop event rings they push
 * to. The writer that drains a ring into Chrome Trace Event JSON lives in
 * the obs layer (lib/obs/trace.c), which attaches and detaches rings here;
 * nothing here calls up into it.
 *
 * Producers are the hooks, on any thread. They all push under the trace
 * lock (core/lock.c: taken after any loop lock), which serializes them:
 * the ring is single-producer/single-consumer, with the loop thread as the
 * consumer, and a producer never waits for the writer. A full ring drops
 * the event and counts it. */
#include <string.h>

#include "core/internal.h"

atomic_int uvctx__tracing;

#define TIDS UVCTX__TRACE_TIDS
#define DEPTH_CAP 1024

static uvctx__trace_ring_t* rings; /* [trace lock] */
static atomic_uint tid_next;
static _Thread_local unsigned tid_self;

/* A small number per thread, the same in every trace of the process. */
uint16_t uvctx__trace_thread(void) {
  if (tid_self == 0) {
    unsigned n =
        atomic_fetch_add_explicit(&tid_next, 1, memory_order_relaxed) + 1;
    tid_self = n < TIDS ? n : TIDS - 1;
  }
  return (uint16_t)tid_self;
}

uvctx__trace_ring_t* uvctx__trace_ring_find_locked(const uvctx_loop_t* l) {
  uvctx__trace_ring_t* r;
  for (r = rings; r != NULL; r = r->next)
    if (r->loop == l)
      return r;
  return NULL;
}

void uvctx__trace_ring_attach_locked(uvctx__trace_ring_t* r) {
  UVCTX__LIST_INSERT_HEAD(&rings, r, next, pprev);
  atomic_fetch_add_explicit(&uvctx__tracing, 1, memory_order_relaxed);
}

uvctx__trace_ring_t* uvctx__trace_ring_detach_locked(const uvctx_loop_t* l) {
  uvctx__trace_ring_t* r = uvctx__trace_ring_find_locked(l);
  if (r != NULL) {
    UVCTX__LIST_REMOVE(r, next, pprev);
    atomic_fetch_sub_explicit(&uvctx__tracing, 1, memory_order_relaxed);
  }
  return r;
}

int uvctx__trace_attached_locked(const uvctx_loop_t* l) {
  return uvctx__trace_ring_find_locked(l) != NULL;
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

static void push_locked(uvctx__trace_ring_t* t, const uvctx__trace_ev_t* e) {
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

/* Stamps `e` with the calling thread and the time and pushes it to the
 * ring of `home`, if that loop is traced. Every hook ends here. */
static void emit(const uvctx_loop_t* home, uvctx__trace_ev_t* e) {
  uvctx__trace_ring_t* t;
  e->tid = uvctx__trace_thread();
  e->ts = uv_hrtime();
  uvctx__lock();
  t = uvctx__trace_ring_find_locked(home);
  if (t != NULL)
    push_locked(t, e);
  uvctx__unlock();
}

/* ---- the hooks ----------------------------------------------------------- */

void uvctx__trace_create(const uvctx_t* c) {
  uvctx__trace_ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = UVCTX__EV_CREATE;
  e.ctx = (uintptr_t)c;
  e.parent = (uintptr_t)c->parent;
  e.a = uvctx__deadline_of(c);
  e.site = c->site;
  e.kind = c->kind;
  e.depth = depth_of(c);
  emit(c->home, &e);
}

void uvctx__trace_free(const uvctx_t* c) {
  uvctx__trace_ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = UVCTX__EV_FREE;
  e.ctx = (uintptr_t)c;
  e.kind = c->kind;
  emit(c->home, &e);
}

void uvctx__trace_cancel(const uvctx_t* root, int err, intptr_t cause,
                         const uvctx__cancel_op_t* op) {
  uvctx__trace_ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = UVCTX__EV_CANCEL;
  e.ctx = (uintptr_t)root;
  e.a = op->id;
  e.code = (int32_t)cause;
  e.kind = (uint8_t)err;
  e.depth = depth_of(root);
  emit(root->home, &e);
}

void uvctx__trace_deadline(const uvctx_t* c, uint64_t lateness_ns) {
  uvctx__trace_ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = UVCTX__EV_DEADLINE;
  e.ctx = (uintptr_t)c;
  e.a = uvctx__deadline_of(c);
  e.b = lateness_ns;
  e.depth = depth_of(c);
  emit(c->home, &e);
}

/* The core calls this before it clears the watch's context (core/watch.c),
 * so the event names the watched context and its depth. A NULL ctx_ is
 * still handled: the event then names the watch only. */
void uvctx__trace_callback(const uvctx_watch_t* w, int err) {
  uvctx__trace_ev_t e;
  memset(&e, 0, sizeof(e));
  e.type = UVCTX__EV_CALLBACK;
  e.ctx = (uintptr_t)w->ctx_;
  e.parent = (uintptr_t)w;
  e.a = w->cause_id_;
  e.b = w->queued_at_;
  e.code = err;
  e.depth = w->ctx_ != NULL ? depth_of(w->ctx_) : 0;
  emit(w->home_, &e);
}
