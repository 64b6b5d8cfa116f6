/* connect.c owns uvctx_tcp_connect() and uvctx_pipe_connect(): a
 * uv_connect_t in the request, raced against a watch on the context. libuv
 * cannot recall a connect, so ending one means closing its handle. */
#include "uv_internal.h"

static void connect_finish(uvctx_connect_t* req, int status) {
  UVCTX__UV_FINISH(req, req->cb_(req, status));
}

static void connect_close_cb(uv_handle_t* h) {
  uvctx_connect_t* req = h->data;

  h->data = req->handle_data_;
  connect_finish(req, req->status_);
}

/* Closes the handle and reports `status` after its close callback. The
 * handle's data is borrowed to find the request and put back before cb. */
static void connect_close(uvctx_connect_t* req, int status) {
  uv_handle_t* h = (uv_handle_t*)req->handle_;

  req->status_ = status;
  req->state_ = UVCTX__UV_CLOSING;
  req->handle_data_ = h->data;
  h->data = req;
  uv_close(h, connect_close_cb);
}

static void connect_cb(uv_connect_t* c, int status) {
  uvctx_connect_t* req = UVCTX__UV_CONTAINER_OF(c, uvctx_connect_t, req_);
  int err;

  /* Closing (ctx ended it): libuv reports UV_ECANCELED before the close
   * callback, which completes the request. */
  if (req->state_ != UVCTX__UV_RUNNING)
    return;
  uvctx_watch_stop(&req->watch_);
  err = uvctx_err(req->ctx_);
  if (status == 0 && err != 0)
    status = err; /* done wins: the caller never gets the connection */
  if (status != 0)
    connect_close(req, status);
  else
    connect_finish(req, 0);
}

static void connect_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_connect_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_connect_t, watch_);

  connect_close(req, err);
}

static int connect_check(uvctx_connect_t* req, uvctx_t* ctx, void* handle,
                         uvctx_connect_cb cb) {
  if (req == NULL || ctx == NULL || handle == NULL || cb == NULL)
    return UV_EINVAL;
  if (!uvctx__uv_handle_ok(ctx, handle))
    return UV_EINVAL;
  req->ctx_ = ctx;
  req->cb_ = cb;
  req->handle_ = handle;
  req->status_ = 0;
  req->state_ = uvctx_err(ctx) == 0 ? UVCTX__UV_RUNNING : UVCTX__UV_NOT_STARTED;
  return 0;
}

/* The connect has started (or ctx was done and none will): watch ctx. */
static void connect_watch(uvctx_connect_t* req) {
  uvctx_ref(req->ctx_);
  uvctx_watch_start(&req->watch_, req->ctx_, connect_watch_cb);
}

int uvctx_tcp_connect(uvctx_connect_t* req, uvctx_t* ctx, uv_tcp_t* tcp,
                      const struct sockaddr* addr, uvctx_connect_cb cb) {
  int rc;

  if (addr == NULL)
    return UV_EINVAL;
  rc = connect_check(req, ctx, tcp, cb);
  if (rc != 0)
    return rc;
  if (req->state_ == UVCTX__UV_RUNNING) {
    rc = uv_tcp_connect(&req->req_, tcp, addr, connect_cb);
    if (rc != 0) {
      req->state_ = UVCTX__UV_IDLE;
      return rc;
    }
  }
  connect_watch(req);
  return 0;
}

int uvctx_pipe_connect(uvctx_connect_t* req, uvctx_t* ctx, uv_pipe_t* pipe,
                       const char* name, uvctx_connect_cb cb) {
  int rc;

  if (name == NULL)
    return UV_EINVAL;
  rc = connect_check(req, ctx, pipe, cb);
  if (rc != 0)
    return rc;
  if (req->state_ == UVCTX__UV_RUNNING)
    uv_pipe_connect(&req->req_, pipe, name, connect_cb);
  connect_watch(req);
  return 0;
}
