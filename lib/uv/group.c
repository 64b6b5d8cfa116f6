/* group.c owns uvctx_group_*: errgroup.WithContext on one watch. The
 * group's context is a child of the parent; the watch on it fires when a
 * member's failure or the parent ends it, or when the group is due (then
 * the group cancels it itself), so the callback always comes from the
 * loop and never inside uvctx_group_done() or uvctx_group_close(). */
#include "uv_internal.h"

enum { G_DUE = 1, G_FIRED = 2 };

static void group_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_group_t* g = UVCTX__UV_CONTAINER_OF(w, uvctx_group_t, watch_);
  uvctx_t* ctx = g->ctx_;

  (void)err;
  g->state_ |= G_FIRED;
  if (!(g->state_ & G_DUE))
    return; /* members still running: they see the done context */
  g->cb_(g, g->status_);
  uvctx_unref(ctx);
}

static void group_check_due(uvctx_group_t* g) {
  if (!g->closed_ || g->members_ != 0 || (g->state_ & G_DUE))
    return;
  g->state_ |= G_DUE;
  uvctx_cancel(g->ctx_);
  /* The watch already fired (a failure or the parent ended the context
   * earlier): start it again on the done context, which queues it. */
  if (g->state_ & G_FIRED)
    uvctx_watch_start(&g->watch_, g->ctx_, group_watch_cb);
}

int uvctx_group_init(uvctx_group_t* g, uvctx_t* parent, uvctx_group_cb cb) {
  int rc;

  if (g == NULL || parent == NULL || cb == NULL)
    return UV_EINVAL;
  rc = uvctx_with_cancel(parent, &g->ctx_);
  if (rc != 0)
    return rc;
  g->cb_ = cb;
  g->members_ = 0;
  g->status_ = 0;
  g->closed_ = 0;
  g->state_ = 0;
  uvctx_watch_start(&g->watch_, g->ctx_, group_watch_cb);
  return 0;
}

uvctx_t* uvctx_group_context(const uvctx_group_t* g) {
  return g != NULL ? g->ctx_ : NULL;
}

void uvctx_group_add(uvctx_group_t* g, unsigned n) {
  if (g != NULL && !g->closed_)
    g->members_ += n;
}

void uvctx_group_done(uvctx_group_t* g, int status) {
  if (g == NULL || g->members_ == 0)
    return; /* more done than add: a misuse, ignored */
  g->members_--;
  if (status != 0 && g->status_ == 0) {
    g->status_ = status;
    if (status < 0)
      uvctx_cancel_cause(g->ctx_, status, NULL);
    else
      uvctx_cancel(g->ctx_);
  }
  group_check_due(g);
}

void uvctx_group_close(uvctx_group_t* g) {
  if (g == NULL || g->closed_)
    return;
  g->closed_ = 1;
  group_check_due(g);
}
