/* pg.c owns PostgreSQL connections under contexts (uvctx/pg.h): the
 * connect state machine on PQconnectPoll(), the uv_poll_t that follows
 * PQsocket(), queries with their cancellation on the server (PQcancel() on
 * the thread pool) and the drain that makes a cancelled connection usable
 * again, and the teardown that closes every handle before PQfinish(). Built
 * on the public API only. */
#include <stdlib.h>
#include <string.h>

#include "pg_internal.h"

#define CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

enum {
  ST_CONNECTING = 1,
  ST_IDLE,
  ST_BUSY,     /* a query runs */
  ST_DRAINING, /* a cancelled query is ending on the server */
  ST_BROKEN,
  ST_CLOSING
};

static const uint64_t default_grace_ms = 5000;

struct uvctx_pg_conn_s {
  uvctx_pool_conn_t pool_head; /* when a pg pool owns it */
  uvctx_loop_t* l;
  PGconn* pg;
  PGcancel* cancel;
  uv_poll_t* poll; /* on PQsocket(); NULL when there is none */
  int fd;
  int events;
  int state;
  int flushing; /* PQflush() has more to send */
  int drained;  /* the cancelled query's results are all read */
  int handles;  /* closes to wait for at teardown */
  uvctx_pg_options_t opts;
  uv_timer_t grace; /* the cancel's grace period */
  uv_timer_t retry; /* the next cancel request while the query runs on */
  uint64_t retry_ms;
  uv_timer_t defer; /* callbacks that must not run inside a call */
  uvctx_pg_connect_t* connect;
  int connect_status;
  uvctx_pg_query_t* q;       /* in flight */
  uvctx_pg_query_t* waiting; /* behind a drain */
  uvctx_pg_query_t* deferred_head;
  uvctx_pg_query_t* deferred_tail;
  PGresult* result;
  /* The cancel on the thread pool; its fields are the worker's until the
   * after-work callback. */
  uv_work_t cancel_work;
  int cancel_running;
  char cancel_err[256];
  /* A pg pool's hook: the drain is over (the connection may be broken). */
  void (*ready_cb)(uvctx_pg_conn_t* conn, void* arg);
  void* ready_arg;
  uvctx_pg_close_cb close_cb;
  void* close_arg;
};

static void on_io(uv_poll_t* h, int status, int events);
static void teardown(uvctx_pg_conn_t* conn);
static int send_query(uvctx_pg_conn_t* conn, uvctx_pg_query_t* q);

static void quiet_notices(void* arg, const char* msg) {
  (void)arg;
  (void)msg;
}

/* ---- the poll handle -----------------------------------------------------
 */

static void poll_closed(uv_handle_t* h) {
  uvctx_pg_conn_t* conn = h->data;
  uvctx_free(h);
  if (--conn->handles == 0 && conn->state == ST_CLOSING)
    teardown(conn);
}

static void poll_drop(uvctx_pg_conn_t* conn) {
  if (conn->poll == NULL)
    return;
  /* uv_close() takes the fd off the loop at once, before libpq may close
   * it and the number is reused. */
  uv_close((uv_handle_t*)conn->poll, poll_closed);
  conn->poll = NULL;
  conn->events = 0;
}

/* Watches `fd` for `events`. During a connect libpq may close its socket
 * and open another, possibly under the same number, inside one
 * PQconnectPoll(): a different number gets a new handle, the same number a
 * fresh registration (stop and start), so that the loop never waits on a
 * socket that is gone. */
static int poll_watch(uvctx_pg_conn_t* conn, int fd, int events, int fresh) {
  int rc;
  if (fd < 0)
    return UV_EBADF;
  if (conn->poll != NULL && conn->fd != fd)
    poll_drop(conn);
  if (conn->poll == NULL) {
    conn->poll = uvctx_malloc(sizeof(*conn->poll));
    if (conn->poll == NULL)
      return UV_ENOMEM;
    rc = uv_poll_init(uvctx_loop_uv(conn->l), conn->poll, fd);
    if (rc != 0) {
      uvctx_free(conn->poll);
      conn->poll = NULL;
      return rc;
    }
    conn->poll->data = conn;
    conn->handles++;
    if (conn->state == ST_IDLE)
      uv_unref((uv_handle_t*)conn->poll);
    conn->fd = fd;
    conn->events = 0;
  } else if (fresh) {
    uv_poll_stop(conn->poll);
    conn->events = 0;
  }
  if (events == conn->events)
    return 0;
  rc = uv_poll_start(conn->poll, events, on_io);
  if (rc == 0)
    conn->events = events;
  return rc;
}

/* An idle connection does not keep uv_run() alive (as an idle
 * database/sql connection does not keep a Go program alive); one that is
 * connecting, running or draining a query does. */
static void set_state(uvctx_pg_conn_t* conn, int state) {
  conn->state = state;
  if (conn->poll == NULL)
    return;
  if (state == ST_IDLE)
    uv_unref((uv_handle_t*)conn->poll);
  else
    uv_ref((uv_handle_t*)conn->poll);
}

static int io_events(const uvctx_pg_conn_t* conn) {
  return UV_READABLE | (conn->flushing ? UV_WRITABLE : 0);
}

/* ---- teardown ------------------------------------------------------------
 */

static void handle_closed(uv_handle_t* h) {
  uvctx_pg_conn_t* conn = h->data;
  if (--conn->handles == 0)
    teardown(conn);
}

static void defer_query(uvctx_pg_conn_t* conn, uvctx_pg_query_t* q, int status);

/* The queries in flight and waiting end with `status`, from the loop. */
static void fail_queries(uvctx_pg_conn_t* conn, int status) {
  uvctx_pg_query_t* q = conn->q;
  conn->q = NULL;
  if (q != NULL && uvctx_watch_stop(&q->watch_) == 1)
    defer_query(conn, q, status);
  q = conn->waiting;
  conn->waiting = NULL;
  if (q != NULL && uvctx_watch_stop(&q->watch_) == 1)
    defer_query(conn, q, status);
}

/* The pg pool's hook, once: the drain is over, or the connection broke. */
static void notify_ready(uvctx_pg_conn_t* conn) {
  void (*cb)(uvctx_pg_conn_t*, void*) = conn->ready_cb;
  if (cb == NULL)
    return;
  conn->ready_cb = NULL;
  cb(conn, conn->ready_arg);
}

/* The connection becomes unusable: the socket leaves the loop; a query in
 * flight or waiting fails with UV_ECONNRESET. From loop callbacks only. */
static void conn_break(uvctx_pg_conn_t* conn) {
  if (conn->state == ST_BROKEN || conn->state == ST_CLOSING)
    return;
  conn->state = ST_BROKEN;
  poll_drop(conn);
  uv_timer_stop(&conn->grace);
  uv_timer_stop(&conn->retry);
  fail_queries(conn, UV_ECONNRESET);
  notify_ready(conn);
}

static void run_deferred(uvctx_pg_conn_t* conn) {
  uvctx_pg_query_t* q;
  while ((q = conn->deferred_head) != NULL) {
    uvctx_t* ctx = q->ctx_;
    conn->deferred_head = q->next_;
    if (conn->deferred_head == NULL)
      conn->deferred_tail = NULL;
    if (q->error_ == NULL)
      q->error_ = conn->pg != NULL ? PQerrorMessage(conn->pg) : "";
    q->cb_(q, q->status_, NULL);
    uvctx_unref(ctx);
  }
}

static void defer_cb(uv_timer_t* t) {
  run_deferred(CONTAINER_OF(t, uvctx_pg_conn_t, defer));
}

static void defer_query(uvctx_pg_conn_t* conn, uvctx_pg_query_t* q,
                        int status) {
  q->status_ = status;
  q->next_ = NULL;
  if (conn->deferred_tail != NULL)
    conn->deferred_tail->next_ = q;
  else
    conn->deferred_head = q;
  conn->deferred_tail = q;
  if (conn->state != ST_CLOSING)
    uv_timer_start(&conn->defer, defer_cb, 0, 0);
}

/* Closes everything, then runs the callbacks still owed: the connect's,
 * the queries', the close's; then frees. Called again by the last close
 * callback and by the cancel's after-work. */
static void teardown(uvctx_pg_conn_t* conn) {
  uvctx_pg_connect_t* req;
  if (conn->state != ST_CLOSING) {
    conn->state = ST_CLOSING;
    fail_queries(conn, UV_ECANCELED);
    if (conn->connect != NULL)
      uvctx_watch_stop(&conn->connect->watch_);
    poll_drop(conn);
    conn->handles += 3;
    uv_close((uv_handle_t*)&conn->grace, handle_closed);
    uv_close((uv_handle_t*)&conn->retry, handle_closed);
    uv_close((uv_handle_t*)&conn->defer, handle_closed);
    return;
  }
  if (conn->handles != 0 || conn->cancel_running)
    return;
  run_deferred(conn);
  req = conn->connect;
  conn->connect = NULL;
  if (conn->result != NULL)
    PQclear(conn->result);
  if (conn->cancel != NULL)
    PQfreeCancel(conn->cancel);
  if (conn->pg != NULL)
    PQfinish(conn->pg);
  if (req != NULL) {
    uvctx_t* ctx = req->ctx_;
    req->cb_(req, conn->connect_status, NULL);
    uvctx_unref(ctx);
  }
  if (conn->close_cb != NULL)
    conn->close_cb(conn, conn->close_arg);
  uvctx_free(conn);
}

/* ---- connecting ----------------------------------------------------------
 */

static void connect_fail(uvctx_pg_conn_t* conn, int status, const char* msg) {
  uvctx_pg_connect_t* req = conn->connect;
  snprintf(req->error_, sizeof(req->error_), "%s", msg != NULL ? msg : "");
  conn->connect_status = status;
  teardown(conn);
}

static void connect_ctx_done(uvctx_watch_t* w, int err) {
  uvctx_pg_connect_t* req = CONTAINER_OF(w, uvctx_pg_connect_t, watch_);
  connect_fail(req->conn_, err, "the context ended during the connect");
}

static void connected(uvctx_pg_conn_t* conn) {
  uvctx_pg_connect_t* req = conn->connect;
  uvctx_t* ctx = req->ctx_;
  int rc;
  /* Done wins: a connection that completes once ctx is done is closed. */
  if (uvctx_err(ctx) != 0) {
    connect_fail(conn, uvctx_err(ctx), "the context ended during the connect");
    return;
  }
  conn->cancel = PQgetCancel(conn->pg);
  if (conn->cancel == NULL || PQsetnonblocking(conn->pg, 1) != 0) {
    connect_fail(conn, UV_ENOMEM, PQerrorMessage(conn->pg));
    return;
  }
  PQsetNoticeProcessor(conn->pg, quiet_notices, NULL);
  rc = poll_watch(conn, PQsocket(conn->pg), UV_READABLE, 1);
  if (rc != 0) {
    connect_fail(conn, rc, uv_strerror(rc));
    return;
  }
  uvctx_watch_stop(&req->watch_);
  set_state(conn, ST_IDLE);
  conn->connect = NULL;
  req->error_[0] = '\0';
  req->conn_ = conn;
  req->cb_(req, 0, conn);
  uvctx_unref(ctx);
}

static void connect_step(uvctx_pg_conn_t* conn) {
  PostgresPollingStatusType st = PQconnectPoll(conn->pg);
  int rc;
  switch (st) {
    case PGRES_POLLING_OK:
      connected(conn);
      return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
      rc = poll_watch(conn, PQsocket(conn->pg),
                      st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE,
                      1);
      if (rc != 0)
        connect_fail(conn, rc, uv_strerror(rc));
      return;
    default:
      connect_fail(conn, UV_ECONNREFUSED, PQerrorMessage(conn->pg));
      return;
  }
}

static void connect_start(uv_timer_t* t) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(t, uvctx_pg_conn_t, defer);
  /* PQconnectStartParams() made the first connect() attempt; carry on as
   * if PQconnectPoll() had asked for a writable socket. */
  if (PQstatus(conn->pg) == CONNECTION_BAD) {
    connect_fail(conn, UV_ECONNREFUSED, PQerrorMessage(conn->pg));
    return;
  }
  if (poll_watch(conn, PQsocket(conn->pg), UV_WRITABLE, 1) != 0)
    connect_fail(conn, UV_EBADF, "no socket");
}

static void defer_connect_error(uv_timer_t* t) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(t, uvctx_pg_conn_t, defer);
  teardown(conn);
}

int uvctx_pg_connect(uvctx_pg_connect_t* req, uvctx_t* ctx,
                     const char* conninfo, const uvctx_pg_options_t* opts,
                     uvctx_pg_connect_cb cb) {
  static const char* const keywords[] = {"dbname", NULL};
  const char* values[] = {conninfo, NULL};
  uvctx_pg_conn_t* conn;
  uv_loop_t* loop;
  PQconninfoOption* parsed;
  char* perr = NULL;
  int status = 0;
  if (req == NULL || ctx == NULL || conninfo == NULL || cb == NULL)
    return UV_EINVAL;
  conn = uvctx_malloc(sizeof(*conn));
  if (conn == NULL)
    return UV_ENOMEM;
  memset(conn, 0, sizeof(*conn));
  loop = uvctx_loop_uv(uvctx_home(ctx));
  conn->l = uvctx_home(ctx);
  conn->fd = -1;
  conn->state = ST_CONNECTING;
  if (opts != NULL)
    conn->opts = *opts;
  if (conn->opts.cancel_grace_ms == 0)
    conn->opts.cancel_grace_ms = default_grace_ms;
  /* Neither init allocates nor can fail in libuv. */
  uv_timer_init(loop, &conn->grace);
  uv_timer_init(loop, &conn->retry);
  uv_timer_init(loop, &conn->defer);
  conn->grace.data = conn->defer.data = conn->retry.data = conn;
  req->ctx_ = uvctx_ref(ctx);
  req->cb_ = cb;
  req->conn_ = conn;
  req->error_[0] = '\0';
  conn->connect = req;

  parsed = PQconninfoParse(conninfo, &perr);
  if (parsed == NULL) {
    snprintf(req->error_, sizeof(req->error_), "%s",
             perr != NULL ? perr : "out of memory");
    status = perr != NULL ? UV_EINVAL : UV_ENOMEM;
    PQfreemem(perr);
  } else {
    PQconninfoFree(parsed);
  }
  if (status == 0 && uvctx_err(ctx) != 0) {
    /* A done context attempts nothing. */
    status = uvctx_err(ctx);
    snprintf(req->error_, sizeof(req->error_), "%s",
             "the context ended before the connect");
  }
  if (status == 0) {
    conn->pg = PQconnectStartParams(keywords, values, 1);
    if (conn->pg == NULL)
      status = UV_ENOMEM;
  }
  if (status != 0) {
    conn->connect_status = status;
    uv_timer_start(&conn->defer, defer_connect_error, 0, 0);
    return 0;
  }
  uvctx_watch_start(&req->watch_, ctx, connect_ctx_done);
  /* The first poll step waits for the loop: a connect refused at once is
   * reported from there, never inside this call. */
  uv_timer_start(&conn->defer, connect_start, 0, 0);
  return 0;
}

const char* uvctx_pg_connect_error(const uvctx_pg_connect_t* req) {
  return req != NULL ? req->error_ : "";
}

/* ---- queries -------------------------------------------------------------
 */

static void query_finish(uvctx_pg_conn_t* conn, uvctx_pg_query_t* q, int status,
                         PGresult* res) {
  uvctx_t* ctx = q->ctx_;
  (void)conn;
  q->cb_(q, status, res);
  uvctx_unref(ctx);
  if (res != NULL)
    PQclear(res);
}

static int is_broken_state(const char* sqlstate) {
  /* Class 08 (connection exception) and 57P01-57P03 (the server is
   * shutting down or cannot take the session): the session is gone. */
  return strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P0", 4) == 0;
}

static void check_ready(uvctx_pg_conn_t* conn) {
  uvctx_pg_query_t* q;
  if (conn->state != ST_DRAINING || !conn->drained || conn->cancel_running)
    return;
  /* Both the server's end of the query and the cancel request itself are
   * over: a late cancel can no longer hit the next query. */
  uv_timer_stop(&conn->grace);
  uv_timer_stop(&conn->retry);
  set_state(conn, ST_IDLE);
  q = conn->waiting;
  conn->waiting = NULL;
  if (q != NULL && uvctx_watch_stop(&q->watch_) == 1) {
    int rc = send_query(conn, q);
    if (rc != 0) {
      conn_break(conn);
      query_finish(conn, q, rc, NULL);
      return;
    }
  }
  if (conn->state == ST_IDLE)
    notify_ready(conn);
}

/* The query's results are all in (PQgetResult() returned NULL). */
static void results_done(uvctx_pg_conn_t* conn) {
  uvctx_pg_query_t* q = conn->q;
  PGresult* res = conn->result;
  int status = 0, broken = PQstatus(conn->pg) != CONNECTION_OK;
  conn->result = NULL;
  if (conn->state == ST_DRAINING) {
    if (res != NULL)
      PQclear(res);
    conn->drained = 1;
    if (broken)
      conn_break(conn);
    else
      check_ready(conn);
    return;
  }
  conn->q = NULL;
  q->sqlstate_ = "";
  q->error_ = "";
  if (res == NULL) {
    status = broken ? UV_ECONNRESET : UV_EIO;
    q->error_ = PQerrorMessage(conn->pg);
  } else {
    switch (PQresultStatus(res)) {
      case PGRES_TUPLES_OK:
      case PGRES_COMMAND_OK:
      case PGRES_EMPTY_QUERY:
        break;
      default: {
        const char* st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        q->sqlstate_ = st != NULL ? st : "";
        q->error_ = PQresultErrorMessage(res);
        if (is_broken_state(q->sqlstate_))
          broken = 1;
        status = broken ? UV_ECONNRESET : UV_EIO;
        break;
      }
    }
  }
  uvctx_watch_stop(&q->watch_);
  if (broken) {
    conn_break(conn);
  } else {
    set_state(conn, ST_IDLE);
    poll_watch(conn, conn->fd, io_events(conn), 0);
  }
  query_finish(conn, q, status, res);
}

/* Reading failed: libpq has declared the connection bad. */
static void io_failed(uvctx_pg_conn_t* conn) {
  uvctx_pg_query_t* q = conn->q;
  if (q != NULL && conn->state == ST_BUSY) {
    conn->q = NULL;
    uvctx_watch_stop(&q->watch_);
    q->sqlstate_ = "";
    q->error_ = PQerrorMessage(conn->pg);
    conn_break(conn);
    query_finish(conn, q, UV_ECONNRESET, NULL);
    return;
  }
  conn_break(conn);
}

static void on_io(uv_poll_t* h, int status, int events) {
  uvctx_pg_conn_t* conn = h->data;
  if (conn->state == ST_CONNECTING) {
    connect_step(conn);
    return;
  }
  if (status < 0) {
    io_failed(conn);
    return;
  }
  if (conn->flushing && (events & UV_WRITABLE)) {
    int r = PQflush(conn->pg);
    if (r < 0) {
      io_failed(conn);
      return;
    }
    conn->flushing = r;
  }
  if ((events & UV_READABLE) && !PQconsumeInput(conn->pg)) {
    io_failed(conn);
    return;
  }
  if (conn->state == ST_BUSY || conn->state == ST_DRAINING) {
    while (!PQisBusy(conn->pg)) {
      PGresult* r = PQgetResult(conn->pg);
      if (r == NULL) {
        results_done(conn);
        return;
      }
      /* One statement gives one result; keep the first error when the
       * connection then fails too. */
      if (conn->state == ST_BUSY &&
          (conn->result == NULL ||
           PQresultStatus(conn->result) != PGRES_FATAL_ERROR)) {
        if (conn->result != NULL)
          PQclear(conn->result);
        conn->result = r;
      } else {
        PQclear(r);
      }
    }
  } else if (PQstatus(conn->pg) != CONNECTION_OK) {
    conn_break(conn); /* the server ended an idle session */
    return;
  }
  if (conn->poll != NULL && poll_watch(conn, conn->fd, io_events(conn), 0))
    io_failed(conn);
}

static void cancel_after(uv_work_t* w, int status);

static void cancel_work(uv_work_t* w) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(w, uvctx_pg_conn_t, cancel_work);
  /* PQcancel() is thread-safe: it uses only the PGcancel copy, never the
   * PGconn the loop keeps reading. It blocks until the server took the
   * request. */
  if (!PQcancel(conn->cancel, conn->cancel_err, sizeof(conn->cancel_err)))
    conn->cancel_err[sizeof(conn->cancel_err) - 1] = '\0';
}

static void cancel_start(uvctx_pg_conn_t* conn) {
  conn->cancel_err[0] = '\0';
  if (uv_queue_work(uvctx_loop_uv(conn->l), &conn->cancel_work, cancel_work,
                    cancel_after) == 0)
    conn->cancel_running = 1;
}

static void cancel_retry(uv_timer_t* t) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(t, uvctx_pg_conn_t, retry);
  if (conn->state == ST_DRAINING && !conn->drained && !conn->cancel_running)
    cancel_start(conn);
}

/* A cancel request is lost when it reaches the backend before the query
 * has started (the server drops a cancel that finds it idle): while the
 * query still runs, ask again, 20 ms later, then twice as late each time
 * up to 500 ms, within the grace period. A repeated request cannot hit a
 * later query: none starts before this one is drained and no cancel is in
 * flight. */
static void cancel_after(uv_work_t* w, int status) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(w, uvctx_pg_conn_t, cancel_work);
  (void)status;
  conn->cancel_running = 0;
  if (conn->state == ST_CLOSING) {
    teardown(conn);
  } else if (conn->state == ST_DRAINING && !conn->drained) {
    uv_timer_start(&conn->retry, cancel_retry, conn->retry_ms, 0);
    if (conn->retry_ms < 500)
      conn->retry_ms *= 2;
  } else {
    check_ready(conn);
  }
}

static void grace_over(uv_timer_t* t) {
  uvctx_pg_conn_t* conn = CONTAINER_OF(t, uvctx_pg_conn_t, grace);
  /* The server did not confirm in time: never hand the connection out
   * half-used. */
  if (conn->state == ST_DRAINING)
    conn_break(conn);
}

/* The query's context ended: the callback now, the cancel on the thread
 * pool, the drain and the grace timer on the loop. */
static void query_ctx_done(uvctx_watch_t* w, int err) {
  uvctx_pg_query_t* q = CONTAINER_OF(w, uvctx_pg_query_t, watch_);
  uvctx_pg_conn_t* conn = q->conn_;
  if (conn->q != q)
    return;
  conn->q = NULL;
  set_state(conn, ST_DRAINING);
  conn->drained = 0;
  if (conn->result != NULL) {
    PQclear(conn->result);
    conn->result = NULL;
  }
  conn->retry_ms = 20;
  cancel_start(conn);
  uv_timer_start(&conn->grace, grace_over, conn->opts.cancel_grace_ms, 0);
  q->sqlstate_ = "";
  q->error_ = "";
  query_finish(conn, q, err, NULL);
}

/* A query waiting behind a drain whose context ends. */
static void waiting_ctx_done(uvctx_watch_t* w, int err) {
  uvctx_pg_query_t* q = CONTAINER_OF(w, uvctx_pg_query_t, watch_);
  uvctx_pg_conn_t* conn = q->conn_;
  if (conn->waiting != q)
    return;
  conn->waiting = NULL;
  q->sqlstate_ = "";
  q->error_ = "";
  query_finish(conn, q, err, NULL);
}

static int send_query(uvctx_pg_conn_t* conn, uvctx_pg_query_t* q) {
  int r;
  if (!PQsendQueryParams(conn->pg, q->sql_, q->nparams_, NULL, q->params_, NULL,
                         NULL, 0)) {
    q->error_ = PQerrorMessage(conn->pg);
    if (PQstatus(conn->pg) != CONNECTION_OK) {
      conn_break(conn);
      return UV_ECONNRESET;
    }
    return UV_EINVAL;
  }
  r = PQflush(conn->pg);
  if (r < 0) {
    conn_break(conn);
    return UV_ECONNRESET;
  }
  conn->flushing = r;
  conn->q = q;
  set_state(conn, ST_BUSY);
  uvctx_watch_start(&q->watch_, q->ctx_, query_ctx_done);
  if (poll_watch(conn, conn->fd, io_events(conn), 0) != 0) {
    uvctx_watch_stop(&q->watch_);
    conn->q = NULL;
    conn_break(conn);
    return UV_ECONNRESET;
  }
  return 0;
}

int uvctx_pg_query(uvctx_pg_query_t* req, uvctx_pg_conn_t* conn, uvctx_t* ctx,
                   const char* sql, int nparams, const char* const* params,
                   uvctx_pg_query_cb cb) {
  int rc;
  if (req == NULL || conn == NULL || ctx == NULL || sql == NULL || cb == NULL ||
      nparams < 0 || (nparams > 0 && params == NULL) ||
      uvctx_home(ctx) != conn->l)
    return UV_EINVAL;
  if (conn->state != ST_IDLE && conn->state != ST_BUSY &&
      conn->state != ST_DRAINING)
    return UV_ECONNRESET;
  if (conn->state == ST_BUSY ||
      (conn->state == ST_DRAINING && conn->waiting != NULL))
    return UV_EBUSY;
  req->conn_ = conn;
  req->cb_ = cb;
  req->sql_ = sql;
  req->nparams_ = nparams;
  req->params_ = params;
  req->sqlstate_ = "";
  req->error_ = NULL;
  req->next_ = NULL;
  req->ctx_ = uvctx_ref(ctx);
  if (uvctx_err(ctx) != 0) {
    req->error_ = "";
    defer_query(conn, req, uvctx_err(ctx));
    return 0;
  }
  if (conn->state == ST_DRAINING) {
    conn->waiting = req;
    uvctx_watch_start(&req->watch_, ctx, waiting_ctx_done);
    return 0;
  }
  rc = send_query(conn, req);
  if (rc != 0) {
    uvctx_unref(ctx);
    return rc;
  }
  return 0;
}

const char* uvctx_pg_query_sqlstate(const uvctx_pg_query_t* req) {
  return req != NULL && req->sqlstate_ != NULL ? req->sqlstate_ : "";
}

const char* uvctx_pg_query_error(const uvctx_pg_query_t* req) {
  return req != NULL && req->error_ != NULL ? req->error_ : "";
}

/* ---- connections ---------------------------------------------------------
 */

int uvctx_pg_conn_broken(const uvctx_pg_conn_t* conn) {
  return conn->state == ST_BROKEN || conn->state == ST_CLOSING ||
         PQstatus(conn->pg) != CONNECTION_OK;
}

int uvctx_pg_conn_busy(const uvctx_pg_conn_t* conn) {
  return conn->state == ST_BUSY || conn->state == ST_DRAINING;
}

PGconn* uvctx_pg_conn_pgconn(const uvctx_pg_conn_t* conn) {
  return conn->pg;
}

void uvctx_pg_conn_close(uvctx_pg_conn_t* conn, uvctx_pg_close_cb cb,
                         void* arg) {
  conn->close_cb = cb;
  conn->close_arg = arg;
  conn->ready_cb = NULL;
  teardown(conn);
}

/* ---- for the pg pool (pg_internal.h) -------------------------------------
 */

/* A non-blocking read before an idle connection is handed out again: a
 * session the server ended while the connection sat idle (its EOF or
 * error already in the socket) is seen now rather than by the next
 * query. */
int uvctx__pg_conn_probe(uvctx_pg_conn_t* conn) {
  if (conn->state == ST_IDLE &&
      (!PQconsumeInput(conn->pg) || PQstatus(conn->pg) != CONNECTION_OK))
    conn_break(conn);
  return uvctx_pg_conn_broken(conn);
}

uvctx_pool_conn_t* uvctx__pg_conn_head(uvctx_pg_conn_t* conn) {
  return &conn->pool_head;
}

uvctx_pg_conn_t* uvctx__pg_conn_of(uvctx_pool_conn_t* c) {
  return CONTAINER_OF(c, uvctx_pg_conn_t, pool_head);
}

int uvctx__pg_conn_when_ready(uvctx_pg_conn_t* conn,
                              void (*cb)(uvctx_pg_conn_t*, void*), void* arg) {
  if (conn->state != ST_DRAINING)
    return 0;
  conn->ready_cb = cb;
  conn->ready_arg = arg;
  return 1;
}
