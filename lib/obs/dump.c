/* dump.c owns uvctx_loop_dump(): the leak report. It lists every live
 * context homed on a loop with its kind, parent, reference count, state and
 * the code that created it. */
#define _GNU_SOURCE
#include <inttypes.h>

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

/* The report is written into memory under the library lock and copied
 * to `out` after it, so that a slow stream (a pipe, a terminal) never
 * holds up cancels on other threads. Without memory for that, it is
 * written to `out` directly, under the lock. */
void uvctx_loop_dump(const uvctx_loop_t* l, FILE* out) {
  const uvctx__link_t** stack = NULL;
  size_t len = 0, cap = 0;
  uvctx_loop_t* it;
  int oom = 0;
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
  /* Every live context is either on some loop's orphan list or in the
   * children list of a live context, so a walk from all orphan lists of all
   * loops finds each one (trees may span loops). */
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
        if (c->home == l)
          print_ctx(out, c);
        if (atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed) !=
                UVCTX__LIVE ||
            !uvctx__cancellable_kind(c->kind))
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
  if (oom)
    fprintf(out, "  (out of memory: the list above is incomplete)\n");
  uvctx__unlock();
  uvctx__free(stack);
  if (mem != NULL) {
    if (fclose(mem) == 0 && text != NULL)
      fwrite(text, 1, text_len, dest);
    else
      fprintf(dest, "uvctx loop %p: out of memory for the report\n",
              (const void*)l);
    free(text);
  }
}
