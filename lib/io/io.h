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

/* ---- coalescing a burst (libuv TCP streams with TCP_NODELAY) -------------
 * With TCP_NODELAY every write goes out at once, its partial last segment
 * included: a 64 KiB write on loopback (MSS 65,483) leaves as a full
 * segment and one of 53 bytes, twice the segments for the receiver to
 * take. A copy that reads full buffers one after the other (a burst: more
 * is waiting) turns TCP_NODELAY off for the burst, so that the kernel
 * joins each tail to the next write, and on again the moment a read finds
 * less (before that read's write) or nothing, which also pushes what is
 * pending: small writes, and the end of every burst, go out at once as
 * before.
 *
 * uvctx__stream_can_coalesce(): 1 if `s` is a libuv TCP stream whose
 * socket has TCP_NODELAY on (asked once, at the copy's start).
 * uvctx__stream_coalesce(): TCP_NODELAY off (on != 0) or on again. */
int uvctx__stream_can_coalesce(const uvctx_stream_t* s);
void uvctx__stream_coalesce(uvctx_stream_t* s, int on);

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
