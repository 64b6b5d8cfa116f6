/* pool.c owns the generic connection pool of uvctx/pool.h: the idle list,
 * the FIFO of waiting acquirers, the queue of acquire callbacks that are
 * due, the expiry timer and the pool's counters. It is built on the public
 * API only. */
#include <stddef.h>
#include <string.h>

#include "uvctx/metrics.h"
#include "uvctx/pool.h"

#define CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

enum { CONN_IDLE = 1, CONN_IN_USE, CONN_CLOSING };
enum { REQ_WAITING = 1, REQ_DUE, REQ_DONE };
enum { WHY_OTHER = 0, WHY_MAX_IDLE, WHY_IDLE_TIME, WHY_LIFETIME, WHY_BROKEN };

static const uint64_t ms_ns = 1000000u;

static void check_finished(uvctx_pool_t* pool);
static void run_due(uv_idle_t* h);
static void expire(uv_timer_t* t);

/* ---- lists ---------------------------------------------------------------
 */

static void idle_push_front(uvctx_pool_t* pool, uvctx_pool_conn_t* c) {
  c->prev_ = NULL;
  c->next_ = pool->idle_head_;
  if (pool->idle_head_ != NULL)
    pool->idle_head_->prev_ = c;
  else
    pool->idle_tail_ = c;
  pool->idle_head_ = c;
  pool->n_idle_++;
}

static void idle_unlink(uvctx_pool_t* pool, uvctx_pool_conn_t* c) {
  if (c->prev_ != NULL)
    c->prev_->next_ = c->next_;
  else
    pool->idle_head_ = c->next_;
  if (c->next_ != NULL)
    c->next_->prev_ = c->prev_;
  else
    pool->idle_tail_ = c->prev_;
  c->prev_ = c->next_ = NULL;
  pool->n_idle_--;
}

/* The waiting and due queues share one link pair: a request is on one of
 * them at a time. */
static void req_append(uvctx_pool_acquire_t** head, uvctx_pool_acquire_t** tail,
                       uvctx_pool_acquire_t* r) {
  r->next_ = NULL;
  r->prev_ = *tail;
  if (*tail != NULL)
    (*tail)->next_ = r;
  else
    *head = r;
  *tail = r;
}

static void req_unlink(uvctx_pool_acquire_t** head, uvctx_pool_acquire_t** tail,
                       uvctx_pool_acquire_t* r) {
  if (r->prev_ != NULL)
    r->prev_->next_ = r->next_;
  else
    *head = r->next_;
  if (r->next_ != NULL)
    r->next_->prev_ = r->prev_;
  else
    *tail = r->prev_;
  r->prev_ = r->next_ = NULL;
}

/* ---- bounds -------------------------------------------------------------
 */

static unsigned max_idle(const uvctx_pool_t* pool) {
  int n = pool->opts_.max_idle;
  unsigned m;
  if (n < 0)
    return 0;
  m = n == 0 ? 2u : (unsigned)n;
  if (pool->opts_.max_open != 0 && m > pool->opts_.max_open)
    m = pool->opts_.max_open;
  return m;
}

/* Every slot counts against max_open, closes the kind has not confirmed
 * included: the limit holds for what is really open at any instant. */
static int under_max_open(const uvctx_pool_t* pool) {
  unsigned used =
      pool->n_idle_ + pool->n_in_use_ + pool->n_opening_ + pool->n_closing_;
  return pool->opts_.max_open == 0 || used < pool->opts_.max_open;
}

/* When the connection expires (0: never), and why. */
static uint64_t expiry_of(const uvctx_pool_t* pool, const uvctx_pool_conn_t* c,
                          int idle, int* why) {
  uint64_t at = 0;
  *why = WHY_OTHER;
  if (pool->opts_.max_lifetime_ms != 0) {
    at = c->created_ns_ + pool->opts_.max_lifetime_ms * ms_ns;
    *why = WHY_LIFETIME;
  }
  if (idle && pool->opts_.max_idle_time_ms != 0) {
    uint64_t t = c->idle_since_ns_ + pool->opts_.max_idle_time_ms * ms_ns;
    if (at == 0 || t < at) {
      at = t;
      *why = WHY_IDLE_TIME;
    }
  }
  return at;
}

/* ---- closing connections ------------------------------------------------
 */

static void close_conn(uvctx_pool_t* pool, uvctx_pool_conn_t* c, int why) {
  uvctx_pool_stats_t* s = &pool->stats_;
  switch (why) {
    case WHY_MAX_IDLE:
      s->max_idle_closed++;
      break;
    case WHY_IDLE_TIME:
      s->max_idle_time_closed++;
      break;
    case WHY_LIFETIME:
      s->max_lifetime_closed++;
      break;
    case WHY_BROKEN:
      s->broken_closed++;
      break;
    default:
      break;
  }
  s->closed++;
  c->state_ = CONN_CLOSING;
  pool->n_closing_++;
  /* The kind may call uvctx_pool_closed() from inside close(): nothing of
   * `c` is touched after this. */
  pool->kind_->close(pool, c);
}

/* ---- the due queue: acquire callbacks run from an idle handle -----------
 */

static void make_due(uvctx_pool_t* pool, uvctx_pool_acquire_t* r, int status,
                     uvctx_pool_conn_t* conn) {
  r->status_ = status;
  r->conn_ = conn;
  r->state_ = REQ_DUE;
  req_append(&pool->due_head_, &pool->due_tail_, r);
  uv_idle_start(&pool->idle_, run_due);
}

static void put_conn(uvctx_pool_t* pool, uvctx_pool_conn_t* c);

static void run_due(uv_idle_t* h) {
  uvctx_pool_t* pool = CONTAINER_OF(h, uvctx_pool_t, idle_);
  uvctx_pool_acquire_t* r;
  size_t n = 0, bound = 0;
  /* Only what was due when the pass began: callbacks that acquire again
   * wait for the next iteration, so that a busy pool cannot starve the
   * loop. */
  for (r = pool->due_head_; r != NULL; r = r->next_)
    bound++;
  pool->flushing_ = 1;
  while (n++ < bound && (r = pool->due_head_) != NULL) {
    uvctx_t* ctx = r->ctx_;
    uvctx_pool_conn_t* conn = r->conn_;
    int status = r->status_;
    req_unlink(&pool->due_head_, &pool->due_tail_, r);
    if (conn != NULL && uvctx_err(ctx) != 0) {
      /* Done wins: a connection on its way to a request whose context has
       * ended goes back to the pool (to the next waiter, if any). */
      status = uvctx_err(ctx);
      pool->n_in_use_--;
      put_conn(pool, conn);
      conn = NULL;
    }
    if (conn != NULL)
      pool->stats_.acquired++;
    r->state_ = REQ_DONE;
    r->cb_(r, status, conn);
    uvctx_unref(ctx);
  }
  pool->flushing_ = 0;
  if (pool->due_head_ == NULL)
    uv_idle_stop(&pool->idle_);
  check_finished(pool);
}

/* ---- waiters ------------------------------------------------------------
 */

static void record_wait(uvctx_pool_t* pool, uvctx_pool_acquire_t* r) {
  uint64_t waited = uv_hrtime() - r->queued_ns_;
  pool->stats_.wait_duration_ns += waited;
  uvctx_histogram_record(&pool->stats_.wait, waited);
}

/* Takes the oldest waiter off the queue, its watch stopped. */
static uvctx_pool_acquire_t* pop_waiter(uvctx_pool_t* pool) {
  uvctx_pool_acquire_t* r;
  while ((r = pool->wait_head_) != NULL) {
    req_unlink(&pool->wait_head_, &pool->wait_tail_, r);
    pool->n_waiting_--;
    record_wait(pool, r);
    /* On the loop thread a watch still queued is stopped before its
     * callback runs, so this returns 1; 0 would mean the callback is
     * running right now, which has already taken the request off. */
    if (uvctx_watch_stop(&r->watch_) == 1)
      return r;
  }
  return NULL;
}

static void waiter_done(uvctx_watch_t* w, int err) {
  uvctx_pool_acquire_t* r = CONTAINER_OF(w, uvctx_pool_acquire_t, watch_);
  uvctx_pool_t* pool = r->pool_;
  uvctx_t* ctx = r->ctx_;
  if (r->state_ != REQ_WAITING)
    return;
  req_unlink(&pool->wait_head_, &pool->wait_tail_, r);
  pool->n_waiting_--;
  record_wait(pool, r);
  r->state_ = REQ_DONE;
  r->cb_(r, err, NULL);
  uvctx_unref(ctx);
}

/* ---- opening ------------------------------------------------------------
 */

/* Starts opens for waiters that no open in flight will serve, within
 * max_open. A refused open gives its error to the oldest waiter. */
static void maybe_open(uvctx_pool_t* pool) {
  while (!pool->closing_ && pool->n_waiting_ > pool->n_opening_ &&
         under_max_open(pool)) {
    int rc;
    pool->n_opening_++;
    rc = pool->kind_->open(pool, pool->ctx_);
    if (rc != 0) {
      uvctx_pool_acquire_t* r;
      pool->n_opening_--;
      pool->stats_.open_failures++;
      r = pop_waiter(pool);
      if (r != NULL)
        make_due(pool, r, rc, NULL);
    }
  }
}

/* A connection that is free again: to the oldest waiter, else idle, else
 * closed. */
static void put_conn(uvctx_pool_t* pool, uvctx_pool_conn_t* c) {
  uvctx_pool_acquire_t* r;
  uint64_t now = uv_hrtime();
  uint64_t at;
  int why;
  if (pool->closing_) {
    close_conn(pool, c, WHY_OTHER);
    return;
  }
  at = expiry_of(pool, c, 0, &why);
  if (at != 0 && now >= at) {
    close_conn(pool, c, why);
    maybe_open(pool);
    return;
  }
  r = pop_waiter(pool);
  if (r != NULL) {
    c->state_ = CONN_IN_USE;
    pool->n_in_use_++;
    make_due(pool, r, 0, c);
    return;
  }
  if (pool->n_idle_ >= max_idle(pool)) {
    close_conn(pool, c, WHY_MAX_IDLE);
    return;
  }
  c->state_ = CONN_IDLE;
  c->idle_since_ns_ = now;
  idle_push_front(pool, c);
  at = expiry_of(pool, c, 1, &why);
  if (at != 0 && (!uv_is_active((uv_handle_t*)&pool->timer_) ||
                  at < pool->timer_due_ns_)) {
    uint64_t ms = (at - now + ms_ns - 1) / ms_ns;
    pool->timer_due_ns_ = at;
    uv_timer_start(&pool->timer_, expire, ms, 0);
  }
}

/* Closes idle connections whose time is up and re-arms for the next one.
 * libuv timers count whole cached milliseconds and may fire a little
 * early: expiry is decided by uv_hrtime(), never by the timer. */
static void expire(uv_timer_t* t) {
  uvctx_pool_t* pool = CONTAINER_OF(t, uvctx_pool_t, timer_);
  uvctx_pool_conn_t *c, *next;
  uint64_t now = uv_hrtime(), earliest = 0;
  int why;
  for (c = pool->idle_head_; c != NULL; c = next) {
    uint64_t at = expiry_of(pool, c, 1, &why);
    next = c->next_;
    if (at == 0)
      continue;
    if (now >= at) {
      idle_unlink(pool, c);
      close_conn(pool, c, why);
    } else if (earliest == 0 || at < earliest) {
      earliest = at;
    }
  }
  if (earliest != 0 && !pool->closing_) {
    pool->timer_due_ns_ = earliest;
    uv_timer_start(&pool->timer_, expire, (earliest - now + ms_ns - 1) / ms_ns,
                   0);
  }
  maybe_open(pool);
}

/* An idle connection fit to hand out, or NULL; expired ones and those the
 * kind's check refuses are closed on the way. */
static uvctx_pool_conn_t* take_idle(uvctx_pool_t* pool) {
  uvctx_pool_conn_t* c;
  uint64_t now = uv_hrtime();
  while ((c = pool->idle_head_) != NULL) {
    uint64_t at;
    int why;
    idle_unlink(pool, c);
    at = expiry_of(pool, c, 1, &why);
    if (at != 0 && now >= at) {
      close_conn(pool, c, why);
      continue;
    }
    if (pool->kind_->check != NULL && pool->kind_->check(pool, c) != 0) {
      close_conn(pool, c, WHY_BROKEN);
      continue;
    }
    c->state_ = CONN_IN_USE;
    pool->n_in_use_++;
    return c;
  }
  return NULL;
}

/* ---- the public API -----------------------------------------------------
 */

int uvctx_pool_init(uvctx_pool_t* pool, uvctx_loop_t* l,
                    const uvctx_pool_kind_t* kind, void* kind_arg,
                    const uvctx_pool_options_t* opts) {
  uv_loop_t* loop;
  void* data;
  int rc;
  if (pool == NULL || l == NULL || kind == NULL || kind->open == NULL ||
      kind->close == NULL)
    return UV_EINVAL;
  data = pool->data;
  memset(pool, 0, sizeof(*pool));
  pool->data = data;
  pool->l_ = l;
  pool->kind_ = kind;
  pool->kind_arg_ = kind_arg;
  if (opts != NULL)
    pool->opts_ = *opts;
  pool->stats_.max_open = pool->opts_.max_open;
  loop = uvctx_loop_uv(l);
  rc = uvctx_with_cancel(uvctx_background(l), &pool->ctx_);
  if (rc != 0) {
    pool->ctx_ = NULL;
    return rc;
  }
  /* Neither init allocates nor can fail in libuv. */
  uv_timer_init(loop, &pool->timer_);
  uv_idle_init(loop, &pool->idle_);
  /* Expiry alone does not keep uv_run() alive, as database/sql's cleaner
   * does not keep a program alive. */
  uv_unref((uv_handle_t*)&pool->timer_);
  pool->handles_open_ = 2;
  return 0;
}

void* uvctx_pool_kind_arg(const uvctx_pool_t* pool) {
  return pool != NULL ? pool->kind_arg_ : NULL;
}

void uvctx_pool_opened(uvctx_pool_t* pool, uvctx_pool_conn_t* conn,
                       int status) {
  pool->n_opening_--;
  if (status != 0 || conn == NULL) {
    uvctx_pool_acquire_t* r;
    pool->stats_.open_failures++;
    r = pop_waiter(pool);
    if (r != NULL)
      make_due(pool, r, status != 0 ? status : UV_EINVAL, NULL);
    maybe_open(pool);
    check_finished(pool);
    return;
  }
  memset(conn, 0, sizeof(*conn));
  conn->pool_ = pool;
  conn->created_ns_ = uv_hrtime();
  conn->state_ = CONN_IN_USE;
  pool->stats_.opened++;
  put_conn(pool, conn);
  check_finished(pool);
}

void uvctx_pool_closed(uvctx_pool_t* pool) {
  pool->n_closing_--;
  maybe_open(pool);
  check_finished(pool);
}

int uvctx_pool_acquire(uvctx_pool_acquire_t* req, uvctx_pool_t* pool,
                       uvctx_t* ctx, uvctx_pool_acquire_cb cb) {
  uvctx_pool_conn_t* c;
  int rc;
  if (req == NULL || pool == NULL || ctx == NULL || cb == NULL ||
      uvctx_home(ctx) != pool->l_)
    return UV_EINVAL;
  if (pool->closing_)
    return UV_ECANCELED;
  req->pool_ = pool;
  req->cb_ = cb;
  req->conn_ = NULL;
  req->prev_ = req->next_ = NULL;
  req->status_ = 0;
  req->ctx_ = uvctx_ref(ctx);
  if (uvctx_err(ctx) != 0) {
    make_due(pool, req, uvctx_err(ctx), NULL);
    return 0;
  }
  if (pool->wait_head_ == NULL && (c = take_idle(pool)) != NULL) {
    make_due(pool, req, 0, c);
    return 0;
  }
  req->state_ = REQ_WAITING;
  rc = uvctx_watch_start(&req->watch_, ctx, waiter_done);
  if (rc != 0) {
    uvctx_unref(ctx);
    return rc;
  }
  req->queued_ns_ = uv_hrtime();
  req_append(&pool->wait_head_, &pool->wait_tail_, req);
  pool->n_waiting_++;
  pool->stats_.wait_count++;
  maybe_open(pool);
  return 0;
}

void uvctx_pool_release(uvctx_pool_t* pool, uvctx_pool_conn_t* conn,
                        int broken) {
  pool->n_in_use_--;
  if (broken) {
    close_conn(pool, conn, WHY_BROKEN);
    maybe_open(pool);
  } else {
    put_conn(pool, conn);
  }
  check_finished(pool);
}

static void handle_closed(uv_handle_t* h) {
  uvctx_pool_t* pool = h->data;
  if (--pool->handles_open_ == 0 && pool->close_cb_ != NULL)
    pool->close_cb_(pool);
}

/* Once closing and nothing is left (no connection, open, close or due
 * callback), the handles close and the close callback follows theirs. */
static void check_finished(uvctx_pool_t* pool) {
  if (!pool->closing_ || pool->ctx_ == NULL || pool->flushing_ ||
      pool->n_idle_ != 0 || pool->n_in_use_ != 0 || pool->n_opening_ != 0 ||
      pool->n_closing_ != 0 || pool->due_head_ != NULL)
    return;
  uvctx_release(pool->ctx_);
  pool->ctx_ = NULL;
  pool->timer_.data = pool;
  pool->idle_.data = pool;
  uv_close((uv_handle_t*)&pool->timer_, handle_closed);
  uv_close((uv_handle_t*)&pool->idle_, handle_closed);
}

int uvctx_pool_close(uvctx_pool_t* pool, uvctx_pool_close_cb cb) {
  uvctx_pool_acquire_t* r;
  uvctx_pool_conn_t* c;
  if (pool == NULL)
    return UV_EINVAL;
  if (pool->closing_)
    return UV_EALREADY;
  pool->closing_ = 1;
  pool->close_cb_ = cb;
  uv_timer_stop(&pool->timer_);
  /* Opens in flight run under the pool's context: they stop now. */
  uvctx_cancel(pool->ctx_);
  while ((r = pop_waiter(pool)) != NULL)
    make_due(pool, r, UV_ECANCELED, NULL);
  while ((c = pool->idle_head_) != NULL) {
    idle_unlink(pool, c);
    close_conn(pool, c, WHY_OTHER);
  }
  check_finished(pool);
  return 0;
}

int uvctx_pool_stats(const uvctx_pool_t* pool, uvctx_pool_stats_t* out) {
  if (pool == NULL || out == NULL)
    return UV_EINVAL;
  *out = pool->stats_;
  out->max_open = pool->opts_.max_open;
  out->open = pool->n_idle_ + pool->n_in_use_;
  out->in_use = pool->n_in_use_;
  out->idle = pool->n_idle_;
  out->opening = pool->n_opening_;
  out->closing = pool->n_closing_;
  out->waiting = pool->n_waiting_;
  return 0;
}

#define POOL_FIELD(f) offsetof(uvctx_pool_stats_t, f)

static const uvctx_metric_t pool_metrics[] = {
    {"uvctx_pool_max_open", "The pool's bound on open connections (0: none).",
     UVCTX_METRIC_GAUGE, POOL_FIELD(max_open)},
    {"uvctx_pool_open", "Connections in use or idle.", UVCTX_METRIC_GAUGE,
     POOL_FIELD(open)},
    {"uvctx_pool_in_use", "Connections handed out.", UVCTX_METRIC_GAUGE,
     POOL_FIELD(in_use)},
    {"uvctx_pool_idle", "Idle connections.", UVCTX_METRIC_GAUGE,
     POOL_FIELD(idle)},
    {"uvctx_pool_opening", "Opens in flight.", UVCTX_METRIC_GAUGE,
     POOL_FIELD(opening)},
    {"uvctx_pool_closing", "Closes not yet confirmed.", UVCTX_METRIC_GAUGE,
     POOL_FIELD(closing)},
    {"uvctx_pool_waiting", "Requests waiting for a connection.",
     UVCTX_METRIC_GAUGE, POOL_FIELD(waiting)},
    {"uvctx_pool_wait_total", "Requests that had to wait.",
     UVCTX_METRIC_COUNTER, POOL_FIELD(wait_count)},
    {"uvctx_pool_max_idle_closed_total",
     "Connections closed because max_idle were idle.", UVCTX_METRIC_COUNTER,
     POOL_FIELD(max_idle_closed)},
    {"uvctx_pool_max_idle_time_closed_total",
     "Connections closed after max_idle_time idle.", UVCTX_METRIC_COUNTER,
     POOL_FIELD(max_idle_time_closed)},
    {"uvctx_pool_max_lifetime_closed_total",
     "Connections closed after max_lifetime.", UVCTX_METRIC_COUNTER,
     POOL_FIELD(max_lifetime_closed)},
    {"uvctx_pool_opened_total", "Opens that succeeded.", UVCTX_METRIC_COUNTER,
     POOL_FIELD(opened)},
    {"uvctx_pool_open_failures_total", "Opens that failed.",
     UVCTX_METRIC_COUNTER, POOL_FIELD(open_failures)},
    {"uvctx_pool_broken_closed_total",
     "Connections closed as broken (released so, or refused by the check).",
     UVCTX_METRIC_COUNTER, POOL_FIELD(broken_closed)},
    {"uvctx_pool_closed_total", "Connections closed, for any reason.",
     UVCTX_METRIC_COUNTER, POOL_FIELD(closed)},
    {"uvctx_pool_acquired_total", "Connections handed out.",
     UVCTX_METRIC_COUNTER, POOL_FIELD(acquired)},
    {"uvctx_pool_wait_duration_seconds",
     "How long each waiting request waited, until it got a connection or "
     "gave up.",
     UVCTX_METRIC_HISTOGRAM, POOL_FIELD(wait)},
    {"uvctx_pool_wait_duration_max_seconds", "Longest wait for a connection.",
     UVCTX_METRIC_MAX_GAUGE, POOL_FIELD(wait)},
};

int uvctx_pool_metrics_format(const uvctx_pool_stats_t* const* stats,
                              const char* const* labels, size_t n, char** out,
                              size_t* len) {
  return uvctx_metrics_format_table(
      pool_metrics, sizeof(pool_metrics) / sizeof(pool_metrics[0]), "pool",
      (const void* const*)stats, labels, n, out, len);
}
