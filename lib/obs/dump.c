/* dump.c owns the leak report: uvctx_loop_dump(), which lists every live
 * context homed on a loop with its kind, parent, reference count, state and
 * the code that created it, and uvctx_loop_snapshot(), which copies the
 * same records for programs that present them themselves (for several
 * loops in one walk: uvctx_loops_snapshot()). They walk the
 * trees with walk(), which reads each loop's lists under that loop's lock
 * only (core/lock.c), and describe a context with describe(). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/debug.h"
#include "core/internal.h"
#include "obs/obs.h"
#include "uvctx/snapshot.h"

/* Under the lock of c's list. */
static void describe(const uvctx_t* c, uvctx_ctx_info_t* r) {
  int e = atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed);
  const uvctx_t* s = uvctx__state_of(c);
  int se = atomic_load_explicit(&((uvctx_t*)s)->err, memory_order_relaxed);
  int st = e ? e : se;

  r->id = c;
  r->parent = c->parent;
  r->kind = uvctx__kind_name(c->kind);
  r->refs = uvctx__refs_of(c);
  r->err = st == UVCTX__ERR_CANCELED   ? UV_ECANCELED
           : st == UVCTX__ERR_TIMEDOUT ? UV_ETIMEDOUT
                                       : 0;
  r->has_deadline = c->kind == UVCTX__DEADLINE;
  r->deadline_ns =
      r->has_deadline ? ((const uvctx__deadline_t*)c)->deadline : 0;
  r->key = NULL;
  if (c->kind == UVCTX__VALUE)
    r->key = ((const uvctx__value_t*)c)->key->name;
  r->site = c->site;
}

static void print_ctx(FILE* out, const uvctx_t* c) {
  uvctx_ctx_info_t r;
  char site[512];

  describe(c, &r);
  uvctx_site_format(r.site, site, sizeof(site));
  fprintf(out, "  ctx %p kind=%s parent=%p refs=%u state=%s", r.id, r.kind,
          r.parent, r.refs,
          r.err == UV_ECANCELED   ? "canceled"
          : r.err == UV_ETIMEDOUT ? "timedout"
                                  : "live");
  if (c->kind == UVCTX__VALUE)
    fprintf(out, " key=%s", r.key != NULL ? r.key : "?");
  if (r.has_deadline)
    fprintf(out, " deadline=%" PRIu64, r.deadline_ns);
  fprintf(out, " created at %s\n", site);
}

/* A growable array of pointers. */
typedef struct vec_s {
  const void** v;
  size_t len;
  size_t cap;
} vec_t;

/* Room for one more; -1 without memory. */
static int vec_reserve(vec_t* s) {
  if (s->len == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    const void** v = uvctx__realloc(s->v, cap * sizeof(*v));
    if (v == NULL)
      return -1;
    s->v = v;
    s->cap = cap;
  }
  return 0;
}

typedef struct dump_s {
  const uvctx_loop_t* l; /* NULL: every loop's contexts are visited */
  int (*visit)(const uvctx_t* c, void* arg); /* under c's home lock */
  void* arg;
  /* With `holds`, the longest time each of loops[0..nloops-1]'s locks was
   * held by the walk, in ns. */
  const uvctx_loop_t* const* loops;
  size_t nloops;
  uint64_t* holds;
  vec_t stack;    /* links still to visit under the lock held */
  vec_t frontier; /* contexts homed elsewhere, referenced, to visit later */
  vec_t merges;   /* merges listed through a link of another parent */
  int oom;
} dump_t;

static void push(dump_t* d, vec_t* s, const void* p) {
  if (vec_reserve(s) != 0)
    d->oom = 1;
  else
    s->v[s->len++] = p;
}

/* A merge is listed once per parent: it is printed (and its children
 * visited) through its own link when that is on a list, else through the
 * first of its other links met. */
static int first_visit(dump_t* d, const uvctx__link_t* k) {
  const uvctx_t* c = k->owner;
  int w;
  size_t i;
  if (c->kind != UVCTX__ANY)
    return 1;
  w = atomic_load_explicit(&((uvctx_t*)c)->where, memory_order_relaxed);
  if (w == UVCTX__AT_PARENT || w == UVCTX__AT_ORPHAN)
    return k == &c->link;
  for (i = 0; i < d->merges.len; i++)
    if (d->merges.v[i] == c)
      return 0;
  push(d, &d->merges, c);
  return 1;
}

/* [lk, a stripe lock] Visits what the stack holds and what hangs below it
 * on lists that lock guards; a live context guarded by another lock, or
 * with lists on several stripes, goes on the frontier, with a reference,
 * for that lock's turn. */
static void visit_locked(dump_t* d, const uvctx__lock_t* lk) {
  while (d->stack.len > 0 && !d->oom) {
    const uvctx__link_t* k = d->stack.v[--d->stack.len];
    uvctx_t* c = k->owner;
    const uvctx__link_t* ch;
    unsigned n;
    if (!first_visit(d, k))
      continue;
    if ((d->l == NULL || c->home == d->l) && d->visit(c, d->arg) != 0) {
      d->oom = 1;
      break;
    }
    if (!uvctx__cancellable_kind(c->kind) ||
        (atomic_load_explicit(&c->err, memory_order_relaxed) != UVCTX__LIVE &&
         uvctx__stripes_of(c) == NULL))
      continue;
    if (uvctx__lock_of(c) == lk && uvctx__stripes_of(c) == NULL) {
      for (ch = *uvctx__own_list(c); ch != NULL && !d->oom; ch = ch->next)
        push(d, &d->stack, ch);
      continue;
    }
    /* Listed here, so alive while this lock is held; a count already at
     * zero means a free waits for the lock to unlink it, and it has no
     * children to visit. */
    if (vec_reserve(&d->frontier) != 0) {
      d->oom = 1;
      break;
    }
    n = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while ((n & ~UVCTX__REF_STRIPED) != 0 &&
           !atomic_compare_exchange_weak_explicit(&c->refs, &n, n + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
    if ((n & ~UVCTX__REF_STRIPED) != 0)
      d->frontier.v[d->frontier.len++] = c;
  }
}

/* The lock of stripe `x` of h. */
static uvctx__lock_t* stripe_lock(const uvctx_loop_t* h, int x) {
  uvctx_loop_t* m = (uvctx_loop_t*)h;
  return x == 0 ? &m->lock : &m->dom[x].lock;
}

/* Takes the lock of h's stripe x for the walk, and gives it back, keeping
 * the time it was held when the caller asked for it. */
static uint64_t hold(const dump_t* d, const uvctx_loop_t* h, int x) {
  uvctx__lock_acquire(stripe_lock(h, x));
  return d->holds != NULL ? uv_hrtime() : 0;
}

static void unhold(const dump_t* d, const uvctx_loop_t* h, int x, uint64_t t0) {
  size_t i;
  uint64_t ns = d->holds != NULL ? uv_hrtime() - t0 : 0;
  uvctx__lock_release(stripe_lock(h, x));
  for (i = 0; d->holds != NULL && i < d->nloops; i++)
    if (d->loops[i] == h && ns > d->holds[i])
      d->holds[i] = ns;
}

/* Calls visit(c, arg) for every live context homed on d->l (on any loop
 * when it is NULL). Every live
 * context is either on some loop's orphan list or in the children list of
 * a live context, so a walk from all orphan lists of all loops finds each
 * one (trees may span loops). Each loop's lists are read under that loop's
 * lock alone, one loop at a time: the walk stops no loop for longer than
 * the walk of what that loop guards, and a context that moves while it
 * runs (a cancel on another thread) may be met in its old place or its new
 * one. Returns 0, or UV_ENOMEM when the walk's memory could not grow (some
 * contexts were not visited) or when visit() returned non-zero. */
static int walk(dump_t* dp) {
  dump_t d = *dp;
  uvctx_loop_t* it;
  size_t i;
  uint64_t t0;

  /* The registry lock keeps every binding visited from being freed. */
  uvctx__registry_lock();
  for (it = uvctx__registry_locked(); it != NULL && !d.oom;
       it = it->next_loop) {
    int x;
    for (x = 0; x < UVCTX__DOMAINS && !d.oom; x++) {
      const uvctx__link_t* o;
      t0 = hold(&d, it, x);
      for (o = it->dom[x].orphans; o != NULL && !d.oom; o = o->next) {
        push(&d, &d.stack, o);
        visit_locked(&d, stripe_lock(it, x));
      }
      unhold(&d, it, x, t0);
    }
  }
  /* Contexts homed on one loop under a parent of another: their children,
   * under their own loop's lock. The frontier grows as it is worked. */
  for (i = 0; i < d.frontier.len && !d.oom; i++) {
    uvctx_t* c = (uvctx_t*)d.frontier.v[i];
    uvctx__stripes_t* b = uvctx__stripes_of(c);
    int x;
    /* Its own list under its own stripe's lock; a striped parent's other
     * lists under theirs, in turn. */
    for (x = 0; x < UVCTX__DOMAINS && !d.oom; x++) {
      const uvctx__link_t* ch;
      if (x != UVCTX__DOM(c) && (b == NULL || x == 0))
        continue;
      t0 = hold(&d, c->home, x);
      /* A striped parent's lists stay its lists once it is done (they are
       * emptied under their locks); another's u1 is then its cause. */
      if (b != NULL ||
          atomic_load_explicit(&c->err, memory_order_relaxed) == UVCTX__LIVE)
        for (ch = x == UVCTX__DOM(c) ? *uvctx__own_list(c) : b->s[x].head;
             ch != NULL && !d.oom; ch = ch->next)
          push(&d, &d.stack, ch);
      visit_locked(&d, stripe_lock(c->home, x));
      unhold(&d, c->home, x, t0);
    }
  }
  uvctx__registry_unlock();
  /* No lock is held: dropping the last reference frees as usual. */
  for (i = 0; i < d.frontier.len; i++)
    uvctx_unref((uvctx_t*)d.frontier.v[i]);
  uvctx__free(d.stack.v);
  uvctx__free(d.frontier.v);
  uvctx__free(d.merges.v);
  return d.oom ? UV_ENOMEM : 0;
}

/* walk() for the contexts homed on `l` alone. */
static int walk_loop(const uvctx_loop_t* l, int (*visit)(const uvctx_t*, void*),
                     void* arg) {
  dump_t d;
  memset(&d, 0, sizeof(d));
  d.l = l;
  d.visit = visit;
  d.arg = arg;
  return walk(&d);
}

static int visit_print(const uvctx_t* c, void* arg) {
  print_ctx(arg, c);
  return 0;
}

/* The report is composed in memory and copied to `out` after every lock is
 * released, so that a slow stream (a pipe, a terminal) holds up nobody.
 * Without memory for the text, it is written to `out` directly. */
void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out) {
  uint64_t live, watches, foreign;
  uint32_t deadlines;
  FILE* dest;
  FILE* mem;
  char* text = NULL;
  size_t text_len = 0;

  if (l == NULL || out == NULL)
    return;
  dest = out;
  mem = open_memstream(&text, &text_len);
  if (mem != NULL)
    out = mem;
  uvctx__lock_acquire(&((uvctx_loop_t*)l)->lock);
  live = uvctx__live_locked(l);
  watches = l->n_watches;
  deadlines = l->heap_len;
  foreign = l->n_foreign;
  uvctx__lock_release(&((uvctx_loop_t*)l)->lock);
  fprintf(out,
          "uvctx loop %p: %" PRIu64 " live context(s), %" PRIu64
          " pending watch(es), %" PRIu32 " armed deadline(s), %" PRIu64
          " context(s) of other loops under its background\n",
          (const void*)l, live, watches, deadlines, foreign);
  if (walk_loop(l, visit_print, out) != 0)
    fprintf(out, "  (out of memory: the list above is incomplete)\n");
  if (mem != NULL) {
    if (fclose(mem) == 0 && text != NULL)
      fwrite(text, 1, text_len, dest);
    else
      fprintf(dest, "uvctx loop %p: out of memory for the report\n",
              (const void*)l);
    free(text);
  }
}

typedef struct records_s {
  uvctx_ctx_info_t* v;
  size_t n, cap;
} records_t;

static int records_add(records_t* r, const uvctx_t* c) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 256;
    uvctx_ctx_info_t* v = uvctx__realloc(r->v, cap * sizeof(*v));
    if (v == NULL)
      return -1;
    r->v = v;
    r->cap = cap;
  }
  describe(c, &r->v[r->n++]);
  return 0;
}

static int visit_copy(const uvctx_t* c, void* arg) {
  return records_add(arg, c);
}

/* The records of each loop of a multi-loop snapshot. */
typedef struct loops_records_s {
  const uvctx_loop_t* const* loops;
  records_t* r;
  size_t n;
} loops_records_t;

static int visit_copy_loops(const uvctx_t* c, void* arg) {
  loops_records_t* lr = arg;
  size_t i;
  for (i = 0; i < lr->n; i++)
    if (lr->loops[i] == c->home)
      return records_add(&lr->r[i], c);
  return 0;
}

/* Sizes `r` for the live count of `l`, taken under its lock, so that the
 * walk rarely reallocates while holding a lock. */
static int records_reserve(records_t* r, const uvctx_loop_t* l) {
  uint64_t live;
  uvctx__lock_acquire(&((uvctx_loop_t*)l)->lock);
  live = uvctx__live_locked(l);
  uvctx__lock_release(&((uvctx_loop_t*)l)->lock);
  if (live > 0) {
    r->cap = (size_t)live + 64;
    r->v = uvctx__malloc(r->cap * sizeof(*r->v));
    if (r->v == NULL)
      return UV_ENOMEM;
  }
  return 0;
}

/* Hands `r` out as a snapshot: NULL when empty. */
static void records_give(records_t* r, uvctx_ctx_info_t** out, size_t* n) {
  if (r->n == 0) {
    uvctx__free(r->v);
    r->v = NULL;
  }
  *out = r->v;
  *n = r->n;
}

int uvctx_loop_snapshot(const uvctx_loop_t* l, uvctx_ctx_info_t** out,
                        size_t* n) {
  records_t r = {NULL, 0, 0};
  int rc;

  if (l == NULL)
    return UVCTX__EINVAL("the loop binding is NULL");
  if (out == NULL || n == NULL)
    return UVCTX__EINVAL("out or n is NULL");
  if ((rc = records_reserve(&r, l)) != 0)
    return rc;
  if ((rc = walk_loop(l, visit_copy, &r)) != 0) {
    uvctx__free(r.v);
    return rc;
  }
  records_give(&r, out, n);
  return 0;
}

int uvctx_loops_snapshot(const uvctx_loop_t* const* loops, size_t n,
                         uvctx_ctx_info_t** out, size_t* counts,
                         uint64_t* hold_ns) {
  loops_records_t lr;
  dump_t d;
  size_t i;
  int rc = 0;

  if (loops == NULL || n == 0)
    return UVCTX__EINVAL("no loops");
  if (out == NULL || counts == NULL)
    return UVCTX__EINVAL("out or counts is NULL");
  for (i = 0; i < n; i++)
    if (loops[i] == NULL)
      return UVCTX__EINVAL("a loop binding is NULL");
  lr.loops = loops;
  lr.n = n;
  lr.r = uvctx__calloc(n, sizeof(*lr.r));
  if (lr.r == NULL)
    return UV_ENOMEM;
  for (i = 0; i < n && rc == 0; i++)
    rc = records_reserve(&lr.r[i], loops[i]);
  if (rc == 0) {
    memset(&d, 0, sizeof(d));
    d.visit = visit_copy_loops;
    d.arg = &lr;
    d.loops = loops;
    d.nloops = n;
    d.holds = hold_ns;
    if (hold_ns != NULL)
      memset(hold_ns, 0, n * sizeof(*hold_ns));
    rc = walk(&d);
  }
  for (i = 0; i < n; i++) {
    if (rc != 0)
      uvctx__free(lr.r[i].v);
    else
      records_give(&lr.r[i], &out[i], &counts[i]);
  }
  uvctx__free(lr.r);
  return rc;
}

void uvctx_snapshot_free(uvctx_ctx_info_t* records) {
  uvctx__free(records);
}
