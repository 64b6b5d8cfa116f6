/* uvctx PostgreSQL: libpq 15's asynchronous API driven by a uv_poll_t on
 * PQsocket(), under contexts. A connect obeys its context; a query whose
 * context ends is cancelled on the server (PQcancel() on the thread pool,
 * since it blocks), its callback comes at once with the context's error,
 * and the connection drains the cancelled query's results before it runs
 * anything else, or is closed if the server does not confirm in time. A
 * pool of connections sits on the generic pool of <uvctx/pool.h>.
 *
 * Include <uvctx/pg.h>; it includes <uvctx.h>, <uvctx/pool.h> and
 * <libpq-fe.h>. Built when uvctx is configured with UVCTX_WITH_PG (the
 * default when pkg-config finds libpq).
 *
 * Threading: loop thread only, like libuv handles; contexts may be
 * cancelled from any thread. Memory: a connection's record is allocated
 * with malloc(), as libpq allocates its own, so uvctx_replace_allocator()
 * does not cover this module.
 *
 * Host names in a conninfo are resolved by libpq inside PQconnectPoll(),
 * which blocks the loop for the lookup: give numeric addresses (hostaddr=)
 * or a socket directory where that matters.
 *
 * See docs/pg.md for the guide. */
#ifndef UVCTX_PG_H
#define UVCTX_PG_H

#include <libpq-fe.h>
#include <uvctx.h>
#include <uvctx/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A connection. Opaque; made by uvctx_pg_connect() or by a pg pool. */
typedef struct uvctx_pg_conn_s uvctx_pg_conn_t;

/* Options of a connection; zero-initialize, zeros are the defaults. */
typedef struct uvctx_pg_options_s {
  /* How long a cancelled query may take to end on the server, from its
   * context's end, before the connection is closed instead; 0: 5000. */
  uint64_t cancel_grace_ms;
} uvctx_pg_options_t;

/* ---- connecting ---------------------------------------------------------
 */

typedef struct uvctx_pg_connect_s uvctx_pg_connect_t;
typedef void (*uvctx_pg_connect_cb)(uvctx_pg_connect_t* req, int status,
                                    uvctx_pg_conn_t* conn);

/* A connect request: `data` is yours, the rest is private. */
struct uvctx_pg_connect_s {
  void* data;
  /* private */
  uvctx_t* ctx_;
  uvctx_pg_connect_cb cb_;
  uvctx_pg_conn_t* conn_;
  uvctx_watch_t watch_;
  char error_[256];
};

/* Connects with `conninfo` (a key=value string or a postgresql:// URI, as
 * PQconnectdb takes; given to PQconnectStartParams() with expand_dbname),
 * on ctx's home loop, PQconnectPoll() stepped whenever the socket is ready
 * (the socket may change during a connect, as libpq tries hosts and
 * fallbacks: the poll follows it). `opts` may be NULL; it is copied.
 *
 * cb(req, 0, conn) hands over a connection (close it with
 * uvctx_pg_conn_close()); cb(req, err, NULL) reports ctx's error if ctx
 * ends first (the half-made connection is closed first: done wins over a
 * connect that completes at the same time), UV_EINVAL for a conninfo
 * libpq cannot parse, UV_ECONNREFUSED when libpq gives up (server down,
 * authentication refused, ...), UV_ENOMEM. The reason is in
 * uvctx_pg_connect_error() during cb. cb runs once, from the loop, never
 * inside this call; a done ctx attempts nothing. The request holds a
 * reference to ctx until cb has run.
 *
 * Returns 0, or UV_EINVAL for a NULL argument; then cb never runs. */
UVCTX_EXTERN int uvctx_pg_connect(uvctx_pg_connect_t* req, uvctx_t* ctx,
                                  const char* conninfo,
                                  const uvctx_pg_options_t* opts,
                                  uvctx_pg_connect_cb cb);

/* libpq's message for a failed connect; "" otherwise. Valid in cb (and
 * until the request is reused). */
UVCTX_EXTERN const char* uvctx_pg_connect_error(const uvctx_pg_connect_t* req);

/* ---- queries ------------------------------------------------------------
 */

typedef struct uvctx_pg_query_s uvctx_pg_query_t;

/* status 0: `res` is the query's result (PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK). Else res is the server's error result, or NULL when
 * there is none (context, connection lost). `res` belongs to the library:
 * it is PQclear()ed when cb returns. */
typedef void (*uvctx_pg_query_cb)(uvctx_pg_query_t* req, int status,
                                  PGresult* res);

/* A query request: `data` is yours, the rest is private. */
struct uvctx_pg_query_s {
  void* data;
  /* private */
  uvctx_pg_conn_t* conn_;
  uvctx_t* ctx_;
  uvctx_pg_query_cb cb_;
  const char* sql_;
  int nparams_;
  const char* const* params_;
  uvctx_watch_t watch_;
  const char* sqlstate_;
  const char* error_;
  int status_;
  uvctx_pg_query_t* next_;
};

/* Runs one SQL statement with `nparams` text parameters ($1, $2, ...;
 * a NULL element is SQL NULL; types inferred by the server) and text
 * results, through PQsendQueryParams() and a non-blocking flush, reading
 * with PQconsumeInput()/PQisBusy()/PQgetResult() until NULL. `sql` and
 * `params` must stay valid until cb.
 *
 * cb(req, status, res) runs once, from the loop, never inside this call:
 *   0               the query succeeded; res is its result;
 *   UV_EIO          the server reported an error: res is the error
 *                   result; see uvctx_pg_query_sqlstate() and _error();
 *   UV_ECONNRESET   the connection broke (socket error, SQLSTATE class 08,
 *                   the server terminating the session): it is now
 *                   unusable (uvctx_pg_conn_broken() is 1);
 *   ctx's error     ctx ended first: the query is cancelled on the
 *                   server and cb runs at once with res NULL. The
 *                   connection stays busy until the server confirms and
 *                   the cancelled query's results are drained (a query
 *                   started meanwhile waits for that), or is closed once
 *                   the options' cancel grace has passed;
 *   UV_ECANCELED    the connection was closed with the query pending.
 * A done ctx sends nothing. The request holds a reference to ctx until cb.
 *
 * One query at a time per connection: a query issued while another runs
 * is UV_EBUSY, except the one query allowed to wait for a cancelled
 * query's drain. Returns 0, UV_EINVAL (NULL argument, negative nparams,
 * ctx on another loop), UV_EBUSY, or UV_ECONNRESET for a broken or closing
 * connection; then cb never runs. */
UVCTX_EXTERN int uvctx_pg_query(uvctx_pg_query_t* req, uvctx_pg_conn_t* conn,
                                uvctx_t* ctx, const char* sql, int nparams,
                                const char* const* params,
                                uvctx_pg_query_cb cb);

/* The SQLSTATE of a failed query ("57014", ...; "" without one) and its
 * message (the server's, or libpq's when the connection failed; "" on
 * success). Valid during cb. */
UVCTX_EXTERN const char* uvctx_pg_query_sqlstate(const uvctx_pg_query_t* req);
UVCTX_EXTERN const char* uvctx_pg_query_error(const uvctx_pg_query_t* req);

/* ---- connections --------------------------------------------------------
 */

/* 1 if the connection can no longer be used (socket error, class 08, the
 * server ended the session, a cancel the server did not confirm), else 0. */
UVCTX_EXTERN int uvctx_pg_conn_broken(const uvctx_pg_conn_t* conn);

/* 1 while a query runs or a cancelled one is being drained, else 0. */
UVCTX_EXTERN int uvctx_pg_conn_busy(const uvctx_pg_conn_t* conn);

/* The libpq connection, for reading its state (PQbackendPID(),
 * PQparameterStatus(), ...). Issuing commands on it directly is
 * undefined. */
UVCTX_EXTERN PGconn* uvctx_pg_conn_pgconn(const uvctx_pg_conn_t* conn);

typedef void (*uvctx_pg_close_cb)(uvctx_pg_conn_t* conn, void* arg);

/* Closes the connection: a query still running gets UV_ECANCELED, a
 * cancel still on the thread pool is waited for, the poll handle is
 * closed, then PQfinish(), then cb(conn, arg) (cb may be NULL) after which
 * `conn` is gone. From the loop, never inside this call. Loop thread
 * only. */
UVCTX_EXTERN void uvctx_pg_conn_close(uvctx_pg_conn_t* conn,
                                      uvctx_pg_close_cb cb, void* arg);

/* ---- a pool of connections ----------------------------------------------
 */

/* A pool of PostgreSQL connections: the generic pool with a kind that
 * connects with `conninfo` under the pool's context, checks idle
 * connections (not broken) and discards broken ones on release.
 * Caller-allocated: `data` is yours; the memory must stay valid until the
 * close callback. */
typedef struct uvctx_pg_pool_s {
  void* data;
  /* private */
  uvctx_pool_t pool_;
  char* conninfo_;
  uvctx_pg_options_t opts_;
  void (*close_cb_)(struct uvctx_pg_pool_s* p);
} uvctx_pg_pool_t;

/* Initializes the pool on the loop of `l` (opens nothing yet). `popts` and
 * `opts` may be NULL; conninfo is copied. Returns 0, UV_EINVAL, UV_ENOMEM.
 * Loop thread only. */
UVCTX_EXTERN int uvctx_pg_pool_init(uvctx_pg_pool_t* p, uvctx_loop_t* l,
                                    const char* conninfo,
                                    const uvctx_pool_options_t* popts,
                                    const uvctx_pg_options_t* opts);

/* The generic pool inside: for uvctx_pool_acquire() (then
 * uvctx_pg_pool_conn() on the connection it hands over, and
 * uvctx_pg_pool_release() to give it back) and uvctx_pool_stats(). */
UVCTX_EXTERN uvctx_pool_t* uvctx_pg_pool_base(uvctx_pg_pool_t* p);

/* The PostgreSQL connection of a connection handed over by the pool. */
UVCTX_EXTERN uvctx_pg_conn_t* uvctx_pg_pool_conn(uvctx_pool_conn_t* c);

/* Gives a connection back: a broken one is discarded (its slot goes to a
 * new open), one still draining a cancelled query goes back once the
 * drain ends (or is discarded if the grace passes). Loop thread only. */
UVCTX_EXTERN void uvctx_pg_pool_release(uvctx_pg_pool_t* p,
                                        uvctx_pg_conn_t* conn);

typedef struct uvctx_pg_pool_query_s uvctx_pg_pool_query_t;
typedef void (*uvctx_pg_pool_query_cb)(uvctx_pg_pool_query_t* req, int status,
                                       PGresult* res);

/* One query through the pool: acquire under ctx, run, release. */
struct uvctx_pg_pool_query_s {
  void* data;
  /* private */
  uvctx_pg_pool_t* pool_;
  uvctx_t* ctx_;
  uvctx_pg_pool_query_cb cb_;
  const char* sql_;
  int nparams_;
  const char* const* params_;
  uvctx_pool_acquire_t acquire_;
  uvctx_pg_query_t query_;
  const char* sqlstate_;
  const char* error_;
};

/* uvctx_pg_query() on a connection acquired from the pool under ctx, given
 * back when the query ends (discarded if it broke). cb(req, status, res)
 * as uvctx_pg_query()'s, plus the acquire's errors (ctx's error while
 * waiting, a connect's error, UV_ECANCELED when the pool closes). Errors
 * of uvctx_pg_query_sqlstate()/_error() are read with
 * uvctx_pg_pool_query_sqlstate()/_error() here. Returns 0, UV_EINVAL,
 * UV_ECANCELED (pool closing); then cb never runs. */
UVCTX_EXTERN int uvctx_pg_pool_query(uvctx_pg_pool_query_t* req,
                                     uvctx_pg_pool_t* p, uvctx_t* ctx,
                                     const char* sql, int nparams,
                                     const char* const* params,
                                     uvctx_pg_pool_query_cb cb);
UVCTX_EXTERN const char*
uvctx_pg_pool_query_sqlstate(const uvctx_pg_pool_query_t* req);
UVCTX_EXTERN const char*
uvctx_pg_pool_query_error(const uvctx_pg_pool_query_t* req);

/* Closes the pool as uvctx_pool_close() does; cb(p) when the last
 * connection is closed. Returns 0, UV_EINVAL, UV_EALREADY. */
UVCTX_EXTERN int uvctx_pg_pool_close(uvctx_pg_pool_t* p,
                                     void (*cb)(uvctx_pg_pool_t* p));

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_PG_H */
