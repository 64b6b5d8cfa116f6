/* send.c owns uvctx_send(): one write on a uvctx stream bounded by a
 * context. A write cannot be recalled, so a context that ends it first
 * closes the stream; the stream's data is borrowed to find the request in
 * its close callback and put back before the callback. */
#include "uv_internal.h"

static void send_finish(uvctx_send_t* req, int status) {
  UVCTX__UV_FINISH(req, req->cb_(req, status));
}

static void send_closed(uvctx_stream_t* s) {
  uvctx_send_t* req = s->data;

  s->data = req->stream_data_;
  send_finish(req, req->status_);
}

static void send_close(uvctx_send_t* req, int status) {
  uvctx_stream_t* s = req->stream_;

  req->state_ = UVCTX__UV_CLOSING;
  req->status_ = status;
  req->stream_data_ = s->data;
  s->data = req;
  uvctx_stream_close(s, send_closed);
}

static void send_write_cb(uvctx_write_t* w, int status) {
  uvctx_send_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_send_t, write_);
  int err;

  if (req->state_ == UVCTX__UV_CLOSING)
    return; /* ours: the close callback completes the request */
  if (req->state_ == UVCTX__UV_STOPPING) {
    send_finish(req, uvctx_err(req->ctx_)); /* closed by someone else */
    return;
  }
  uvctx_watch_stop(&req->watch_);
  err = uvctx_err(req->ctx_);
  if (err != 0)
    send_close(req, err); /* done wins, as if ctx had ended it first */
  else
    send_finish(req, status);
}

static void send_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_send_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_send_t, watch_);

  if (req->state_ == UVCTX__UV_NOT_STARTED)
    send_finish(req, err); /* nothing written, the stream stays open */
  else if (uvctx_stream_is_closing(req->stream_))
    req->state_ = UVCTX__UV_STOPPING; /* its write callback is on its way */
  else
    send_close(req, err);
}

int uvctx_send(uvctx_send_t* req, uvctx_t* ctx, uvctx_stream_t* s,
               const uv_buf_t bufs[], unsigned nbufs, uvctx_send_cb cb) {
  int rc;

  if (req == NULL || ctx == NULL || s == NULL || bufs == NULL || nbufs == 0 ||
      cb == NULL || uvctx_stream_is_closing(s) ||
      uvctx_stream_loop(s) != uvctx__uv_home(ctx))
    return UV_EINVAL;
  req->ctx_ = ctx;
  req->cb_ = cb;
  req->stream_ = s;
  req->status_ = 0;
  if (uvctx_err(ctx) == 0) {
    rc = uvctx_stream_write(&req->write_, s, bufs, nbufs, send_write_cb);
    if (rc != 0)
      return rc;
    req->state_ = UVCTX__UV_RUNNING;
  } else {
    req->state_ = UVCTX__UV_NOT_STARTED;
  }
  uvctx_ref(ctx);
  uvctx_watch_start(&req->watch_, ctx, send_watch_cb);
  return 0;
}
