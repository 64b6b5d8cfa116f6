/* work.c owns uvctx_queue_work(): a uv_work_t in the request, cancelled
 * with uv_cancel() while queued and waited for once running. */
#include "uv_internal.h"

static void work_finish(uvctx_work_t* req, int status) {
  UVCTX__UV_FINISH(req, req->after_(req, status));
}

static void work_run(uv_work_t* w) {
  uvctx_work_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_work_t, req_);

  req->result_ = req->work_(req);
}

static void work_after(uv_work_t* w, int status) {
  uvctx_work_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_work_t, req_);
  int result;

  uvctx_watch_stop(&req->watch_);
  if (status == UV_ECANCELED) {
    /* Our watch cancelled it before it started. */
    result = uvctx_err(req->ctx_);
  } else {
    /* It ran: its error stands; a 0 after ctx was done does not. */
    result = req->result_;
    if (result == 0)
      result = uvctx_err(req->ctx_);
  }
  work_finish(req, result);
}

static void work_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_work_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_work_t, watch_);

  if (req->state_ == UVCTX__UV_NOT_STARTED) {
    work_finish(req, err);
    return;
  }
  /* 0: it will not run and work_after() sees UV_ECANCELED next; UV_EBUSY:
   * it runs (or ran) and work_after() comes when it returns. */
  req->state_ = UVCTX__UV_STOPPING;
  uv_cancel((uv_req_t*)&req->req_);
}

int uvctx_queue_work(uvctx_work_t* req, uvctx_t* ctx, uvctx_work_fn work,
                     uvctx_after_work_cb after) {
  int rc;

  if (req == NULL || ctx == NULL || work == NULL || after == NULL)
    return UV_EINVAL;
  req->ctx_ = ctx;
  req->work_ = work;
  req->after_ = after;
  req->result_ = 0;
  if (uvctx_err(ctx) == 0) {
    rc = uv_queue_work(uvctx__uv_home(ctx), &req->req_, work_run, work_after);
    if (rc != 0)
      return rc;
    req->state_ = UVCTX__UV_RUNNING;
  } else {
    req->state_ = UVCTX__UV_NOT_STARTED;
  }
  uvctx_ref(ctx);
  uvctx_watch_start(&req->watch_, ctx, work_watch_cb);
  return 0;
}

uvctx_t* uvctx_work_context(const uvctx_work_t* req) {
  return req != NULL ? req->ctx_ : NULL;
}
