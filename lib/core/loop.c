/* loop.c owns the binding of uvctx to a uv_loop_t: setting it up and
 * closing it (the mailbox and the deadline source are started and closed
 * through their owners, core/mailbox.c and core/timer.c, and wired to the
 * layers above them through the binding's hooks), the prepare handle that
 * learns which thread runs the loop, the registry of bindings, and the
 * live counts. */
#include <string.h>
#include <unistd.h>

#include "common/debug.h"
#include "core/internal.h"

/* [registry lock] All live bindings, for uvctx_loop_dump() of trees that
 * span loops. */
static uvctx_loop_t* registry;
static uvctx__lock_t registry_lock;

void uvctx__registry_lock(void) {
  uvctx__lock_acquire(&registry_lock);
}

void uvctx__registry_unlock(void) {
  uvctx__lock_release(&registry_lock);
}

int uvctx__on_loop_thread(const uvctx_loop_t* l) {
  return atomic_load_explicit(&((uvctx_loop_t*)l)->thread,
                              memory_order_relaxed) ==
         (uintptr_t)uv_thread_self();
}

static void note_thread(uvctx_loop_t* l) {
  atomic_store_explicit(&l->thread, (uintptr_t)uv_thread_self(),
                        memory_order_relaxed);
}

int uvctx_loop_adopt(uvctx_loop_t* l) {
  if (l == NULL)
    return UVCTX__EINVAL("loop is NULL");
  note_thread(l);
  /* Work queued for the loop while another thread counted as its own (a
   * deadline or callbacks sent through the mailbox) is taken up now: the
   * timer is synced and queued callbacks keep the loop alive until they
   * have run, from the loop, not from this call. */
  uvctx__lock_acquire(&l->lock);
  if (l->timer_dirty)
    uvctx__timer_sync_locked(l);
  if (l->queue_head != NULL)
    uvctx__mailbox_wake_locked(l, 1);
  uvctx__lock_release(&l->lock);
  return 0;
}

static void close_cb(uv_handle_t* h) {
  uvctx_loop_t* l = h->data;
  /* The poll handle is closed, so the descriptor can go. */
  if (uvctx__timer_is_hires_handle(l, h)) {
    close(l->hires_fd);
    l->hires_fd = -1;
  }
  if (--l->handles_open == 0)
    uvctx__free(l);
}

/* Runs once per loop iteration, before the loop blocks: from then on every
 * uvctx call made on this thread knows it is on the loop's thread. */
static void prepare_cb(uv_prepare_t* p) {
  note_thread(p->data);
}

int uvctx_loop_init(uv_loop_t* loop, uvctx_loop_t** out) {
  return uvctx_loop_init_ex(loop, 0, out);
}

int uvctx_loop_init_ex(uv_loop_t* loop, unsigned flags, uvctx_loop_t** out) {
  uvctx_loop_t* l;
  int rc;
  int fd = -1;

  if (loop == NULL)
    return UVCTX__EINVAL("loop is NULL");
  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  if (flags & ~UVCTX_LOOP_HIRES_DEADLINES)
    return UVCTX__EINVAL("unknown flags");
  if (flags & UVCTX_LOOP_HIRES_DEADLINES) {
    fd = uvctx__hires_open();
    if (fd < 0)
      return fd;
  }
  l = uvctx__calloc(1, sizeof(*l));
  if (l == NULL) {
    rc = UV_ENOMEM;
    goto fail_alloc;
  }
  l->uv = loop;
  l->hires_fd = -1;
  atomic_init(&l->background.refs, 1);
  atomic_init(&l->background.err, UVCTX__LIVE);
  l->background.kind = UVCTX__BACKGROUND;
  l->background.home = l;
  l->background.link.owner = &l->background;
  atomic_init(&l->thread, (uintptr_t)uv_thread_self());
  l->expire = uvctx__deadline_expire_locked;
  l->expired = uvctx__deadline_expired;
  l->wake_locked = uvctx__timer_sync_locked;
  l->deliver = uvctx__watch_deliver;

  rc = uvctx__mailbox_init(l);
  if (rc != 0)
    goto fail_mailbox;
  l->prepare.data = l;
  rc = uv_prepare_init(loop, &l->prepare);
  if (rc != 0)
    goto fail_prepare;
  uv_prepare_start(&l->prepare, prepare_cb);
  uv_unref((uv_handle_t*)&l->prepare);
  l->handles_open++;
  rc = uvctx__timer_init(l, fd);
  if (rc != 0)
    goto fail_timer;

  uvctx__registry_lock();
  UVCTX__LIST_INSERT_HEAD(&registry, l, next_loop, pprev_loop);
  uvctx__registry_unlock();
  *out = l;
  return 0;

  /* Handles already initialized must be closed and their memory kept until
   * their close callbacks: the binding is freed by the last one once the
   * caller runs the loop. (uv_timer_init() and uv_prepare_init() cannot
   * fail in libuv 1.44, but uv_poll_init() can.) */
fail_timer:
  l->closing = 1;
  if (l->hires_fd < 0 && fd >= 0)
    close(fd); /* not taken over by the source */
  uvctx__timer_close(l, close_cb);
  uv_close((uv_handle_t*)&l->prepare, close_cb);
  uvctx__mailbox_close(l, close_cb);
  return rc;
fail_prepare:
  l->closing = 1;
  uvctx__mailbox_close(l, close_cb);
  if (fd >= 0)
    close(fd);
  return rc;
fail_mailbox:
  uvctx__free(l);
fail_alloc:
  if (fd >= 0)
    close(fd);
  return rc;
}

int uvctx_loop_close(uvctx_loop_t* l) {
  int busy;
  if (l == NULL)
    return UVCTX__EINVAL("loop is NULL");
  if (l->closing)
    return UVCTX__EINVAL("loop is already closed");
  /* The registry, then the loop, then the trace lock (core/lock.c). */
  uvctx__registry_lock();
  uvctx__lock_acquire(&l->lock);
  uvctx__lock();
  busy = uvctx__live_locked(l) != 0 || l->n_watches != 0 || l->n_foreign != 0 ||
         uvctx__trace_attached_locked(l);
  uvctx__unlock();
  if (!busy) {
    UVCTX__LIST_REMOVE(l, next_loop, pprev_loop);
    l->closing = 1;
  }
  uvctx__lock_release(&l->lock);
  uvctx__registry_unlock();
  if (busy)
    return UV_EBUSY;

  uvctx__mailbox_close(l, close_cb);
  uvctx__timer_close(l, close_cb);
  uv_close((uv_handle_t*)&l->prepare, close_cb);
  return 0;
}

uv_loop_t* uvctx_loop_uv(const uvctx_loop_t* l) {
  return l != NULL ? l->uv : NULL;
}

uvctx_t* uvctx_background(uvctx_loop_t* l) {
  return l != NULL ? &l->background : NULL;
}

int uvctx_loop_counts(const uvctx_loop_t* l, uvctx_loop_counts_t* out) {
  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  memset(out, 0, sizeof(*out));
  if (l == NULL)
    return UVCTX__EINVAL("the loop binding is NULL");
  uvctx__lock_acquire(&((uvctx_loop_t*)l)->lock);
  out->contexts = uvctx__live_locked(l);
  out->watches = l->n_watches;
  out->deadlines = l->heap_len;
  uvctx__lock_release(&((uvctx_loop_t*)l)->lock);
  return 0;
}

uint64_t uvctx__kind_count(const uvctx_loop_t* l, int kind) {
  uint64_t n = 0;
  int d;
  for (d = 0; d < UVCTX__DOMAINS; d++)
    n += atomic_load_explicit(&((uvctx_loop_t*)l)->dom[d].n_kind[kind],
                              memory_order_relaxed);
  return n;
}

uint64_t uvctx__live_locked(const uvctx_loop_t* l) {
  uint64_t n = 0;
  int k;
  for (k = UVCTX__CANCEL; k <= UVCTX__DETACHED; k++)
    n += uvctx__kind_count(l, k);
  return n;
}

uvctx_loop_t* uvctx__registry_locked(void) {
  return registry;
}
