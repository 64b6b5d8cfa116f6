/* dump.c owns uvctx_loop_dump(): the leak report. It lists every live
 * context homed on a loop with its kind, parent, reference count, state and
 * the code that created it, reading each loop's lists under that loop's
 * lock only (core/lock.c). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <string.h>

#include "core/internal.h"
#include "obs/obs.h"

static void print_ctx(FILE* out, const uvctx_t* c) {
  char site[512];
  int e = atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed);
  const uvctx_t* s = uvctx__state_of(c);
  int se = atomic_load_explicit(&((uvctx_t*)s)->err, memory_order_relaxed);
  fprintf(out, "  ctx %p kind=%s parent=%p refs=%u state=%s", (void*)c,
          uvctx__kind_name(c->kind), (void*)c->parent,
          atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_relaxed),
          (e ? e : se) == UVCTX__ERR_CANCELED   ? "canceled"
          : (e ? e : se) == UVCTX__ERR_TIMEDOUT ? "timedout"
                                                : "live");
  if (c->kind == UVCTX__VALUE) {
    const uvctx__value_t* v = (const uvctx__value_t*)c;
    fprintf(out, " key=%s", v->key->name != NULL ? v->key->name : "?");
  }
  if (c->kind == UVCTX__DEADLINE)
    fprintf(out, " deadline=%" PRIu64, ((const uvctx__deadline_t*)c)->deadline);
  fprintf(out, " created at %s\n",
          uvctx__site_format(c->site, site, sizeof(site)));
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
  const uvctx_loop_t* l;
  FILE* out;
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

/* [h's lock] Visits what the stack holds and what hangs below it on lists
 * that lock guards; a live context homed on another loop goes on the
 * frontier, with a reference, for that loop's turn. */
static void visit_locked(dump_t* d, const uvctx_loop_t* h) {
  while (d->stack.len > 0 && !d->oom) {
    const uvctx__link_t* k = d->stack.v[--d->stack.len];
    uvctx_t* c = k->owner;
    const uvctx__link_t* ch;
    unsigned n;
    if (!first_visit(d, k))
      continue;
    if (c->home == d->l)
      print_ctx(d->out, c);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != UVCTX__LIVE ||
        !uvctx__cancellable_kind(c->kind))
      continue;
    if (c->home == h) {
      for (ch = c->u1.children; ch != NULL && !d->oom; ch = ch->next)
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
    while (n != 0 && !atomic_compare_exchange_weak_explicit(
                         &c->refs, &n, n + 1, memory_order_relaxed,
                         memory_order_relaxed)) {
    }
    if (n != 0)
      d->frontier.v[d->frontier.len++] = c;
  }
}

/* The report is composed in memory and copied to `out` after every lock
 * is released, so that a slow stream (a pipe, a terminal) holds up nobody.
 * Every live context is either on some loop's orphan list or in the
 * children list of a live context, so a walk from all orphan lists of all
 * loops finds each one (trees may span loops). Each loop's lists are read
 * under that loop's lock alone, one loop at a time: the report stops no
 * loop for longer than the walk of what that loop guards, and contexts
 * that move while it runs (a cancel on another thread) may be listed in
 * their old place or their new one. Without memory for the text, it is
 * written to `out` directly. */
void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out) {
  dump_t d;
  uvctx_loop_t* it;
  uint64_t live, watches, foreign;
  uint32_t deadlines;
  size_t i;
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
  memset(&d, 0, sizeof(d));
  d.l = l;
  d.out = out;

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

  /* The registry lock keeps every binding visited from being freed. */
  uvctx__registry_lock();
  for (it = uvctx__registry_locked(); it != NULL && !d.oom;
       it = it->next_loop) {
    const uvctx__link_t* o;
    uvctx__lock_acquire(&it->lock);
    for (o = it->orphans; o != NULL && !d.oom; o = o->next) {
      push(&d, &d.stack, o);
      visit_locked(&d, it);
    }
    uvctx__lock_release(&it->lock);
  }
  /* Contexts homed on one loop under a parent of another: their children,
   * under their own loop's lock. The frontier grows as it is worked. */
  for (i = 0; i < d.frontier.len && !d.oom; i++) {
    uvctx_t* c = (uvctx_t*)d.frontier.v[i];
    const uvctx__link_t* ch;
    uvctx__lock_acquire(&c->home->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) == UVCTX__LIVE)
      for (ch = c->u1.children; ch != NULL && !d.oom; ch = ch->next)
        push(&d, &d.stack, ch);
    visit_locked(&d, c->home);
    uvctx__lock_release(&c->home->lock);
  }
  uvctx__registry_unlock();
  if (d.oom)
    fprintf(out, "  (out of memory: the list above is incomplete)\n");
  /* No lock is held: dropping the last reference frees as usual. */
  for (i = 0; i < d.frontier.len; i++)
    uvctx_unref((uvctx_t*)d.frontier.v[i]);
  uvctx__free(d.stack.v);
  uvctx__free(d.frontier.v);
  uvctx__free(d.merges.v);
  if (mem != NULL) {
    if (fclose(mem) == 0 && text != NULL)
      fwrite(text, 1, text_len, dest);
    else
      fprintf(dest, "uvctx loop %p: out of memory for the report\n",
              (const void*)l);
    free(text);
  }
}
