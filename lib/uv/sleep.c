/* sleep.c owns uvctx_sleep(): one uv_timer_t in the request, re-armed until
 * the uv_hrtime() due time, raced against a watch on the context (no watch
 * for a 0 ms sleep, see uvctx_sleep()). */
#include "uv_internal.h"

static void sleep_close_cb(uv_handle_t* h) {
  uvctx_sleep_t* req = UVCTX__UV_CONTAINER_OF(h, uvctx_sleep_t, timer_);
  UVCTX__UV_FINISH(req, req->cb_(req, req->status_));
}

static void sleep_finish(uvctx_sleep_t* req, int status) {
  req->status_ = status;
  req->state_ = UVCTX__UV_CLOSING;
  uv_close((uv_handle_t*)&req->timer_, sleep_close_cb);
}

static void sleep_timer_cb(uv_timer_t* t) {
  uvctx_sleep_t* req = UVCTX__UV_CONTAINER_OF(t, uvctx_sleep_t, timer_);
  uint64_t now;

  /* libuv timers count whole milliseconds from the loop's cached time,
   * which may lag: never report early, re-arm for what is left (at least
   * 1 ms, since a 0 ms timer started here would run in this same pass).
   * A 0 ms sleep cannot be early: it skips the clock (a system call on
   * some hosts). */
  if (req->due_ns_ != 0 && (now = uv_hrtime()) < req->due_ns_) {
    uint64_t left_ms = (req->due_ns_ - now + 999999) / 1000000;
    uv_timer_start(t, sleep_timer_cb, left_ms, 0);
    return;
  }
  if (req->state_ == UVCTX__UV_RUNNING)
    uvctx_watch_stop(&req->watch_);
  /* Done wins: a timer that fires once ctx is done reports ctx's err. */
  sleep_finish(req, uvctx_err(req->ctx_));
}

static void sleep_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_sleep_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_sleep_t, watch_);

  /* No uv_timer_stop(): closing a timer stops it. */
  sleep_finish(req, err);
}

int uvctx_sleep(uvctx_sleep_t* req, uvctx_t* ctx, uint64_t ms,
                uvctx_sleep_cb cb) {
  uvctx_loop_t* home;
  int rc;

  if (req == NULL || ctx == NULL || cb == NULL)
    return UV_EINVAL;
  home = uvctx_home(ctx);
  rc = uv_timer_init(uvctx_loop_uv(home), &req->timer_);
  if (rc != 0)
    return rc;
  req->ctx_ = uvctx_ref(ctx);
  req->cb_ = cb;
  req->status_ = 0;
  req->due_ns_ = 0;
  if (uvctx_err(ctx) != 0) {
    /* The watch is queued for the loop: the callback comes from there,
     * never from this call. */
    req->state_ = UVCTX__UV_NOT_STARTED;
    uvctx_watch_start(&req->watch_, ctx, sleep_watch_cb);
    return 0;
  }
  uv_timer_start(&req->timer_, sleep_timer_cb, ms, 0);
  /* A 0 ms timer fires in the loop's next timer phase, never more than
   * one iteration after a watch callback would have come, and its
   * callback reports ctx's err if ctx is done by then (done wins): a watch
   * would add nothing but its cost (a reference, two locks, a list). So a
   * 0 ms sleep has none, except on a background context: references to it
   * are not counted, and the watch is then what keeps uvctx_loop_close()
   * from closing the binding under the pending request. */
  if (ms == 0 && ctx != uvctx_background(home)) {
    req->state_ = UVCTX__UV_UNWATCHED;
    return 0;
  }
  if (ms != 0)
    req->due_ns_ = uvctx__uv_due_ns(ms);
  req->state_ = UVCTX__UV_RUNNING;
  uvctx_watch_start(&req->watch_, ctx, sleep_watch_cb);
  return 0;
}
