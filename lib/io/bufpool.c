/* bufpool.c owns the copy buffer pool (uvctx_copy_pool_*, include/uvctx/
 * copy.h): buffers lent to the copies and pipes of one loop only while
 * data flows, a byte budget beyond which they wait, a small cache of
 * returned buffers so that the fast path does not go to the allocator for
 * every read, the exact-size copies that stalled writes keep instead of a
 * whole buffer, and the list of copy directions waiting for a buffer, woken
 * in order as buffers come back. Loop thread only. */
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "common/debug.h"
#include "io/io.h"
#include "uvctx/copy.h"

/* Returned buffers kept for reuse: enough for one busy direction's burst;
 * the rest go back to the allocator, so an idle relay holds little. */
#define POOL_CACHE 16

struct uvctx_copy_pool_s {
  uv_loop_t* loop;
  size_t bufsize;
  size_t max_bytes; /* budget of bytes lent; 0: none */
  size_t lent;      /* bytes of buffers out */
  unsigned users;   /* copies and pipes attached */
  unsigned ncache;
  char* cache[POOL_CACHE];
  uvctx__pool_waiter_t* whead; /* FIFO of waiting directions */
  uvctx__pool_waiter_t* wtail;
};

int uvctx_copy_pool_init(uvctx_copy_pool_t** out, uv_loop_t* loop,
                         size_t buffer_size, size_t max_bytes) {
  uvctx_copy_pool_t* p;

  if (out == NULL || loop == NULL)
    return UVCTX__EINVAL("out or loop is NULL");
  if (buffer_size == 0)
    buffer_size = UVCTX_COPY_DEFAULT_BUFFER_SIZE;
  if (buffer_size < UVCTX_COPY_MIN_BUFFER_SIZE ||
      buffer_size > UVCTX_COPY_MAX_BUFFER_SIZE ||
      (max_bytes != 0 && max_bytes < buffer_size))
    return UVCTX__EINVAL("buffer_size out of range, or max_bytes below it");
  p = uvctx__calloc(1, sizeof(*p));
  if (p == NULL)
    return UV_ENOMEM;
  p->loop = loop;
  p->bufsize = buffer_size;
  p->max_bytes = max_bytes;
  *out = p;
  return 0;
}

int uvctx_copy_pool_close(uvctx_copy_pool_t* p) {
  if (p == NULL)
    return UVCTX__EINVAL("the pool is NULL");
  if (p->users != 0 || p->lent != 0)
    return UV_EBUSY;
  while (p->ncache > 0)
    uvctx__free(p->cache[--p->ncache]);
  uvctx__free(p);
  return 0;
}

size_t uvctx_copy_pool_bytes(const uvctx_copy_pool_t* p) {
  return p == NULL ? 0 : p->lent;
}

size_t uvctx__pool_bufsize(const uvctx_copy_pool_t* p) {
  return p->bufsize;
}

uv_loop_t* uvctx__pool_loop(const uvctx_copy_pool_t* p) {
  return p->loop;
}

void uvctx__pool_attach(uvctx_copy_pool_t* p) {
  p->users++;
}

void uvctx__pool_detach(uvctx_copy_pool_t* p) {
  p->users--;
}

/* A buffer, or NULL: UV_ENOBUFS in *err when the budget is spent (wait for
 * one), UV_ENOMEM when the allocator failed. */
char* uvctx__pool_take(uvctx_copy_pool_t* p, int* err) {
  char* b;

  if (p->max_bytes != 0 && p->lent + p->bufsize > p->max_bytes) {
    *err = UV_ENOBUFS;
    return NULL;
  }
  b = p->ncache > 0 ? p->cache[--p->ncache] : uvctx__malloc(p->bufsize);
  if (b == NULL) {
    *err = UV_ENOMEM;
    return NULL;
  }
  p->lent += p->bufsize;
  return b;
}

/* Wakes the first waiter. It is unlinked first, so its wake may take the
 * buffer, or wait again, or do neither. */
static void wake_one(uvctx_copy_pool_t* p) {
  uvctx__pool_waiter_t* w;

  w = p->whead;
  if (w == NULL)
    return;
  uvctx__pool_unwait(p, w);
  w->wake(w);
}

void uvctx__pool_give(uvctx_copy_pool_t* p, char* b) {
  p->lent -= p->bufsize;
  if (p->ncache < POOL_CACHE)
    p->cache[p->ncache++] = b;
  else
    uvctx__free(b);
  wake_one(p);
}

/* The exact-size copy costs a memcpy of at most one buffer, and only when
 * a destination refused part of what was read (rare while data flows,
 * since the kernel takes whole reads): a cheap price for a stalled
 * direction holding its remainder instead of a whole buffer, which is
 * what a connection behind a reader that stopped reading costs. The copy
 * comes from the allocator, not the cache, and counts against the budget
 * as its own size; `big` goes back to the pool. */
char* uvctx__pool_shrink(uvctx_copy_pool_t* p, char* big, const char* data,
                         size_t len) {
  char* b;

  b = uvctx__malloc(len);
  if (b == NULL)
    return NULL;
  memcpy(b, data, len);
  p->lent += len;
  uvctx__pool_give(p, big);
  return b;
}

void uvctx__pool_give_shrunk(uvctx_copy_pool_t* p, char* b, size_t len) {
  p->lent -= len;
  uvctx__free(b);
  wake_one(p);
}

void uvctx__pool_wait(uvctx_copy_pool_t* p, uvctx__pool_waiter_t* w) {
  if (w->waiting)
    return;
  w->waiting = 1;
  w->next = NULL;
  w->prev = p->wtail;
  if (p->wtail != NULL)
    p->wtail->next = w;
  else
    p->whead = w;
  p->wtail = w;
}

void uvctx__pool_unwait(uvctx_copy_pool_t* p, uvctx__pool_waiter_t* w) {
  if (!w->waiting)
    return;
  w->waiting = 0;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    p->whead = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    p->wtail = w->prev;
  w->next = NULL;
  w->prev = NULL;
}
