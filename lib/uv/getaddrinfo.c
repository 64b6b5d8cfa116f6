/* getaddrinfo.c owns the library's lookups (a uv_getaddrinfo_t in a block of
 * its own, which outlives an abandoned request and frees the late result)
 * and uvctx_getaddrinfo() on top of them. */
#include "uv_internal.h"

struct uvctx__lookup_s {
  uv_getaddrinfo_t gai;
  uvctx__lookup_cb done;
  void* owner; /* NULL once abandoned */
};

static void lookup_cb(uv_getaddrinfo_t* gai, int status, struct addrinfo* res) {
  uvctx__lookup_t* lk = UVCTX__UV_CONTAINER_OF(gai, uvctx__lookup_t, gai);
  uvctx__lookup_cb done = lk->done;
  void* owner = lk->owner;

  uvctx_free(lk);
  if (owner == NULL) {
    /* Abandoned: nobody wants the result any more. */
    if (res != NULL)
      uv_freeaddrinfo(res);
    return;
  }
  if (status != 0 && res != NULL) {
    uv_freeaddrinfo(res);
    res = NULL;
  }
  done(owner, status, res);
}

int uvctx__lookup_start(uv_loop_t* loop, uvctx__lookup_t** out,
                        uvctx__lookup_cb done, void* owner, const char* node,
                        const char* service, const struct addrinfo* hints) {
  uvctx__lookup_t* lk;
  int rc;

  lk = uvctx_malloc(sizeof(*lk));
  if (lk == NULL)
    return UV_ENOMEM;
  lk->done = done;
  lk->owner = owner;
  rc = uv_getaddrinfo(loop, &lk->gai, lookup_cb, node, service, hints);
  if (rc != 0) {
    uvctx_free(lk);
    return rc;
  }
  *out = lk;
  return 0;
}

void uvctx__lookup_abandon(uvctx__lookup_t* lk) {
  lk->owner = NULL;
  /* Still queued: it never runs and lookup_cb frees the block next loop
   * iteration. Running (UV_EBUSY): lookup_cb frees block and result when
   * the pool thread is done. */
  uv_cancel((uv_req_t*)&lk->gai);
}

static void gai_finish(uvctx_getaddrinfo_t* req, int status,
                       struct addrinfo* res) {
  req->lookup_ = NULL;
  UVCTX__UV_FINISH(req, req->cb_(req, status, res));
}

static void gai_done(void* owner, int status, struct addrinfo* res) {
  uvctx_getaddrinfo_t* req = owner;
  int err;

  uvctx_watch_stop(&req->watch_);
  err = uvctx_err(req->ctx_);
  if (err != 0) {
    /* Done wins: the caller never gets a result after its ctx ended. */
    if (res != NULL)
      uv_freeaddrinfo(res);
    res = NULL;
    status = err;
  }
  gai_finish(req, status, res);
}

static void gai_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_getaddrinfo_t* req =
      UVCTX__UV_CONTAINER_OF(w, uvctx_getaddrinfo_t, watch_);

  if (req->state_ == UVCTX__UV_RUNNING)
    uvctx__lookup_abandon(req->lookup_);
  gai_finish(req, err, NULL);
}

int uvctx_getaddrinfo(uvctx_getaddrinfo_t* req, uvctx_t* ctx, const char* node,
                      const char* service, const struct addrinfo* hints,
                      uvctx_getaddrinfo_cb cb) {
  uvctx__lookup_t* lk = NULL;
  int rc;

  if (req == NULL || ctx == NULL || cb == NULL ||
      (node == NULL && service == NULL))
    return UV_EINVAL;
  if (uvctx_err(ctx) == 0) {
    rc = uvctx__lookup_start(uvctx__uv_home(ctx), &lk, gai_done, req, node,
                             service, hints);
    if (rc != 0)
      return rc;
  }
  req->ctx_ = uvctx_ref(ctx);
  req->cb_ = cb;
  req->lookup_ = lk;
  req->state_ = lk != NULL ? UVCTX__UV_RUNNING : UVCTX__UV_NOT_STARTED;
  uvctx_watch_start(&req->watch_, ctx, gai_watch_cb);
  return 0;
}
