/* uvctx connection pool: Go's database/sql pool for connections of any
 * kind, homed on one loop. A kind is a small vtable (open one connection
 * under a context, close one, optionally check one before reuse); the pool
 * hands connections out to acquirers under their contexts, most recently
 * used first, opens new ones while under max_open, and queues the rest in
 * FIFO order.
 *
 * Include <uvctx/pool.h>; it includes <uvctx.h>.
 *
 * Threading: every function here belongs to the pool's loop thread (the
 * thread running uv_run() on it). The contexts given to
 * uvctx_pool_acquire() may be cancelled from any thread, as contexts always
 * may; the pool sees it on its loop.
 *
 * Memory: the pool allocates nothing per connection or per request. The
 * pool and acquire requests are caller-allocated, libuv style; each
 * connection embeds a uvctx_pool_conn_t that its kind allocates and frees.
 * The pool's one allocation is its own context (a child of the loop's
 * background), so uvctx_loop_close() returns UV_EBUSY while a pool lives.
 *
 * See docs/pool.md for the guide. */
#ifndef UVCTX_POOL_H
#define UVCTX_POOL_H

#include <uvctx.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uvctx_pool_s uvctx_pool_t;
typedef struct uvctx_pool_conn_s uvctx_pool_conn_t;
typedef struct uvctx_pool_acquire_s uvctx_pool_acquire_t;

/* The head every pooled connection embeds (anywhere in the kind's own
 * struct; find the struct again with a container_of). All private: the
 * pool initializes it in uvctx_pool_opened(). */
struct uvctx_pool_conn_s {
  /* private */
  uvctx_pool_t* pool_;
  uvctx_pool_conn_t* prev_;
  uvctx_pool_conn_t* next_;
  uint64_t created_ns_;    /* uv_hrtime() when it was opened */
  uint64_t idle_since_ns_; /* when it was last released */
  int state_;
};

/* A kind of connection. The pool calls these on its loop thread.
 *
 * open: starts opening one connection under `ctx` (the pool's own context:
 * it is cancelled when the pool closes, so an abandoned open must then
 * stop). Returns 0 and later calls uvctx_pool_opened() exactly once for
 * this open, from the loop and never inside open() itself; or returns a
 * negative error and never calls it.
 *
 * close: closes `conn` and frees what the kind allocated for it; the kind
 * then calls uvctx_pool_closed() once, inside close() or later from the
 * loop. The pool counts the connection against max_open until then.
 *
 * check (optional, NULL to skip): called before an idle connection is
 * handed out again; 0 if it is usable, anything else to have the pool close
 * it and try the next one (database/sql's driver.Validator). */
typedef struct uvctx_pool_kind_s {
  int (*open)(uvctx_pool_t* pool, uvctx_t* ctx);
  void (*close)(uvctx_pool_t* pool, uvctx_pool_conn_t* conn);
  int (*check)(uvctx_pool_t* pool, uvctx_pool_conn_t* conn);
} uvctx_pool_kind_t;

/* The bounds of a pool, as sql.DB's setters. Zero-initialize and set what
 * you need: zeros are the defaults. */
typedef struct uvctx_pool_options_s {
  unsigned max_open; /* connections open or opening at once; 0: no limit */
  /* Idle connections kept; 0: 2 (database/sql's default), negative: none.
   * Never more than max_open when max_open is set. */
  int max_idle;
  uint64_t max_lifetime_ms;  /* since the open; 0: forever */
  uint64_t max_idle_time_ms; /* since the last release; 0: forever */
} uvctx_pool_options_t;

/* ---- stats --------------------------------------------------------------
 */

/* sql.DBStats, plus what database/sql does not count. Gauges are current
 * values, the rest count since uvctx_pool_init(). */
typedef struct uvctx_pool_stats_s {
  uint64_t max_open; /* the bound, 0 for none */
  /* gauges */
  uint64_t open;    /* in use + idle (sql.DBStats.OpenConnections) */
  uint64_t in_use;  /* handed out */
  uint64_t idle;    /* waiting in the pool */
  uint64_t opening; /* opens in flight */
  uint64_t closing; /* closes the kind has not confirmed */
  uint64_t waiting; /* requests queued for a connection */
  /* totals */
  /* Requests that had to wait, for an open or a release (database/sql
   * counts only the latter). */
  uint64_t wait_count;
  uint64_t wait_duration_ns;     /* total time they waited */
  uint64_t max_idle_closed;      /* closed because max_idle were idle */
  uint64_t max_idle_time_closed; /* closed after max_idle_time idle */
  uint64_t max_lifetime_closed;  /* closed after max_lifetime */
  uint64_t opened;               /* opens that succeeded */
  uint64_t open_failures;        /* opens that failed */
  uint64_t broken_closed;        /* released as broken, or refused by check */
  uint64_t closed;               /* every close, for any reason */
  uint64_t acquired;             /* connections handed out */
  /* Time each waiting request waited, until it got a connection or gave
   * up. */
  uvctx_histogram_t wait;
} uvctx_pool_stats_t;

typedef void (*uvctx_pool_close_cb)(uvctx_pool_t* pool);

/* A pool. Caller-allocated: `data` is yours, the rest is private. The
 * memory must stay valid until the close callback has run. */
struct uvctx_pool_s {
  void* data;
  /* private */
  uvctx_loop_t* l_;
  const uvctx_pool_kind_t* kind_;
  void* kind_arg_;
  uvctx_t* ctx_;
  uvctx_pool_options_t opts_;
  uv_timer_t timer_;             /* the earliest idle expiry */
  uv_idle_t idle_;               /* runs the callbacks that are due */
  uvctx_pool_conn_t* idle_head_; /* most recently released first */
  uvctx_pool_conn_t* idle_tail_;
  uvctx_pool_acquire_t* wait_head_; /* oldest waiter first */
  uvctx_pool_acquire_t* wait_tail_;
  uvctx_pool_acquire_t* due_head_; /* callbacks to run, in order */
  uvctx_pool_acquire_t* due_tail_;
  uint64_t timer_due_ns_;
  unsigned n_idle_, n_in_use_, n_opening_, n_closing_, n_waiting_;
  unsigned handles_open_;
  int closing_;
  uvctx_pool_close_cb close_cb_;
  int flushing_;
  uvctx_pool_stats_t stats_; /* the totals; gauges are computed */
};

/* Initializes `pool` on the loop of `l` with `kind` (which must outlive
 * the pool) and `kind_arg` (for the kind; see uvctx_pool_kind_arg()).
 * `opts` may be NULL for the defaults; it is copied. Opens nothing yet.
 * Returns 0, UV_EINVAL for a NULL pool, loop or kind, or a kind without
 * open or close, UV_ENOMEM, or a libuv error; on error nothing is left to
 * clean up. Loop thread only. */
UVCTX_EXTERN int uvctx_pool_init(uvctx_pool_t* pool, uvctx_loop_t* l,
                                 const uvctx_pool_kind_t* kind, void* kind_arg,
                                 const uvctx_pool_options_t* opts);

/* The kind_arg given to uvctx_pool_init(). */
UVCTX_EXTERN void* uvctx_pool_kind_arg(const uvctx_pool_t* pool);

/* Called by a kind once per open() that returned 0: status 0 and the new
 * connection, or a negative error and NULL. The pool takes the connection
 * (it goes to the oldest waiter, else to the idle list, else it is closed)
 * and gives an error to the oldest waiter (database/sql does the same).
 * From the loop, never inside open(). */
UVCTX_EXTERN void uvctx_pool_opened(uvctx_pool_t* pool, uvctx_pool_conn_t* conn,
                                    int status);

/* Called by a kind once per close() when the connection is gone; frees its
 * slot (a waiter may then get a new open). */
UVCTX_EXTERN void uvctx_pool_closed(uvctx_pool_t* pool);

/* ---- acquiring ----------------------------------------------------------
 */

typedef void (*uvctx_pool_acquire_cb)(uvctx_pool_acquire_t* req, int status,
                                      uvctx_pool_conn_t* conn);

/* An acquire request. Caller-allocated: `data` is yours, the rest is
 * private. It must stay valid until its callback has run; it may be reused
 * (or freed) from the callback on. */
struct uvctx_pool_acquire_s {
  void* data;
  /* private */
  uvctx_pool_t* pool_;
  uvctx_t* ctx_;
  uvctx_pool_acquire_cb cb_;
  uvctx_pool_conn_t* conn_;
  uvctx_pool_acquire_t* prev_;
  uvctx_pool_acquire_t* next_;
  uint64_t queued_ns_;
  int status_;
  int state_;
  uvctx_watch_t watch_;
};

/* sql.DB.Conn(ctx): gets a connection for as long as `ctx` allows. An idle
 * connection is taken if there is one (the most recently released first,
 * skipping and closing expired ones and those the kind's check refuses);
 * else a new one is opened while the pool is under max_open; else the
 * request waits, in FIFO order: a connection released while requests wait
 * goes to the oldest one.
 *
 * cb(req, 0, conn) hands the connection over; give it back with
 * uvctx_pool_release(). cb(req, err, NULL) reports ctx's error when ctx is
 * done first (a waiter whose context ends leaves the queue at once and
 * never receives a connection, even one that was on its way), an open's
 * error, or UV_ECANCELED when the pool closes. cb runs exactly once, from
 * the loop, never inside this call (an idle connection is handed over on
 * the next loop iteration). The request holds a reference to ctx until cb
 * has run.
 *
 * Returns 0, or UV_EINVAL (NULL argument, or ctx homed on another loop),
 * UV_ECANCELED once uvctx_pool_close() was called; then cb never runs.
 * Loop thread only. */
UVCTX_EXTERN int uvctx_pool_acquire(uvctx_pool_acquire_t* req,
                                    uvctx_pool_t* pool, uvctx_t* ctx,
                                    uvctx_pool_acquire_cb cb);

/* Gives back a connection acquired from `pool`. `broken` non-zero closes
 * it (the kind saw an error that makes it unusable) and opens a new one if
 * a request is waiting. Otherwise it goes to the oldest waiter, or becomes
 * idle; it is closed instead if it outlived max_lifetime, if max_idle are
 * already idle, or if the pool is closing. Never runs an acquire callback
 * inside the call. Loop thread only. */
UVCTX_EXTERN void uvctx_pool_release(uvctx_pool_t* pool,
                                     uvctx_pool_conn_t* conn, int broken);

/* ---- closing ------------------------------------------------------------
 */

/* sql.DB.Close: refuses new acquires (UV_ECANCELED), fails waiting
 * requests with UV_ECANCELED, cancels opens in flight (the pool's context),
 * closes idle connections now and the rest as they are released. cb(pool)
 * runs once, from the loop, after the last connection is closed and the
 * pool's handles and context are gone: the pool's memory may be freed in
 * it. Returns 0, UV_EINVAL for NULL, UV_EALREADY if already closing (cb
 * then never runs). Loop thread only. */
UVCTX_EXTERN int uvctx_pool_close(uvctx_pool_t* pool, uvctx_pool_close_cb cb);

/* Copies the pool's counters into *out. UV_EINVAL for NULL. Loop thread
 * only. */
UVCTX_EXTERN int uvctx_pool_stats(const uvctx_pool_t* pool,
                                  uvctx_pool_stats_t* out);

/* The stats of `n` pools in the Prometheus text format, each sample
 * labelled pool="labels[i]" (a NULL labels array or element: the index),
 * through the observability module's formatter
 * (uvctx_metrics_format_table() of <uvctx/metrics.h>). Families:
 *
 *   uvctx_pool_max_open, uvctx_pool_open, uvctx_pool_in_use,
 *   uvctx_pool_idle, uvctx_pool_opening, uvctx_pool_closing,
 *   uvctx_pool_waiting                          gauges
 *   uvctx_pool_wait_total, uvctx_pool_max_idle_closed_total,
 *   uvctx_pool_max_idle_time_closed_total,
 *   uvctx_pool_max_lifetime_closed_total, uvctx_pool_opened_total,
 *   uvctx_pool_open_failures_total, uvctx_pool_broken_closed_total,
 *   uvctx_pool_closed_total, uvctx_pool_acquired_total   counters
 *   uvctx_pool_wait_duration_seconds            histogram (its _sum is
 *                                               the total wait time)
 *   uvctx_pool_wait_duration_max_seconds        gauge
 *
 * On 0 *out holds a NUL-terminated text to free with uvctx_metrics_free()
 * and *len (may be NULL) its length. UV_EINVAL for a NULL out, a NULL stats
 * with n > 0 or a NULL element; UV_ENOMEM. Any thread (it reads only the
 * copies it is given). */
UVCTX_EXTERN int
uvctx_pool_metrics_format(const uvctx_pool_stats_t* const* stats,
                          const char* const* labels, size_t n, char** out,
                          size_t* len);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_POOL_H */
