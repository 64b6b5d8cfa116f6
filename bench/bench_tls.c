/* TLS benchmarks, each beside its bare OpenSSL peer in the same run:
 * - full TLS 1.3 handshakes per second through the shim (client and server
 *   sessions on one loop, over a socketpair each), against a loop of bare
 *   memory-BIO handshakes with the very same SSL_CTXs;
 * - bulk throughput through uvctx_copy (a generator stream copied into a
 *   TLS client session, decrypted by a TLS server session on the same
 *   loop) for ChaCha20-Poly1305 and AES-128-GCM, against a bare memory-BIO
 *   encrypt-copy-decrypt pipe.
 * Prints `bench=... unit=... value=... peer=... peer_value=... ratio=...`.
 * Each figure runs in ROUNDS alternating rounds of ours and the peer's
 * (so that load from other processes hits both alike) and reports the
 * medians of the per-round rates and of the per-round ratios.
 * --quick: tiny counts (the CTest smoke run); --only=handshake|chacha|aes
 * runs one figure (for profiling). Certificates are made in memory. */
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

#include "uvctx.h"
#include "uvctx/copy.h"
#include "uvctx/tls.h"

static int quick;

/* ---- an in-memory certificate ------------------------------------------ */

static char cert_pem[4096];
static char key_pem[4096];
static size_t cert_len;
static size_t key_len;

static void make_cert(void) {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_NAME* n;
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

/* ---- bare OpenSSL ---------------------------------------------------------- */

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

/* ---- through the shim ---------------------------------------------------- */

typedef struct {
  uv_pipe_t pipe[2];
  uvctx_stream_t tr[2];
  uvctx_tls_t tls[2];
  int done;
  int closed;
  int failed;
} conn_t;

static uv_loop_t loop;
static uvctx_loop_t* lb;

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
  memset(c, 0, sizeof(*c));
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
    abort();
  for (i = 0; i < 2; i++) {
    uv_pipe_init(&loop, &c->pipe[i], 0);
    uv_pipe_open(&c->pipe[i], fds[i]);
    uvctx_stream_init_uv(&c->tr[i], (uv_stream_t*)&c->pipe[i]);
  }
  if (uvctx_tls_init(&c->tls[0], ccfg, &c->tr[0], "localhost") ||
      uvctx_tls_init(&c->tls[1], scfg, &c->tr[1], NULL))
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
  conn_t c[PAR];
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
    "gen", gen_read_start, gen_read_stop, gen_write, gen_shutdown,
    gen_close, gen_wqs};

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
  conn_t c;
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
  if (uvctx_copy_start(&cp, uvctx_background(lb), &g.s, &c.tls[0].stream,
                       NULL, copy_cb) != 0)
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

  configs(NULL, &ccfg, &scfg);
  if (only == NULL || strcmp(only, "handshake") == 0) {
    SSL_CTX* cc = uvctx_tls_config_ssl_ctx(ccfg);
    SSL_CTX* sc = uvctx_tls_config_ssl_ctx(scfg);
    bare_handshakes(cc, sc, n_hs / 4 + 1); /* warm-up */
    shim_handshakes(ccfg, scfg, n_hs / 4 + 1);
    for (k = 0; k < rounds; k++) {
      ours[k] = shim_handshakes(ccfg, scfg, n_hs);
      peer[k] = bare_handshakes(cc, sc, n_hs);
    }
    report("tls13_handshakes", "handshakes/s", ours, "openssl_membio", peer,
           rounds);
  }
  uvctx_tls_config_unref(ccfg);
  uvctx_tls_config_unref(scfg);

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
    snprintf(name, sizeof(name), "tls13_copy_%s", suites[i].name);
    report(name, "MB/s", ours, "openssl_membio_pipe", peer, rounds);
    uvctx_tls_config_unref(ccfg);
    uvctx_tls_config_unref(scfg);
  }
  if (uvctx_loop_close(lb) != 0) {
    uvctx_loop_dump(lb, stderr);
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  return 0;
}
