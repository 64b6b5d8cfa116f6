/* tlsutil.c: the definitions behind tlsutil.h (see there). */
#include "tlsutil.h"

const char* tu_cert(const char* name) {
  static char buf[8][512];
  static int next;
  char* p = buf[next++ % 8];
  snprintf(p, 512, "%s/%s", UVCTX_TLS_CERT_DIR, name);
  return p;
}

uvctx_tls_config_t* tu_server_cfg_with(const char* cert, const char* key,
                                       int version) {
  uvctx_tls_config_t* c = NULL;
  ck_assert_int_eq(uvctx_tls_config_new(UVCTX_TLS_SERVER, &c), 0);
  ck_assert_msg(uvctx_tls_config_cert_file(c, tu_cert(cert), tu_cert(key)) == 0,
                "cert: %s", uvctx_tls_config_reason(c));
  if (version != 0)
    ck_assert_int_eq(uvctx_tls_config_versions(c, version, version), 0);
  return c;
}

uvctx_tls_config_t* tu_server_cfg(int version) {
  return tu_server_cfg_with("server.pem", "server.key", version);
}

uvctx_tls_config_t* tu_client_cfg(int version) {
  uvctx_tls_config_t* c = NULL;
  ck_assert_int_eq(uvctx_tls_config_new(UVCTX_TLS_CLIENT, &c), 0);
  ck_assert_msg(uvctx_tls_config_ca_file(c, tu_cert("ca.pem")) == 0, "ca: %s",
                uvctx_tls_config_reason(c));
  if (version != 0)
    ck_assert_int_eq(uvctx_tls_config_versions(c, version, version), 0);
  return c;
}

int tu_text_pattern;
unsigned char tu_pat(uint64_t i) {
  uint64_t z = i * 0x9e3779b97f4a7c15u;
  if (tu_text_pattern)
    return i % 64 == 63 ? '\n' : (unsigned char)('a' + (z >> 56) % 26);
  return (unsigned char)(z >> 56);
}

void tu_fill(char* p, uint64_t off, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (char)tu_pat(off + i);
}

int tu_check(const char* p, uint64_t off, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if ((unsigned char)p[i] != tu_pat(off + i))
      return 0;
  return 1;
}

void tu_mp_pump_cb(uv_idle_t* h);

void tu_mp_kick(tu_mpipe_t* p) {
  uv_idle_start(&p->pump, tu_mp_pump_cb);
}

tu_mend_t* tu_mend(const uvctx_stream_t* s) {
  return (tu_mend_t*)s;
}

int tu_mp_read_start(uvctx_stream_t* s) {
  tu_mend(s)->reading = 1;
  tu_mp_kick(tu_mend(s)->p);
  return 0;
}

int tu_mp_read_stop(uvctx_stream_t* s) {
  tu_mend(s)->reading = 0;
  return 0;
}

int tu_mp_write(uvctx_stream_t* s, uvctx_write_t* req, const uv_buf_t bufs[],
                unsigned nbufs) {
  tu_mend_t* e = tu_mend(s);
  tu_mend_t* peer = &e->p->end[!e->idx];
  unsigned i;

  if (!peer->closing) {
    size_t need = peer->in_len + uvctx_write_size(req);
    if (need > peer->in_cap) {
      peer->in_cap = need * 2;
      peer->in = realloc(peer->in, peer->in_cap);
      ck_assert_ptr_nonnull(peer->in);
    }
    for (i = 0; i < nbufs; i++) {
      memcpy(peer->in + peer->in_len, bufs[i].base, bufs[i].len);
      peer->in_len += bufs[i].len;
    }
  }
  req->next_ = NULL;
  *e->wq_tail = req;
  e->wq_tail = &req->next_;
  tu_mp_kick(e->p);
  return 0;
}

int tu_mp_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req) {
  tu_mend(s)->sd = req;
  tu_mp_kick(tu_mend(s)->p);
  return 0;
}

void tu_mp_close(uvctx_stream_t* s) {
  tu_mend_t* e = tu_mend(s);
  e->closing = 1;
  e->reading = 0;
  e->p->end[!e->idx].peer_closed = 1;
  tu_mp_kick(e->p);
}

size_t tu_mp_wqs(const uvctx_stream_t* s) {
  (void)s;
  return 0;
}

const uvctx_stream_ops_t tu_mp_ops = {
    "mem",          tu_mp_read_start, tu_mp_read_stop, tu_mp_write,
    tu_mp_shutdown, tu_mp_close,      tu_mp_wqs,       NULL};

int tu_mp_pump_end(tu_mpipe_t* p, tu_mend_t* e) {
  int did = 0;
  uvctx_write_t* w;
  uv_buf_t buf;

  while ((w = e->wq_head) != NULL) {
    e->wq_head = w->next_;
    if (e->wq_head == NULL)
      e->wq_tail = &e->wq_head;
    uvctx_stream_write_done(w, 0);
    did = 1;
  }
  if (e->sd != NULL) {
    uvctx_shutdown_t* sd = e->sd;
    e->sd = NULL;
    p->end[!e->idx].peer_shut = 1;
    uvctx_stream_shutdown_done(sd, 0);
    did = 1;
  }
  if (e->closing) {
    if (!e->close_done) {
      e->close_done = 1;
      uvctx_stream_close_done(&e->s);
      did = 1;
    }
    return did;
  }
  while (e->reading && !e->ended && !e->closing) {
    size_t avail = e->in_len - e->in_off;
    if (e->inject != 0) {
      int err = e->inject;
      e->ended = 1;
      buf = uv_buf_init(NULL, 0);
      uvctx_stream_emit_read(&e->s, err, &buf);
      return 1;
    }
    if (avail > 0 && !p->cut) {
      size_t n = avail;
      if (p->budget != SIZE_MAX && n > p->budget - p->moved)
        n = p->budget - p->moved;
      if (p->chunk != 0 && n > p->chunk)
        n = p->chunk;
      if (n == 0) {
        p->cut = 1;
        if (p->on_cut != NULL)
          p->on_cut(p);
        return 1;
      }
      buf = uv_buf_init(NULL, 0);
      uvctx_stream_emit_alloc(&e->s, 65536, &buf);
      if (buf.len == 0)
        return 1;
      if (n > buf.len)
        n = buf.len;
      memcpy(buf.base, e->in + e->in_off, n);
      e->in_off += n;
      p->moved += n;
      if (e->in_off == e->in_len)
        e->in_off = e->in_len = 0;
      uvctx_stream_emit_read(&e->s, (ssize_t)n, &buf);
      did = 1;
      continue;
    }
    if (e->peer_closed || (e->peer_shut && avail == 0)) {
      e->ended = 1;
      buf = uv_buf_init(NULL, 0);
      uvctx_stream_emit_read(&e->s, UV_EOF, &buf);
      return 1;
    }
    break;
  }
  return did;
}

void tu_mp_pump_cb(uv_idle_t* h) {
  tu_mpipe_t* p = h->data;
  int did = tu_mp_pump_end(p, &p->end[0]);
  did |= tu_mp_pump_end(p, &p->end[1]);
  if (!did)
    uv_idle_stop(h);
}

void tu_mp_init(tu_mpipe_t* p, uv_loop_t* loop, size_t budget) {
  int i;
  memset(p, 0, sizeof(*p));
  p->budget = budget;
  ck_assert_int_eq(uv_idle_init(loop, &p->pump), 0);
  p->pump.data = p;
  for (i = 0; i < 2; i++) {
    ck_assert_int_eq(uvctx_stream_init(&p->end[i].s, &tu_mp_ops, loop), 0);
    p->end[i].p = p;
    p->end[i].idx = i;
    p->end[i].wq_tail = &p->end[i].wq_head;
  }
}

void tu_mp_inject(tu_mpipe_t* p, int i, int err) {
  p->end[i].inject = err;
  tu_mp_kick(p);
}

void tu_mp_pump_close_cb(uv_handle_t* h) {
  tu_mpipe_t* p = h->data;
  p->pump_closed = 1;
}

void tu_mp_close_pump(tu_mpipe_t* p) {
  free(p->end[0].in);
  free(p->end[1].in);
  p->end[0].in = p->end[1].in = NULL;
  uv_close((uv_handle_t*)&p->pump, tu_mp_pump_close_cb);
}

void tu_ep_close_cb(uvctx_stream_t* s) {
  tu_ep_t* ep = s->data;
  ep->closed++;
}

void tu_ep_maybe_close(tu_ep_t* ep) {
  if (ep->auto_close && ep->sd_done && ep->rx_end != 0 && ep->writes == 0 &&
      !uvctx_stream_is_closing(&ep->tls.stream))
    uvctx_stream_close(&ep->tls.stream, tu_ep_close_cb);
}

void tu_ep_sd_cb(uvctx_shutdown_t* req, int status) {
  tu_ep_t* ep = req->data;
  ep->sd_status = status;
  ep->sd_done = 1;
  free(req);
  tu_ep_maybe_close(ep);
}

void tu_ep_shutdown(tu_ep_t* ep) {
  uvctx_shutdown_t* sd;
  int rc;
  if (ep->sd_started)
    return;
  ep->sd_started = 1;
  sd = calloc(1, sizeof(*sd));
  ck_assert_ptr_nonnull(sd);
  sd->data = ep;
  rc = uvctx_stream_shutdown(sd, &ep->tls.stream, tu_ep_sd_cb);
  if (rc != 0) {
    free(sd);
    ep->sd_status = rc;
    ep->sd_done = 1;
  }
}

void tu_ep_write_cb(uvctx_write_t* req, int status) {
  tu_wr_t* w = (tu_wr_t*)req;
  tu_ep_t* ep = w->ep;
  free(w);
  ep->writes--;
  if (status != 0 && ep->write_err == 0)
    ep->write_err = status;
  if (ep->mode == TU_ECHO && ep->writes == 0 &&
      (ep->rx_end == UV_EOF ||
       (ep->shut_after != 0 && ep->rx >= ep->shut_after)))
    tu_ep_shutdown(ep);
  tu_ep_maybe_close(ep);
}

int tu_ep_write(tu_ep_t* ep, const char* data, size_t len) {
  tu_wr_t* w = malloc(sizeof(*w) + len);
  uv_buf_t b;
  int rc;
  ck_assert_ptr_nonnull(w);
  w->ep = ep;
  w->len = len;
  memcpy(w->data, data, len);
  b = uv_buf_init(w->data, (unsigned)len);
  rc = uvctx_stream_write(&w->req, &ep->tls.stream, &b, 1, tu_ep_write_cb);
  if (rc != 0) {
    free(w);
    return rc;
  }
  ep->writes++;
  ep->tx += len;
  return 0;
}

void tu_ep_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* buf) {
  tu_ep_t* ep = s->data;
  (void)sug;
  *buf = uv_buf_init(ep->rbuf, sizeof(ep->rbuf));
}

void tu_ep_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  tu_ep_t* ep = s->data;
  if (n == 0)
    return;
  if (n < 0) {
    ep->rx_end = (int)n;
    if (n == UV_EOF && (ep->mode == TU_SEND || ep->writes == 0))
      tu_ep_shutdown(ep);
    if (n != UV_EOF && !uvctx_stream_is_closing(s))
      uvctx_stream_close(s, tu_ep_close_cb);
    tu_ep_maybe_close(ep);
    return;
  }
  if (ep->mode == TU_SEND && !tu_check(buf->base, ep->rx, (size_t)n))
    ep->rx_bad = 1;
  ep->rx += (uint64_t)n;
  if (ep->mode == TU_ECHO)
    ck_assert_int_eq(tu_ep_write(ep, buf->base, (size_t)n), 0);
  if (ep->mode == TU_SEND && ep->rx >= ep->send_len)
    tu_ep_shutdown(ep);
}

void tu_ep_send_all(tu_ep_t* ep) {
  char chunk[65536];
  while (ep->tx < ep->send_len) {
    size_t n = sizeof(chunk);
    if (n > ep->send_len - ep->tx)
      n = (size_t)(ep->send_len - ep->tx);
    tu_fill(chunk, ep->tx, n);
    ck_assert_int_eq(tu_ep_write(ep, chunk, n), 0);
  }
}

void tu_ep_hs_cb(uvctx_tls_t* tls, int status) {
  tu_ep_t* ep = tls->stream.data;
  ep->hs_calls++;
  ep->hs_status = status;
  if (status != 0) {
    snprintf(ep->reason, sizeof(ep->reason), "%s",
             uvctx_tls_reason(tls) ? uvctx_tls_reason(tls) : "");
    return;
  }
  ep->version = uvctx_tls_version(tls);
  snprintf(ep->alpn, sizeof(ep->alpn), "%s",
           uvctx_tls_alpn(tls) ? uvctx_tls_alpn(tls) : "");
  snprintf(ep->sni, sizeof(ep->sni), "%s",
           uvctx_tls_server_name(tls) ? uvctx_tls_server_name(tls) : "");
  snprintf(ep->cipher, sizeof(ep->cipher), "%s",
           uvctx_tls_cipher(tls) ? uvctx_tls_cipher(tls) : "");
  snprintf(ep->peer, sizeof(ep->peer), "%s",
           uvctx_tls_peer_subject(tls) ? uvctx_tls_peer_subject(tls) : "");
  if (ep->mode == TU_IDLE)
    return;
  ck_assert_int_eq(
      uvctx_stream_read_start(&ep->tls.stream, tu_ep_alloc, tu_ep_read), 0);
  if (ep->mode == TU_SEND)
    tu_ep_send_all(ep);
}

void tu_ep_init(tu_ep_t* ep, uvctx_tls_config_t* cfg, uvctx_stream_t* transport,
                const char* name, int mode) {
  ck_assert_int_eq(uvctx_tls_init(&ep->tls, cfg, transport, name), 0);
  ep->tls.stream.data = ep;
  ep->mode = mode;
  ep->auto_close = 1;
}

void tu_ep_start(tu_ep_t* ep, uvctx_t* ctx) {
  ck_assert_int_eq(uvctx_tls_handshake(&ep->tls, ctx, tu_ep_hs_cb), 0);
}

void tu_ep_close(tu_ep_t* ep) {
  if (!uvctx_stream_is_closing(&ep->tls.stream))
    uvctx_stream_close(&ep->tls.stream, tu_ep_close_cb);
}

int tu_eps_closed__(tu_ep_t* const* eps, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (!eps[i]->closed)
      return 0;
  return 1;
}

void tu_eps_close_all(tu_ep_t* const* eps, int n) {
  int i;
  for (i = 0; i < n; i++)
    tu_ep_close(eps[i]);
  UVT_RUN_UNTIL(tu_eps_closed__(eps, n));
}

int tu_listen(uv_loop_t* loop, uv_tcp_t* srv, uv_connection_cb cb) {
  struct sockaddr_in a;
  struct sockaddr_storage got;
  int len = sizeof(got);
  ck_assert_int_eq(uv_tcp_init(loop, srv), 0);
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &a), 0);
  ck_assert_int_eq(uv_tcp_bind(srv, (const struct sockaddr*)&a, 0), 0);
  ck_assert_int_eq(uv_listen((uv_stream_t*)srv, 64, cb), 0);
  ck_assert_int_eq(uv_tcp_getsockname(srv, (struct sockaddr*)&got, &len), 0);
  return ntohs(((struct sockaddr_in*)&got)->sin_port);
}

void tu_accept(uv_stream_t* srv, tu_ep_t* ep) {
  ck_assert_int_eq(uv_tcp_init(srv->loop, &ep->tcp), 0);
  ck_assert_int_eq(uv_accept(srv, (uv_stream_t*)&ep->tcp), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&ep->uvs, (uv_stream_t*)&ep->tcp), 0);
}
