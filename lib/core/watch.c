/* watch.c owns watches: starting and stopping them, moving them to their
 * home loop's dispatch queue when their context is done, and running their
 * callbacks from the loop's mailbox. */
#include "core/internal.h"

enum { W_DEADLINE = 1 }; /* counted in the home loop's dl_watches */

static void dl_uncount_locked(uvctx_watch_t* w) {
  if (w->flags_ & W_DEADLINE) {
    w->flags_ &= ~W_DEADLINE;
    if (--w->home_->dl_watches == 0)
      uvctx__timer_touch_locked(w->home_);
  }
}

static void watch_list_add(uvctx_watch_t** head, uvctx_watch_t* w) {
  w->next_ = *head;
  if (w->next_ != NULL)
    w->next_->pprev_ = &w->next_;
  *head = w;
  w->pprev_ = head;
}

static void watch_list_remove(uvctx_watch_t* w) {
  if (w->pprev_ == NULL)
    return;
  *w->pprev_ = w->next_;
  if (w->next_ != NULL)
    w->next_->pprev_ = w->pprev_;
  w->next_ = NULL;
  w->pprev_ = NULL;
}

static void queue_remove_locked(uvctx_loop_t* l, uvctx_watch_t* w) {
  *w->pprev_ = w->next_;
  if (w->next_ != NULL)
    w->next_->pprev_ = w->pprev_;
  else
    l->queue_tail = w->pprev_;
  w->next_ = NULL;
  w->pprev_ = NULL;
  l->queued--;
}

void uvctx__dispatch_locked(uvctx_watch_t* w, int err, uvctx__cancel_op_t* op) {
  uvctx_loop_t* l = w->home_;
  int local = uvctx__on_loop_thread(l);
  dl_uncount_locked(w);
  if (op->time == 0)
    op->time = uv_hrtime();
  uvctx__cancel_op_id(op);
  w->queued_at_ = op->time;
  w->cause_id_ = op->id;
  if (!local)
    l->remote_wakeups++;
  w->state_ = UVCTX__W_QUEUED;
  w->err_ = err;
  w->next_ = NULL;
  w->pprev_ = l->queue_tail;
  *l->queue_tail = w;
  l->queue_tail = &w->next_;
  l->queued++;
  /* From the loop's own thread the mailbox is referenced until the queue is
   * drained, so that uv_run() cannot return with callbacks still due (a
   * deadline timer, the only live handle, fires and stops in one pass).
   * Other threads cannot touch the handle's reference count; they only
   * wake the loop. */
  if (local && !l->mailbox_refd) {
    uv_ref((uv_handle_t*)&l->mailbox);
    l->mailbox_refd = 1;
  }
  uv_async_send(&l->mailbox);
}

void uvctx__watches_fire_locked(uvctx_t* c, int err, uvctx__cancel_op_t* op) {
  uvctx_watch_t* w = c->u2.watches;
  c->u2.watches = NULL;
  while (w != NULL) {
    uvctx_watch_t* next = w->next_;
    uvctx__dispatch_locked(w, err, op);
    w = next;
  }
}

int uvctx_watch_start(uvctx_watch_t* w, uvctx_t* c, uvctx_watch_cb cb) {
  uvctx_t* s;
  uvctx_loop_t* l;
  int has_deadline;

  if (w == NULL || !uvctx__valid(c) || cb == NULL)
    return UV_EINVAL;
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

  uvctx__lock();
  l->n_watches++;
  if (s->kind != UVCTX__CANCEL && s->kind != UVCTX__DEADLINE &&
      s->kind != UVCTX__ANY) {
    /* Never done: armed on no list, it waits for uvctx_watch_stop(). */
    w->state_ = UVCTX__W_ARMED;
  } else if (atomic_load_explicit(&s->err, memory_order_relaxed) !=
             UVCTX__LIVE) {
    /* No cancel caused this one: an id that is never drawn, then 0. */
    uvctx__cancel_op_t op = {UINT64_MAX, 0};
    uvctx__dispatch_locked(
        w, uvctx__err_code(atomic_load_explicit(&s->err, memory_order_relaxed)),
        &op);
    w->cause_id_ = 0;
  } else {
    w->state_ = UVCTX__W_ARMED;
    watch_list_add(&s->u2.watches, w);
    if (has_deadline) {
      w->flags_ |= W_DEADLINE;
      if (l->dl_watches++ == 0)
        uvctx__timer_touch_locked(l);
    }
  }
  uvctx__unlock();
  return 0;
}

int uvctx_watch_stop(uvctx_watch_t* w) {
  uvctx_t* c = NULL;
  if (w == NULL)
    return 0;
  uvctx__lock();
  if (w->state_ == UVCTX__W_ARMED) {
    watch_list_remove(w);
    dl_uncount_locked(w);
  } else if (w->state_ == UVCTX__W_QUEUED) {
    queue_remove_locked(w->home_, w);
  } else {
    uvctx__unlock();
    return 0;
  }
  w->state_ = UVCTX__W_IDLE;
  w->home_->n_watches--;
  c = w->ctx_;
  w->ctx_ = NULL;
  uvctx__unlock();
  uvctx_unref(c);
  return 1;
}

/* [loop thread] Runs the callbacks that were due when it started; those
 * queued by the callbacks themselves (a watch restarted on a done context)
 * wait for the next wake-up, so a callback cannot starve the loop. */
void uvctx__mailbox_drain(uvctx_loop_t* l) {
  uint64_t n;
  uvctx__lock();
  if (l->timer_dirty)
    uvctx__timer_sync_locked(l);
  n = l->queued;
  while (n-- > 0 && l->queue_head != NULL) {
    uvctx_watch_t* w = l->queue_head;
    uvctx_watch_cb cb = w->cb_;
    uvctx_t* c = w->ctx_;
    int err = w->err_;
    queue_remove_locked(l, w);
    w->state_ = UVCTX__W_IDLE;
    l->n_watches--;
    l->callbacks++;
    uvctx_histogram_record(&l->propagation, uv_hrtime() - w->queued_at_);
    uvctx__unlock();
    /* ctx_ is left set until the callback: the tracer names the context,
     * and a stop from another thread looks only at state_. */
    if (UVCTX__TRACING())
      uvctx__trace_callback(w, err);
    w->ctx_ = NULL;
    /* After this call `w` may be freed or restarted: touch it no more. */
    cb(w, err);
    uvctx_unref(c);
    uvctx__lock();
  }
  if (l->queue_head != NULL) {
    uv_async_send(&l->mailbox);
  } else if (l->mailbox_refd) {
    uv_unref((uv_handle_t*)&l->mailbox);
    l->mailbox_refd = 0;
  }
  uvctx__unlock();
}
