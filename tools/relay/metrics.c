/* metrics.c owns the relay's --metrics endpoint: a small HTTP/1.1 server
 * that answers `GET /metrics` with the Prometheus text exposition (0.0.4)
 * of every loop's uvctx_loop_stats() and of the relay's own counters.
 *
 * It runs on the control loop, on the main thread, so a scrape never takes
 * a worker's time: it reads each worker's stats with uvctx_loop_stats()
 * (any thread) and its counters, which are relaxed atomics only that
 * worker writes. The one thing it must not race is a worker freeing its
 * loop binding at exit; srv->stats_lock covers that: the worker stores its
 * last stats and sets `closed` under the lock before uvctx_loop_close(),
 * and a scrape reads either the live binding or that copy under it.
 *
 * HTTP, as little as Prometheus and curl need: one request head of at most
 * METRICS_REQ_MAX bytes (431 beyond, then close), GET and HEAD (405 with
 * `Allow` otherwise), /metrics only (404 otherwise), keep-alive for
 * HTTP/1.1 unless the client says `Connection: close` or sends a body
 * (which is never read: the connection closes after the answer, with a
 * short lingering close so that the answer is not lost). Requests
 * on one connection are answered in order, one at a time (reading stops
 * while an answer is written). A connection with no complete request for
 * METRICS_IDLE_MS since it opened or since its last answer is closed,
 * whatever it is doing; at most METRICS_MAX_CONNS are open at once, and
 * the ones above are closed at once. The listener stays open during a
 * drain (Prometheus must see it) and everything is closed at exit.
 *
 * Paths other than /metrics (the index page and /debug/...) are debug.c's;
 * a debug answer that takes time (a listing, a recording) suspends the
 * connection (no reading, no idle timeout) until debug_done(). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include <arpa/inet.h>

#include "relay.h"

#define METRICS_REQ_MAX 8192
#define METRICS_IDLE_MS 5000
#define METRICS_LINGER_MS 1000
#define METRICS_MAX_CONNS 32
#define METRICS_BACKLOG 64

typedef struct mconn_s mconn_t;

struct relay_metrics_s {
  relay_server_t* srv;
  uv_tcp_t listener;
  int listening;   /* listener open and not closing */
  int listener_up; /* listener handle not yet closed (callback pending) */
  /* Connections above the limit, or that could not be allocated, are
   * accepted into this handle and closed: libuv stops polling a listener
   * whose connection was not accepted, so each must be. One at a time;
   * `reject_pending` remembers one that waits for the handle. */
  uv_tcp_t spare;
  int spare_busy;
  int reject_pending;
  mconn_t* conns; /* open connections, not closing */
  unsigned nconns;
  unsigned alive; /* allocated connections, closing ones included */
  int closed;     /* relay_metrics_close() was called */
};

struct mconn_s {
  relay_metrics_t* m;
  mconn_t* next;
  mconn_t** pprev;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  char* resp;
  int handles;    /* open handles: tcp and timer */
  int closing;    /* conn_close() was called */
  int reading;    /* uv_read_start() is in force */
  int writing;    /* an answer is being written: reading is stopped */
  int keep_alive; /* after this answer */
  int lingering;  /* answered for the last time: discarding until EOF */
  int debug;      /* a debug endpoint's answer is being prepared */
  int head_only;  /* of the request being answered */
  size_t used;    /* bytes of buf taken by the request being answered */
  size_t len;
  char buf[METRICS_REQ_MAX];
};

/* ---- the text ------------------------------------------------------------ */

/* Room for `need` more bytes; 0 (and oom) if there is none to be had. */
static int grow(relay_text_t* t, size_t need) {
  size_t cap = t->cap == 0 ? 4096 : t->cap * 2;
  char* p;

  while (cap - t->len < need)
    cap *= 2;
  p = realloc(t->p, cap);
  if (p == NULL) {
    t->oom = 1;
    return 0;
  }
  t->p = p;
  t->cap = cap;
  return 1;
}

void relay_text_add(relay_text_t* t, const char* fmt, ...) {
  va_list ap;
  int n;

  if (t->oom)
    return;
  for (;;) {
    size_t room = t->cap - t->len;
    va_start(ap, fmt);
    n = vsnprintf(t->p != NULL ? t->p + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->oom = 1;
      return;
    }
    if ((size_t)n < room) {
      t->len += (size_t)n;
      return;
    }
    if (!grow(t, (size_t)n + 1))
      return;
  }
}

void relay_text_raw(relay_text_t* t, const char* s, size_t n) {
  if (t->oom || (t->cap - t->len <= n && !grow(t, n + 1)))
    return;
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

/* Control characters as \u00XX; bytes above 0x7f pass (the texts escaped
 * here are paths and symbol names, taken as UTF-8). */
void relay_text_json(relay_text_t* t, const char* s) {
  for (; *s != '\0'; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      relay_text_add(t, "\\%c", ch);
    else if (ch < 0x20)
      relay_text_add(t, "\\u%04x", ch);
    else
      relay_text_raw(t, s, 1);
  }
}

void relay_text_html(relay_text_t* t, const char* s) {
  for (; *s != '\0'; s++) {
    switch (*s) {
      case '<':
        relay_text_raw(t, "&lt;", 4);
        break;
      case '>':
        relay_text_raw(t, "&gt;", 4);
        break;
      case '&':
        relay_text_raw(t, "&amp;", 5);
        break;
      case '"':
        relay_text_raw(t, "&quot;", 6);
        break;
      default:
        relay_text_raw(t, s, 1);
    }
  }
}

uint64_t relay_max_fds(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return 0;
  return (uint64_t)rl.rlim_cur;
}

static void family(relay_text_t* t, const char* name, const char* type,
                   const char* help) {
  relay_text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void relay_totals(relay_server_t* srv, relay_totals_t* out) {
  unsigned i, r;

  memset(out, 0, sizeof(*out));
  for (i = 0; i < srv->nworkers; i++) {
    relay_counters_t* n = &srv->workers[i].counters;
    out->accepted += atomic_load_explicit(&n->accepted, memory_order_relaxed);
    out->refused += atomic_load_explicit(&n->refused, memory_order_relaxed);
    out->bytes_up += atomic_load_explicit(&n->bytes_up, memory_order_relaxed);
    out->bytes_down +=
        atomic_load_explicit(&n->bytes_down, memory_order_relaxed);
    for (r = 0; r < RELAY_REASONS; r++)
      out->closed[r] +=
          atomic_load_explicit(&n->closed[r], memory_order_relaxed);
  }
}

/* One sample per worker of the counter at `offset` in relay_counters_t
 * (an array index `r` for the closed counters), labelled as the loop
 * stats are: loop="worker-N". */
static void per_worker(relay_server_t* srv, relay_text_t* t, const char* name,
                       const char* extra, size_t offset) {
  unsigned i;

  for (i = 0; i < srv->nworkers; i++) {
    atomic_uint_fast64_t* v =
        (atomic_uint_fast64_t*)((char*)&srv->workers[i].counters + offset);
    relay_text_add(
        t, "%s{loop=\"worker-%u\"%s} %llu\n", name, i, extra,
        (unsigned long long)atomic_load_explicit(v, memory_order_relaxed));
  }
}

/* The relay's own families, after the loops'. Counters are per worker,
 * so that rates can be compared between workers; a sum over workers is
 * never lower than the one before, since every term only grows. */
static void relay_families(relay_server_t* srv, relay_text_t* t) {
  char extra[64];
  unsigned r;

  family(t, "uvctx_relay_connections_accepted_total", "counter",
         "Client connections the relay took on.");
  per_worker(srv, t, "uvctx_relay_connections_accepted_total", "",
             offsetof(relay_counters_t, accepted));
  family(t, "uvctx_relay_connections_active", "gauge",
         "Client connections open (or closing) over all workers.");
  relay_text_add(t, "uvctx_relay_connections_active %u\n",
                 atomic_load(&srv->active));
  family(t, "uvctx_relay_connections_max", "gauge",
         "The --max-connections limit.");
  relay_text_add(t, "uvctx_relay_connections_max %u\n",
                 srv->cfg->max_connections);
  family(t, "uvctx_relay_connections_refused_total", "counter",
         "Client connections closed at once: over --max-connections, or "
         "out of memory.");
  per_worker(srv, t, "uvctx_relay_connections_refused_total", "",
             offsetof(relay_counters_t, refused));
  family(t, "uvctx_relay_connections_closed_total", "counter",
         "Connections ended, by the reason in their close log line.");
  for (r = 0; r < RELAY_REASONS; r++) {
    snprintf(extra, sizeof(extra), ",reason=\"%s\"", relay_reasons[r]);
    per_worker(srv, t, "uvctx_relay_connections_closed_total", extra,
               offsetof(relay_counters_t, closed) +
                   r * sizeof(atomic_uint_fast64_t));
  }
  family(t, "uvctx_relay_bytes_total", "counter",
         "Bytes relayed; up is client to upstream. Open connections' "
         "bytes are added each second.");
  per_worker(srv, t, "uvctx_relay_bytes_total", ",direction=\"up\"",
             offsetof(relay_counters_t, bytes_up));
  per_worker(srv, t, "uvctx_relay_bytes_total", ",direction=\"down\"",
             offsetof(relay_counters_t, bytes_down));
  family(t, "uvctx_relay_draining", "gauge",
         "1 once SIGTERM or SIGINT has started the drain.");
  relay_text_add(t, "uvctx_relay_draining %d\n", srv->signals > 0);
  family(t, "uvctx_relay_drain_deadline_seconds", "gauge",
         "The --drain-timeout, in seconds.");
  relay_text_add(t, "uvctx_relay_drain_deadline_seconds %.3f\n",
                 srv->cfg->drain_timeout_ms / 1000.0);
  family(t, "uvctx_relay_drain_started_seconds", "gauge",
         "When the drain started (Unix time), 0 before.");
  relay_text_add(t, "uvctx_relay_drain_started_seconds %.3f\n",
                 srv->drain_wall_s);
  /* Not the descriptors open: counting them means opening /proc/self/fd,
   * a descriptor number a worker may just have closed (ThreadSanitizer
   * reports that reuse). Each connection holds two, which the alert on
   * the limit uses. */
  family(t, "uvctx_relay_max_fds", "gauge",
         "The soft limit on file descriptors (RLIMIT_NOFILE); each "
         "connection holds two.");
  relay_text_add(t, "uvctx_relay_max_fds %llu\n",
                 (unsigned long long)relay_max_fds());
}

void relay_loop_stats(relay_server_t* srv, uvctx_loop_stats_t* out) {
  size_t i;

  uv_mutex_lock(&srv->stats_lock);
  for (i = 0; i < srv->nworkers; i++) {
    relay_worker_t* w = &srv->workers[i];
    if (w->closed)
      out[i] = w->final_stats;
    else
      uvctx_loop_stats(w->l, &out[i]);
  }
  uv_mutex_unlock(&srv->stats_lock);
  uvctx_loop_stats(srv->l, &out[srv->nworkers]);
}

/* The whole exposition: loop="worker-N" for each worker, loop="control"
 * for the control loop (the server root and the drain deadline live
 * there), then the relay's families. NULL when out of memory. */
static char* scrape(relay_server_t* srv, size_t* len) {
  size_t n = srv->nworkers + 1;
  uvctx_loop_stats_t* stats = malloc(n * sizeof(*stats));
  const uvctx_loop_stats_t** ptrs = malloc(n * sizeof(*ptrs));
  const char** labels = malloc(n * sizeof(*labels));
  char(*names)[24] = malloc(n * sizeof(*names));
  char* loops = NULL;
  size_t loops_len = 0;
  relay_text_t t = {NULL, 0, 0, 0};
  size_t i;

  if (stats == NULL || ptrs == NULL || labels == NULL || names == NULL)
    goto done;
  relay_loop_stats(srv, stats);
  for (i = 0; i < n; i++) {
    if (i < srv->nworkers)
      snprintf(names[i], sizeof(names[i]), "worker-%u", (unsigned)i);
    else
      snprintf(names[i], sizeof(names[i]), "control");
    ptrs[i] = &stats[i];
    labels[i] = names[i];
  }
  if (uvctx_metrics_format(ptrs, labels, n, &loops, &loops_len) != 0)
    goto done;
  relay_text_raw(&t, loops, loops_len);
  relay_families(srv, &t);
  if (t.oom) {
    free(t.p);
    t.p = NULL;
  }
  *len = t.len;

done:
  uvctx_metrics_free(loops);
  free(names);
  free(labels);
  free(ptrs);
  free(stats);
  return t.p;
}

/* ---- connections --------------------------------------------------------- */

static void maybe_free_metrics(relay_metrics_t* m);
static void process(mconn_t* c);

static void on_conn_handle_closed(uv_handle_t* h) {
  mconn_t* c = h->data;
  relay_metrics_t* m = c->m;

  if (--c->handles > 0)
    return;
  free(c);
  m->alive--;
  maybe_free_metrics(m);
}

static void conn_close(mconn_t* c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->debug)
    relay_debug_detach(c->m->srv, c);
  *c->pprev = c->next;
  if (c->next != NULL)
    c->next->pprev = c->pprev;
  c->m->nconns--;
  /* A write in flight gets its callback (UV_ECANCELED) before the close
   * callback, and frees the answer there. */
  uv_close((uv_handle_t*)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t*)&c->timer, on_conn_handle_closed);
}

static void on_idle(uv_timer_t* t) {
  conn_close(t->data);
}

static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);

static void on_shutdown(uv_shutdown_t* req, int status) {
  mconn_t* c = req->data;
  if (status != 0)
    conn_close(c); /* no-op if closing already */
}

/* The last answer is written. Closing now, with a request body or the
 * rest of an oversized head unread, would make the kernel reset the
 * connection, and a client may then lose the answer still in its receive
 * queue. So: FIN first, then read and drop what comes until the client's
 * EOF, for METRICS_LINGER_MS at most. */
static void linger(mconn_t* c) {
  c->lingering = 1;
  c->len = 0;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t*)&c->tcp, on_shutdown) != 0 ||
      uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  c->reading = 1;
  uv_timer_start(&c->timer, on_idle, METRICS_LINGER_MS, 0);
}

static void on_written(uv_write_t* req, int status) {
  mconn_t* c = req->data;

  free(c->resp);
  c->resp = NULL;
  c->writing = 0;
  if (c->closing)
    return;
  if (status != 0) {
    conn_close(c);
    return;
  }
  if (!c->keep_alive) {
    linger(c);
    return;
  }
  memmove(c->buf, c->buf + c->used, c->len - c->used);
  c->len -= c->used;
  c->used = 0;
  uv_timer_start(&c->timer, on_idle, METRICS_IDLE_MS, 0);
  process(c); /* a pipelined request may be waiting */
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  mconn_t* c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  mconn_t* c = s->data;
  (void)buf;

  if (nread == 0)
    return;
  if (c->lingering) {
    if (nread < 0)
      conn_close(c);
    else
      c->len = 0; /* dropped */
    return;
  }
  if (nread < 0) {
    /* EOF or an error, with no answer in progress (reading stops while
     * one is written): a partial request is dropped. */
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  process(c);
}

static void respond(mconn_t* c, int code, const char* reason, const char* extra,
                    const char* ctype, const char* body, size_t body_len,
                    int head_only, int keep_alive) {
  char head[512];
  uv_buf_t bufs[2];
  int n;
  int rc;

  c->keep_alive = keep_alive;
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 %d %s\r\n"
               "Content-Type: %s\r\n"
               "Content-Length: %zu\r\n"
               "%s"
               "Connection: %s\r\n\r\n",
               code, reason, ctype, body_len, extra != NULL ? extra : "",
               keep_alive ? "keep-alive" : "close");
  if (head_only)
    body_len = 0;
  c->resp = malloc((size_t)n + body_len);
  if (c->resp == NULL) {
    conn_close(c);
    return;
  }
  memcpy(c->resp, head, (size_t)n);
  if (body_len > 0)
    memcpy(c->resp + n, body, body_len);
  bufs[0] = uv_buf_init(c->resp, (unsigned)((size_t)n + body_len));
  c->writing = 1;
  c->reading = 0;
  uv_read_stop((uv_stream_t*)&c->tcp);
  c->wreq.data = c;
  rc = uv_write(&c->wreq, (uv_stream_t*)&c->tcp, bufs, 1, on_written);
  if (rc != 0) {
    free(c->resp);
    c->resp = NULL;
    c->writing = 0;
    conn_close(c);
  }
}

static void respond_text(mconn_t* c, int code, const char* reason,
                         const char* extra, const char* body, int head_only,
                         int keep_alive) {
  respond(c, code, reason, extra, "text/plain; charset=utf-8", body,
          strlen(body), head_only, keep_alive);
}

/* The end of the request head in buf (just past its blank line), or 0. */
static size_t head_end(const char* buf, size_t len) {
  size_t i;
  for (i = 1; i < len; i++) {
    if (buf[i] != '\n')
      continue;
    if (buf[i - 1] == '\n')
      return i + 1;
    if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n')
      return i + 1;
  }
  return 0;
}

/* The value of header `name` in the head (lines after the request line),
 * trimmed, into out; 1 if present. */
static int header(const char* head, size_t len, const char* name, char* out,
                  size_t outlen) {
  size_t nlen = strlen(name);
  const char* p = memchr(head, '\n', len);
  const char* end = head + len;

  while (p != NULL && p + 1 < end) {
    const char* line = p + 1;
    const char* eol = memchr(line, '\n', (size_t)(end - line));
    if (eol == NULL)
      eol = end;
    if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
        strncasecmp(line, name, nlen) == 0) {
      const char* v = line + nlen + 1;
      const char* ve = eol;
      size_t n;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      n = (size_t)(ve - v) < outlen - 1 ? (size_t)(ve - v) : outlen - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return 1;
    }
    p = eol < end ? eol : NULL;
  }
  return 0;
}

static int has_token(const char* list, const char* token) {
  size_t n = strlen(token);
  const char* p = list;
  while (*p != '\0') {
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    if (strncasecmp(p, token, n) == 0 &&
        (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
      return 1;
    while (*p != '\0' && *p != ',')
      p++;
  }
  return 0;
}

static const char* status_text(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 409:
      return "Conflict";
    case 503:
      return "Service Unavailable";
    default:
      return "Internal Server Error";
  }
}

static void debug_done(void* conn, relay_http_reply_t* reply) {
  mconn_t* c = conn;

  c->debug = 0;
  c->writing = 0;
  if (reply->body == NULL) {
    respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n", 0,
                 0);
    return;
  }
  respond(c, reply->code, status_text(reply->code), NULL, reply->ctype,
          reply->body, reply->len, c->head_only, c->keep_alive);
  free(reply->body);
}

static int is_loopback(const struct sockaddr_storage* ss) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
    const uint8_t* b = a->sin6_addr.s6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
           (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && b[12] == 127);
  }
  return 0;
}

static int is_wildcard(const struct sockaddr_storage* ss) {
  if (ss->ss_family == AF_INET)
    return ((const struct sockaddr_in*)ss)->sin_addr.s_addr ==
           htonl(INADDR_ANY);
  if (ss->ss_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(
        &((const struct sockaddr_in6*)ss)->sin6_addr);
  return 0;
}

/* The debug endpoints reveal peers and symbols: served when the request
 * came in on a loopback address, or when --metrics names one address
 * (not a wildcard), which is then the operator's choice. */
static int debug_allowed(mconn_t* c) {
  struct sockaddr_storage local;
  int len = sizeof(local);

  if (!is_wildcard(&c->m->srv->cfg->metrics.ss))
    return 1;
  if (uv_tcp_getsockname(&c->tcp, (struct sockaddr*)&local, &len) != 0)
    return 0;
  return is_loopback(&local);
}

static void debug_request(mconn_t* c, const char* path, const char* query,
                          int head_only, int keep_alive) {
  relay_http_reply_t reply = {0, NULL, NULL, 0};
  int rc;

  c->head_only = head_only;
  c->keep_alive = keep_alive;
  rc = relay_debug_request(c->m->srv, path, query, debug_allowed(c), c,
                           debug_done, &reply);
  if (rc < 0) {
    respond_text(c, 404, "Not Found", NULL,
                 "not found; try /metrics, /debug/contexts or /\n", head_only,
                 keep_alive);
    return;
  }
  if (rc == 0) {
    debug_done(c, &reply);
    return;
  }
  /* Later (a recording takes seconds): no reading, no idle timeout. */
  c->debug = 1;
  c->writing = 1;
  c->reading = 0;
  uv_read_stop((uv_stream_t*)&c->tcp);
  uv_timer_stop(&c->timer);
}

static void handle(mconn_t* c, const char* head, size_t len) {
  char method[16];
  char target[256];
  char version[16];
  char value[128];
  const char* eol = memchr(head, '\n', len);
  size_t line_len = eol != NULL ? (size_t)(eol - head) : len;
  char line[512];
  char* q;
  int keep_alive;
  int head_only;
  char* body;
  size_t body_len = 0;

  if (line_len > 0 && head[line_len - 1] == '\r')
    line_len--;
  if (line_len >= sizeof(line) || memchr(head, '\0', len) != NULL) {
    respond_text(c, 400, "Bad Request", NULL, "bad request\n", 0, 0);
    return;
  }
  memcpy(line, head, line_len);
  line[line_len] = '\0';
  if (sscanf(line, "%15[A-Z] %255[^ ] %15[^ ]", method, target, version) != 3 ||
      (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0)) {
    respond_text(c, 400, "Bad Request", NULL, "bad request\n", 0, 0);
    return;
  }
  /* Keep-alive: HTTP/1.1 without "Connection: close", and no body, since
   * a body is never read. */
  keep_alive = strcmp(version, "HTTP/1.1") == 0;
  if (header(head, len, "connection", value, sizeof(value)) &&
      has_token(value, "close"))
    keep_alive = 0;
  if (header(head, len, "transfer-encoding", value, sizeof(value)) ||
      (header(head, len, "content-length", value, sizeof(value)) &&
       strcmp(value, "0") != 0))
    keep_alive = 0;

  q = strchr(target, '?');
  if (q != NULL)
    *q++ = '\0';
  head_only = strcmp(method, "HEAD") == 0; /* headers, never a body */
  if (!head_only && strcmp(method, "GET") != 0) {
    respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                 "method not allowed\n", 0, keep_alive);
    return;
  }
  if (strcmp(target, "/metrics") != 0) {
    debug_request(c, target, q != NULL ? q : "", head_only, keep_alive);
    return;
  }
  body = scrape(c->m->srv, &body_len);
  if (body == NULL) {
    respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n", 0,
                 0);
    return;
  }
  respond(c, 200, "OK", NULL, "text/plain; version=0.0.4; charset=utf-8", body,
          body_len, head_only, keep_alive);
  free(body);
}

static void process(mconn_t* c) {
  size_t skip = 0;
  size_t end;

  if (c->writing || c->closing)
    return;
  /* Blank lines before a request line are ignored (RFC 9112, 2.2). */
  while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n'))
    skip++;
  if (skip > 0) {
    memmove(c->buf, c->buf + skip, c->len - skip);
    c->len -= skip;
  }
  end = head_end(c->buf, c->len);
  if (end == 0) {
    if (c->len == sizeof(c->buf)) {
      c->used = c->len;
      respond_text(c, 431, "Request Header Fields Too Large", NULL,
                   "request too large\n", 0, 0);
    } else if (!c->reading) {
      if (uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
      else
        conn_close(c);
    }
    return;
  }
  c->used = end;
  handle(c, c->buf, end);
}

/* ---- the listener -------------------------------------------------------- */

static void reject(relay_metrics_t* m);

static void on_spare_closed(uv_handle_t* h) {
  relay_metrics_t* m = h->data;

  m->spare_busy = 0;
  if (m->reject_pending && m->listening) {
    m->reject_pending = 0;
    reject(m);
    return;
  }
  m->reject_pending = 0;
  maybe_free_metrics(m);
}

static void reject(relay_metrics_t* m) {
  if (m->spare_busy) {
    m->reject_pending = 1;
    return;
  }
  if (uv_tcp_init(&m->srv->loop, &m->spare) != 0)
    return;
  m->spare.data = m;
  m->spare_busy = 1;
  uv_accept((uv_stream_t*)&m->listener, (uv_stream_t*)&m->spare);
  uv_close((uv_handle_t*)&m->spare, on_spare_closed);
}

static void on_connection(uv_stream_t* server, int status) {
  relay_metrics_t* m = server->data;
  mconn_t* c;

  if (status != 0)
    return; /* libuv keeps polling; EMFILE is retried */
  if (m->nconns >= METRICS_MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
    reject(m);
    return;
  }
  c->m = m;
  if (uv_tcp_init(&m->srv->loop, &c->tcp) != 0) {
    free(c);
    reject(m);
    return;
  }
  uv_timer_init(&m->srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  m->alive++;
  m->nconns++;
  c->next = m->conns;
  c->pprev = &m->conns;
  if (m->conns != NULL)
    m->conns->pprev = &c->next;
  m->conns = c;
  if (uv_accept(server, (uv_stream_t*)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->timer, on_idle, METRICS_IDLE_MS, 0);
  process(c); /* starts reading */
}

static void on_listener_closed(uv_handle_t* h) {
  relay_metrics_t* m = h->data;
  m->listener_up = 0;
  maybe_free_metrics(m);
}

static void maybe_free_metrics(relay_metrics_t* m) {
  if (m->closed && !m->listener_up && !m->spare_busy && m->alive == 0) {
    m->srv->metrics = NULL;
    free(m);
  }
}

int relay_metrics_listen(relay_server_t* srv) {
  const relay_config_t* cfg = srv->cfg;
  relay_metrics_t* m;
  int rc;

  m = calloc(1, sizeof(*m));
  if (m == NULL) {
    fprintf(stderr, RELAY_NAME ": --metrics: %s\n", uv_strerror(UV_ENOMEM));
    return -1;
  }
  m->srv = srv;
  srv->metrics = m;
  srv->start_ns = uv_hrtime();
  /* The workers' sockets are bound (port 0 resolved) and not yet served:
   * read the address now, not from a socket a worker may be closing. */
  relay_listen_addr(srv, srv->listen_addr, sizeof(srv->listen_addr));
  rc = relay_debug_open(srv);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": --metrics: %s\n", uv_strerror(rc));
    srv->metrics = NULL;
    free(m);
    return -1;
  }
  rc = uv_tcp_init(&srv->loop, &m->listener);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": --metrics: %s\n", uv_strerror(rc));
    relay_debug_close(srv);
    srv->metrics = NULL;
    free(m);
    return -1;
  }
  m->listener.data = m;
  m->listener_up = 1;
  m->listening = 1;
  /* libuv reports some bind errors only at listen. */
  rc = uv_tcp_bind(&m->listener, (const struct sockaddr*)&cfg->metrics.ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t*)&m->listener, METRICS_BACKLOG, on_connection);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": cannot listen on --metrics %s: %s\n",
            cfg->metrics.text, uv_strerror(rc));
    relay_metrics_close(srv);
    return -1;
  }
  return 0;
}

void relay_listen_addr(relay_server_t* srv, char* out, size_t len) {
  struct sockaddr_storage ss;
  socklen_t slen = sizeof(ss);

  if (srv->nworkers == 0 || srv->workers[0].listen_fd < 0 ||
      getsockname(srv->workers[0].listen_fd, (struct sockaddr*)&ss, &slen) != 0)
    snprintf(out, len, "%s", srv->cfg->listen.text);
  else
    relay_format_addr((struct sockaddr*)&ss, out, len);
}

void relay_metrics_addr(relay_server_t* srv, char* out, size_t len) {
  struct sockaddr_storage ss;
  int slen = sizeof(ss);

  if (srv->metrics == NULL ||
      uv_tcp_getsockname(&srv->metrics->listener, (struct sockaddr*)&ss,
                         &slen) != 0) {
    snprintf(out, len, "?");
    return;
  }
  relay_format_addr((struct sockaddr*)&ss, out, len);
}

/* The drain has started. The listener stays open until the last worker
 * is done: a drain is what an operator most wants to watch, and the
 * alert on a drain that overruns its deadline needs scrapes during it. */
void relay_metrics_stop_accepting(relay_server_t* srv) {
  uv_timeval64_t now;

  if (srv->drain_wall_s == 0 && uv_gettimeofday(&now) == 0)
    srv->drain_wall_s = (double)now.tv_sec + now.tv_usec / 1e6;
  relay_debug_draining(srv);
}

static void close_listener(relay_metrics_t* m) {
  if (!m->listening)
    return;
  m->listening = 0;
  uv_close((uv_handle_t*)&m->listener, on_listener_closed);
}

void relay_metrics_close(relay_server_t* srv) {
  relay_metrics_t* m = srv->metrics;

  if (m == NULL || m->closed)
    return;
  m->closed = 1;
  relay_debug_close(srv);
  close_listener(m);
  while (m->conns != NULL)
    conn_close(m->conns);
  maybe_free_metrics(m); /* nothing left open: now */
}
