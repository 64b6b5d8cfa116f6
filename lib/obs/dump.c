/* dump.c owns the leak report: uvctx_loop_dump(), which lists every live
 * context homed on a loop with its kind, parent, reference count, state and
 * the code that created it, and uvctx_loop_snapshot(), which copies the
 * same records for programs that present them themselves. Both walk the
 * trees with walk() and describe a context with describe(). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>

#include "common/debug.h"
#include "core/internal.h"
#include "obs/obs.h"
#include "uvctx/snapshot.h"

/* Under the lock. */
static void describe(const uvctx_t* c, uvctx_ctx_info_t* r) {
  int e = atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed);
  const uvctx_t* s = uvctx__state_of(c);
  int se = atomic_load_explicit(&((uvctx_t*)s)->err, memory_order_relaxed);
  int st = e ? e : se;

  r->id = c;
  r->parent = c->parent;
  r->kind = uvctx__kind_name(c->kind);
  r->refs = atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_relaxed);
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

/* A merge is listed once per parent; print it through its first listed
 * link only. */
static int primary_link(const uvctx__link_t* l) {
  const uvctx_t* c = l->owner;
  const uvctx__any_t* a;
  size_t i;
  if (c->kind != UVCTX__ANY || l == &c->link)
    return 1;
  if (c->link.pprev != NULL)
    return 0;
  a = (const uvctx__any_t*)c;
  for (i = 0; i + 1 < a->n; i++) {
    if (&a->extra[i].link == l)
      return 1;
    if (a->extra[i].link.pprev != NULL)
      return 0;
  }
  return 1;
}

/* Calls visit(c, arg) for every live context homed on `l`, under the lock.
 * Every live context is either on some loop's orphan list or in the
 * children list of a live context, so a walk from all orphan lists of all
 * loops finds each one (trees may span loops). Returns 0, or UV_ENOMEM
 * when the walk's stack could not grow (some contexts were not visited)
 * or when visit() returned non-zero. */
static int walk(const uvctx_loop_t* l, int (*visit)(const uvctx_t*, void*),
                void* arg) {
  const uvctx__link_t** stack = NULL;
  size_t len = 0, cap = 0;
  uvctx_loop_t* it;
  int oom = 0;

  for (it = uvctx__registry_locked(); it != NULL && !oom; it = it->next_loop) {
    const uvctx__link_t* o;
    for (o = it->orphans; o != NULL && !oom; o = o->next) {
      len = 0;
      if (len == cap) {
        const uvctx__link_t** s =
            uvctx__realloc(stack, (cap ? cap * 2 : 64) * sizeof(*stack));
        if (s == NULL) {
          oom = 1;
          break;
        }
        stack = s;
        cap = cap ? cap * 2 : 64;
      }
      stack[len++] = o;
      while (len > 0 && !oom) {
        const uvctx__link_t* k = stack[--len];
        const uvctx_t* c = k->owner;
        const uvctx__link_t* ch;
        if (!primary_link(k))
          continue;
        if (c->home == l && visit(c, arg) != 0) {
          oom = 1;
          break;
        }
        if (atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed) !=
                UVCTX__LIVE ||
            (c->kind != UVCTX__CANCEL && c->kind != UVCTX__DEADLINE &&
             c->kind != UVCTX__ANY))
          continue;
        for (ch = c->u1.children; ch != NULL; ch = ch->next) {
          if (len == cap) {
            const uvctx__link_t** s =
                uvctx__realloc(stack, (cap * 2) * sizeof(*stack));
            if (s == NULL) {
              oom = 1;
              break;
            }
            stack = s;
            cap *= 2;
          }
          stack[len++] = ch;
        }
      }
    }
  }
  uvctx__free(stack);
  return oom ? UV_ENOMEM : 0;
}

static int visit_print(const uvctx_t* c, void* arg) {
  print_ctx(arg, c);
  return 0;
}

/* The report is written into memory under the library lock and copied
 * to `out` after it, so that a slow stream (a pipe, a terminal) never
 * holds up cancels on other threads. Without memory for that, it is
 * written to `out` directly, under the lock. */
void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out) {
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
  uvctx__lock();
  fprintf(out,
          "uvctx loop %p: %" PRIu64 " live context(s), %" PRIu64
          " pending watch(es), %" PRIu32 " armed deadline(s), %" PRIu64
          " context(s) of other loops under its background\n",
          (void*)l, uvctx__live_locked(l), l->n_watches, l->heap_len,
          l->n_foreign);
  if (walk(l, visit_print, out) != 0)
    fprintf(out, "  (out of memory: the list above is incomplete)\n");
  uvctx__unlock();
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

static int visit_copy(const uvctx_t* c, void* arg) {
  records_t* r = arg;
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

/* The array is sized from the live count taken under the lock, so that
 * the walk rarely reallocates while holding it. */
int uvctx_loop_snapshot(const uvctx_loop_t* l, uvctx_ctx_info_t** out,
                        size_t* n) {
  records_t r = {NULL, 0, 0};
  uint64_t live;
  int rc;

  if (l == NULL)
    return UVCTX__EINVAL("the loop binding is NULL");
  if (out == NULL || n == NULL)
    return UVCTX__EINVAL("out or n is NULL");
  uvctx__lock();
  live = uvctx__live_locked(l);
  uvctx__unlock();
  if (live > 0) {
    r.cap = (size_t)live + 64;
    r.v = uvctx__malloc(r.cap * sizeof(*r.v));
    if (r.v == NULL)
      return UV_ENOMEM;
  }
  uvctx__lock();
  rc = walk(l, visit_copy, &r);
  uvctx__unlock();
  if (rc != 0) {
    uvctx__free(r.v);
    return rc;
  }
  if (r.n == 0) {
    uvctx__free(r.v);
    r.v = NULL;
  }
  *out = r.v;
  *n = r.n;
  return 0;
}

void uvctx_snapshot_free(uvctx_ctx_info_t* records) {
  uvctx__free(records);
}
