/* timer.c owns the deadline source of each loop binding: the min-heap of
 * armed deadlines, the one libuv timer (or, with UVCTX_LOOP_HIRES_DEADLINES,
 * the timerfd under a uv_poll_t) that drives it, keeping it in sync with the
 * heap's top from any thread, and expiry. It is called by the rest of the
 * core and calls nothing above it: an expired deadline goes to the binding's
 * expire hook (core/deadline.c), a re-sync from another thread through the
 * mailbox. */
#include <string.h>

#include "core/internal.h"

static void timer_cb(uv_timer_t* t);

/* ---- the heap (all under the loop's lock) -------------------------------- */

static int heap_less(uvctx__deadline_t* a, uvctx__deadline_t* b) {
  return a->deadline < b->deadline;
}

static void heap_set(uvctx_loop_t* l, uint32_t i, uvctx__deadline_t* d) {
  l->heap[i] = d;
  d->heap_index = i;
}

static void heap_up(uvctx_loop_t* l, uint32_t i) {
  uvctx__deadline_t* d = l->heap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!heap_less(d, l->heap[p]))
      break;
    heap_set(l, i, l->heap[p]);
    i = p;
  }
  heap_set(l, i, d);
}

static void heap_down(uvctx_loop_t* l, uint32_t i) {
  uvctx__deadline_t* d = l->heap[i];
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= l->heap_len)
      break;
    if (c + 1 < l->heap_len && heap_less(l->heap[c + 1], l->heap[c]))
      c++;
    if (!heap_less(l->heap[c], d))
      break;
    heap_set(l, i, l->heap[c]);
    i = c;
  }
  heap_set(l, i, d);
}

int uvctx__heap_insert_locked(uvctx_loop_t* l, uvctx__deadline_t* d) {
  if (l->heap_len + l->n_stray == l->heap_cap) {
    uint32_t cap = l->heap_cap ? l->heap_cap * 2 : 16;
    uvctx__deadline_t** h;
    if (cap < l->heap_cap)
      return UV_ENOMEM;
    h = uvctx__realloc(l->heap, cap * sizeof(*h));
    if (h == NULL)
      return UV_ENOMEM;
    /* The strays waiting at the top (see uvctx_loop_s) move to the new
     * top. */
    memmove(h + cap - l->n_stray, h + l->heap_cap - l->n_stray,
            l->n_stray * sizeof(*h));
    l->heap = h;
    l->heap_cap = cap;
  }
  l->heap[l->heap_len] = d;
  d->heap_index = l->heap_len++;
  heap_up(l, d->heap_index);
  if (d->heap_index == 0)
    uvctx__timer_touch_locked(l);
  return 0;
}

void uvctx__heap_remove_locked(uvctx_loop_t* l, uvctx__deadline_t* d) {
  uint32_t i = d->heap_index;
  uvctx__deadline_t* last = l->heap[--l->heap_len];
  d->heap_index = UVCTX__NO_HEAP;
  if (i != l->heap_len) {
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->heap_index);
  }
  /* A timer left armed for a removed entry would fire early and re-arm,
   * which is harmless; but an empty heap must not keep the timer (and maybe
   * uv_run) alive. */
  if (l->heap_len == 0)
    uvctx__timer_touch_locked(l);
}

/* ---- handles and syncing ------------------------------------------------ */

static void hires_cb(uv_poll_t* p, int status, int events);

int uvctx__timer_init(uvctx_loop_t* l, int hires_fd) {
  int rc;
  l->timer.data = l;
  rc = uv_timer_init(l->uv, &l->timer);
  if (rc != 0)
    return rc;
  uv_unref((uv_handle_t*)&l->timer);
  l->handles_open++;
  if (hires_fd >= 0) {
    l->hires.data = l;
    rc = uv_poll_init(l->uv, &l->hires, hires_fd);
    if (rc != 0)
      return rc; /* the caller closes the timer and the descriptor */
    l->hires_fd = hires_fd;
    uv_poll_start(&l->hires, UV_READABLE, hires_cb);
    uv_unref((uv_handle_t*)&l->hires);
    l->handles_open++;
  }
  return 0;
}

void uvctx__timer_close(uvctx_loop_t* l, uv_close_cb close_cb) {
  uvctx__free(l->heap);
  l->heap = NULL;
  uv_close((uv_handle_t*)&l->timer, close_cb);
  if (l->hires_fd >= 0)
    uv_close((uv_handle_t*)&l->hires, close_cb);
}

int uvctx__timer_is_hires_handle(const uvctx_loop_t* l, const uv_handle_t* h) {
  return h == (const uv_handle_t*)&l->hires && l->hires_fd >= 0;
}

void uvctx__timer_touch_locked(uvctx_loop_t* l) {
  if (uvctx__on_loop_thread(l)) {
    uvctx__timer_sync_locked(l);
  } else {
    l->timer_dirty = 1;
    uvctx__mailbox_wake_locked(l, 0);
  }
}

/* ---- the source ---------------------------------------------------------- */

#if defined(__linux__)
#include <errno.h>
#include <sys/timerfd.h>
#include <unistd.h>

int uvctx__hires_open(void) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd >= 0)
    return fd;
  /* A kernel without timerfd: what the header promises for a platform
   * without one. Other errors (EMFILE, ENOMEM) as they are: libuv codes
   * are negated errno on Unix. */
  return errno == ENOSYS ? UV_ENOTSUP : -errno;
}

/* uv_hrtime() reads CLOCK_MONOTONIC, so a deadline is directly an absolute
 * timerfd expiry, to the nanosecond: the kernel never fires it early, and
 * no millisecond rounding adds lateness. */
static void hires_arm(uvctx_loop_t* l, uint64_t deadline) {
  struct itimerspec its = {{0, 0}, {0, 0}};
  its.it_value.tv_sec = (time_t)(deadline / 1000000000);
  its.it_value.tv_nsec = (long)(deadline % 1000000000);
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
    its.it_value.tv_nsec = 1; /* all zero would disarm it */
  timerfd_settime(l->hires_fd, TFD_TIMER_ABSTIME, &its, NULL);
}
#else
int uvctx__hires_open(void) {
  return UV_ENOTSUP;
}

static void hires_arm(uvctx_loop_t* l, uint64_t deadline) {
  (void)l;
  (void)deadline;
}
#endif

/* [lock, loop thread] Arms the deadline source for the heap's top, and
 * references it only while a watch could be fired by a deadline.
 *
 * libuv timers count whole milliseconds of the loop time, cached at the
 * start of the iteration, while the poll sleeps from the real now: aiming a
 * timer at the deadline's millisecond on that stale clock wakes up to two
 * milliseconds late. The timeout is therefore the real time left, rounded
 * up, from uv_hrtime(). When the cached clock was stale the timer may fire
 * a little before the deadline: the callback checks uv_hrtime() and
 * re-arms for the rest, so a deadline never fires early. The timeout is at
 * least 1 ms: in libuv 1.44 a 0 ms timer started from a timer callback runs
 * again in the same pass and can starve the loop. */
void uvctx__timer_sync_locked(uvctx_loop_t* l) {
  int want_ref;
  l->timer_dirty = 0;
  if (l->closing)
    return;
  if (l->heap_len == 0) {
    /* Nothing to do: a timer still armed fires once, finds the heap empty
     * and stays stopped. Stopping it here would cost a stop and a start
     * for every short-lived deadline; unreferenced, it keeps nothing
     * alive. */
  } else if (l->hires_fd >= 0) {
    uint64_t top = l->heap[0]->deadline;
    if (l->timer_due == 0 || top < l->timer_due) {
      hires_arm(l, top);
      l->timer_due = top;
    }
  } else if (l->timer_due == 0 || l->heap[0]->deadline < l->timer_top) {
    /* An armed timer that fires sooner than needed is left alone: it will
     * re-arm itself; restarting it for every new deadline would cost more.
     * Comparing deadlines first spares the clock read when the timer was
     * armed for an earlier deadline (or the same one) than the new top. */
    uint64_t top = l->heap[0]->deadline;
    uint64_t now = uv_hrtime();
    uint64_t timeout = top > now ? (top - now + 999999) / 1000000 : 1;
    uint64_t due = uv_now(l->uv) + (timeout ? timeout : 1);
    if (l->timer_due == 0 || due < l->timer_due) {
      uv_timer_start(&l->timer, timer_cb, due - uv_now(l->uv), 0);
      l->timer_due = due;
    }
    l->timer_top = top;
  }
  want_ref = l->dl_watches > 0 && l->heap_len > 0;
  if (want_ref != l->timer_refd) {
    uv_handle_t* h =
        l->hires_fd >= 0 ? (uv_handle_t*)&l->hires : (uv_handle_t*)&l->timer;
    if (want_ref)
      uv_ref(h);
    else
      uv_unref(h);
    l->timer_refd = want_ref;
  }
}

/* [lock, loop thread] Hands every deadline that has come to the expire
 * hook (which takes it out of the heap), then re-arms the source for the
 * next one. The callbacks below then call the expired hook, without the
 * lock, for what the expiries left to do under other loops' locks. */
static void expire_locked(uvctx_loop_t* l, uint64_t now) {
  l->timer_due = 0;
  while (l->heap_len > 0 && l->heap[0]->deadline <= now) {
    uvctx__deadline_t* d = l->heap[0];
    uint64_t late = now - d->deadline;
    l->deadlines_fired++;
    uvctx_histogram_record(&l->lateness, late);
    l->expire(d, now, late);
  }
  uvctx__timer_sync_locked(l);
}

static void timer_cb(uv_timer_t* t) {
  uvctx_loop_t* l = t->data;
  uint64_t now = uv_hrtime();
  atomic_store_explicit(&l->thread, (uintptr_t)uv_thread_self(),
                        memory_order_relaxed);
  uvctx__lock_acquire(&l->lock);
  expire_locked(l, now);
  uvctx__lock_release(&l->lock);
  l->expired(l);
}

static void hires_cb(uv_poll_t* p, int status, int events) {
  uvctx_loop_t* l = p->data;
  uint64_t expirations;
  (void)status;
  (void)events;
  atomic_store_explicit(&l->thread, (uintptr_t)uv_thread_self(),
                        memory_order_relaxed);
#if defined(__linux__)
  /* Clears readiness; EAGAIN when a re-arm raced the expiry. */
  if (read(l->hires_fd, &expirations, sizeof(expirations)) < 0)
    expirations = 0;
#endif
  (void)expirations;
  uvctx__lock_acquire(&l->lock);
  expire_locked(l, uv_hrtime());
  uvctx__lock_release(&l->lock);
  l->expired(l);
}
