/* watch.c owns watches: starting and stopping them, posting them to their
 * home loop's mailbox when their context is done, and delivering their
 * callbacks when the mailbox hands them back on the loop's thread. */
#include "core/internal.h"

#include "common/clock.h"

enum { W_DEADLINE = 1 }; /* counted in the home loop's dl_watches */

static void dl_uncount_locked(uvctx_watch_t* w) {
  if (w->flags_ & W_DEADLINE) {
    w->flags_ &= ~W_DEADLINE;
    if (--w->home_->dl_watches == 0)
      uvctx__timer_touch_locked(w->home_);
  }
}

/* [lock] Posts a watch whose context is done to its home's mailbox. */
static void post_locked(uvctx_watch_t* w, int err, uvctx__cancel_op_t* op) {
  dl_uncount_locked(w);
  uvctx__mailbox_post_locked(w, err, op);
}

void uvctx__watches_fire_locked(uvctx_t* c, int err, uvctx__cancel_op_t* op) {
  uvctx_watch_t* w = c->u2.watches;
  c->u2.watches = NULL;
  while (w != NULL) {
    uvctx_watch_t* next = w->next_;
    post_locked(w, err, op);
    w = next;
  }
}

int uvctx_watch_start(uvctx_watch_t* w, uvctx_t* c, uvctx_watch_cb cb) {
  uvctx_t* s;
  uvctx_loop_t* l;
  uvctx__lock_t* k;
  int has_deadline;

  if (w == NULL)
    return UVCTX__EINVAL("watch is NULL");
  if (!uvctx__valid(c))
    return UVCTX__EINVAL("c is not a context");
  if (cb == NULL)
    return UVCTX__EINVAL("cb is NULL");
  s = uvctx__state_of(c);
  l = c->home;
  has_deadline = uvctx__deadline_of(c) != UVCTX__NO_DEADLINE;
  w->ctx_ = uvctx_ref(c);
  w->cb_ = cb;
  w->home_ = l;
  w->next_ = NULL;
  w->pprev_ = NULL;
  w->err_ = 0;
  w->flags_ = 0;

  /* The watch list is guarded by the stripe lock of the context, the
   * counts and the queue by the loop lock, taken after it (core/lock.c). */
  k = uvctx__cancellable_kind(s->kind) ? uvctx__lock_of(s) : &l->lock;
  uvctx__lock_acquire(k);
  if (k != &l->lock)
    uvctx__lock_acquire(&l->lock);
  l->n_watches++;
  if (!uvctx__cancellable_kind(s->kind)) {
    /* Never done: armed on no list, it waits for uvctx_watch_stop(). */
    UVCTX__W_SET_STATE(w, UVCTX__W_ARMED);
  } else if (atomic_load_explicit(&s->err, memory_order_relaxed) !=
             UVCTX__LIVE) {
    /* No cancel caused this one: an id that is never drawn, then 0. */
    uvctx__cancel_op_t op = {UINT64_MAX, 0};
    post_locked(
        w, uvctx__err_code(atomic_load_explicit(&s->err, memory_order_relaxed)),
        &op);
    w->cause_id_ = 0;
  } else {
    UVCTX__W_SET_STATE(w, UVCTX__W_ARMED);
    UVCTX__LIST_INSERT_HEAD(&s->u2.watches, w, next_, pprev_);
    if (has_deadline) {
      w->flags_ |= W_DEADLINE;
      if (l->dl_watches++ == 0)
        uvctx__timer_touch_locked(l);
    }
  }
  if (k != &l->lock)
    uvctx__lock_release(&l->lock);
  uvctx__lock_release(k);
  return 0;
}

int uvctx_watch_stop(uvctx_watch_t* w) {
  uvctx_t* c = NULL;
  uvctx_loop_t* l;
  uvctx__lock_t* k = NULL;
  if (w == NULL || UVCTX__W_STATE(w) == UVCTX__W_IDLE)
    return 0;
  /* Pending: home_ was set before the state, and the home cannot close
   * while the watch is pending. */
  l = w->home_;
  uvctx__lock_acquire(&l->lock);
  if (UVCTX__W_STATE(w) == UVCTX__W_ARMED && w->ctx_ != NULL &&
      uvctx__lock_of(uvctx__state_of(w->ctx_)) != &l->lock) {
    /* Listed under another stripe's lock, which comes first: armed, it
     * cannot be fired and delivered while the loop lock is held, so its
     * context (and the stripe) are still there when it is let go. */
    k = uvctx__lock_of(uvctx__state_of(w->ctx_));
    uvctx__lock_release(&l->lock);
    uvctx__lock_acquire(k);
    uvctx__lock_acquire(&l->lock);
  }
  if (UVCTX__W_STATE(w) == UVCTX__W_ARMED) {
    UVCTX__LIST_REMOVE(w, next_, pprev_);
    dl_uncount_locked(w);
  } else if (UVCTX__W_STATE(w) == UVCTX__W_QUEUED) {
    uvctx__mailbox_unpost_locked(w);
  } else {
    uvctx__lock_release(&l->lock);
    if (k != NULL)
      uvctx__lock_release(k);
    return 0;
  }
  UVCTX__W_SET_STATE(w, UVCTX__W_IDLE);
  w->home_->n_watches--;
  c = w->ctx_;
  w->ctx_ = NULL;
  uvctx__lock_release(&l->lock);
  if (k != NULL)
    uvctx__lock_release(k);
  uvctx_unref(c);
  return 1;
}

void uvctx__watch_deliver(uvctx_watch_t* w, int err) {
  uvctx_watch_cb cb = w->cb_;
  uvctx_t* c = w->ctx_;
  /* ctx_ is left set until the callback: the tracer names the context,
   * and a stop from another thread looks only at state_. */
  if (UVCTX__TRACING()) {
    /* The trace measures the delay on the uv_hrtime() clock of its events;
     * the stamp is of the mailbox's own (common/clock.h). */
    w->queued_at_ = uv_hrtime() - uvctx__stamp_since(w->queued_at_);
    uvctx__trace_callback(w, err);
  }
  w->ctx_ = NULL;
  /* After this call `w` may be freed or restarted: touch it no more. */
  cb(w, err);
  uvctx_unref(c);
}
