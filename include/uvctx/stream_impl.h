/* uvctx stream kinds: what an implementer of a stream kind needs (the TLS
 * session is one, a test double another), apart from <uvctx/stream.h>,
 * which is for users of streams. A kind fills a uvctx_stream_ops_t, embeds
 * a uvctx_stream_t in its own object, initializes it with
 * uvctx_stream_init(), and reports events with the emit and done
 * functions below. Per-stream and per-request state a kind keeps in the
 * slots of the structs' private storage (`impl_.slot[i].p` or `.u`), or
 * in its own object around the stream.
 *
 * Threading: as for every stream, the loop's thread only.
 *
 * See docs/copy.md ("Writing a stream kind"). */
#ifndef UVCTX_STREAM_IMPL_H
#define UVCTX_STREAM_IMPL_H

#include <uvctx/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The operations of a stream kind. The generic functions above check their
 * arguments and the stream's state, record the callbacks and request fields,
 * then call these. Once the stream is closing, only write_queue_size is
 * still called (until the implementation calls uvctx_stream_close_done()),
 * so every kind must answer it while closing; no other op is called on a
 * closing stream (the implementation may call its own read_stop as part of
 * closing).
 *
 * read_start  Begin delivering data: call uvctx_stream_emit_alloc() then
 *             uvctx_stream_emit_read() from the loop, never inside
 *             read_start. Called again while reading: the generic layer
 *             has already swapped in the new callbacks; keep reading and
 *             return 0. On an error, start nothing: the generic layer puts
 *             the previous callbacks and reading state back.
 * read_stop   Stop delivering at once (no emit_read after it returns).
 * write       Take req (req->stream_, cb_, size_ are set; bufs is copied
 *             if kept); return 0 and later call uvctx_stream_write_done()
 *             exactly once, or return an error and never call it. The
 *             bytes stay borrowed until write_done.
 * shutdown    After queued writes, shut the write half; later call
 *             uvctx_stream_shutdown_done() exactly once (or return an
 *             error).
 * close       Stop reading; complete every pending write and shutdown
 *             (UV_ECANCELED unless already done; this may happen inside
 *             close or later); then, from the loop, call
 *             uvctx_stream_close_done(). The generic layer holds the close
 *             callback back until every write_done and shutdown_done has
 *             run, so the user's close callback is always last.
 * write_queue_size  Bytes accepted and not yet handed to the OS. Also
 *             called while the stream is closing, until close_done.
 * try_write   Optional (NULL: uvctx_stream_try_write() answers UV_ENOSYS).
 *             Take what can go now, synchronously; return the bytes taken
 *             or UV_EAGAIN, never call back. Bytes taken but not yet
 *             handed to the OS (TLS: the ciphertext its transport
 *             refused) count in write_queue_size, and later writes
 *             complete after them. The generic layer calls it only while
 *             no write of the stream is pending, so the kind need not
 *             check the order.
 */
struct uvctx_stream_ops_s {
  const char* name; /* "uv", "tls", ...: for dumps and errors */
  int (*read_start)(uvctx_stream_t* s);
  int (*read_stop)(uvctx_stream_t* s);
  int (*write)(uvctx_stream_t* s, uvctx_write_t* req, const uv_buf_t bufs[],
               unsigned nbufs);
  int (*shutdown)(uvctx_stream_t* s, uvctx_shutdown_t* req);
  void (*close)(uvctx_stream_t* s);
  size_t (*write_queue_size)(const uvctx_stream_t* s);
  int (*try_write)(uvctx_stream_t* s, const uv_buf_t bufs[], unsigned nbufs);
};

/* Initializes the generic part of a stream of kind `ops` on `loop`.
 * Every op but try_write must be set. UV_EINVAL for NULL arguments or a missing
 * op. */
UVCTX_EXTERN int uvctx_stream_init(uvctx_stream_t* s,
                                   const uvctx_stream_ops_t* ops,
                                   uv_loop_t* loop);

/* For implementations: run the user's alloc/read callbacks. emit_read
 * after UV_EOF or an error marks the read side finished. Both do nothing
 * when the stream is closing or not reading (emit_alloc then yields a
 * zero-length buffer). */
UVCTX_EXTERN void uvctx_stream_emit_alloc(uvctx_stream_t* s, size_t suggested,
                                          uv_buf_t* buf);
UVCTX_EXTERN void uvctx_stream_emit_read(uvctx_stream_t* s, ssize_t nread,
                                         const uv_buf_t* buf);

/* For implementations: complete a request or the close. Each runs the
 * user's callback (close_done may defer it until pending writes are done).
 * Never call them inside the op that started the request. */
UVCTX_EXTERN void uvctx_stream_write_done(uvctx_write_t* req, int status);
UVCTX_EXTERN void uvctx_stream_shutdown_done(uvctx_shutdown_t* req, int status);
UVCTX_EXTERN void uvctx_stream_close_done(uvctx_stream_t* s);

/* For implementations: the request's stream and byte count (the sum of
 * its buffers' lengths). `req` must not be NULL. */
UVCTX_EXTERN uvctx_stream_t* uvctx_write_stream(const uvctx_write_t* req);
UVCTX_EXTERN size_t uvctx_write_size(const uvctx_write_t* req);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_STREAM_IMPL_H */
