/* loop.c owns the binding of uvctx to a uv_loop_t: its handles (the
 * mailbox, the deadline timer, the prepare handle that learns which thread
 * runs the loop, and with hires deadlines the timerfd's poll handle), the
 * registry of bindings, closing and counting. */
#include <string.h>
#include <unistd.h>

#include "common/debug.h"
#include "core/internal.h"

/* [lock] All live bindings, for uvctx_loop_dump() of trees that span
 * loops. */
static uvctx_loop_t* registry;

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
    return UV_EINVAL;
  note_thread(l);
  /* Work queued for the loop while another thread counted as its own (a
   * deadline or callbacks sent through the mailbox) is taken up now: the
   * timer is synced and queued callbacks keep the loop alive until they
   * have run, from the loop, not from this call. */
  uvctx__lock();
  if (l->timer_dirty)
    uvctx__timer_sync_locked(l);
  if (l->queue_head != NULL) {
    if (!l->mailbox_refd) {
      uv_ref((uv_handle_t*)&l->mailbox);
      l->mailbox_refd = 1;
    }
    uv_async_send(&l->mailbox);
  }
  uvctx__unlock();
  return 0;
}

void uvctx__timer_touch_locked(uvctx_loop_t* l) {
  if (uvctx__on_loop_thread(l)) {
    uvctx__timer_sync_locked(l);
  } else {
    l->timer_dirty = 1;
    uv_async_send(&l->mailbox);
  }
}

static void close_cb(uv_handle_t* h) {
  uvctx_loop_t* l = h->data;
  /* The poll handle is closed, so the descriptor can go. */
  if (h == (uv_handle_t*)&l->hires && l->hires_fd >= 0) {
    close(l->hires_fd);
    l->hires_fd = -1;
  }
  if (--l->handles_open == 0)
    uvctx__free(l);
}

static void mailbox_cb(uv_async_t* a) {
  uvctx_loop_t* l = a->data;
  note_thread(l);
  uvctx__mailbox_drain(l);
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

  if (loop == NULL || out == NULL || (flags & ~UVCTX_LOOP_HIRES_DEADLINES))
    return UV_EINVAL;
  if (flags & UVCTX_LOOP_HIRES_DEADLINES) {
    fd = uvctx__hires_open();
    if (fd < 0)
      return fd;
  }
  l = uvctx__calloc(1, sizeof(*l));
  if (l == NULL) {
    if (fd >= 0)
      close(fd);
    return UV_ENOMEM;
  }
  l->uv = loop;
  l->hires_fd = -1;
  atomic_init(&l->background.refs, 1);
  atomic_init(&l->background.err, UVCTX__LIVE);
  l->background.kind = UVCTX__BACKGROUND;
  l->background.home = l;
  l->background.link.owner = &l->background;
  l->queue_tail = &l->queue_head;
  atomic_init(&l->thread, (uintptr_t)uv_thread_self());

  l->mailbox.data = l;
  l->timer.data = l;
  l->prepare.data = l;
  rc = uv_async_init(loop, &l->mailbox, mailbox_cb);
  if (rc != 0)
    goto fail_async;
  rc = uv_timer_init(loop, &l->timer);
  if (rc != 0)
    goto fail_timer;
  rc = uv_prepare_init(loop, &l->prepare);
  if (rc != 0)
    goto fail_prepare;
  uv_prepare_start(&l->prepare, prepare_cb);
  uv_unref((uv_handle_t*)&l->mailbox);
  uv_unref((uv_handle_t*)&l->timer);
  uv_unref((uv_handle_t*)&l->prepare);
  l->handles_open = 3;
  if (fd >= 0) {
    l->hires.data = l;
    rc = uv_poll_init(loop, &l->hires, fd);
    if (rc != 0)
      goto fail_hires;
    l->hires_fd = fd;
    uv_poll_start(&l->hires, UV_READABLE, uvctx__hires_cb);
    uv_unref((uv_handle_t*)&l->hires);
    l->handles_open = 4;
  }

  uvctx__lock();
  l->next_loop = registry;
  if (registry != NULL)
    registry->pprev_loop = &l->next_loop;
  registry = l;
  l->pprev_loop = &registry;
  uvctx__unlock();
  *out = l;
  return 0;

  /* uv_timer_init() and uv_prepare_init() cannot fail in libuv 1.44, but
   * if they did, initialized handles must be closed and their memory kept
   * until their close callbacks: the binding is freed by the last one once
   * the caller runs the loop. */
fail_hires:
  close(fd);
  l->closing = 1;
  uv_close((uv_handle_t*)&l->prepare, close_cb);
  uv_close((uv_handle_t*)&l->timer, close_cb);
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
  return rc;
fail_prepare:
  if (fd >= 0)
    close(fd);
  l->closing = 1;
  l->handles_open = 2;
  uv_close((uv_handle_t*)&l->timer, close_cb);
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
  return rc;
fail_timer:
  if (fd >= 0)
    close(fd);
  l->closing = 1;
  l->handles_open = 1;
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
  return rc;
fail_async:
  if (fd >= 0)
    close(fd);
  uvctx__free(l);
  return rc;
}

int uvctx_loop_close(uvctx_loop_t* l) {
  if (l == NULL || l->closing)
    return UV_EINVAL;
  uvctx__lock();
  if (uvctx__live_locked(l) != 0 || l->n_watches != 0 || l->n_foreign != 0 ||
      uvctx__trace_attached_locked(l)) {
    uvctx__unlock();
    return UV_EBUSY;
  }
  *l->pprev_loop = l->next_loop;
  if (l->next_loop != NULL)
    l->next_loop->pprev_loop = l->pprev_loop;
  l->closing = 1;
  uvctx__unlock();

  uvctx__free(l->heap);
  l->heap = NULL;
  uv_close((uv_handle_t*)&l->mailbox, close_cb);
  uv_close((uv_handle_t*)&l->timer, close_cb);
  uv_close((uv_handle_t*)&l->prepare, close_cb);
  if (l->hires_fd >= 0)
    uv_close((uv_handle_t*)&l->hires, close_cb);
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
  uvctx__lock();
  out->contexts = uvctx__live_locked(l);
  out->watches = l->n_watches;
  out->deadlines = l->heap_len;
  uvctx__unlock();
  return 0;
}

uint64_t uvctx__live_locked(const uvctx_loop_t* l) {
  uint64_t n = 0;
  int k;
  for (k = UVCTX__CANCEL; k <= UVCTX__DETACHED; k++)
    n += l->n_kind[k];
  return n;
}

uvctx_loop_t* uvctx__registry_locked(void) {
  return registry;
}
