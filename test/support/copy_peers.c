/* copy_peers.c: the definitions behind copy_peers.h (see there). */
#include "copy_peers.h"

uint8_t cp_pattern(uint64_t i) {
  uint64_t x = ((i >> 3) + 1) * 0x9E3779B97F4A7C15ull;
  return (uint8_t)((x >> 56) ^ i);
}

void cp_fill(char* p, uint64_t off, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (char)cp_pattern(off + i);
}

int cp_closes_pending__;
void cp_on_close__(uv_handle_t* h) {
  (void)h;
  cp_closes_pending__--;
}

void cp_close_h(uv_handle_t* h) {
  if (h->loop == NULL || uv_is_closing(h))
    return;
  cp_closes_pending__++;
  uv_close(h, cp_on_close__);
}

void cp_close(cp_handle_t* x) {
  cp_close_h(&x->h);
}

void cp_wait_closed(void) {
  UVT_RUN_UNTIL(cp_closes_pending__ == 0);
}

void cp_on_conn__(uv_stream_t* l, int status) {
  cp_listener_t* L = l->data;
  ck_assert_int_eq(status, 0);
  ck_assert_ptr_nonnull(L->accept_into);
  ck_assert_int_eq(uv_tcp_init(l->loop, &L->accept_into->tcp), 0);
  ck_assert_int_eq(uv_accept(l, &L->accept_into->s), 0);
  L->accept_into = NULL;
  L->accepted++;
}

void cp_listen(cp_listener_t* L) {
  struct sockaddr_in any;
  int len = sizeof(L->addr);
  memset(L, 0, sizeof(*L));
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &L->tcp), 0);
  L->tcp.data = L;
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &any), 0);
  ck_assert_int_eq(uv_tcp_bind(&L->tcp, (const struct sockaddr*)&any, 0), 0);
  ck_assert_int_eq(uv_listen((uv_stream_t*)&L->tcp, 128, cp_on_conn__), 0);
  ck_assert_int_eq(
      uv_tcp_getsockname(&L->tcp, (struct sockaddr*)&L->addr, &len), 0);
}

void cp_unlisten(cp_listener_t* L) {
  cp_close_h((uv_handle_t*)&L->tcp);
}

int cp_connected__;
void cp_on_connect__(uv_connect_t* req, int status) {
  (void)req;
  ck_assert_int_eq(status, 0);
  cp_connected__++;
}

void cp_tcp_pair(cp_listener_t* L, cp_handle_t* client, cp_handle_t* server) {
  uv_connect_t req;
  int before = L->accepted;
  cp_connected__ = 0;
  L->accept_into = server;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &client->tcp), 0);
  ck_assert_int_eq(uv_tcp_connect(&req, &client->tcp,
                                  (const struct sockaddr*)&L->addr,
                                  cp_on_connect__),
                   0);
  UVT_RUN_UNTIL(cp_connected__ == 1 && L->accepted == before + 1);
}

void cp_unix_pair(cp_handle_t* a, cp_handle_t* b) {
  uv_os_sock_t fds[2];
  ck_assert_int_eq(uv_socketpair(SOCK_STREAM, 0, fds, 0, 0), 0);
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &a->pipe, 0), 0);
  ck_assert_int_eq(uv_pipe_open(&a->pipe, fds[0]), 0);
  ck_assert_int_eq(uv_pipe_init(uvt_loop, &b->pipe, 0), 0);
  ck_assert_int_eq(uv_pipe_open(&b->pipe, fds[1]), 0);
}

void cp_small_buffers(cp_handle_t* x, int bytes) {
  int v = bytes;
  uv_send_buffer_size(&x->h, &v);
  v = bytes;
  uv_recv_buffer_size(&x->h, &v);
}

/* A write of either kind completed. */
static void sender_done(cp_wreq_t* w, int status) {
  cp_sender_t* x = w->snd;
  x->inflight--;
  x->writes_done++;
  if (status == 0)
    x->written += w->len;
  else if (x->err == 0)
    x->err = status;
  free(w);
  cp_sender_pump(x);
}

void cp_sender_write_cb__(uv_write_t* r, int status) {
  sender_done(CP_CONTAINER_OF(r, cp_wreq_t, req), status);
}

void cp_sender_uwrite_cb__(uvctx_write_t* r, int status) {
  sender_done(CP_CONTAINER_OF(r, cp_wreq_t, ureq), status);
}

static void sender_shut(cp_sender_t* x, int status) {
  x->shut_state = 2;
  x->shut_status = status;
  if (x->on_shutdown != NULL)
    x->on_shutdown(x);
}

void cp_sender_shutdown_cb__(uv_shutdown_t* r, int status) {
  sender_shut(CP_CONTAINER_OF(r, cp_sender_t, shut_req), status);
}

void cp_sender_ushutdown_cb__(uvctx_shutdown_t* r, int status) {
  sender_shut(CP_CONTAINER_OF(r, cp_sender_t, ushut_req), status);
}

static int sender_closing(const cp_sender_t* x) {
  return x->st != NULL ? uvctx_stream_is_closing(x->st)
                       : uv_is_closing((const uv_handle_t*)x->s);
}

void cp_sender_pump(cp_sender_t* x) {
  while (x->err == 0 && !x->stopped && !sender_closing(x) &&
         x->inflight < x->max_inflight && x->queued < x->total) {
    uint64_t left = x->total - x->queued;
    size_t len = 1 + (size_t)uvt_rand_below(&x->rng, x->max_chunk);
    cp_wreq_t* w;
    uv_buf_t b;
    int rc;
    if (len > left)
      len = (size_t)left;
    w = malloc(sizeof(*w) + len);
    ck_assert_ptr_nonnull(w);
    w->snd = x;
    w->len = len;
    cp_fill(w->bytes, x->queued, len);
    b = uv_buf_init(w->bytes, (unsigned)len);
    if (x->st != NULL)
      rc = uvctx_stream_write(&w->ureq, x->st, &b, 1, cp_sender_uwrite_cb__);
    else
      rc = uv_write(&w->req, x->s, &b, 1, cp_sender_write_cb__);
    if (rc != 0) {
      free(w);
      x->err = rc;
      break;
    }
    x->inflight++;
    x->writes_started++;
    x->queued += len;
  }
  if (x->err == 0 && !x->stopped && x->shutdown_at_end && x->shut_state == 0 &&
      x->queued == x->total && x->inflight == 0 && !sender_closing(x)) {
    if (x->st != NULL)
      ck_assert_int_eq(
          uvctx_stream_shutdown(&x->ushut_req, x->st, cp_sender_ushutdown_cb__),
          0);
    else
      ck_assert_int_eq(uv_shutdown(&x->shut_req, x->s, cp_sender_shutdown_cb__),
                       0);
    x->shut_state = 1;
  }
}

static void sender_start(cp_sender_t* x, uv_stream_t* s, uvctx_stream_t* st,
                         uint64_t total, size_t max_chunk, uint64_t seed,
                         int shutdown_at_end) {
  memset(x, 0, sizeof(*x));
  x->s = s;
  x->st = st;
  x->total = total;
  x->max_chunk = max_chunk;
  x->max_inflight = 4;
  x->rng = seed;
  x->shutdown_at_end = shutdown_at_end;
  cp_sender_pump(x);
}

void cp_sender_start(cp_sender_t* x, uv_stream_t* s, uint64_t total,
                     size_t max_chunk, uint64_t seed, int shutdown_at_end) {
  sender_start(x, s, NULL, total, max_chunk, seed, shutdown_at_end);
}

void cp_sender_start_stream(cp_sender_t* x, uvctx_stream_t* s, uint64_t total,
                            size_t max_chunk, uint64_t seed,
                            int shutdown_at_end) {
  sender_start(x, NULL, s, total, max_chunk, seed, shutdown_at_end);
}

/* Sinks on uvctx streams, found from their stream. */
static cp_sink_t* stream_sinks[CP_STREAM_SINKS];

static cp_sink_t* sink_of(const uvctx_stream_t* s) {
  size_t i;
  for (i = 0; i < CP_STREAM_SINKS; i++)
    if (stream_sinks[i] != NULL && stream_sinks[i]->st == s)
      return stream_sinks[i];
  ck_abort_msg("no sink reads this stream");
  return NULL;
}

static void sink_buf(cp_sink_t* k, uv_buf_t* b) {
  size_t n = k->max_read;
  if (k->rng != 0)
    n = 1 + (size_t)uvt_rand_below(&k->rng, k->max_read);
  *b = uv_buf_init(k->buf, (unsigned)n);
}

void cp_sink_ualloc__(uvctx_stream_t* s, size_t sugg, uv_buf_t* b) {
  (void)sugg;
  sink_buf(sink_of(s), b);
}

void cp_sink_alloc__(uv_handle_t* h, size_t sugg, uv_buf_t* b) {
  (void)sugg;
  sink_buf(h->data, b);
}

void cp_verify(uint64_t* bad, uint64_t at, const char* p, size_t n) {
  size_t i;
  if (*bad != 0)
    return;
  for (i = 0; i < n; i++)
    if ((uint8_t)p[i] != cp_pattern(at + (uint64_t)i)) {
      *bad = at + (uint64_t)i + 1;
      return;
    }
}

/* A read of either kind: verify, count, apply the rate limit. */
static void sink_read(cp_sink_t* k, ssize_t n, const uv_buf_t* b) {
  if (n > 0) {
    cp_verify(&k->bad, k->received, b->base, (size_t)n);
    k->received += (uint64_t)n;
    if (k->limited) {
      k->budget -= n;
      if (k->budget <= 0)
        cp_sink_pause(k);
    }
    if (k->on_data != NULL)
      k->on_data(k);
    return;
  }
  if (n == 0)
    return;
  k->reading = 0;
  if (n == UV_EOF)
    k->eof = 1;
  else
    k->err = (int)n;
  if (k->on_end != NULL)
    k->on_end(k);
}

void cp_sink_read__(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
  sink_read(s->data, n, b);
}

void cp_sink_uread__(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  sink_read(sink_of(s), n, b);
}

void cp_sink_resume(cp_sink_t* k) {
  if (k->reading || k->eof || k->err)
    return;
  if (k->st != NULL) {
    if (uvctx_stream_is_closing(k->st))
      return;
    ck_assert_int_eq(
        uvctx_stream_read_start(k->st, cp_sink_ualloc__, cp_sink_uread__), 0);
  } else {
    if (uv_is_closing((uv_handle_t*)k->s))
      return;
    ck_assert_int_eq(uv_read_start(k->s, cp_sink_alloc__, cp_sink_read__), 0);
  }
  k->reading = 1;
}

void cp_sink_pause(cp_sink_t* k) {
  if (!k->reading)
    return;
  if (k->st != NULL)
    uvctx_stream_read_stop(k->st);
  else
    uv_read_stop(k->s);
  k->reading = 0;
}

void cp_sink_tick__(uv_timer_t* t) {
  cp_sink_t* k = t->data;
  k->budget += k->per_tick;
  if (k->budget > k->per_tick)
    k->budget = k->per_tick;
  if (k->budget > 0)
    cp_sink_resume(k);
}

void cp_sink_init(cp_sink_t* k, uv_stream_t* s, size_t max_read, uint64_t seed,
                  int start) {
  memset(k, 0, sizeof(*k));
  k->s = s;
  k->max_read = max_read;
  k->rng = seed;
  k->buf = malloc(max_read);
  ck_assert_ptr_nonnull(k->buf);
  s->data = k;
  if (start)
    cp_sink_resume(k);
}

void cp_sink_init_stream(cp_sink_t* k, uvctx_stream_t* s, size_t max_read,
                         uint64_t seed, int start) {
  size_t i;
  memset(k, 0, sizeof(*k));
  k->st = s;
  k->max_read = max_read;
  k->rng = seed;
  k->buf = malloc(max_read);
  ck_assert_ptr_nonnull(k->buf);
  for (i = 0; i < CP_STREAM_SINKS && stream_sinks[i] != NULL; i++)
    ;
  ck_assert_uint_lt(i, CP_STREAM_SINKS);
  stream_sinks[i] = k;
  if (start)
    cp_sink_resume(k);
}

void cp_sink_limit(cp_sink_t* k, uint64_t bytes_per_sec) {
  k->limited = 1;
  k->per_tick = (int64_t)(bytes_per_sec / 100);
  k->budget = k->per_tick;
  ck_assert_int_eq(uv_timer_init(uvt_loop, &k->timer), 0);
  k->timer.data = k;
  ck_assert_int_eq(uv_timer_start(&k->timer, cp_sink_tick__, 10, 10), 0);
}

void cp_sink_free(cp_sink_t* k) {
  size_t i;
  if (k->limited)
    cp_close_h((uv_handle_t*)&k->timer);
  free(k->buf);
  k->buf = NULL;
  for (i = 0; i < CP_STREAM_SINKS; i++)
    if (stream_sinks[i] == k)
      stream_sinks[i] = NULL;
}
