/* uvctx streams: a small byte-stream interface shaped after libuv's
 * uv_stream_t (read start/stop, write, shutdown, close, bytes queued), with
 * an implementation over any connected libuv stream (uv_tcp_t, uv_pipe_t,
 * uv_tty_t); other kinds (the TLS session, test doubles) plug in through
 * the vtable of <uvctx/stream_impl.h>. This header is for users of
 * streams. uvctx_copy_start() and uvctx_pipe_start() take any of them.
 *
 * Threading: a stream belongs to the thread running its loop; every
 * function here must be called there, and every callback runs there.
 *
 * The contract every implementation keeps (the generic functions below
 * enforce the parts they can):
 * - Callbacks never run inside the call that started the operation. A call
 *   that returns an error never runs its callback.
 * - Every accepted write and shutdown completes exactly once.
 * - After uvctx_stream_close(), no read callback runs; pending write and
 *   shutdown callbacks run (UV_ECANCELED, or 0 for a write the transport had
 *   already finished) before the close callback. The stream's memory, its
 *   requests' memory and everything they borrow may be reused only in or
 *   after the close callback (the requests: in or after their own
 *   callbacks).
 *
 * Implementing a stream kind of your own: <uvctx/stream_impl.h>.
 *
 * See docs/copy.md for the guide. */
#ifndef UVCTX_STREAM_H
#define UVCTX_STREAM_H

#include <uvctx.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uvctx_stream_s uvctx_stream_t;
typedef struct uvctx_write_s uvctx_write_t;
typedef struct uvctx_shutdown_s uvctx_shutdown_t;
typedef struct uvctx_stream_ops_s uvctx_stream_ops_t;

/* As uv_alloc_cb: fill *buf with a buffer of about `suggested` bytes (or a
 * zero-length buffer, which makes the read callback see UV_ENOBUFS). The
 * buffer is the caller's; the library only fills it. */
typedef void (*uvctx_alloc_cb)(uvctx_stream_t* s, size_t suggested,
                               uv_buf_t* buf);

/* As uv_read_cb: nread > 0 bytes of data were read into buf->base; 0 means
 * nothing was read (not an EOF; the buffer is handed back); UV_EOF means the
 * peer will send nothing more; another negative value is an error. UV_EOF
 * or an error finishes the read side: no read callback comes after it by
 * itself (reading has stopped). A read_start after UV_EOF reports UV_EOF
 * again, from the loop, as libuv does (a TLS session too: its end was a
 * clean close_notify); after an error, a libuv stream reports what the
 * socket says then (UV_EOF or an error) and a TLS session refuses the
 * read_start with its error. The buffer (which may be NULL/0 after an
 * error) is handed back to the caller in every case. */
typedef void (*uvctx_read_cb)(uvctx_stream_t* s, ssize_t nread,
                              const uv_buf_t* buf);

/* Status 0, or a negative error (UV_ECANCELED when the stream was closed
 * before the write finished). */
typedef void (*uvctx_write_cb)(uvctx_write_t* req, int status);
typedef void (*uvctx_shutdown_cb)(uvctx_shutdown_t* req, int status);
typedef void (*uvctx_stream_close_cb)(uvctx_stream_t* s);

/* Private storage that a stream kind keeps in a stream and in its
 * requests, typed as libuv's private fields are: a member for each kind
 * uvctx ships (the libuv stream, the TLS session) and, for other kinds,
 * slots that hold a pointer or a 64-bit integer each. The members never
 * make the storage larger than its slots (checked when the library is
 * built), so the layout is the same whatever kinds exist. Nothing but the
 * stream's own kind touches it. */
typedef union uvctx_stream_slot_u {
  void* p;
  uint64_t u;
} uvctx_stream_slot_t;
typedef union uvctx_stream_storage_u {
  struct {
    uv_stream_t* handle;
    void* saved_data; /* the handle's data, given back by a detach */
  } uv;
  uvctx_stream_slot_t slot[2];
} uvctx_stream_storage_t;
typedef union uvctx_write_storage_u {
  struct {
    uv_buf_t* bufs; /* a copied array, or NULL for one buffer at `base` */
    char* base;
    uint64_t seq; /* the transport write carrying its last byte */
    unsigned nbufs;
  } tls;
  uvctx_stream_slot_t slot[4];
} uvctx_write_storage_t;
typedef union uvctx_shutdown_storage_u {
  uvctx_stream_slot_t slot[2];
} uvctx_shutdown_storage_t;

/* A stream. Caller-allocated (embedded in a larger struct by
 * implementations); `data` is yours, the rest is private. */
struct uvctx_stream_s {
  void* data;
  /* private */
  const uvctx_stream_ops_t* ops_;
  uv_loop_t* loop_;
  uvctx_alloc_cb alloc_cb_;
  uvctx_read_cb read_cb_;
  uvctx_stream_close_cb close_cb_;
  size_t writes_pending_;
  unsigned flags_;
  uvctx_stream_storage_t impl_; /* the kind's (libuv: the handle) */
  void* owner_; /* the library operation driving it (copy, pipe) */
};

/* A write request, caller-allocated like uv_write_t: `data` is yours, the
 * rest is private. It must stay valid until its callback has run. */
struct uvctx_write_s {
  void* data;
  /* private */
  uvctx_stream_t* stream_;
  uvctx_write_cb cb_;
  size_t size_;                /* bytes in the request */
  struct uvctx_write_s* next_; /* free for the implementation (queues) */
  uvctx_write_storage_t impl_; /* the kind's */
  uv_write_t uv_; /* the libuv implementation's request; others may use it */
};

/* A shutdown request, caller-allocated like uv_shutdown_t. */
struct uvctx_shutdown_s {
  void* data;
  /* private */
  uvctx_stream_t* stream_;
  uvctx_shutdown_cb cb_;
  uvctx_shutdown_storage_t impl_; /* the kind's */
  uv_shutdown_t uv_;              /* the libuv implementation's request */
};

/* ------------------------------------------------------------------------ */
/* Using a stream                                                           */
/* ------------------------------------------------------------------------ */

/* Starts reading: alloc_cb then read_cb run from the loop as data arrives,
 * as with uv_read_start(). Calling it while already reading swaps in the new
 * callbacks and reading goes on (for a libuv stream too, where a second
 * uv_read_start() would fail with UV_EALREADY). UV_EINVAL for NULL
 * arguments or a closing or detached stream; else the implementation's
 * error. A failed call leaves the previous callbacks and the reading state
 * as they were. */
UVCTX_EXTERN int uvctx_stream_read_start(uvctx_stream_t* s,
                                         uvctx_alloc_cb alloc_cb,
                                         uvctx_read_cb read_cb);

/* Stops reading; no read callback runs after it returns (until the next
 * read_start). Idempotent; 0 on a closing stream. */
UVCTX_EXTERN int uvctx_stream_read_stop(uvctx_stream_t* s);

/* Queues `nbufs` buffers for writing, in order after earlier writes. The
 * uv_buf_t array is copied; the bytes it points to are borrowed and must
 * stay valid and unchanged until cb(req, status) runs, which it does
 * exactly once, from the loop, never inside this call. `cb` may be NULL.
 * UV_EINVAL for NULL s/req, nbufs == 0 or a closing stream; UV_EPIPE after
 * a shutdown; else the implementation's error. On error cb never runs and
 * req may be reused at once. */
UVCTX_EXTERN int uvctx_stream_write(uvctx_write_t* req, uvctx_stream_t* s,
                                    const uv_buf_t bufs[], unsigned nbufs,
                                    uvctx_write_cb cb);

/* Writes as much of `nbufs` buffers as the transport takes at once,
 * without a request and without a callback, as uv_try_write() does: the
 * fast path of a relay that hands the bytes it just read straight to the
 * kernel and queues only what is left with uvctx_stream_write().
 * Returns the number of bytes taken (> 0; the rest was not), or
 * UV_EAGAIN when nothing could be taken now, which is also the answer
 * while earlier writes of this stream are still pending (so the order of
 * the bytes is kept). A kind may keep part of what it took and write it
 * later (a TLS session: the ciphertext its transport refused): those bytes
 * count in uvctx_stream_write_queue_size() until handed to the operating
 * system, and a write queued after them (an empty one too) completes only
 * once they are. UV_ENOSYS when the stream kind offers no try-write (a TLS
 * session over a transport without one); UV_EINVAL
 * for NULL s/bufs, nbufs == 0 or a closing stream; UV_EPIPE after a
 * shutdown; else the transport's error (UV_EPIPE, UV_ECONNRESET, ...).
 * The bytes are not borrowed beyond the call. */
UVCTX_EXTERN int uvctx_stream_try_write(uvctx_stream_t* s,
                                        const uv_buf_t bufs[], unsigned nbufs);

/* Shuts the write half down once every earlier write has been written
 * (TLS: close_notify first). cb(req, status) runs exactly once, from the
 * loop. UV_EINVAL for NULL s/req or a closing stream; UV_ENOTCONN if a
 * shutdown was already requested; else the implementation's error (then
 * cb never runs). */
UVCTX_EXTERN int uvctx_stream_shutdown(uvctx_shutdown_t* req, uvctx_stream_t* s,
                                       uvctx_shutdown_cb cb);

/* Closes the stream (and, for the libuv implementation, the handle it
 * wraps): reading stops at once, pending write and shutdown callbacks run
 * (UV_ECANCELED, or 0 for a write already written) and then cb(s), from
 * the loop, never inside this call. `cb` may be NULL. The stream's memory
 * (and the wrapped handle's) may be freed or reused only in or after cb.
 * Closing a closing stream does nothing. */
UVCTX_EXTERN void uvctx_stream_close(uvctx_stream_t* s,
                                     uvctx_stream_close_cb cb);

/* Bytes accepted by uvctx_stream_write() that the stream has not yet handed
 * to the operating system (libuv: uv_stream_get_write_queue_size(); TLS:
 * plaintext bytes, those not yet encrypted plus those whose records are not
 * yet all written, so a copy's high-water mark holds exactly). Still asked
 * of the implementation while the stream is closing; 0 for NULL and once the
 * implementation has reported the close done. */
UVCTX_EXTERN size_t uvctx_stream_write_queue_size(const uvctx_stream_t* s);

/* 1 once uvctx_stream_close() was called, else 0. */
UVCTX_EXTERN int uvctx_stream_is_closing(const uvctx_stream_t* s);

/* The loop the stream runs on; NULL for NULL. */
UVCTX_EXTERN uv_loop_t* uvctx_stream_loop(const uvctx_stream_t* s);

/* Write requests accepted and not yet completed; 0 for NULL. */
UVCTX_EXTERN size_t uvctx_stream_writes_pending(const uvctx_stream_t* s);

/* ------------------------------------------------------------------------ */
/* The libuv implementation                                                 */
/* ------------------------------------------------------------------------ */

/* Makes `s` a stream over `h`, a connected uv_tcp_t, uv_pipe_t or uv_tty_t
 * that is not closing and not reading. The stream takes over h->data (it
 * points at `s` from now on; keep your own pointer in s->data) and the
 * handle's read callbacks (uv_read_start/uv_read_stop belong to the stream).
 * Do not call uv_read_start, uv_write, uv_shutdown or uv_close on `h` while
 * the stream owns it.
 *
 * The handle is given back in one of two ways:
 * - uvctx_stream_close() closes the handle itself (uv_close); the memory of
 *   both `h` and `s` may be freed in or after the close callback. This is
 *   the usual end, and what uvctx_copy_start() does when its context is done.
 * - uvctx_stream_uv_detach() gives the handle back open, reading stopped,
 *   with its original h->data restored. It returns 0 or an error, not the
 *   handle, and clears the stored handle: fetch it with
 *   uvctx_stream_uv_handle() first.
 * The caller owns the memory of `h` and `s` throughout.
 *
 * A UV_EOF from libuv is checked against the socket's pending error: a
 * peer's reset that libuv 1.44 reports as EOF (POLLHUP after a partial
 * read) reaches the read callback as UV_ECONNRESET.
 *
 * As with any libuv socket, ignore SIGPIPE in the process: a write to a
 * reset peer then fails with UV_EPIPE instead of killing it.
 *
 * UV_EINVAL for NULL arguments, another handle type, or a closing or
 * reading handle; UV_ENOTCONN for a handle that is neither readable nor
 * writable (never connected, or its connect failed). On error nothing is
 * changed. */
UVCTX_EXTERN int uvctx_stream_init_uv(uvctx_stream_t* s, uv_stream_t* h);

/* The handle a libuv stream wraps; NULL for NULL, for other kinds, and
 * after uvctx_stream_uv_detach(). */
UVCTX_EXTERN uv_stream_t* uvctx_stream_uv_handle(const uvctx_stream_t* s);

/* Gives the handle back: stops reading, restores h->data, clears the
 * handle stored in `s` (uvctx_stream_uv_handle() returns NULL from then on:
 * fetch the handle before this call) and leaves `s` unusable (re-init it to
 * use it again). Returns 0; UV_EBUSY while writes or a shutdown are pending
 * (their callbacks still reference `s`); UV_EINVAL for NULL, other kinds, or
 * a closing or already detached stream. On error nothing is changed. */
UVCTX_EXTERN int uvctx_stream_uv_detach(uvctx_stream_t* s);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_STREAM_H */
