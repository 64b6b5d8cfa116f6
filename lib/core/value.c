/* value.c owns the contexts that add nothing cancellable: with_value and
 * without_cancel, and the value lookup. Neither kind has a done state of its
 * own: a value context shares the state of its nearest non-value ancestor
 * (cached in `anc`, so uvctx_err() is one hop), and a without_cancel context
 * is never done. */
#include "core/internal.h"

static inline __attribute__((always_inline)) int
attach_plain(uvctx_t* c, uvctx_t* parent, uvctx_t** out) {
  /* c's stripe, worked out once (c is not shared yet). */
  uvctx__dom_t* dm = uvctx__dom_of(c);
  uvctx__ref_parent(parent);
  uvctx__lock_acquire(&dm->lock);
  uvctx__orphan_in_locked(c, dm);
  uvctx__count_new_locked(dm, c->kind);
  uvctx__lock_release(&dm->lock);
  if (UVCTX__TRACING())
    uvctx__trace_create(c);
  *out = c;
  return 0;
}

int uvctx_with_value(uvctx_t* parent, const uvctx_key_t* key, void* value,
                     uvctx_t** out) {
  uvctx__value_t* v;
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  UVCTX__REQUIRE(key != NULL, "key is NULL");
  v = (uvctx__value_t*)uvctx__alloc_ctx(sizeof(*v), UVCTX__VALUE, parent,
                                        __builtin_return_address(0));
  if (v == NULL)
    return UV_ENOMEM;
  v->anc = uvctx__state_of(parent);
  v->key = key;
  v->value = value;
  return attach_plain(&v->base, parent, out);
}

int uvctx_without_cancel(uvctx_t* parent, uvctx_t** out) {
  uvctx_t* c;
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  c = uvctx__alloc_ctx(sizeof(*c), UVCTX__DETACHED, parent,
                       __builtin_return_address(0));
  if (c == NULL)
    return UV_ENOMEM;
  return attach_plain(c, parent, out);
}

/* Iterative walk towards the root; merges continue through parents[0]. */
void* uvctx_value(const uvctx_t* c, const uvctx_key_t* key) {
  if (key == NULL)
    return NULL;
  while (c != NULL) {
    if (c->kind == UVCTX__VALUE) {
      const uvctx__value_t* v = (const uvctx__value_t*)c;
      if (v->key == key)
        return v->value;
    }
    c = c->parent;
  }
  return NULL;
}
