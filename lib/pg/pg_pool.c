/* pg_pool.c owns the pool of PostgreSQL connections (uvctx_pg_pool_*): the
 * connection kind it gives the generic pool (connect under the pool's
 * context, close, check) and the acquire-query-release request. */
#include <stdlib.h>
#include <string.h>

#include "pg_internal.h"

#define CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

/* ---- the kind ------------------------------------------------------------
 */

typedef struct pool_open_s {
  uvctx_pg_connect_t req;
  uvctx_pool_t* pool;
} pool_open_t;

static void kind_connected(uvctx_pg_connect_t* req, int status,
                           uvctx_pg_conn_t* conn) {
  pool_open_t* op = CONTAINER_OF(req, pool_open_t, req);
  uvctx_pool_t* pool = op->pool;
  uvctx_free(op);
  uvctx_pool_opened(pool, conn != NULL ? uvctx__pg_conn_head(conn) : NULL,
                    status);
}

static int kind_open(uvctx_pool_t* pool, uvctx_t* ctx) {
  uvctx_pg_pool_t* p = CONTAINER_OF(pool, uvctx_pg_pool_t, pool_);
  pool_open_t* op = uvctx_malloc(sizeof(*op));
  int rc;
  if (op == NULL)
    return UV_ENOMEM;
  op->pool = pool;
  rc = uvctx_pg_connect(&op->req, ctx, p->conninfo_, &p->opts_, kind_connected);
  if (rc != 0)
    uvctx_free(op);
  return rc;
}

static void kind_closed(uvctx_pg_conn_t* conn, void* arg) {
  (void)conn;
  uvctx_pool_closed(arg);
}

static void kind_close(uvctx_pool_t* pool, uvctx_pool_conn_t* c) {
  uvctx_pg_conn_close(uvctx__pg_conn_of(c), kind_closed, pool);
}

static int kind_check(uvctx_pool_t* pool, uvctx_pool_conn_t* c) {
  (void)pool;
  return uvctx__pg_conn_probe(uvctx__pg_conn_of(c)) ? UV_ECONNRESET : 0;
}

static const uvctx_pool_kind_t pg_kind = {kind_open, kind_close, kind_check};

/* ---- the pool ------------------------------------------------------------
 */

int uvctx_pg_pool_init(uvctx_pg_pool_t* p, uvctx_loop_t* l,
                       const char* conninfo, const uvctx_pool_options_t* popts,
                       const uvctx_pg_options_t* opts) {
  int rc;
  if (p == NULL || l == NULL || conninfo == NULL)
    return UV_EINVAL;
  p->conninfo_ = uvctx_malloc(strlen(conninfo) + 1);
  if (p->conninfo_ == NULL)
    return UV_ENOMEM;
  strcpy(p->conninfo_, conninfo);
  memset(&p->opts_, 0, sizeof(p->opts_));
  if (opts != NULL)
    p->opts_ = *opts;
  p->close_cb_ = NULL;
  rc = uvctx_pool_init(&p->pool_, l, &pg_kind, p, popts);
  if (rc != 0) {
    uvctx_free(p->conninfo_);
    p->conninfo_ = NULL;
  }
  return rc;
}

uvctx_pool_t* uvctx_pg_pool_base(uvctx_pg_pool_t* p) {
  return &p->pool_;
}

uvctx_pg_conn_t* uvctx_pg_pool_conn(uvctx_pool_conn_t* c) {
  return uvctx__pg_conn_of(c);
}

static void release_when_drained(uvctx_pg_conn_t* conn, void* arg) {
  uvctx_pg_pool_t* p = arg;
  uvctx_pool_release(&p->pool_, uvctx__pg_conn_head(conn),
                     uvctx_pg_conn_broken(conn));
}

void uvctx_pg_pool_release(uvctx_pg_pool_t* p, uvctx_pg_conn_t* conn) {
  if (uvctx__pg_conn_when_ready(conn, release_when_drained, p))
    return;
  uvctx_pool_release(&p->pool_, uvctx__pg_conn_head(conn),
                     uvctx_pg_conn_broken(conn));
}

static void pool_closed(uvctx_pool_t* pool) {
  uvctx_pg_pool_t* p = CONTAINER_OF(pool, uvctx_pg_pool_t, pool_);
  uvctx_free(p->conninfo_);
  p->conninfo_ = NULL;
  if (p->close_cb_ != NULL)
    p->close_cb_(p);
}

int uvctx_pg_pool_close(uvctx_pg_pool_t* p, void (*cb)(uvctx_pg_pool_t* p)) {
  int rc;
  if (p == NULL)
    return UV_EINVAL;
  rc = uvctx_pool_close(&p->pool_, pool_closed);
  if (rc == 0)
    p->close_cb_ = cb;
  return rc;
}

/* ---- one query through the pool ------------------------------------------
 */

static void pool_query_finish(uvctx_pg_pool_query_t* req, int status,
                              PGresult* res) {
  uvctx_t* ctx = req->ctx_;
  req->cb_(req, status, res);
  uvctx_unref(ctx);
}

static void pool_queried(uvctx_pg_query_t* q, int status, PGresult* res) {
  uvctx_pg_pool_query_t* req = q->data;
  req->sqlstate_ = uvctx_pg_query_sqlstate(q);
  req->error_ = uvctx_pg_query_error(q);
  /* The connection goes back first (to the next waiter on a later
   * iteration); `res` does not depend on it. */
  uvctx_pg_pool_release(req->pool_, q->conn_);
  pool_query_finish(req, status, res);
}

static void pool_acquired(uvctx_pool_acquire_t* a, int status,
                          uvctx_pool_conn_t* c) {
  uvctx_pg_pool_query_t* req = a->data;
  uvctx_pg_conn_t* conn;
  int rc;
  if (status != 0) {
    pool_query_finish(req, status, NULL);
    return;
  }
  conn = uvctx__pg_conn_of(c);
  req->query_.data = req;
  rc = uvctx_pg_query(&req->query_, conn, req->ctx_, req->sql_, req->nparams_,
                      req->params_, pool_queried);
  if (rc != 0) {
    req->error_ = uv_strerror(rc);
    uvctx_pg_pool_release(req->pool_, conn);
    pool_query_finish(req, rc, NULL);
  }
}

int uvctx_pg_pool_query(uvctx_pg_pool_query_t* req, uvctx_pg_pool_t* p,
                        uvctx_t* ctx, const char* sql, int nparams,
                        const char* const* params, uvctx_pg_pool_query_cb cb) {
  int rc;
  if (req == NULL || p == NULL || ctx == NULL || sql == NULL || cb == NULL ||
      nparams < 0 || (nparams > 0 && params == NULL))
    return UV_EINVAL;
  req->pool_ = p;
  req->cb_ = cb;
  req->sql_ = sql;
  req->nparams_ = nparams;
  req->params_ = params;
  req->sqlstate_ = "";
  req->error_ = "";
  req->ctx_ = uvctx_ref(ctx);
  req->acquire_.data = req;
  rc = uvctx_pool_acquire(&req->acquire_, &p->pool_, ctx, pool_acquired);
  if (rc != 0)
    uvctx_unref(ctx);
  return rc;
}

const char* uvctx_pg_pool_query_sqlstate(const uvctx_pg_pool_query_t* req) {
  return req != NULL && req->sqlstate_ != NULL ? req->sqlstate_ : "";
}

const char* uvctx_pg_pool_query_error(const uvctx_pg_pool_query_t* req) {
  return req != NULL && req->error_ != NULL ? req->error_ : "";
}
