/* mailbox.c owns each loop binding's mailbox: the uv_async_t that wakes the
 * loop from any thread, the check and idle handles that deliver what the
 * loop's own thread posts without a wake-up, and the dispatch queue of
 * watches whose callbacks are due. It is called by the rest of the core and
 * calls nothing above it: on draining it calls the binding's wake_locked
 * hook (the timer source's re-sync), then hands each due watch to the
 * deliver hook (core/watch.c), which runs its callback. */
#include "core/internal.h"

#include "common/clock.h"

static void mailbox_cb(uv_async_t* a);
static void local_check_cb(uv_check_t* h);
static void local_idle_cb(uv_idle_t* h);

int uvctx__mailbox_init(uvctx_loop_t* l) {
  int rc;
  uvctx__stamp_init();
  l->mailbox.data = l;
  l->queue_tail = &l->queue_head;
  rc = uv_async_init(l->uv, &l->mailbox, mailbox_cb);
  if (rc != 0)
    return rc;
  uv_unref((uv_handle_t*)&l->mailbox);
  /* Neither can fail. The check handle keeps nothing alive; the idle
   * handle, referenced, is what keeps uv_run() alive while it runs. */
  uv_check_init(l->uv, &l->local_check);
  l->local_check.data = l;
  uv_unref((uv_handle_t*)&l->local_check);
  uv_idle_init(l->uv, &l->local_idle);
  l->local_idle.data = l;
  l->handles_open += 3;
  return 0;
}

void uvctx__mailbox_close(uvctx_loop_t* l, uv_close_cb close_cb) {
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
  uv_close((uv_handle_t*)&l->local_check, close_cb);
  uv_close((uv_handle_t*)&l->local_idle, close_cb);
}

/* [lock, loop thread] The same-thread path. A post from the loop's own
 * thread needs no uv_async_send(): that is a write to an eventfd, a poll
 * that returns at once, a read and a walk of every async handle, and the
 * callback a whole loop iteration later. Instead the queue is drained by
 * the idle handle before the next poll or by the check handle right after
 * it, whichever comes first: a post from a timer callback or from outside
 * uv_run() is delivered in the idle phase, one from an I/O callback in the
 * check phase of the same iteration, one from a close callback in the next
 * iteration's idle phase. An active idle handle also makes the poll return
 * at once and, being referenced, keeps uv_run() from returning while
 * callbacks are due (a deadline timer, the only live handle, fires and
 * stops in one pass). Both handles run only while the queue holds such
 * posts, so an idle binding costs no loop iteration anything. */
static void local_arm_locked(uvctx_loop_t* l) {
  if (l->local_armed)
    return;
  l->local_armed = 1;
  uv_idle_start(&l->local_idle, local_idle_cb);
  uv_check_start(&l->local_check, local_check_cb);
}

static void local_disarm_locked(uvctx_loop_t* l) {
  if (!l->local_armed)
    return;
  l->local_armed = 0;
  uv_idle_stop(&l->local_idle);
  uv_check_stop(&l->local_check);
}

/* Other threads cannot touch the handles; they only wake the loop, which
 * does not keep uv_run() alive. */
static void wake_locked(uvctx_loop_t* l, int keep_alive, int on_thread) {
  if (keep_alive && on_thread)
    local_arm_locked(l);
  else
    uv_async_send(&l->mailbox);
}

void uvctx__mailbox_wake_locked(uvctx_loop_t* l, int keep_alive) {
  wake_locked(l, keep_alive, uvctx__on_loop_thread(l));
}

void uvctx__mailbox_post_locked(uvctx_watch_t* w, int err,
                                uvctx__cancel_op_t* op) {
  uvctx_loop_t* l = w->home_;
  int on_thread = uvctx__on_loop_thread(l);
  /* One stamp per cancel, however many watches it makes due: the cheap
   * clock of common/clock.h, read again when each is delivered. */
  if (op->time == 0)
    op->time = uvctx__stamp();
  /* The id links a trace's cancel event to the callbacks: drawn (from a
   * counter every thread shares) only while tracing; 0 otherwise, as for a
   * watch no cancel made due. */
  if (UVCTX__TRACING())
    uvctx__cancel_op_id(op);
  w->queued_at_ = op->time;
  w->cause_id_ = op->id;
  if (!on_thread)
    l->remote_wakeups++;
  UVCTX__W_SET_STATE(w, UVCTX__W_QUEUED);
  w->err_ = err;
  UVCTX__QUEUE_INSERT_TAIL(&l->queue_tail, w, next_, pprev_);
  l->queued++;
  wake_locked(l, 1, on_thread);
}

void uvctx__mailbox_unpost_locked(uvctx_watch_t* w) {
  uvctx_loop_t* l = w->home_;
  UVCTX__QUEUE_REMOVE(&l->queue_tail, w, next_, pprev_);
  l->queued--;
}

/* [lock, loop thread] Once a drain has taken what it will deliver: what is
 * left (posted by another thread meanwhile) is this thread's to deliver,
 * with no wake-up, so the same-thread path takes it; an empty queue needs
 * neither handle. A callback that closed the binding has closed the
 * handles too; stopping them again is harmless. */
static void settle_locked(uvctx_loop_t* l) {
  if (l->queue_head != NULL && !l->closing)
    local_arm_locked(l);
  else
    local_disarm_locked(l);
}

/* [loop thread] Delivers the watches that were due when it started; those
 * queued by the callbacks themselves (a watch restarted on a done context)
 * wait for the next drain, after a poll, so a callback cannot starve the
 * loop. Whichever of the three handles calls it, the queue is one: the
 * callbacks come in the order their watches were posted. `resync`: call
 * the wake_locked hook first, which only a wake-up from another thread
 * needs (on the loop's thread the timer source is re-synced at once).
 *
 * The handles are settled when the last watch is taken, before its
 * callback, so that a drain of one watch takes the lock once: a post from
 * that callback arms them again itself (uvctx__mailbox_post_locked()). */
static void drain(uvctx_loop_t* l, int resync) {
  uint64_t n;
  atomic_store_explicit(&l->thread, (uintptr_t)uv_thread_self(),
                        memory_order_relaxed);
  uvctx__lock_acquire(&l->lock);
  if (resync || l->timer_dirty)
    l->wake_locked(l);
  n = l->queued;
  for (;;) {
    uvctx_watch_t* w = l->queue_head;
    int err;
    if (n == 0 || w == NULL) {
      settle_locked(l);
      uvctx__lock_release(&l->lock);
      return;
    }
    n--;
    err = w->err_;
    uvctx__mailbox_unpost_locked(w);
    UVCTX__W_SET_STATE(w, UVCTX__W_IDLE);
    l->n_watches--;
    l->callbacks++;
    uvctx_histogram_record(&l->propagation, uvctx__stamp_since(w->queued_at_));
    if (n == 0 || l->queue_head == NULL) {
      settle_locked(l);
      n = 0;
    }
    uvctx__lock_release(&l->lock);
    /* After this call `w` may be freed or restarted: touch it no more. */
    l->deliver(w, err);
    if (n == 0)
      return;
    uvctx__lock_acquire(&l->lock);
  }
}

static void mailbox_cb(uv_async_t* a) {
  drain(a->data, 1);
}

static void local_check_cb(uv_check_t* h) {
  drain(h->data, 0);
}

static void local_idle_cb(uv_idle_t* h) {
  drain(h->data, 0);
}
