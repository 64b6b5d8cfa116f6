/* Internals shared by the io layer and the stream kinds built on it (the
 * TLS session), defined in io/stream.c. Nothing here is part of the public
 * API. */
#ifndef UVCTX_IO_H
#define UVCTX_IO_H

#include "uvctx/copy.h"
#include "uvctx/stream_impl.h"

/* 1 if the stream cannot take new operations: closing, detached from its
 * handle, or never initialized. */
int uvctx__stream_unusable(const uvctx_stream_t* s);

/* ---- the copy buffer pool (io/bufpool.c) --------------------------------- */

/* A copy direction waiting for a buffer of a pool: wake() runs, from the
 * loop, once a buffer has come back, with the waiter already unlinked. */
typedef struct uvctx__pool_waiter_s {
  struct uvctx__pool_waiter_s* next;
  struct uvctx__pool_waiter_s* prev;
  void (*wake)(struct uvctx__pool_waiter_s* w);
  unsigned waiting;
} uvctx__pool_waiter_t;

size_t uvctx__pool_bufsize(const uvctx_copy_pool_t* p);
uv_loop_t* uvctx__pool_loop(const uvctx_copy_pool_t* p);
void uvctx__pool_attach(uvctx_copy_pool_t* p);
void uvctx__pool_detach(uvctx_copy_pool_t* p);
/* A buffer, or NULL with *err UV_ENOBUFS (the budget is spent: wait) or
 * UV_ENOMEM. */
char* uvctx__pool_take(uvctx_copy_pool_t* p, int* err);
/* Gives a buffer back and wakes the first waiter, if any. */
void uvctx__pool_give(uvctx_copy_pool_t* p, char* b);
/* A copy of `len` bytes of `data` (which lies in `big`, a buffer of the
 * pool) in memory of exactly that size, counted in the pool's bytes, with
 * `big` given back; NULL (nothing changed) when the allocator fails. */
char* uvctx__pool_shrink(uvctx_copy_pool_t* p, char* big, const char* data,
                         size_t len);
/* Frees a copy made by uvctx__pool_shrink() and wakes the first waiter. */
void uvctx__pool_give_shrunk(uvctx_copy_pool_t* p, char* b, size_t len);
void uvctx__pool_wait(uvctx_copy_pool_t* p, uvctx__pool_waiter_t* w);
void uvctx__pool_unwait(uvctx_copy_pool_t* p, uvctx__pool_waiter_t* w);

#endif /* UVCTX_IO_H */
