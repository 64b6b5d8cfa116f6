/* relay.h: the pieces of uvctx-relay and what they share. The relay is
 * built only on the public API (<uvctx.h>, <uvctx/copy.h>, <uvctx/tls.h>,
 * <uvctx/trace.h>).
 *
 *   config.c   command line, durations, addresses, TLS configurations
 *   log.c      one line per event on stderr, logfmt or JSON
 *   server.c   the control loop (signals, drain), workers, listeners,
 *              per-worker traces
 *   conn.c     one connection: handshake, upstream connect, pipe, close
 *   metrics.c  the /metrics HTTP endpoint on the control loop
 *   debug.c    /debug/contexts, /debug/trace, /debug/heatmap on the same
 *              listener, and the jobs they post to the workers
 *   page.c     the index page (/) of that listener
 *   main.c     main()
 *
 * Threads: the main thread runs the control loop; each worker runs its own
 * loop on its own thread, with its own SO_REUSEPORT listening socket, and
 * owns the connections it accepted from start to end. Workers and the
 * control loop talk only through contexts (the server root and the
 * "accepting" context are cancelled on the main thread; their per-worker
 * branches fire on the workers) and one uv_async_t (a worker is done).
 * The metrics endpoint, on the control loop, only reads: each worker's
 * uvctx_loop_stats() (thread-safe) and its relaxed atomic counters. */
#ifndef UVCTX_RELAY_H
#define UVCTX_RELAY_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uvctx.h>
#include <uvctx/copy.h>
#include <uvctx/metrics.h>
#include <uvctx/tls.h>
#include <uvctx/trace.h>

#define RELAY_NAME "uvctx-relay"

/* Exit statuses. */
enum { RELAY_EXIT_OK = 0, RELAY_EXIT_FAILURE = 1, RELAY_EXIT_CONFIG = 2 };

enum { RELAY_LOG_LOGFMT = 0, RELAY_LOG_JSON = 1 };

/* The size of the pipes' buffers (the copy's default). */
#define RELAY_BUFFER UVCTX_COPY_DEFAULT_BUFFER_SIZE

/* --log-level: which per-connection lines are written. Server events
 * (start, draining, exit, accept-paused, ...) are always written. */
enum {
  RELAY_LEVEL_OPEN = 0, /* open and close lines */
  RELAY_LEVEL_CLOSE,    /* close lines (the default) */
  RELAY_LEVEL_ERROR,    /* close lines of connections that did not end as
                           configured (not eof, idle-timeout, lifetime,
                           drained or half-close-timeout) */
  RELAY_LEVEL_SUMMARY   /* none: a summary line per worker each
                           --log-interval instead */
};
/* The kinds of per-connection line. */
enum { RELAY_LOG_OPEN, RELAY_LOG_CLOSE };

typedef struct relay_addr_s {
  char text[300]; /* as given on the command line */
  char host[256]; /* host part, without brackets */
  struct sockaddr_storage ss;
  socklen_t len;
} relay_addr_t;

typedef struct relay_config_s {
  relay_addr_t listen;
  relay_addr_t connect;
  const char* tls_cert;
  const char* tls_key;
  int connect_tls;
  int verify; /* upstream certificate verification (on by default) */
  const char* ca;
  const char* sni;
  const char* alpn;
  uint64_t connect_timeout_ms;
  uint64_t handshake_timeout_ms;
  uint64_t idle_timeout_ms; /* 0: none */
  uint64_t max_lifetime_ms; /* 0: none */
  /* Once one side has half-closed: how long the other may stay idle
   * (HAProxy's timeout client-fin / server-fin); 0: --idle-timeout. */
  uint64_t client_fin_timeout_ms; /* the upstream has closed its side */
  uint64_t server_fin_timeout_ms; /* the client has closed its side */
  uint64_t drain_timeout_ms;      /* 0: cancel at once */
  uint64_t send_timeout_ms;       /* 0: none */
  uint64_t max_buffer_memory;     /* bytes, relay-wide; 0: no budget */
  unsigned max_connections;
  unsigned workers;
  int log_format;
  int log_level;            /* RELAY_LEVEL_* */
  uint64_t log_interval_ms; /* summary lines, with RELAY_LEVEL_SUMMARY */
  uint64_t log_sample;      /* --log-sample: one connection in N */
  int has_metrics;
  relay_addr_t metrics; /* --metrics HOST:PORT */
  const char* trace;    /* --trace FILE */
  /* Built from the above by relay_config_load_tls(); shared read-only by
   * every worker's sessions. */
  uvctx_tls_config_t* server_tls;
  uvctx_tls_config_t* client_tls;
  const char* upstream_name; /* SNI / verified name for --connect-tls */
} relay_config_t;

/* Parses argv into *cfg. Returns 0, 1 when --help or --version was printed
 * (exit 0), or -1 after printing one line on stderr (exit 2). */
int relay_config_parse(relay_config_t* cfg, int argc, char** argv);

/* Loads certificates, keys and CAs. Returns 0 or -1 after printing one
 * line on stderr. */
int relay_config_load_tls(relay_config_t* cfg);
void relay_config_free(relay_config_t* cfg);

/* "500ms", "10s", "2m" -> milliseconds. 0 or -1 (invalid). */
int relay_parse_duration(const char* s, uint64_t* out_ms);
/* "HOST:PORT", "[V6]:PORT"; names are resolved once, here. */
int relay_parse_addr(const char* s, int passive, relay_addr_t* out, char* err,
                     size_t errlen);
/* "127.0.0.1:8080" or "[::1]:8080". */
void relay_format_addr(const struct sockaddr* sa, char* out, size_t len);

/* ---- logging ------------------------------------------------------------- */

/* `sample`: --log-sample, 1 to write every line the level selects. */
void relay_log_init(int format, int level, uint64_t sample);
uint64_t relay_log_sample(void);
/* Whether a per-connection line of `kind` (RELAY_LOG_OPEN or _CLOSE) for
 * connection number `conn` that ended with `reason` (NULL for an open
 * line) is wanted at the configured level and sampling. Any thread. */
int relay_log_wants(int kind, const char* reason, uint64_t conn);

/* A line under construction: begin, add fields, end (one write(2), so
 * lines from several threads never interleave). */
typedef struct relay_log_line_s {
  char buf[1536];
  size_t len;
} relay_log_line_t;
void relay_log_begin(relay_log_line_t* ln, const char* event);
void relay_log_str(relay_log_line_t* ln, const char* key, const char* val);
void relay_log_u64(relay_log_line_t* ln, const char* key, uint64_t val);
/* The loggable values of `c` (uvctx_log_fields()), in the line's format.
 * Left out whole if they do not fit: a line is cut, never split. */
void relay_log_ctx(relay_log_line_t* ln, const uvctx_t* c);
void relay_log_end(relay_log_line_t* ln);

/* A server-level event, then key, value string pairs ending with NULL:
 * relay_log_event("draining", "signal", "SIGTERM", NULL). */
void relay_log_event(const char* event, ...);

/* ---- counters ------------------------------------------------------------ */

/* Why a connection ended, as logged in `reason=` and counted in
 * uvctx_relay_connections_closed_total{reason=...}. */
enum {
  RELAY_R_EOF,
  RELAY_R_IDLE_TIMEOUT,
  RELAY_R_HANDSHAKE_TIMEOUT,
  RELAY_R_LIFETIME,
  RELAY_R_DRAINED,
  RELAY_R_UPSTREAM_REFUSED,
  RELAY_R_RESET,
  RELAY_R_TLS_ERROR,
  RELAY_R_CLIENT_GONE,
  RELAY_R_CONNECT_TIMEOUT,
  RELAY_R_UPSTREAM_ERROR,
  RELAY_R_ERROR,
  RELAY_R_CANCELLED,
  RELAY_R_SEND_TIMEOUT,
  RELAY_R_HALF_CLOSE_TIMEOUT,
  RELAY_R_TRUNCATED,
  RELAY_REASONS
};
extern const char* const relay_reasons[RELAY_REASONS];

/* One worker's counters: written by that worker only, read by the metrics
 * endpoint on the control loop, hence relaxed atomics (no lock, no
 * ordering needed between them: a scrape is a snapshot of counters that
 * only grow). */
typedef struct relay_counters_s {
  atomic_uint_fast64_t accepted; /* connections taken on */
  atomic_uint_fast64_t refused;  /* closed at once (max-connections, OOM) */
  /* Client to upstream and back: every connection's bytes, added as its
   * pipe runs (sampled each RELAY_SAMPLE_MS with --metrics) and the rest
   * when it ends. */
  atomic_uint_fast64_t bytes_up;
  atomic_uint_fast64_t bytes_down;
  atomic_uint_fast64_t closed[RELAY_REASONS];
} relay_counters_t;

/* ---- server -------------------------------------------------------------- */

typedef struct relay_server_s relay_server_t;
typedef struct relay_worker_s relay_worker_t;
typedef struct relay_debug_s relay_debug_t;
typedef struct relay_debug_job_s relay_debug_job_t;

/* A worker's side of the debug endpoints (debug.c): jobs the control loop
 * posts, run on the worker's thread. */
typedef struct relay_debug_worker_s {
  uv_async_t async;         /* unreferenced: wakes the worker for `queue` */
  int open;                 /* [srv->stats_lock] the worker takes jobs */
  relay_debug_job_t* queue; /* [srv->stats_lock] */
  /* A /debug/trace recording (worker thread only, until `open` is 0). */
  FILE* sink;
  struct relay_debug_buf_s* buf;
  int recording;
  /* A recording the worker stopped itself at exit, for the control loop
   * to take ([srv->stats_lock]). */
  struct relay_debug_buf_s* left;
  int left_rc;
  uvctx_trace_counts_t left_counts;
  /* The loop's busy time per iteration (wall time between two check
   * callbacks less the time spent waiting for events): recorded here by
   * the worker, published to `busy_pub` every RELAY_PROBE_PUBLISH_MS. */
  uv_check_t probe;
  int probing;
  uint64_t probe_last_ns;
  uint64_t probe_last_idle;
  uint64_t probe_published_ns;
  uvctx_histogram_t busy;
  uvctx_histogram_t busy_pub; /* [srv->stats_lock] */
} relay_debug_worker_t;
#define RELAY_PROBE_PUBLISH_MS 100

struct relay_worker_s {
  relay_server_t* srv;
  unsigned index;
  uv_thread_t thread;
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* root;      /* branch of the server root homed here */
  uvctx_t* accepting; /* branch of srv->accepting: done when draining */
  /* The worker's share of --max-buffer-memory: every pipe's buffers. */
  uvctx_copy_pool_t* pool;
  uvctx_watch_t stop_watch;
  int listen_fd;
  uv_poll_t poll;
  uv_timer_t pause_timer;
  int listening;   /* poll and timer initialized and not closed */
  int watching;    /* stop_watch started */
  int paused;      /* accepting paused (out of descriptors) */
  int started;     /* the thread was created */
  int tracing;     /* uvctx_loop_trace_open() succeeded on this loop */
  unsigned nconns; /* connections owned by this worker, open or closing */
  /* With --metrics: connections whose pipe runs, and the timer that adds
   * their progress to the byte counters (see relay_conn_sample()). */
  struct relay_conn_s* piping;
  uv_timer_t sample_timer;
  int sampling; /* sample_timer initialized and not closed */
  relay_counters_t counters;
  /* The loop's stats as it closed: the metrics endpoint reads these once
   * `closed` is set, since `l` is freed then. Under srv->stats_lock. */
  uvctx_loop_stats_t final_stats;
  int closed;
  int exit_status;
  relay_debug_worker_t dbg; /* with --metrics */
};

typedef struct relay_metrics_s relay_metrics_t;

struct relay_server_s {
  relay_config_t* cfg;
  uv_loop_t loop; /* the control loop, on the main thread */
  uvctx_loop_t* l;
  uvctx_t* root;      /* every connection descends from it */
  uvctx_t* accepting; /* cancelled on the first signal */
  uvctx_t* drain;     /* the drain deadline */
  uvctx_watch_t drain_watch;
  int drain_watching;
  /* SIGTERM/SIGINT (server.c): taken from a signalfd and raised again on
   * the control loop's thread; `signalled` (uvctx_with_signals) starts
   * the drain, `sigcount` counts every arrival (a second one cuts the
   * drain short) and keeps a handler installed until the end. */
  uv_poll_t sigpoll;
  int sigfd;
  uvctx_t* signalled;
  uvctx_watch_t signal_watch;
  int signal_watching;
  uv_signal_t sigcount[2];
  unsigned arrivals;
  int first_signal;
  uv_async_t worker_done;
  unsigned signals;
  relay_worker_t* workers;
  unsigned nworkers;
  atomic_uint workers_done;
  atomic_uint active; /* open connections over all workers */
  atomic_uint_fast64_t next_id;
  uint64_t drain_start_ns;
  uv_mutex_t stats_lock;    /* a worker closing its loop vs. a scrape */
  relay_metrics_t* metrics; /* NULL without --metrics */
  relay_debug_t* debug;     /* NULL without --metrics */
  uint64_t start_ns;        /* when the relay started serving */
  /* The bound --listen address, for the page; as long as the text given. */
  char listen_addr[sizeof(((relay_addr_t*)0)->text)];
  double drain_wall_s;             /* Unix time the drain started, 0 before */
  struct relay_summary_s* summary; /* with --log-level summary */
};

/* Runs the relay until it has drained. Returns the exit status. */
int relay_server_run(relay_config_t* cfg);

/* ---- connections --------------------------------------------------------- */

/* Takes over `fd`, a connected socket accepted by worker `w`. */
void relay_conn_start(relay_worker_t* w, int fd, const struct sockaddr* peer);
/* Logs `refused` for a connection from `peer` that `w` turned away. */
void relay_log_refused(const relay_worker_t* w, const struct sockaddr* peer,
                       const char* reason);

/* Called by conn.c when a connection's last handle has closed. */
void relay_worker_conn_done(relay_worker_t* w);

/* Worker thread: adds what each running pipe of `w` moved since the last
 * call to the worker's byte counters, so that a scrape sees long
 * transfers progress instead of a jump when they end. */
#define RELAY_SAMPLE_MS 1000
void relay_conn_sample(relay_worker_t* w);

/* ---- metrics ------------------------------------------------------------- */

/* Binds --metrics on the control loop and starts accepting. Returns 0, or
 * -1 after one line on stderr (the caller exits 2 and runs the control
 * loop to close what was opened). Control loop thread, before serving. */
int relay_metrics_listen(relay_server_t* srv);
/* The workers' bound --listen address (--listen's text if unknown).
 * Before the workers run. */
void relay_listen_addr(relay_server_t* srv, char* out, size_t len);
/* The bound address, "127.0.0.1:9464". */
void relay_metrics_addr(relay_server_t* srv, char* out, size_t len);
/* Draining has started: noted for the drain gauges. The listener stays
 * open (scrapes during a drain feed its alert) until relay_metrics_close(). */
void relay_metrics_stop_accepting(relay_server_t* srv);
/* Exit: close the listener and every connection; freed once the control
 * loop has run their close callbacks. */
void relay_metrics_close(relay_server_t* srv);

/* ---- summaries (summary.c) --------------------------------------------- */

/* With --log-level summary: a timer on the control loop that logs, every
 * --log-interval, one `summary` line per worker with what changed (from
 * the workers' counters); relay_summary_stop() logs the last ones and
 * closes it. Control loop. */
int relay_summary_start(relay_server_t* srv);
void relay_summary_stop(relay_server_t* srv);

/* ---- debug endpoints -------------------------------------------------- */

/* An answer of the metrics listener: status, content type and a body the
 * receiver frees with free(). */
typedef struct relay_http_reply_s {
  int code;
  const char* ctype;
  char* body;
  size_t len;
} relay_http_reply_t;

/* Control loop: the state of the debug endpoints, made before the
 * workers start and closed with the metrics listener (after the last
 * worker is done, or on a failed setup). 0 or UV_ENOMEM. */
int relay_debug_open(relay_server_t* srv);
void relay_debug_close(relay_server_t* srv);

/* Main thread, before worker `w` runs: its job queue. 0 or a libuv error. */
int relay_debug_worker_init(relay_worker_t* w);
/* Worker thread, once its loop has stopped and its contexts are released,
 * before uvctx_loop_close(): takes no more jobs, runs the queued ones,
 * stops a recording in progress and closes the queue's handle. */
void relay_debug_worker_exit(relay_worker_t* w);

/* A request for `path` ("/", "/debug/...") with `query` (after '?', or
 * ""). Returns 0 with *reply filled (answer now), 1 when the answer comes
 * later through done(conn, reply) on the control loop (unless
 * relay_debug_detach(conn) was called first), or -1 when the path is not
 * one of the debug endpoints. `loopback` says whether the request came in
 * on a loopback address. Control loop. */
typedef void (*relay_debug_done_cb)(void* conn, relay_http_reply_t* reply);
int relay_debug_request(relay_server_t* srv, const char* path,
                        const char* query, int loopback, void* conn,
                        relay_debug_done_cb done, relay_http_reply_t* reply);
/* The drain has started: a recording in progress ends now and is
 * answered with what it holds. */
void relay_debug_draining(relay_server_t* srv);
/* The connection `conn` is closing: its pending answer is dropped. */
void relay_debug_detach(relay_server_t* srv, void* conn);

/* page.c: the index page, HTML with the live counters. 0 or UV_ENOMEM. */
int relay_page_index(relay_server_t* srv, relay_http_reply_t* reply);

/* ---- shared by metrics.c, debug.c, page.c ------------------------------ */

/* The relay's counters summed over the workers (each term read with a
 * relaxed load: the sum is not atomic, but every term only grows). */
typedef struct relay_totals_s {
  uint64_t accepted;
  uint64_t refused;
  uint64_t bytes_up;
  uint64_t bytes_down;
  uint64_t closed[RELAY_REASONS];
} relay_totals_t;
void relay_totals(relay_server_t* srv, relay_totals_t* out);
/* The soft limit on descriptors (0 if none). */
uint64_t relay_max_fds(void);

/* Each worker's loop stats, in worker order, then the control loop's
 * (n = nworkers + 1), read as a scrape does. */
void relay_loop_stats(relay_server_t* srv, uvctx_loop_stats_t* out);

/* A growing text; `oom` sticks once an allocation failed. */
typedef struct relay_text_s {
  char* p;
  size_t len;
  size_t cap;
  int oom;
} relay_text_t;
void relay_text_add(relay_text_t* t, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
void relay_text_raw(relay_text_t* t, const char* s, size_t n);
/* `s` as the inside of a JSON string, or as HTML text (escaped). */
void relay_text_json(relay_text_t* t, const char* s);
void relay_text_html(relay_text_t* t, const char* s);

#endif /* UVCTX_RELAY_H */
