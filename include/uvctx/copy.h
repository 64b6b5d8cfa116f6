/* uvctx copy and pipe: move bytes from one stream to another until EOF, an
 * error, or a context is done (Go's missing io.CopyContext, Node's
 * stream.pipeline(..., {signal})), and a bidirectional pipe for proxies.
 *
 * Include <uvctx/copy.h>; it includes <uvctx/stream.h> and <uvctx.h>.
 * Works on any uvctx_stream_t: libuv streams, TLS sessions, your own kinds.
 *
 * Threading: start a copy on the thread running the streams' loop, with a
 * context homed on that loop (derive one with uvctx_with_cancel_on() if
 * needed); the completion callback runs there. The context itself may be
 * cancelled from any thread.
 *
 * See docs/copy.md for the guide and an example proxy. */
#ifndef UVCTX_COPY_H
#define UVCTX_COPY_H

#include <uvctx.h>
#include <uvctx/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults and limits of uvctx_copy_options_t. */
#define UVCTX_COPY_DEFAULT_BUFFER_SIZE (64 * 1024)
#define UVCTX_COPY_MIN_BUFFER_SIZE 1024
#define UVCTX_COPY_MAX_BUFFER_SIZE (16 * 1024 * 1024)
#define UVCTX_COPY_DEFAULT_BUFFERS 8
#define UVCTX_COPY_MAX_BUFFERS 1024
/* Default high-water mark: 4 buffers; default low-water mark: 1 buffer. */
#define UVCTX_COPY_DEFAULT_HIGH_BUFFERS 4
#define UVCTX_COPY_DEFAULT_LOW_BUFFERS 1

/* Option flags. */
enum {
  /* At EOF, do not shut the destination's write half down: the copy (or
   * that direction of a pipe) is done once its last write has completed. */
  UVCTX_COPY_NO_SHUTDOWN = 1 << 0,
  /* When the context is done or the idle timeout expires while no write and
   * no shutdown is in flight, stop reading and leave both streams open
   * instead of closing them (nothing needs recalling; bytes already read
   * when the context is noticed count as in flight). */
  UVCTX_COPY_KEEP_OPEN_IDLE = 1 << 1
};

/* ------------------------------------------------------------------------ */
/* Buffer pool                                                              */
/* ------------------------------------------------------------------------ */

/* A pool of copy buffers shared by the copies and pipes of one loop that
 * name it in their options, with a budget: beyond `max_bytes` of buffers
 * lent out, a copy that needs one more stops reading until one comes back
 * (a relay-wide memory bound: reading pauses, TCP flow control does the
 * rest). A copy takes buffers only as data flows and gives them back when
 * it has nothing to read for now; the pool keeps a few returned ones (at
 * most 16) for reuse and frees the rest. Opaque; loop thread only. */
typedef struct uvctx_copy_pool_s uvctx_copy_pool_t;

/* Makes a pool of `buffer_size` buffers (0: 64 KiB; 1 KiB .. 16 MiB) for
 * copies on `loop`; max_bytes 0 means no budget, else at least one buffer.
 * UV_EINVAL, UV_ENOMEM. */
UVCTX_EXTERN int uvctx_copy_pool_init(uvctx_copy_pool_t** out, uv_loop_t* loop,
                                      size_t buffer_size, size_t max_bytes);

/* Frees the pool. UV_EBUSY while a copy or pipe that uses it has not run
 * its callback (then nothing is freed); UV_EINVAL for NULL. */
UVCTX_EXTERN int uvctx_copy_pool_close(uvctx_copy_pool_t* p);

/* Bytes of buffers lent out now (0 for NULL). */
UVCTX_EXTERN size_t uvctx_copy_pool_bytes(const uvctx_copy_pool_t* p);

/* Options; zero-initialize, then set what you need. A zero field takes its
 * default.
 * buffer_size  bytes per buffer: 64 KiB (or the pool's); 1 KiB .. 16 MiB;
 *              with a pool, the pool's size.
 * buffers      buffers per direction at most: 8; 1 .. 1024. Buffers are
 *              taken only while data flows: a direction with nothing to
 *              read holds none and a stalled one only those its queued
 *              writes carry (with a pool and a destination that has a
 *              try-write, what the destination refused of a read waits in
 *              a copy of its own size instead, and reads start small:
 *              see docs/copy.md); without a pool a direction keeps what it
 *              has taken until the copy ends. Never more than
 *              buffers*buffer_size per direction.
 * pool         take buffers from this pool (same loop), under its budget;
 *              NULL: from the allocator, one at a time.
 * high_water   reading stops while the destination's write queue
 *              (uvctx_stream_write_queue_size()) could exceed it after one
 *              more buffer: 4 buffers, or buffers*buffer_size if less; at
 *              least buffer_size, at most buffers*buffer_size. The queue then
 *              never exceeds it if it holds only the copy's writes and is
 *              empty once they have completed (libuv streams, uvctx TLS
 *              sessions). Bytes someone else queued can take it past the
 *              mark: the copy does not check the queue when it starts, and
 *              resumes whenever none of its own writes is in flight.
 * low_water    reading resumes once the queue is at or below it (or no
 *              write is in flight): one buffer, or high_water - buffer_size
 *              if that is less; at most high_water - buffer_size (so a
 *              high_water of one buffer means resuming on an empty queue).
 * idle_timeout_ms  fail with UV_ETIMEDOUT when no byte is read or written in
 *              any direction for this long: 0 = no idle timeout.
 * send_timeout_ms  fail with UV_ETIMEDOUT when a destination keeps its
 *              queue above the high-water mark (reading stopped for it)
 *              this long without interruption: a reader too slow to keep
 *              up (nginx's send_timeout). 0 = none. uvctx_copy_send_timed_out()
 *              tells it from the idle timeout.
 * flags        UVCTX_COPY_* flags above.
 * half_close_timeout_ms  pipes only (a copy ignores it): once one direction
 *              has finished (its EOF read and passed on), the idle timeout
 *              of the other becomes [0] when a -> b finished first (a
 *              half-closed: waiting for b), [1] when b -> a did (waiting
 *              for a), counted from that moment and reset by progress; 0
 *              keeps idle_timeout_ms. HAProxy's `timeout server-fin` and
 *              `timeout client-fin` for a client on `a`. Its expiry is
 *              UV_ETIMEDOUT, told apart by uvctx_pipe_error_at(). */
typedef struct uvctx_copy_options_s {
  size_t buffer_size;
  unsigned buffers;
  size_t high_water;
  size_t low_water;
  uint64_t idle_timeout_ms;
  unsigned flags;
  uint64_t half_close_timeout_ms[2];
  uvctx_copy_pool_t* pool;
  uint64_t send_timeout_ms;
} uvctx_copy_options_t;

/* ------------------------------------------------------------------------ */
/* Copy                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_copy_s uvctx_copy_t;

/* status: 0 after EOF (and the destination's shutdown, unless
 * UVCTX_COPY_NO_SHUTDOWN), the context's error (UV_ECANCELED,
 * UV_ETIMEDOUT), UV_ETIMEDOUT for the idle or the send timeout, UV_ENOMEM
 * when a buffer could not be allocated, or the first I/O error of either
 * stream. bytes: bytes written to the destination, as its transport took
 * them: a try-write counts at once, a queued write when it completes, and,
 * when the copy closes the streams under writes in flight, what the
 * transport had already taken of those (their bytes minus the
 * destination's write queue at the close; TLS: to within one record). See
 * docs/copy.md. */
typedef void (*uvctx_copy_cb)(uvctx_copy_t* c, int status, uint64_t bytes);

/* A copy request, caller-allocated like a libuv request: `data` is yours,
 * the rest is private. It must stay valid until its callback runs; it may
 * be reused or freed in the callback. */
struct uvctx_copy_s {
  void* data;
  /* private */
  uvctx_watch_t watch_;
  uvctx_copy_cb cb_;
  void* state_;
  uint64_t bytes_;
  int send_timed_out_;
};

/* Copies `src` to `dst` until EOF, an error, or `ctx` is done.
 *
 * While the copy runs it owns both streams: do not read, write, shut down
 * or close them (it sets their read callbacks). src == dst is allowed (an
 * echo). The callback runs exactly once, from the loop, never inside this
 * call, after the last write and shutdown callbacks:
 * - status 0 (EOF): both streams are left open (src at EOF, dst shut down
 *   unless UVCTX_COPY_NO_SHUTDOWN); you close them.
 * - status != 0 (the context, the idle timeout, an I/O error on either
 *   side): the copy has closed both streams, since a libuv write cannot be
 *   recalled, and the callback runs after their close callbacks: the
 *   streams and the handles they wrap may be freed in it. Exception: with
 *   UVCTX_COPY_KEEP_OPEN_IDLE and nothing in flight they are left open
 *   (reading stopped); uvctx_stream_is_closing() tells which happened.
 * When the context is done the status is the context's error, never an EOF
 * or an error caused by the close; it also wins over an I/O error or the
 * idle timeout that comes before the copy's watch has run. Only a copy
 * whose EOF was read before the cancel and whose last write (or shutdown)
 * completes before that watch runs still ends with 0.
 *
 * Returns 0; UV_EINVAL for NULL arguments, closing streams, invalid options
 * or a context homed on another loop than the streams' (or a pool of
 * another loop); UV_EBUSY if a stream is already used by a copy or pipe;
 * UV_ENOMEM (the state is one allocation; a buffer the allocator refuses
 * later ends the copy with UV_ENOMEM); or the error of starting to read. On
 * error nothing was started, cb never runs, and the streams are untouched.
 * `opts` may be NULL (all defaults) and is copied. The copy does not need `ctx`
 * after this call beyond its watch's reference. */
UVCTX_EXTERN int uvctx_copy_start(uvctx_copy_t* c, uvctx_t* ctx,
                                  uvctx_stream_t* src, uvctx_stream_t* dst,
                                  const uvctx_copy_options_t* opts,
                                  uvctx_copy_cb cb);

/* Bytes written to the destination so far (the final count once done).
 * Loop thread. 0 for NULL. */
UVCTX_EXTERN uint64_t uvctx_copy_bytes(const uvctx_copy_t* c);

/* 1 if the copy ended (UV_ETIMEDOUT) by its send timeout, else 0 (also
 * for NULL). Valid in and after the callback. Loop thread. */
UVCTX_EXTERN int uvctx_copy_send_timed_out(const uvctx_copy_t* c);

/* ------------------------------------------------------------------------ */
/* Pipe                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct uvctx_pipe_s uvctx_pipe_t;

/* status as for uvctx_copy_cb; a_to_b and b_to_a: bytes written each way. */
typedef void (*uvctx_pipe_cb)(uvctx_pipe_t* p, int status, uint64_t a_to_b,
                              uint64_t b_to_a);

/* A pipe request, caller-allocated: `data` is yours, the rest private. */
struct uvctx_pipe_s {
  void* data;
  /* private */
  uvctx_watch_t watch_;
  uvctx_pipe_cb cb_;
  void* state_;
  uint64_t bytes_[2];
  int err_at_;
  int err_side_;
  int send_timed_out_;
};

/* Two copies in opposite directions, a -> b and b -> a, as one operation:
 * one side's EOF shuts the other side's write half (unless
 * UVCTX_COPY_NO_SHUTDOWN); done with status 0 when both directions are
 * finished (streams left open: you close them), or at the first error in
 * either direction, the idle timeout (progress in either direction resets
 * it) or the context (both streams closed, callback after their close
 * callbacks, as for uvctx_copy_start()). A half-close of one side that
 * fails with UV_ENOTCONN or UV_EPIPE (the peer closed its whole socket;
 * every write of that direction had completed) counts as that direction
 * finished, not failed; a one-way copy reports such a shutdown error. The
 * options apply to each direction (so the pool is 2 * buffers). a != b.
 * Errors as for uvctx_copy_start(). */
UVCTX_EXTERN int uvctx_pipe_start(uvctx_pipe_t* p, uvctx_t* ctx,
                                  uvctx_stream_t* a, uvctx_stream_t* b,
                                  const uvctx_copy_options_t* opts,
                                  uvctx_pipe_cb cb);

/* Bytes written each way so far (the final counts once done), for progress
 * reports and metrics while a long transfer runs. Loop thread. Either
 * pointer may be NULL; a NULL `p` stores nothing. */
UVCTX_EXTERN void uvctx_pipe_bytes(const uvctx_pipe_t* p, uint64_t* a_to_b,
                                   uint64_t* b_to_a);

/* As uvctx_copy_send_timed_out(), for either direction of a pipe. */
UVCTX_EXTERN int uvctx_pipe_send_timed_out(const uvctx_pipe_t* p);

/* What a pipe was doing when the I/O error that ended it happened. */
enum {
  UVCTX_PIPE_AT_NONE = 0,   /* no I/O error: EOF, the context or the idle
                               timeout ended it */
  UVCTX_PIPE_AT_READ,       /* reading from the stream */
  UVCTX_PIPE_AT_WRITE,      /* writing to it */
  UVCTX_PIPE_AT_SHUTDOWN,   /* shutting its write half down */
  UVCTX_PIPE_AT_HALF_CLOSED /* not an I/O error: the half-close timeout
                               expired while waiting for the stream */
};

/* Where the I/O error a finished pipe reported happened, for logs that
 * must say which peer failed: returns UVCTX_PIPE_AT_READ, _WRITE or
 * _SHUTDOWN (or _HALF_CLOSED for a half-close timeout) and sets *side (if
 * not NULL) to 0 for stream `a`, 1 for `b`; UVCTX_PIPE_AT_NONE (side
 * untouched) when the status was 0, the context's error or the idle
 * timeout, or while the pipe runs. In or after the callback, on the loop
 * thread; NULL is UVCTX_PIPE_AT_NONE. */
UVCTX_EXTERN int uvctx_pipe_error_at(const uvctx_pipe_t* p, int* side);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_COPY_H */
