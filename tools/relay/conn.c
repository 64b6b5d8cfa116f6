/* conn.c owns one relayed connection, from the accepted socket to its last
 * close callback, on the thread of the worker that accepted it.
 *
 * Contexts, from the worker's branch of the server root down:
 *
 *   w->root                  cancelled at the drain deadline ("drained")
 *    └ ctx       with_cancel  cancelled when the client goes away
 *       └ vctx   with_value   carries the connection's tag (id, peer)
 *          └ run  with_timeout_cause "lifetime" (or vctx if no lifetime)
 *             ├ step  with_timeout_cause "handshake-timeout" (client TLS)
 *             ├ step  with_timeout_cause "connect-timeout" (connect and
 *             │       upstream TLS)
 *             └ the pipe, with the copy's idle timeout
 *
 * Every step runs under a descendant of `ctx`, so one cancel (drain, client
 * gone, lifetime) stops whatever is in progress, and the ending reason is
 * read back from the context's cause message.
 *
 * Phases: [client TLS handshake] -> upstream connect [+ upstream TLS
 * handshake] -> flush what the client sent meanwhile -> pipe -> close.
 * Exactly one asynchronous operation of ours is in flight at a time, and
 * conn_end() is only ever called from its completion (or before the first
 * one started), so no callback can see a freed connection. While the
 * upstream is being reached the client stream is read into a small buffer,
 * which is how a client that goes away is noticed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uvctx/uv.h>

#include "relay.h"

/* What a client may send before the upstream is ready; reading stops when
 * the buffer is full (TCP flow control takes over). */
#define PREREAD_MAX (64 * 1024)

enum {
  F_CS = 1 << 0,   /* cs wraps ctcp */
  F_CTLS = 1 << 1, /* ctls wraps cs */
  F_UTCP = 1 << 2, /* utcp initialized */
  F_US = 1 << 3,   /* us wraps utcp */
  F_UTLS = 1 << 4  /* utls wraps us */
};

/* The connection's tag, bound to its context as a typed value: anything
 * holding the context (a log call, a library callback) can name the
 * connection. Freed by the key when the value context is freed. */
typedef struct relay_tag_s {
  uint64_t id;
  unsigned worker;
  char peer[64];
} relay_tag_t;

static void tag_free(void* v) {
  free(v);
}

/* The key is loggable as `peer`: conn_log() writes the context's loggable
 * values with uvctx_log_fields(), which is where `peer=` comes from. The id
 * and the worker stay fields of the relay's own, read from the tag: they
 * are JSON numbers in the log, and log fields are always strings. */
static int tag_format(const void* v, char* buf, size_t size) {
  const relay_tag_t* tag = v;
  return snprintf(buf, size, "%s", tag->peer);
}

static const uvctx_key_t tag_key = {
    .name = "peer", .free_value = tag_free, .format = tag_format};

typedef struct relay_conn_s {
  relay_worker_t* w;
  const relay_config_t* cfg;
  uvctx_t* ctx;
  uvctx_t* vctx;
  uvctx_t* run;
  uvctx_t* step;
  unsigned flags;
  uv_tcp_t ctcp;
  uvctx_stream_t cs;
  uvctx_tls_t ctls;
  uv_tcp_t utcp;
  uvctx_stream_t us;
  uvctx_tls_t utls;
  uvctx_stream_t* a; /* client plaintext */
  uvctx_stream_t* b; /* upstream plaintext */
  uvctx_dial_t dial; /* while it runs it counts in `closing` */
  uvctx_write_t flush_req;
  char* pre;
  size_t pre_len;
  int prereading;
  uvctx_pipe_t pipe;
  /* On w->piping while the pipe runs (--metrics only). */
  struct relay_conn_s* piping_next;
  struct relay_conn_s** piping_pprev;
  uint64_t start_ns;
  uint64_t bytes_up;   /* client -> upstream */
  uint64_t bytes_down; /* upstream -> client */
  /* Of those (and of a running pipe's), what the counters have had. */
  uint64_t counted_up;
  uint64_t counted_down;
  const char* reason;
  int reason_idx; /* RELAY_R_* of `reason` */
  char detail[200];
  /* Where the connection was when it ended (accept, handshake, connect,
   * upstream-handshake, flush, pipe), and which side's I/O error ended it
   * when that is known from the operation itself (else side_of() decides
   * from the reason and the phase). */
  const char* phase;
  const char* err_side;
  int closing; /* close callbacks outstanding */
  int ended;
  int counted; /* holds a slot in srv->active */
} relay_conn_t;

static void conn_end(relay_conn_t* c, const char* reason, int status,
                     const char* detail);
static void start_connect(relay_conn_t* c);

/* ---- logging ------------------------------------------------------------- */

/* Who ended the connection: "client" or "upstream" (a peer closed,
 * reset, refused or timed out), "relay" (a deadline of its own, the drain,
 * a local error), or "both" for an ordinary end in both directions. */
static const char* side_of(const relay_conn_t* c) {
  const char* r = c->reason != NULL ? c->reason : "";

  if (c->err_side != NULL)
    return c->err_side;
  if (strcmp(r, "eof") == 0)
    return "both";
  if (strcmp(r, "client-gone") == 0 || strcmp(r, "handshake-timeout") == 0)
    return "client";
  if (strcmp(r, "upstream-refused") == 0 || strcmp(r, "connect-timeout") == 0 ||
      strcmp(r, "upstream-error") == 0)
    return "upstream";
  if (strcmp(r, "reset") == 0 || strcmp(r, "tls-error") == 0)
    return strcmp(c->phase, "accept") == 0 || strcmp(c->phase, "handshake") == 0
               ? "client"
               : "upstream";
  return "relay";
}

static void conn_log(relay_conn_t* c, const char* event) {
  relay_log_line_t ln;
  const relay_tag_t* tag = NULL;
  int is_close = strcmp(event, "close") == 0;
  uint64_t id;

  /* The tag is read back through the context, as a library user would. */
  if (c->vctx != NULL)
    tag = uvctx_value(c->vctx, &tag_key);
  id = tag != NULL ? tag->id : 0;
  if (!relay_log_wants(is_close ? RELAY_LOG_CLOSE : RELAY_LOG_OPEN, c->reason,
                       id))
    return;
  relay_log_begin(&ln, event);
  relay_log_u64(&ln, "conn", id);
  relay_log_u64(&ln, "worker", c->w->index);
  if (tag != NULL)
    relay_log_ctx(&ln, c->vctx);
  else
    relay_log_str(&ln, "peer", "?"); /* no context: set up failed */
  relay_log_u64(&ln, "bytes_up", c->bytes_up);
  relay_log_u64(&ln, "bytes_down", c->bytes_down);
  relay_log_u64(&ln, "duration_ms", (uv_hrtime() - c->start_ns) / 1000000);
  relay_log_str(&ln, "reason", c->reason != NULL ? c->reason : "none");
  if (is_close) {
    relay_log_str(&ln, "side", side_of(c));
    relay_log_str(&ln, "phase", c->phase);
  }
  if (c->detail[0] != '\0')
    relay_log_str(&ln, "detail", c->detail);
  if (relay_log_sample() > 1)
    relay_log_u64(&ln, "sample", relay_log_sample());
  relay_log_end(&ln);
}

/* ---- endings ------------------------------------------------------------- */

/* The reason for a failed step: a done context names itself through its
 * cause message (drained, lifetime, client-gone, handshake-timeout,
 * connect-timeout); otherwise the error decides. */
static const char* reason_of(uvctx_t* ctx, int status, const char* dflt) {
  const char* msg = NULL;

  if (ctx != NULL && uvctx_err(ctx) != 0) {
    uvctx_cause(ctx, &msg);
    return msg != NULL ? msg : "cancelled";
  }
  switch (status) {
    case 0:
      return "eof";
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ENOTCONN:
      return "reset";
    case UV_ECONNREFUSED:
      return "upstream-refused";
    case UVCTX_TLS_EVERIFY:
    case UVCTX_TLS_EPROTO:
    case UVCTX_TLS_EALERT:
      return "tls-error";
    case UVCTX_TLS_ETRUNCATED: /* TLS peer left without close_notify */
      return "truncated";
    default:
      return dflt;
  }
}

const char* const relay_reasons[RELAY_REASONS] = {
    [RELAY_R_EOF] = "eof",
    [RELAY_R_IDLE_TIMEOUT] = "idle-timeout",
    [RELAY_R_HANDSHAKE_TIMEOUT] = "handshake-timeout",
    [RELAY_R_LIFETIME] = "lifetime",
    [RELAY_R_DRAINED] = "drained",
    [RELAY_R_UPSTREAM_REFUSED] = "upstream-refused",
    [RELAY_R_RESET] = "reset",
    [RELAY_R_TLS_ERROR] = "tls-error",
    [RELAY_R_CLIENT_GONE] = "client-gone",
    [RELAY_R_CONNECT_TIMEOUT] = "connect-timeout",
    [RELAY_R_UPSTREAM_ERROR] = "upstream-error",
    [RELAY_R_ERROR] = "error",
    [RELAY_R_CANCELLED] = "cancelled",
    [RELAY_R_HALF_CLOSE_TIMEOUT] = "half-close-timeout",
    [RELAY_R_SEND_TIMEOUT] = "send-timeout",
    [RELAY_R_TRUNCATED] = "truncated"};

/* The reason messages are string literals, so the pointer outlives the
 * context it came from; anything unknown is an "error". Returns the
 * RELAY_R_* index, which is also what the metrics count. */
static int reason_index(const char* r) {
  int i;
  for (i = 0; i < RELAY_REASONS; i++)
    if (strcmp(r, relay_reasons[i]) == 0)
      return i;
  return RELAY_R_ERROR;
}

/* Brings the worker's byte counters up to `up` and `down`, this
 * connection's totals so far (which only grow). */
static void count_bytes(relay_conn_t* c, uint64_t up, uint64_t down) {
  relay_counters_t* n = &c->w->counters;

  atomic_fetch_add_explicit(&n->bytes_up, up - c->counted_up,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&n->bytes_down, down - c->counted_down,
                            memory_order_relaxed);
  c->counted_up = up;
  c->counted_down = down;
}

static void piping_remove(relay_conn_t* c) {
  if (c->piping_pprev == NULL)
    return;
  *c->piping_pprev = c->piping_next;
  if (c->piping_next != NULL)
    c->piping_next->piping_pprev = c->piping_pprev;
  c->piping_pprev = NULL;
  c->piping_next = NULL;
}

void relay_conn_sample(relay_worker_t* w) {
  relay_conn_t* c;

  for (c = w->piping; c != NULL; c = c->piping_next) {
    uint64_t up = 0;
    uint64_t down = 0;
    uvctx_pipe_bytes(&c->pipe, &up, &down);
    count_bytes(c, c->bytes_up + up, c->bytes_down + down);
  }
}

static void conn_free(relay_conn_t* c) {
  relay_worker_t* w = c->w;
  relay_counters_t* n = &w->counters;

  conn_log(c, "close");
  piping_remove(c);
  count_bytes(c, c->bytes_up, c->bytes_down);
  atomic_fetch_add_explicit(&n->closed[c->reason_idx], 1, memory_order_relaxed);
  /* Children first; each holds its parent. */
  uvctx_release(c->step);
  if (c->run != c->vctx)
    uvctx_release(c->run);
  uvctx_unref(c->vctx);
  uvctx_release(c->ctx);
  free(c->pre);
  if (c->counted)
    atomic_fetch_sub(&w->srv->active, 1);
  free(c);
  relay_worker_conn_done(w);
}

static void maybe_free(relay_conn_t* c) {
  if (c->ended && c->closing == 0)
    conn_free(c);
}

static void on_stream_close(uvctx_stream_t* s) {
  relay_conn_t* c = s->data;
  c->closing--;
  maybe_free(c);
}

static void on_handle_close(uv_handle_t* h) {
  relay_conn_t* c = h->data;
  c->closing--;
  maybe_free(c);
}

static void close_stream(relay_conn_t* c, uvctx_stream_t* s) {
  if (!uvctx_stream_is_closing(s)) {
    c->closing++;
    uvctx_stream_close(s, on_stream_close);
  }
}

static void close_handle(relay_conn_t* c, uv_handle_t* h) {
  if (!uv_is_closing(h)) {
    c->closing++;
    uv_close(h, on_handle_close);
  }
}

/* Closes whatever is still open, outermost layer first (a TLS session
 * closes its transport, a stream its handle), then frees the connection
 * once the last close callback has run. Also cancels `ctx`: the
 * connection is over, for anything that still holds it. */
static void conn_end(relay_conn_t* c, const char* reason, int status,
                     const char* detail) {
  if (c->ended)
    return;
  c->ended = 1;
  if (c->reason == NULL) {
    c->reason_idx = reason_index(reason);
    c->reason = relay_reasons[c->reason_idx];
  }
  if (detail != NULL)
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
  else if (status != 0 && c->detail[0] == '\0')
    snprintf(c->detail, sizeof(c->detail), "%s %s", side_of(c),
             uv_err_name(status));
  if (c->ctx != NULL)
    uvctx_cancel_cause(c->ctx, UV_ECANCELED, c->reason);

  if (c->flags & F_CTLS)
    close_stream(c, &c->ctls.stream);
  else if (c->flags & F_CS)
    close_stream(c, &c->cs);
  else
    close_handle(c, (uv_handle_t*)&c->ctcp);

  if (c->flags & F_UTLS)
    close_stream(c, &c->utls.stream);
  else if (c->flags & F_US)
    close_stream(c, &c->us);
  else if (c->flags & F_UTCP)
    close_handle(c, (uv_handle_t*)&c->utcp);

  maybe_free(c);
}

/* ---- the pipe ------------------------------------------------------------ */

/* A TLS failure's detail: the side, the error and OpenSSL's reason when
 * the session recorded one ("client EPROTO: packet length too long"), in
 * the handshake and in the pipe alike. */
static void tls_detail(relay_conn_t* c, const char* side, int status,
                       const char* why) {
  snprintf(c->detail, sizeof(c->detail), "%s %s%s%s", side, uv_err_name(status),
           why != NULL ? ": " : "", why != NULL ? why : "");
}

static void on_pipe(uvctx_pipe_t* p, int status, uint64_t a_to_b,
                    uint64_t b_to_a) {
  relay_conn_t* c = p->data;
  const char* reason;

  piping_remove(c);
  c->bytes_up += a_to_b;
  c->bytes_down += b_to_a;
  /* The pipe itself treats a peer that closed before our half-close
   * reached it as an ordinary end (see docs/copy.md). */
  if (status == 0)
    reason = "eof";
  else if (uvctx_err(c->run) != 0)
    reason = reason_of(c->run, status, "error");
  else if (status == UV_ETIMEDOUT)
    /* The copy's own timers, not a context. */
    reason = uvctx_pipe_send_timed_out(p) ? "send-timeout" : "idle-timeout";
  else
    reason = reason_of(NULL, status, "error");
  if (status == UV_ETIMEDOUT && uvctx_err(c->run) == 0) {
    int side = 0;
    if (uvctx_pipe_error_at(p, &side) == UVCTX_PIPE_AT_HALF_CLOSED) {
      /* One side had half-closed; the other stayed silent too long. */
      reason = "half-close-timeout";
      c->err_side = side == 0 ? "client" : "upstream";
      snprintf(c->detail, sizeof(c->detail), "%s half-closed, %s silent",
               side == 0 ? "upstream" : "client", c->err_side);
    }
  }
  /* A context or the idle timer ending is not an error worth a detail. */
  if (uvctx_err(c->run) != 0 || status == UV_ETIMEDOUT)
    status = 0;
  if (status != 0) {
    int side = 0;
    int at = uvctx_pipe_error_at(p, &side);
    if (at != UVCTX_PIPE_AT_NONE) {
      /* Stream a is the client's, b the upstream's. A TLS session of that
       * side keeps OpenSSL's reason past its close (which came before this
       * callback): add it. */
      const char* why = NULL;
      if (side == 0 && (c->flags & F_CTLS))
        why = uvctx_tls_reason(&c->ctls);
      else if (side != 0 && (c->flags & F_UTLS))
        why = uvctx_tls_reason(&c->utls);
      c->err_side = side == 0 ? "client" : "upstream";
      snprintf(c->detail, sizeof(c->detail), "%s %s %s%s%s", c->err_side,
               at == UVCTX_PIPE_AT_READ    ? "read"
               : at == UVCTX_PIPE_AT_WRITE ? "write"
                                           : "shutdown",
               uv_err_name(status), why != NULL ? ": " : "",
               why != NULL ? why : "");
    }
  }
  conn_end(c, reason, status, NULL);
}

static void start_pipe(relay_conn_t* c) {
  uvctx_copy_options_t opts;
  int rc;

  memset(&opts, 0, sizeof(opts));
  opts.idle_timeout_ms = c->cfg->idle_timeout_ms;
  /* Memory per connection: buffers from the worker's pool only as data
   * flows, and at most one queued per direction (the rest waits in the
   * kernel), which also bounds what a slow reader can hold. */
  opts.pool = c->w->pool;
  opts.high_water = RELAY_BUFFER;
  opts.send_timeout_ms = c->cfg->send_timeout_ms;
  /* a is the client: a -> b finished means the client half-closed. */
  opts.half_close_timeout_ms[0] = c->cfg->server_fin_timeout_ms;
  opts.half_close_timeout_ms[1] = c->cfg->client_fin_timeout_ms;
  c->phase = "pipe";
  c->pipe.data = c;
  rc = uvctx_pipe_start(&c->pipe, c->run, c->a, c->b, &opts, on_pipe);
  if (rc != 0) {
    conn_end(c, "error", rc, "pipe start");
    return;
  }
  if (c->w->sampling) {
    c->piping_next = c->w->piping;
    if (c->piping_next != NULL)
      c->piping_next->piping_pprev = &c->piping_next;
    c->w->piping = c;
    c->piping_pprev = &c->w->piping;
  }
}

/* ---- what the client sent while the upstream was being reached ----------- */

static void on_flushed(uvctx_write_t* req, int status) {
  relay_conn_t* c = req->data;

  if (status != 0 || uvctx_err(c->run) != 0) {
    conn_end(c, reason_of(c->run, status, "upstream-error"), status, NULL);
    return;
  }
  c->bytes_up += c->pre_len;
  free(c->pre);
  c->pre = NULL;
  c->pre_len = 0;
  start_pipe(c);
}

static void upstream_ready(relay_conn_t* c) {
  uv_buf_t buf;
  int rc;

  if (c->prereading) {
    uvctx_stream_read_stop(c->a);
    c->prereading = 0;
  }
  if (uvctx_err(c->run) != 0) {
    conn_end(c, reason_of(c->run, 0, "cancelled"), 0, NULL);
    return;
  }
  if (c->pre_len == 0) {
    start_pipe(c);
    return;
  }
  buf = uv_buf_init(c->pre, (unsigned)c->pre_len);
  c->phase = "flush";
  c->flush_req.data = c;
  rc = uvctx_stream_write(&c->flush_req, c->b, &buf, 1, on_flushed);
  if (rc != 0)
    conn_end(c, "upstream-error", rc, NULL);
}

static void preread_alloc(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  relay_conn_t* c = s->data;
  (void)suggested;

  if (c->pre == NULL)
    c->pre = malloc(PREREAD_MAX);
  if (c->pre == NULL || c->pre_len == PREREAD_MAX)
    *buf = uv_buf_init(NULL, 0);
  else
    *buf =
        uv_buf_init(c->pre + c->pre_len, (unsigned)(PREREAD_MAX - c->pre_len));
}

/* A client that goes away (or resets) while we reach the upstream cancels
 * the connection's context: the connect or upstream handshake in progress
 * sees it and ends the connection. A client that half-closes before the
 * upstream is even reached counts as gone too (documented). */
static void preread_cb(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  relay_conn_t* c = s->data;
  (void)buf;

  if (nread > 0) {
    c->pre_len += (size_t)nread;
    if (c->pre_len == PREREAD_MAX) {
      uvctx_stream_read_stop(s);
      c->prereading = 0;
    }
    return;
  }
  if (nread == 0)
    return;
  uvctx_stream_read_stop(s);
  c->prereading = 0;
  if (nread == UV_ENOBUFS)
    return; /* full, or out of memory: wait for the upstream */
  c->err_side = "client";
  if (nread != UV_EOF)
    snprintf(c->detail, sizeof(c->detail), "client read %s",
             uv_err_name((int)nread));
  uvctx_cancel_cause(c->ctx, UV_ECANCELED,
                     nread == UV_EOF ? "client-gone" : "reset");
}

static void start_preread(relay_conn_t* c) {
  if (uvctx_stream_read_start(c->a, preread_alloc, preread_cb) == 0)
    c->prereading = 1;
}

/* ---- the upstream -------------------------------------------------------- */

static void on_upstream_handshake(uvctx_tls_t* tls, int status) {
  relay_conn_t* c = tls->stream.data;

  if (status != 0) {
    const char* r = reason_of(c->step, status, "upstream-error");
    if (uvctx_err(c->step) == 0)
      tls_detail(c, "upstream", status, uvctx_tls_reason(tls));
    conn_end(c, r, status, NULL);
    return;
  }
  uvctx_release(c->step);
  c->step = NULL;
  upstream_ready(c);
}

/* The dial (resolve, then every address of --connect's host, both
 * families) ran under the connect step's context: a timeout, the client
 * gone or a drain ended it with that context's error, and on any failure
 * there is no upstream handle to close. */
static void on_dial(uvctx_dial_t* req, int status, uv_tcp_t* tcp) {
  relay_conn_t* c = req->data;
  int rc;

  (void)tcp;    /* &c->utcp */
  c->closing--; /* the dial no longer holds the connection */
  if (status == 0) {
    c->flags |= F_UTCP;
    c->utcp.data = c;
  }
  if (c->ended) {
    if (status == 0)
      close_handle(c, (uv_handle_t*)&c->utcp);
    maybe_free(c);
    return;
  }
  if (status != 0) {
    conn_end(c, reason_of(c->step, status, "upstream-error"), status, NULL);
    return;
  }
  uv_tcp_nodelay(&c->utcp, 1);
  rc = uvctx_stream_init_uv(&c->us, (uv_stream_t*)&c->utcp);
  if (rc != 0) {
    conn_end(c, "error", rc, NULL);
    return;
  }
  c->flags |= F_US;
  c->us.data = c;
  c->b = &c->us;

  if (c->cfg->client_tls != NULL) {
    rc = uvctx_tls_init(&c->utls, c->cfg->client_tls, &c->us,
                        c->cfg->upstream_name);
    if (rc != 0) {
      conn_end(c, "error", rc, "upstream TLS init");
      return;
    }
    c->flags |= F_UTLS;
    c->utls.stream.data = c;
    c->b = &c->utls.stream;
    c->phase = "upstream-handshake";
    /* The connect timeout covers the upstream handshake too. */
    rc = uvctx_tls_handshake(&c->utls, c->step, on_upstream_handshake);
    if (rc != 0)
      conn_end(c, "tls-error", rc, "upstream handshake start");
    return;
  }
  uvctx_release(c->step);
  c->step = NULL;
  upstream_ready(c);
}

/* The port of --connect, as checked at startup. */
static unsigned addr_port(const relay_addr_t* a) {
  if (a->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6*)&a->ss)->sin6_port);
  return ntohs(((const struct sockaddr_in*)&a->ss)->sin_port);
}

static void start_connect(relay_conn_t* c) {
  char port[8];
  int rc;

  c->phase = "connect";
  rc = uvctx_with_timeout_cause(c->run, c->cfg->connect_timeout_ms,
                                UV_ETIMEDOUT, "connect-timeout", &c->step);
  if (rc != 0) {
    conn_end(c, "error", rc, NULL);
    return;
  }
  snprintf(port, sizeof(port), "%u", addr_port(&c->cfg->connect));
  c->dial.data = c;
  rc = uvctx_dial(&c->dial, c->step, c->cfg->connect.host, port, NULL, &c->utcp,
                  on_dial);
  if (rc != 0) {
    conn_end(c, reason_of(NULL, rc, "upstream-error"), rc, NULL);
    return;
  }
  c->closing++; /* conn_end() waits for the dial's callback */
  start_preread(c);
}

/* ---- the client ---------------------------------------------------------- */

static void on_client_handshake(uvctx_tls_t* tls, int status) {
  relay_conn_t* c = tls->stream.data;
  const char* r;

  if (status != 0) {
    if (uvctx_err(c->step) != 0)
      r = reason_of(c->step, status, "error");
    else if (status == UVCTX_TLS_ETRUNCATED || status == UV_EOF)
      r = "client-gone";
    else
      r = reason_of(NULL, status, "tls-error");
    if (uvctx_err(c->step) == 0 && uvctx_tls_reason(tls) != NULL)
      tls_detail(c, "client", status, uvctx_tls_reason(tls));
    conn_end(c, r, uvctx_err(c->step) != 0 ? 0 : status, NULL);
    return;
  }
  uvctx_release(c->step);
  c->step = NULL;
  start_connect(c);
}

void relay_log_refused(const relay_worker_t* w, const struct sockaddr* peer,
                       const char* reason) {
  relay_log_line_t ln;
  char addr[64];

  relay_format_addr(peer, addr, sizeof(addr));
  relay_log_begin(&ln, "refused");
  relay_log_u64(&ln, "worker", w->index);
  relay_log_str(&ln, "peer", addr);
  relay_log_str(&ln, "reason", reason);
  relay_log_end(&ln);
}

void relay_conn_start(relay_worker_t* w, int fd, const struct sockaddr* peer) {
  relay_server_t* srv = w->srv;
  relay_conn_t* c;
  relay_tag_t* tag;
  int rc;

  c = calloc(1, sizeof(*c));
  tag = malloc(sizeof(*tag));
  if (c == NULL || tag == NULL) {
    free(c);
    free(tag);
    close(fd);
    atomic_fetch_sub(&srv->active, 1);
    atomic_fetch_add_explicit(&w->counters.refused, 1, memory_order_relaxed);
    relay_log_refused(w, peer, "out-of-memory");
    return;
  }
  c->w = w;
  c->cfg = srv->cfg;
  c->counted = 1;
  c->start_ns = uv_hrtime();
  c->phase = "accept";
  w->nconns++;
  atomic_fetch_add_explicit(&w->counters.accepted, 1, memory_order_relaxed);

  tag->id = atomic_fetch_add(&srv->next_id, 1) + 1;
  tag->worker = w->index;
  relay_format_addr(peer, tag->peer, sizeof(tag->peer));

  rc = uv_tcp_init(&w->loop, &c->ctcp);
  if (rc != 0) {
    /* No handle to close: end by hand. */
    close(fd);
    free(tag);
    c->ended = 1;
    c->reason_idx = RELAY_R_ERROR;
    c->reason = relay_reasons[RELAY_R_ERROR];
    conn_free(c);
    return;
  }
  c->ctcp.data = c;
  rc = uv_tcp_open(&c->ctcp, fd);
  if (rc != 0) {
    close(fd);
    free(tag);
    conn_end(c, "error", rc, "uv_tcp_open");
    return;
  }
  uv_tcp_nodelay(&c->ctcp, 1);

  rc = uvctx_with_cancel(w->root, &c->ctx);
  if (rc == 0) {
    rc = uvctx_with_value(c->ctx, &tag_key, tag, &c->vctx);
    if (rc != 0)
      free(tag);
  } else {
    free(tag);
  }
  if (rc == 0) {
    if (c->cfg->max_lifetime_ms > 0)
      rc = uvctx_with_timeout_cause(c->vctx, c->cfg->max_lifetime_ms,
                                    UV_ETIMEDOUT, "lifetime", &c->run);
    else
      c->run = c->vctx;
  }
  if (rc != 0) {
    conn_end(c, "error", rc, "context");
    return;
  }
  conn_log(c, "open");

  rc = uvctx_stream_init_uv(&c->cs, (uv_stream_t*)&c->ctcp);
  if (rc != 0) {
    conn_end(c, "error", rc, NULL);
    return;
  }
  c->flags |= F_CS;
  c->cs.data = c;
  c->a = &c->cs;

  if (c->cfg->server_tls == NULL) {
    start_connect(c);
    return;
  }
  rc = uvctx_tls_init(&c->ctls, c->cfg->server_tls, &c->cs, NULL);
  if (rc != 0) {
    conn_end(c, "error", rc, "TLS init");
    return;
  }
  c->flags |= F_CTLS;
  c->ctls.stream.data = c;
  c->a = &c->ctls.stream;
  c->phase = "handshake";
  rc = uvctx_with_timeout_cause(c->run, c->cfg->handshake_timeout_ms,
                                UV_ETIMEDOUT, "handshake-timeout", &c->step);
  if (rc != 0) {
    conn_end(c, "error", rc, NULL);
    return;
  }
  rc = uvctx_tls_handshake(&c->ctls, c->step, on_client_handshake);
  if (rc != 0)
    conn_end(c, "tls-error", rc, "handshake start");
}
