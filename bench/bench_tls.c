/* TLS benchmarks, each beside its bare OpenSSL peer in the same run:
 * - full TLS 1.3 handshakes per second through the shim (client and server
 *   sessions on one loop), against a loop of bare memory-BIO handshakes
 *   with the very same SSL_CTXs;
 * - bulk throughput through uvctx_copy (a generator stream copied into a
 *   TLS client session, decrypted by a TLS server session on the same
 *   loop) for ChaCha20-Poly1305 and AES-128-GCM, against a bare memory-BIO
 *   encrypt-copy-decrypt pipe.
 * Each figure is taken over an in-process pipe (the plain names: the shim
 * and the loop without the kernel, as the peer runs without it) and over a
 * socketpair (names ending in _socketpair: the kernel's costs included).
 * Prints `bench=... unit=... value=... peer=... peer_value=... ratio=...`.
 * Each figure runs in ROUNDS alternating rounds of ours and the peer's
 * (so that load from other processes hits both alike) and reports the
 * medians of the per-round rates and of the per-round ratios.
 * --quick: tiny counts (the CTest smoke run); --only=handshake|chacha|aes
 * runs one figure (for profiling). Certificates are made in memory. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "uvctx.h"
#include "uvctx/copy.h"
#include "uvctx/stream_impl.h"
#include "uvctx/tls.h"

static int quick;

/* ---- an in-memory certificate -------------------------------------------- */

static char cert_pem[4096];
static char key_pem[4096];
static size_t cert_len;
static size_t key_len;

static void make_cert(void) {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_NAME* n;
  X509_EXTENSION* san;
  BIO* b;
  if (k == NULL || x == NULL)
    abort();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, k);
  n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                             (const unsigned char*)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, n);
  /* Clients match names against DNS SANs only, never the CN. */
  san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:localhost");
  if (san == NULL || !X509_add_ext(x, san, -1))
    abort();
  X509_EXTENSION_free(san);
  if (!X509_sign(x, k, EVP_sha256()))
    abort();
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  cert_len = (size_t)BIO_read(b, cert_pem, sizeof(cert_pem));
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
  key_len = (size_t)BIO_read(b, key_pem, sizeof(key_pem));
  BIO_free(b);
  X509_free(x);
  EVP_PKEY_free(k);
}

static void configs(const char* suite, uvctx_tls_config_t** cli,
                    uvctx_tls_config_t** srv) {
  if (uvctx_tls_config_new(UVCTX_TLS_SERVER, srv) ||
      uvctx_tls_config_cert_mem(*srv, cert_pem, cert_len, key_pem, key_len) ||
      uvctx_tls_config_new(UVCTX_TLS_CLIENT, cli) ||
      uvctx_tls_config_ca_mem(*cli, cert_pem, cert_len) ||
      uvctx_tls_config_versions(*cli, UVCTX_TLS_1_3, UVCTX_TLS_1_3) ||
      (suite && uvctx_tls_config_ciphers(*cli, NULL, suite))) {
    fprintf(stderr, "config failed\n");
    exit(1);
  }
}

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

#define ROUNDS 7

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static double median(const double* v, int n) {
  double tmp[ROUNDS];
  memcpy(tmp, v, sizeof(*v) * (size_t)n);
  qsort(tmp, (size_t)n, sizeof(*tmp), cmp_double);
  return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void report(const char* bench, const char* unit, const double* v,
                   const char* peer, const double* pv, int n) {
  double r[ROUNDS];
  int i;
  for (i = 0; i < n; i++)
    r[i] = pv[i] > 0 ? v[i] / pv[i] : 0.0;
  printf("bench=%s unit=%s value=%.1f peer=%s peer_value=%.1f ratio=%.3f "
         "rounds=%d\n",
         bench, unit, median(v, n), peer, median(pv, n), median(r, n), n);
  fflush(stdout);
}

/* ---- bare OpenSSL -------------------------------------------------------- */

typedef struct {
  SSL* c;
  SSL* s;
} bare_t;

static void bare_new(bare_t* b, SSL_CTX* cctx, SSL_CTX* sctx) {
  b->c = SSL_new(cctx);
  b->s = SSL_new(sctx);
  SSL_set_bio(b->c, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  SSL_set_bio(b->s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  BIO_set_mem_eof_return(SSL_get_rbio(b->c), -1);
  BIO_set_mem_eof_return(SSL_get_rbio(b->s), -1);
  SSL_set_connect_state(b->c);
  SSL_set_accept_state(b->s);
  SSL_set_tlsext_host_name(b->c, "localhost");
  SSL_set1_host(b->c, "localhost");
}

/* Moves what `from` wrote into what `to` reads. */
static void bare_move(SSL* from, SSL* to, char* buf, size_t cap) {
  int n;
  while ((n = BIO_read(SSL_get_wbio(from), buf, (int)cap)) > 0)
    BIO_write(SSL_get_rbio(to), buf, n);
}

static double bare_handshakes(SSL_CTX* cctx, SSL_CTX* sctx, int n) {
  static char buf[65536];
  double t0 = now_s();
  int i;
  for (i = 0; i < n; i++) {
    bare_t b;
    int cd = 0, sd = 0;
    bare_new(&b, cctx, sctx);
    while (!cd || !sd) {
      if (!cd)
        cd = SSL_do_handshake(b.c) == 1;
      bare_move(b.c, b.s, buf, sizeof(buf));
      if (!sd)
        sd = SSL_do_handshake(b.s) == 1;
      bare_move(b.s, b.c, buf, sizeof(buf));
      if (ERR_peek_error()) {
        fprintf(stderr, "bare handshake failed\n");
        exit(1);
      }
    }
    SSL_free(b.c);
    SSL_free(b.s);
  }
  return n / (now_s() - t0);
}

static double bare_bulk(SSL_CTX* cctx, SSL_CTX* sctx, uint64_t total) {
  static char buf[65536];
  static char plain[65536];
  static char out[65536];
  bare_t b;
  uint64_t got = 0;
  double t0;
  bare_new(&b, cctx, sctx);
  for (;;) {
    int cd = SSL_do_handshake(b.c) == 1;
    int sd;
    bare_move(b.c, b.s, buf, sizeof(buf));
    sd = SSL_do_handshake(b.s) == 1;
    bare_move(b.s, b.c, buf, sizeof(buf));
    if (cd && sd)
      break;
  }
  memset(plain, 'x', sizeof(plain));
  t0 = now_s();
  while (got < total) {
    int n;
    SSL_write(b.c, plain, sizeof(plain));
    bare_move(b.c, b.s, buf, sizeof(buf));
    while ((n = SSL_read(b.s, out, sizeof(out))) > 0)
      got += (uint64_t)n;
  }
  t0 = now_s() - t0;
  SSL_free(b.c);
  SSL_free(b.s);
  return (double)got / t0 / 1e6;
}

/* ---- an in-process transport --------------------------------------------- */

/* Two ends of an in-memory pipe, each a uvctx stream: a connection as the
 * shim sees it, without the kernel's socket costs, as the bare loop's
 * memory BIOs are. It behaves as a socketpair does, seen from libuv:
 * - each end has an inbound buffer of MEND_CAP bytes (a socket buffer);
 *   a write moves as much as fits at once and the rest as the reader makes
 *   room; it completes, on a later loop turn, once all of it has moved;
 * - each loop turn an end delivers what it has, once, into the reader's
 *   buffer (one copy in, one copy out: what BIO_read and BIO_write cost
 *   the bare loop);
 * - shutdown is the peer's EOF once the writes before it have moved; close
 *   cancels the closing end's writes and gives the peer EOF after what
 *   had moved.
 * One idle handle (the "wire") runs the ends that have work. */
#define MEND_CAP (256 * 1024)

typedef struct mend_s {
  uvctx_stream_t s;
  struct mend_s* peer;
  char* in; /* MEND_CAP bytes; in[in_off, in_len) not delivered yet */
  size_t in_off;
  size_t in_len;
  /* Writes not yet moved whole: the first has moved `w_buf` bufs and
   * `w_off` bytes of the next. Bufs are copied into impl_.slot[0]. */
  uvctx_write_t* wq_head;
  uvctx_write_t** wq_tail;
  uvctx_write_t* done_head; /* moved, to complete on the next turn */
  uvctx_write_t** done_tail;
  unsigned w_buf;
  size_t w_off;
  uvctx_shutdown_t* sd;
  int reading;
  int closing;
  int closed;
  int eof; /* the peer shut down or closed: EOF after what is in `in` */
  int eof_sent;
  int queued; /* on the wire's list */
  struct mend_s* next;
} mend_t;

static uv_idle_t wire;
static mend_t* wire_head;

static void wire_cb(uv_idle_t* h);

static void mend_kick(mend_t* e) {
  if (e->closed)
    return;
  if (!e->queued) {
    e->queued = 1;
    e->next = wire_head;
    wire_head = e;
  }
  uv_idle_start(&wire, wire_cb);
}

/* Moves queued writes of `e` into the peer's inbound buffer while it has
 * room. */
static void mend_move(mend_t* e) {
  mend_t* p = e->peer;
  uvctx_write_t* w;

  while ((w = e->wq_head) != NULL) {
    const uv_buf_t* b = w->impl_.slot[0].p;
    unsigned nb = (unsigned)w->impl_.slot[1].u;
    while (e->w_buf < nb) {
      size_t n = b[e->w_buf].len - e->w_off;
      size_t room;
      if (p->closing) {
        n = 0; /* a closed peer discards: the write still completes */
      } else {
        if (p->in_off > 0 && p->in_len + n > MEND_CAP) {
          memmove(p->in, p->in + p->in_off, p->in_len - p->in_off);
          p->in_len -= p->in_off;
          p->in_off = 0;
        }
        room = MEND_CAP - p->in_len;
        if (n > room)
          n = room;
        memcpy(p->in + p->in_len, b[e->w_buf].base + e->w_off, n);
        p->in_len += n;
        if (n > 0)
          mend_kick(p);
      }
      e->w_off += n;
      if (e->w_off < b[e->w_buf].len && !p->closing)
        return; /* the peer is full */
      e->w_buf++;
      e->w_off = 0;
    }
    e->wq_head = w->next_;
    if (e->wq_head == NULL)
      e->wq_tail = &e->wq_head;
    e->w_buf = 0;
    free(w->impl_.slot[0].p);
    w->impl_.slot[0].p = NULL;
    w->next_ = NULL;
    *e->done_tail = w;
    e->done_tail = &w->next_;
    mend_kick(e);
  }
}

static int mend_read_start(uvctx_stream_t* s) {
  mend_t* e = (mend_t*)s;
  e->reading = 1;
  mend_kick(e);
  return 0;
}

static int mend_read_stop(uvctx_stream_t* s) {
  ((mend_t*)s)->reading = 0;
  return 0;
}

static int mend_write(uvctx_stream_t* s, uvctx_write_t* req,
                      const uv_buf_t bufs[], unsigned n) {
  mend_t* e = (mend_t*)s;
  uv_buf_t* copy = malloc(sizeof(*copy) * (n ? n : 1));
  if (copy == NULL)
    return UV_ENOMEM;
  memcpy(copy, bufs, sizeof(*copy) * n);
  req->impl_.slot[0].p = copy;
  req->impl_.slot[1].u = n;
  req->next_ = NULL;
  *e->wq_tail = req;
  e->wq_tail = &req->next_;
  mend_move(e);
  return 0;
}

static int mend_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* r) {
  mend_t* e = (mend_t*)s;
  e->sd = r;
  mend_kick(e);
  return 0;
}

static void mend_close(uvctx_stream_t* s) {
  mend_t* e = (mend_t*)s;
  e->closing = 1;
  e->reading = 0;
  e->peer->eof = 1;
  mend_kick(e);
  mend_kick(e->peer);
}

static size_t mend_wqs(const uvctx_stream_t* s) {
  const mend_t* e = (const mend_t*)s;
  size_t n = 0;
  const uvctx_write_t* w;
  for (w = e->wq_head; w != NULL; w = w->next_)
    n += uvctx_write_size(w);
  return n;
}

static const uvctx_stream_ops_t mend_ops = {
    "mem",         mend_read_start, mend_read_stop, mend_write,
    mend_shutdown, mend_close,      mend_wqs,       NULL};

/* One end's turn. */
static void mend_pump(mend_t* e) {
  uvctx_write_t* w;
  uv_buf_t b;

  if (e->closing) {
    while ((w = e->wq_head) != NULL) {
      e->wq_head = w->next_;
      free(w->impl_.slot[0].p);
      w->impl_.slot[0].p = (void*)1; /* cancelled */
      w->next_ = NULL;
      *e->done_tail = w;
      e->done_tail = &w->next_;
    }
    e->wq_tail = &e->wq_head;
    e->w_buf = 0;
    e->w_off = 0;
  } else {
    mend_move(e);
  }
  while ((w = e->done_head) != NULL) {
    int status = w->impl_.slot[0].p == (void*)1 ? UV_ECANCELED : 0;
    e->done_head = w->next_;
    if (e->done_head == NULL)
      e->done_tail = &e->done_head;
    uvctx_stream_write_done(w, status);
  }
  if (e->sd != NULL && (e->wq_head == NULL || e->closing)) {
    uvctx_shutdown_t* sd = e->sd;
    e->sd = NULL;
    if (!e->closing) {
      e->peer->eof = 1;
      mend_kick(e->peer);
    }
    uvctx_stream_shutdown_done(sd, e->closing ? UV_ECANCELED : 0);
  }
  if (e->closing) {
    if (!e->closed) {
      e->closed = 1;
      uvctx_stream_close_done(&e->s);
    }
    return;
  }
  if (e->reading && e->in_len > e->in_off) {
    size_t n = e->in_len - e->in_off;
    b = uv_buf_init(NULL, 0);
    uvctx_stream_emit_alloc(&e->s, 65536, &b);
    if (b.len == 0) {
      uvctx_stream_emit_read(&e->s, UV_ENOBUFS, &b);
      return;
    }
    if (n > b.len)
      n = b.len;
    memcpy(b.base, e->in + e->in_off, n);
    e->in_off += n;
    if (e->in_off == e->in_len)
      e->in_off = e->in_len = 0;
    mend_kick(e->peer); /* room for its writes */
    if (e->in_len > e->in_off)
      mend_kick(e);
    uvctx_stream_emit_read(&e->s, (ssize_t)n, &b);
  } else if (e->reading && e->eof && !e->eof_sent) {
    e->eof_sent = 1;
    b = uv_buf_init(NULL, 0);
    uvctx_stream_emit_read(&e->s, UV_EOF, &b);
  }
}

static void wire_cb(uv_idle_t* h) {
  mend_t* list = wire_head;
  wire_head = NULL;
  while (list != NULL) {
    mend_t* e = list;
    list = e->next;
    e->queued = 0;
    mend_pump(e);
  }
  if (wire_head == NULL)
    uv_idle_stop(h);
}

/* ---- through the shim ---------------------------------------------------- */

typedef struct {
  uv_pipe_t pipe[2];
  uvctx_stream_t tr[2];
  mend_t mem[2];
  uvctx_tls_t tls[2];
  int done;
  int closed;
  int failed;
  char in[2][MEND_CAP]; /* last: conn_open() clears what comes before */
} conn_t;

static uv_loop_t loop;
static uvctx_loop_t* lb;
static int in_memory; /* conn_open() over the in-process transport */

static void conn_close_cb(uvctx_stream_t* s) {
  conn_t* c = s->data;
  c->closed++;
}

static void conn_hs_cb(uvctx_tls_t* tls, int status) {
  conn_t* c = tls->stream.data;
  if (status != 0) {
    fprintf(stderr, "handshake: %s (%s)\n", uv_strerror(status),
            uvctx_tls_reason(tls));
    c->failed = 1;
  }
  c->done++;
}

static void conn_open(conn_t* c, uvctx_tls_config_t* ccfg,
                      uvctx_tls_config_t* scfg) {
  int fds[2];
  int i;
  uvctx_stream_t* tr[2];
  memset(c, 0, offsetof(conn_t, in));
  if (in_memory) {
    for (i = 0; i < 2; i++) {
      mend_t* e = &c->mem[i];
      uvctx_stream_init(&e->s, &mend_ops, &loop);
      e->peer = &c->mem[!i];
      e->in = c->in[i];
      e->wq_tail = &e->wq_head;
      e->done_tail = &e->done_head;
      tr[i] = &e->s;
    }
  } else {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
      abort();
    for (i = 0; i < 2; i++) {
      uv_pipe_init(&loop, &c->pipe[i], 0);
      uv_pipe_open(&c->pipe[i], fds[i]);
      uvctx_stream_init_uv(&c->tr[i], (uv_stream_t*)&c->pipe[i]);
      tr[i] = &c->tr[i];
    }
  }
  if (uvctx_tls_init(&c->tls[0], ccfg, tr[0], "localhost") ||
      uvctx_tls_init(&c->tls[1], scfg, tr[1], NULL))
    abort();
  c->tls[0].stream.data = c->tls[1].stream.data = c;
}

static void conn_close(conn_t* c) {
  uvctx_stream_close(&c->tls[0].stream, conn_close_cb);
  uvctx_stream_close(&c->tls[1].stream, conn_close_cb);
  while (c->closed < 2)
    uv_run(&loop, UV_RUN_ONCE);
}

/* Handshakes run back to back, 8 at a time, as a server would see them. */
static double shim_handshakes(uvctx_tls_config_t* ccfg,
                              uvctx_tls_config_t* scfg, int n) {
  enum { PAR = 8 };
  static conn_t c[PAR];
  uvctx_t* bg = uvctx_background(lb);
  double t0 = now_s();
  int i, k;
  for (i = 0; i < n; i += PAR) {
    int m = n - i < PAR ? n - i : PAR;
    for (k = 0; k < m; k++) {
      conn_open(&c[k], ccfg, scfg);
      uvctx_tls_handshake(&c[k].tls[1], bg, conn_hs_cb);
      uvctx_tls_handshake(&c[k].tls[0], bg, conn_hs_cb);
    }
    for (k = 0; k < m; k++) {
      while (c[k].done < 2)
        uv_run(&loop, UV_RUN_ONCE);
      if (c[k].failed)
        exit(1);
      conn_close(&c[k]);
    }
  }
  return n / (now_s() - t0);
}

/* A stream that produces `left` bytes as fast as it is read. */
typedef struct {
  uvctx_stream_t s;
  uv_idle_t idle;
  uint64_t left;
  int reading;
} gen_t;

static void gen_idle_cb(uv_idle_t* h) {
  gen_t* g = h->data;
  uv_buf_t b;
  int i;
  for (i = 0; i < 4 && g->reading; i++) {
    size_t n;
    if (g->left == 0) {
      b = uv_buf_init(NULL, 0);
      uv_idle_stop(h);
      uvctx_stream_emit_read(&g->s, UV_EOF, &b);
      return;
    }
    uvctx_stream_emit_alloc(&g->s, 65536, &b);
    n = b.len < g->left ? b.len : (size_t)g->left;
    memset(b.base, 'x', n);
    g->left -= n;
    uvctx_stream_emit_read(&g->s, (ssize_t)n, &b);
  }
  if (!g->reading)
    uv_idle_stop(h);
}

static int gen_read_start(uvctx_stream_t* s) {
  gen_t* g = (gen_t*)s;
  g->reading = 1;
  return uv_idle_start(&g->idle, gen_idle_cb);
}

static int gen_read_stop(uvctx_stream_t* s) {
  ((gen_t*)s)->reading = 0;
  return 0;
}

static int gen_write(uvctx_stream_t* s, uvctx_write_t* r, const uv_buf_t b[],
                     unsigned n) {
  (void)s, (void)r, (void)b, (void)n;
  return UV_ENOTSUP;
}

static int gen_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* r) {
  (void)s, (void)r;
  return UV_ENOTSUP;
}

static void gen_close_cb(uv_handle_t* h) {
  uvctx_stream_close_done(&((gen_t*)h->data)->s);
}

static void gen_close(uvctx_stream_t* s) {
  uv_close((uv_handle_t*)&((gen_t*)s)->idle, gen_close_cb);
}

static size_t gen_wqs(const uvctx_stream_t* s) {
  (void)s;
  return 0;
}

static const uvctx_stream_ops_t gen_ops = {
    "gen",        gen_read_start, gen_read_stop, gen_write,
    gen_shutdown, gen_close,      gen_wqs,       NULL};

static uint64_t sink_bytes;
static int sink_eof;
static char sink_buf[65536];
static int copy_status = 1;

static void sink_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* b) {
  (void)s, (void)sug;
  *b = uv_buf_init(sink_buf, sizeof(sink_buf));
}

static void sink_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s, (void)b;
  if (n > 0)
    sink_bytes += (uint64_t)n;
  else if (n < 0)
    sink_eof = (int)n;
}

static void copy_cb(uvctx_copy_t* c, int status, uint64_t bytes) {
  (void)c, (void)bytes;
  copy_status = status;
}

static void gen_close_done(uvctx_stream_t* s) {
  (void)s;
}

static double shim_bulk(uvctx_tls_config_t* ccfg, uvctx_tls_config_t* scfg,
                        uint64_t total) {
  static conn_t c;
  gen_t g;
  uvctx_copy_t cp;
  double t0;

  conn_open(&c, ccfg, scfg);
  uvctx_tls_handshake(&c.tls[1], NULL, conn_hs_cb);
  uvctx_tls_handshake(&c.tls[0], NULL, conn_hs_cb);
  while (c.done < 2)
    uv_run(&loop, UV_RUN_ONCE);
  memset(&g, 0, sizeof(g));
  uvctx_stream_init(&g.s, &gen_ops, &loop);
  uv_idle_init(&loop, &g.idle);
  g.idle.data = &g;
  g.left = total;
  sink_bytes = 0;
  sink_eof = 0;
  copy_status = 1;
  uvctx_stream_read_start(&c.tls[1].stream, sink_alloc, sink_read);
  t0 = now_s();
  if (uvctx_copy_start(&cp, uvctx_background(lb), &g.s, &c.tls[0].stream, NULL,
                       copy_cb) != 0)
    abort();
  while (sink_eof == 0)
    if (uv_run(&loop, UV_RUN_ONCE) == 0)
      break;
  t0 = now_s() - t0;
  if (sink_bytes != total || sink_eof != UV_EOF) {
    fprintf(stderr, "bulk: got %llu of %llu (%s)\n",
            (unsigned long long)sink_bytes, (unsigned long long)total,
            uv_err_name(sink_eof));
    exit(1);
  }
  while (copy_status == 1)
    uv_run(&loop, UV_RUN_ONCE);
  uvctx_stream_close(&g.s, gen_close_done);
  conn_close(&c);
  return (double)total / t0 / 1e6;
}

int main(int argc, char** argv) {
  uvctx_tls_config_t* ccfg;
  uvctx_tls_config_t* scfg;
  static const struct {
    const char* name;
    const char* suite;
  } suites[] = {{"chacha20_poly1305", "TLS_CHACHA20_POLY1305_SHA256"},
                {"aes_128_gcm", "TLS_AES_128_GCM_SHA256"}};
  const char* only = NULL;
  int n_hs;
  uint64_t bulk;
  size_t i;
  int a;
  int k;
  int rounds;
  int t;
  static const char* const sfx[2] = {"", "_socketpair"};
  double ours[ROUNDS];
  double peer[ROUNDS];

  for (a = 1; a < argc; a++) {
    if (strcmp(argv[a], "--quick") == 0) {
      quick = 1;
    } else if (strncmp(argv[a], "--only=", 7) == 0) {
      only = argv[a] + 7;
    } else {
      fprintf(stderr, "usage: %s [--quick] [--only=handshake|chacha|aes]\n",
              argv[0]);
      return 2;
    }
  }
  rounds = quick ? 1 : ROUNDS;
  n_hs = quick ? 16 : 400; /* per round */
  bulk = quick ? (4u << 20) : (192u << 20);
  make_cert();
  uv_loop_init(&loop);
  uvctx_loop_init(&loop, &lb);
  uv_idle_init(&loop, &wire);

  /* Both handshake figures first, so that both meet the allocator as a
   * fresh process has it: the bulk runs free large buffers, after which
   * glibc stops trimming its heap, which makes later handshakes faster. */
  configs(NULL, &ccfg, &scfg);
  for (t = 0; t < 2 && (only == NULL || strcmp(only, "handshake") == 0); t++) {
    SSL_CTX* cc = uvctx_tls_config_ssl_ctx(ccfg);
    SSL_CTX* sc = uvctx_tls_config_ssl_ctx(scfg);
    char name[64];
    in_memory = t == 0;
    bare_handshakes(cc, sc, n_hs / 4 + 1); /* warm-up */
    shim_handshakes(ccfg, scfg, n_hs / 4 + 1);
    for (k = 0; k < rounds; k++) {
      ours[k] = shim_handshakes(ccfg, scfg, n_hs);
      peer[k] = bare_handshakes(cc, sc, n_hs);
    }
    snprintf(name, sizeof(name), "tls13_handshakes%s", sfx[t]);
    report(name, "handshakes/s", ours, "openssl_membio", peer, rounds);
  }
  uvctx_tls_config_unref(ccfg);
  uvctx_tls_config_unref(scfg);

  for (t = 0; t < 2; t++) {
    in_memory = t == 0;
    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
      char name[64];
      if (only != NULL && strncmp(suites[i].name, only, strlen(only)) != 0)
        continue;
      configs(suites[i].suite, &ccfg, &scfg);
      for (k = 0; k < rounds; k++) {
        ours[k] = shim_bulk(ccfg, scfg, bulk);
        peer[k] = bare_bulk(uvctx_tls_config_ssl_ctx(ccfg),
                            uvctx_tls_config_ssl_ctx(scfg), bulk);
      }
      snprintf(name, sizeof(name), "tls13_copy_%s%s", suites[i].name, sfx[t]);
      report(name, "MB/s", ours, "openssl_membio_pipe", peer, rounds);
      uvctx_tls_config_unref(ccfg);
      uvctx_tls_config_unref(scfg);
    }
  }
  if (uvctx_loop_close(lb) != 0) {
    uvctx_loop_dump(lb, stderr);
    return 1;
  }
  uv_close((uv_handle_t*)&wire, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  return 0;
}
