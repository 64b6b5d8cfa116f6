/* mailbox.c owns each loop binding's mailbox: the uv_async_t that wakes the
 * loop from any thread, and the dispatch queue of watches whose callbacks
 * are due. It is called by the rest of the core and calls nothing above it:
 * on waking it calls the binding's wake_locked hook (the timer source's
 * re-sync), then hands each due watch to the deliver hook (core/watch.c),
 * which runs its callback. */
#include "core/internal.h"

static void mailbox_cb(uv_async_t* a);

int uvctx__mailbox_init(uvctx_loop_t* l) {
  int rc;
  l->mailbox.data = l;
  l->queue_tail = &l->queue_head;
  rc = uv_async_init(l->uv, &l->mailbox, mailbox_cb);
  if (rc != 0)
    return rc;
  uv_unref((uv_handle_t*)&l->mailbox);
  l->handles_open++;
  return 0;
}

void uvctx__mailbox_close(uvctx_loop_t* l, uv_close_cb close_cb) {
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
}

/* From the loop's own thread the mailbox is referenced until the queue is
 * drained, so that uv_run() cannot return with callbacks still due (a
 * deadline timer, the only live handle, fires and stops in one pass). Other
 * threads cannot touch the handle's reference count; they only wake the
 * loop. */
void uvctx__mailbox_wake_locked(uvctx_loop_t* l, int keep_alive) {
  if (keep_alive && !l->mailbox_refd && uvctx__on_loop_thread(l)) {
    uv_ref((uv_handle_t*)&l->mailbox);
    l->mailbox_refd = 1;
  }
  uv_async_send(&l->mailbox);
}

void uvctx__mailbox_post_locked(uvctx_watch_t* w, int err,
                                uvctx__cancel_op_t* op) {
  uvctx_loop_t* l = w->home_;
  if (op->time == 0)
    op->time = uv_hrtime();
  uvctx__cancel_op_id(op);
  w->queued_at_ = op->time;
  w->cause_id_ = op->id;
  if (!uvctx__on_loop_thread(l))
    l->remote_wakeups++;
  UVCTX__W_SET_STATE(w, UVCTX__W_QUEUED);
  w->err_ = err;
  UVCTX__QUEUE_INSERT_TAIL(&l->queue_tail, w, next_, pprev_);
  l->queued++;
  uvctx__mailbox_wake_locked(l, 1);
}

void uvctx__mailbox_unpost_locked(uvctx_watch_t* w) {
  uvctx_loop_t* l = w->home_;
  UVCTX__QUEUE_REMOVE(&l->queue_tail, w, next_, pprev_);
  l->queued--;
}

/* [loop thread] Delivers the watches that were due when it started; those
 * queued by the callbacks themselves (a watch restarted on a done context)
 * wait for the next wake-up, so a callback cannot starve the loop. */
static void drain(uvctx_loop_t* l) {
  uint64_t n;
  uvctx__lock_acquire(&l->lock);
  l->wake_locked(l);
  n = l->queued;
  while (n-- > 0 && l->queue_head != NULL) {
    uvctx_watch_t* w = l->queue_head;
    int err = w->err_;
    uvctx__mailbox_unpost_locked(w);
    UVCTX__W_SET_STATE(w, UVCTX__W_IDLE);
    l->n_watches--;
    l->callbacks++;
    uvctx_histogram_record(&l->propagation, uv_hrtime() - w->queued_at_);
    uvctx__lock_release(&l->lock);
    /* After this call `w` may be freed or restarted: touch it no more. */
    l->deliver(w, err);
    uvctx__lock_acquire(&l->lock);
  }
  if (l->queue_head != NULL) {
    uv_async_send(&l->mailbox);
  } else if (l->mailbox_refd) {
    uv_unref((uv_handle_t*)&l->mailbox);
    l->mailbox_refd = 0;
  }
  uvctx__lock_release(&l->lock);
}

static void mailbox_cb(uv_async_t* a) {
  uvctx_loop_t* l = a->data;
  atomic_store_explicit(&l->thread, (uintptr_t)uv_thread_self(),
                        memory_order_relaxed);
  drain(l);
}
