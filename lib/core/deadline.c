/* deadline.c owns deadline contexts: with_deadline/with_timeout (and their
 * _cause forms), the deadline in force (uvctx_deadline()), and what happens
 * when one expires. The heap and the libuv timer that drive expiry are the
 * timer source's (core/timer.c). */
#include "core/internal.h"

/* The deadline in force for `c`: deadline and merge contexts store theirs
 * (already the minimum with what they inherited), the others inherit. */
uint64_t uvctx__deadline_of(const uvctx_t* c) {
  for (;;) {
    switch (c->kind) {
      case UVCTX__DEADLINE:
        return ((const uvctx__deadline_t*)c)->deadline;
      case UVCTX__ANY:
        return ((const uvctx__any_t*)c)->deadline;
      case UVCTX__CANCEL:
      case UVCTX__VALUE:
        c = c->parent;
        break;
      default:
        return UVCTX__NO_DEADLINE;
    }
  }
}

int uvctx_deadline(const uvctx_t* c, uint64_t* deadline_ns) {
  uint64_t d;
  if (c == NULL)
    return 0;
  d = uvctx__deadline_of(c);
  if (d == UVCTX__NO_DEADLINE)
    return 0;
  if (deadline_ns != NULL)
    *deadline_ns = d;
  return 1;
}

/* [lock] Arms a new, live deadline context, or cancels it at once if its
 * deadline has come. `now` is the uv_hrtime() the deadline was computed
 * from, or 0: an absolute deadline is compared with the clock read after
 * linking, so that an expired deadline is decided against the freshest
 * time. */
static inline __attribute__((always_inline)) int
arm_locked(uvctx__deadline_t* d, uint64_t deadline, uint64_t inherited,
           uint64_t now) {
  if (deadline <= (now != 0 ? now : uv_hrtime())) {
    uvctx__cancel_locked(&d->base, UVCTX__ERR_TIMEDOUT, d->dl_cause, d->dl_msg,
                         now);
    return 0;
  }
  /* Only the earliest deadline in force needs a heap entry: when the
   * parent's comes first, the parent's expiry reaches this child. */
  if (deadline < inherited) {
    int rc;
    uvctx__main_enter(&d->base);
    rc = uvctx__heap_insert_locked(d->base.home, d);
    uvctx__main_leave(&d->base);
    return rc;
  }
  return 0;
}

void uvctx__deadline_expire_locked(uvctx__deadline_t* d, uint64_t now,
                                   uint64_t late) {
  uvctx_loop_t* l = d->base.home;
  if (UVCTX__TRACING())
    uvctx__trace_deadline(&d->base, late);
  if (UVCTX__DOM(&d->base) != 0) {
    /* Guarded by another stripe's lock, which may not be taken under
     * this one: out of the heap now, into the slot that frees at its
     * top, and cancelled once the lock is let go. A count already at zero
     * is a free waiting for that lock, with nothing left to do. */
    uvctx__heap_remove_locked(l, d);
    if (uvctx__try_ref(&d->base)) {
      l->heap[l->heap_cap - 1 - l->n_stray] = d;
      l->n_stray++;
    }
    return;
  }
  uvctx__cancel_locked(&d->base, UVCTX__ERR_TIMEDOUT, d->dl_cause, d->dl_msg,
                       now);
}

void uvctx__deadline_expired(uvctx_loop_t* l) {
  for (;;) {
    uvctx__deadline_t* d = NULL;
    uvctx__lock_acquire(&l->lock);
    if (l->n_stray > 0)
      d = l->heap[l->heap_cap - l->n_stray--];
    uvctx__lock_release(&l->lock);
    if (d == NULL)
      break;
    uvctx__cancel(&d->base, UVCTX__ERR_TIMEDOUT, d->dl_cause, d->dl_msg, 0);
    uvctx_unref(&d->base);
  }
  if (l->deferred != NULL || l->pending != NULL)
    uvctx__cancel_deferred(l);
}

/* `now` is the uv_hrtime() the deadline was computed from, or 0 to read the
 * clock after linking. */
static int with_deadline(uvctx_t* parent, uint64_t deadline, uint64_t now,
                         int cause, const char* msg, uvctx_t** out,
                         void* site) {
  uvctx__deadline_t* d;
  uvctx__dom_t* dm;
  uvctx__lock_t* lk;
  uint64_t inherited;
  int rc = 0;

  d = (uvctx__deadline_t*)uvctx__alloc_ctx(sizeof(*d), UVCTX__DEADLINE, parent,
                                           site);
  if (d == NULL)
    return UV_ENOMEM;
  d->dl_msg = NULL;
  if (msg != NULL) {
    d->dl_msg = uvctx__msg_new(msg);
    if (d->dl_msg == NULL) {
      uvctx__free(d);
      return UV_ENOMEM;
    }
  }
  d->dl_cause = cause != 0 ? cause : UV_ETIMEDOUT;
  d->heap_index = UVCTX__NO_HEAP;
  inherited = uvctx__deadline_of(parent);
  d->deadline = deadline < inherited ? deadline : inherited;
  uvctx__ref_parent(parent);

  /* A deadline context shares its parent's home and stripe, and so the
   * lock of the list it goes on. */
  dm = uvctx__dom_of(&d->base);
  lk = &dm->lock;
  uvctx__lock_acquire(lk);
  switch (uvctx__register_child_locked(&d->base.link, parent)) {
    case UVCTX__PARENT_DONE:
      uvctx__born_done_locked(&d->base, parent);
      break;
    case UVCTX__PARENT_NEVER_DONE:
      uvctx__orphan_in_locked(&d->base, dm);
      rc = arm_locked(d, deadline, inherited, now);
      break;
    case UVCTX__LINKED:
      rc = arm_locked(d, deadline, inherited, now);
      break;
  }
  if (rc != 0) {
    uvctx__unlink(&d->base.link);
    uvctx__lock_release(lk);
    uvctx__msg_unref(d->dl_msg);
    uvctx__free(d);
    uvctx_unref(parent);
    return rc;
  }
  uvctx__count_new_locked(dm, UVCTX__DEADLINE);
  uvctx__lock_release(lk);
  if (UVCTX__TRACING())
    uvctx__trace_create(&d->base);
  *out = &d->base;
  return 0;
}

static uint64_t after_ms(uint64_t now, uint64_t timeout_ms) {
  if (timeout_ms > (UINT64_MAX - 1 - now) / 1000000)
    return UVCTX__NO_DEADLINE - 1;
  return now + timeout_ms * 1000000;
}

int uvctx_with_deadline(uvctx_t* parent, uint64_t deadline_ns, uvctx_t** out) {
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  return with_deadline(parent, deadline_ns, 0, 0, NULL, out,
                       __builtin_return_address(0));
}

int uvctx_with_timeout(uvctx_t* parent, uint64_t timeout_ms, uvctx_t** out) {
  uint64_t now = uv_hrtime();
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  return with_deadline(parent, after_ms(now, timeout_ms), now, 0, NULL, out,
                       __builtin_return_address(0));
}

int uvctx_with_deadline_cause(uvctx_t* parent, uint64_t deadline_ns, int cause,
                              const char* msg, uvctx_t** out) {
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  UVCTX__REQUIRE(cause < 0, "cause is not a negative error code");
  return with_deadline(parent, deadline_ns, 0, cause, msg, out,
                       __builtin_return_address(0));
}

int uvctx_with_timeout_cause(uvctx_t* parent, uint64_t timeout_ms, int cause,
                             const char* msg, uvctx_t** out) {
  uint64_t now = uv_hrtime();
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  UVCTX__REQUIRE(cause < 0, "cause is not a negative error code");
  return with_deadline(parent, after_ms(now, timeout_ms), now, cause, msg, out,
                       __builtin_return_address(0));
}
