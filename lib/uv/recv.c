/* recv.c owns uvctx_recv(): one read from a uvctx stream into the caller's
 * buffer, bounded by a context. The stream's owner_ slot (the field the
 * library's operations use to find themselves from a stream callback, as
 * the copy does) points at the request while it reads. The context is
 * checked in the alloc callback, before any byte is taken from the
 * transport, so a receive that the context ends loses nothing. */
#include "uv_internal.h"

static void recv_finish(uvctx_recv_t* req, ssize_t nread) {
  if (req->state_ == UVCTX__UV_RUNNING) {
    uvctx_stream_read_stop(req->stream_);
    req->stream_->owner_ = NULL;
  }
  uvctx_watch_stop(&req->watch_);
  UVCTX__UV_FINISH(req, req->cb_(req, nread));
}

static void recv_alloc_cb(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  uvctx_recv_t* req = s->owner_;

  (void)suggested;
  /* A zero-length buffer makes the stream report UV_ENOBUFS without
   * reading: the bytes stay in the transport. */
  if (uvctx_err(req->ctx_) != 0)
    *buf = uv_buf_init(NULL, 0);
  else
    *buf = req->buf_;
}

static void recv_read_cb(uvctx_stream_t* s, ssize_t nread,
                         const uv_buf_t* buf) {
  uvctx_recv_t* req = s->owner_;

  (void)buf;
  if (nread == 0)
    return; /* nothing this time (EAGAIN) */
  if (nread == UV_ENOBUFS && uvctx_err(req->ctx_) != 0)
    nread = uvctx_err(req->ctx_);
  /* Bytes read before ctx was seen done are delivered, never dropped. */
  recv_finish(req, nread);
}

static void recv_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_recv_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_recv_t, watch_);

  recv_finish(req, err);
}

int uvctx_recv(uvctx_recv_t* req, uvctx_t* ctx, uvctx_stream_t* s, uv_buf_t buf,
               uvctx_recv_cb cb) {
  int rc;

  if (req == NULL || ctx == NULL || s == NULL || cb == NULL ||
      buf.base == NULL || buf.len == 0 || uvctx_stream_is_closing(s) ||
      uvctx_stream_loop(s) != uvctx__uv_home(ctx))
    return UV_EINVAL;
  if (s->owner_ != NULL)
    return UV_EBUSY; /* another receive, a copy or a pipe reads it */
  req->ctx_ = ctx;
  req->cb_ = cb;
  req->stream_ = s;
  req->buf_ = buf;
  req->nread_ = 0;
  if (uvctx_err(ctx) == 0) {
    s->owner_ = req;
    rc = uvctx_stream_read_start(s, recv_alloc_cb, recv_read_cb);
    if (rc != 0) {
      s->owner_ = NULL;
      return rc;
    }
    req->state_ = UVCTX__UV_RUNNING;
  } else {
    req->state_ = UVCTX__UV_NOT_STARTED; /* nothing read */
  }
  uvctx_ref(ctx);
  uvctx_watch_start(&req->watch_, ctx, recv_watch_cb);
  return 0;
}
