/* The TLS shim against real peers on loopback: openssl s_client and
 * s_server, gnutls-cli and gnutls-serv, curl, Python's ssl module and
 * Node's tls, over TLS 1.2 and 1.3. Each exchange moves 1 MiB each way and
 * ends with close_notify in both directions. Peers run as child processes
 * (uv_spawn), bounded by a timer that kills them; a peer whose program is
 * missing is skipped with a printed reason. Also: a TLS 1.2 renegotiation
 * request (s_client's "R") is refused without harming another connection
 * on the same loop. */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "tlsutil.h"

#define MiB (1024 * 1024)
#define PEER_LEN MiB
#define PEER_TIMEOUT_MS 30000

#ifndef UVCTX_TLS_SCRIPT_DIR
#error "UVCTX_TLS_SCRIPT_DIR must point at test/tls"
#endif

static char workdir[256];
static char in_path[300];

static void peers_setup(void) {
  char* buf;
  FILE* f;
  uvt_setup();
  snprintf(workdir, sizeof(workdir), "%s/uvctx-tls-XXXXXX", uvt_tmpdir());
  ck_assert_ptr_nonnull(mkdtemp(workdir));
  snprintf(in_path, sizeof(in_path), "%s/in.bin", workdir);
  buf = malloc(PEER_LEN);
  ck_assert_ptr_nonnull(buf);
  tu_fill(buf, 0, PEER_LEN);
  f = fopen(in_path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(buf, 1, PEER_LEN, f), PEER_LEN);
  fclose(f);
  free(buf);
}

static void peers_teardown(void) {
  char cmd[512];
  ck_assert_uint_eq(uvctx__tls_live_ssl(), 0);
  uvt_teardown();
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", workdir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", workdir);
}

/* Is `prog` on PATH? */
static int have(const char* prog) {
  const char* path = getenv("PATH");
  char buf[1024];
  const char* p = path;
  while (p != NULL && *p) {
    const char* e = strchr(p, ':');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, prog);
    if (access(buf, X_OK) == 0)
      return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

/* A missing peer program skips its test with a message, unless
 * UVCTX_REQUIRE_PEERS is set (scripts/test.sh sets it, after installing
 * every peer): then it fails, so that a run meant to cover every peer
 * cannot pass without one. */
#define SKIP_UNLESS(prog)                                                \
  do {                                                                   \
    if (!have(prog)) {                                                   \
      if (getenv("UVCTX_REQUIRE_PEERS") != NULL)                         \
        ck_abort_msg("%s is not installed (UVCTX_REQUIRE_PEERS is set)", \
                     prog);                                              \
      fprintf(stderr, "SKIP %s: %s is not installed\n", __func__, prog); \
      return;                                                            \
    }                                                                    \
  } while (0)

/* A free port on 127.0.0.1 for peers that cannot report the one they got
 * (s_server prints it only without -quiet, whose output the tests need
 * clean; gnutls-serv not at all): bind port 0, read it, close. Another
 * process may take it before the peer binds it: server_run() then starts
 * the peer again on another port. */
static int free_port(void) {
  uv_tcp_t t;
  struct sockaddr_in a;
  struct sockaddr_storage got;
  int len = sizeof(got);
  int port;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &t), 0);
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &a), 0);
  ck_assert_int_eq(uv_tcp_bind(&t, (const struct sockaddr*)&a, 0), 0);
  ck_assert_int_eq(uv_tcp_getsockname(&t, (struct sockaddr*)&got, &len), 0);
  port = ntohs(((struct sockaddr_in*)&got)->sin_port);
  uv_close((uv_handle_t*)&t, NULL);
  uv_run(uvt_loop, UV_RUN_NOWAIT);
  return port;
}

/* ---- child processes ----------------------------------------------------- */

typedef struct {
  uv_process_t proc;
  uv_timer_t timer;
  uv_pipe_t in_pipe;
  int use_pipe;
  int exited;
  int64_t status;
  int term_signal;
  int closed;
  char out_path[300];
  char err_path[300];
} peer_t;

static void peer_close_cb(uv_handle_t* h) {
  peer_t* p = h->data;
  p->closed++;
}

static void peer_exit_cb(uv_process_t* pr, int64_t status, int sig) {
  peer_t* p = pr->data;
  p->exited = 1;
  p->status = status;
  p->term_signal = sig;
  uv_timer_stop(&p->timer);
}

static void peer_timeout_cb(uv_timer_t* t) {
  peer_t* p = t->data;
  if (!p->exited)
    uv_process_kill(&p->proc, SIGKILL);
}

/* Runs argv with stdin from `in` (a path; NULL: a pipe we write to), stdout
 * and stderr into files of the work directory. */
static void peer_spawn(peer_t* p, const char* name, char** argv,
                       const char* in) {
  uv_process_options_t o;
  uv_stdio_container_t io[3];
  int fds[3];
  int i;

  memset(p, 0, sizeof(*p));
  snprintf(p->out_path, sizeof(p->out_path), "%s/%s.out", workdir, name);
  snprintf(p->err_path, sizeof(p->err_path), "%s/%s.err", workdir, name);
  fds[0] = in ? open(in, O_RDONLY) : -1;
  fds[1] = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  fds[2] = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert(fds[1] >= 0 && fds[2] >= 0);
  if (in != NULL) {
    ck_assert_int_ge(fds[0], 0);
    io[0].flags = UV_INHERIT_FD;
    io[0].data.fd = fds[0];
  } else {
    ck_assert_int_eq(uv_pipe_init(uvt_loop, &p->in_pipe, 0), 0);
    p->in_pipe.data = p;
    p->use_pipe = 1;
    io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    io[0].data.stream = (uv_stream_t*)&p->in_pipe;
  }
  for (i = 1; i < 3; i++) {
    io[i].flags = UV_INHERIT_FD;
    io[i].data.fd = fds[i];
  }
  memset(&o, 0, sizeof(o));
  o.file = argv[0];
  o.args = argv;
  o.exit_cb = peer_exit_cb;
  o.stdio = io;
  o.stdio_count = 3;
  p->proc.data = p;
  ck_assert_int_eq(uv_timer_init(uvt_loop, &p->timer), 0);
  p->timer.data = p;
  ck_assert_int_eq(uv_spawn(uvt_loop, &p->proc, &o), 0);
  ck_assert_int_eq(
      uv_timer_start(&p->timer, peer_timeout_cb, PEER_TIMEOUT_MS, 0), 0);
  for (i = 0; i < 3; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

static void peer_dump(peer_t* p) {
  char buf[2048];
  FILE* f = fopen(p->err_path, "r");
  size_t n;
  if (f == NULL)
    return;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  fprintf(stderr, "--- %s:\n%s\n", p->err_path, buf);
}

/* Waits for the peer to exit (killing it at its timeout) and closes its
 * handles. Returns its exit status. */
static int64_t peer_finish(peer_t* p) {
  UVT_RUN_UNTIL_MS(p->exited, PEER_TIMEOUT_MS + 5000);
  /* SIGTERM is how the tests stop servers that serve forever. */
  if (p->status != 0 || (p->term_signal != 0 && p->term_signal != SIGTERM))
    peer_dump(p);
  uv_close((uv_handle_t*)&p->proc, peer_close_cb);
  uv_close((uv_handle_t*)&p->timer, peer_close_cb);
  if (p->use_pipe && !uv_is_closing((uv_handle_t*)&p->in_pipe))
    uv_close((uv_handle_t*)&p->in_pipe, peer_close_cb);
  UVT_RUN_UNTIL(p->closed == 2 + p->use_pipe);
  return p->term_signal ? -p->term_signal : p->status;
}

/* Does the file hold exactly `len` patterned bytes? */
static int file_is_pattern(const char* path, size_t len) {
  FILE* f = fopen(path, "rb");
  char buf[65536];
  uint64_t off = 0;
  size_t n;
  int ok = 1;
  if (f == NULL)
    return 0;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
    if (!tu_check(buf, off, n))
      ok = 0;
    off += n;
  }
  fclose(f);
  if (off != len)
    fprintf(stderr, "%s: %llu bytes, expected %zu\n", path,
            (unsigned long long)off, len);
  return ok && off == len;
}

/* ---- our server ---------------------------------------------------------- */

enum { SRV_ECHO = 0, SRV_HTTP };

typedef struct {
  uv_tcp_t tcp;
  int port;
  uvctx_tls_config_t* cfg;
  tu_ep_t* eps[4];
  int n;
  int mode;
  /* SRV_HTTP: the request's head, then the body echoed as the response. */
  char head[4096];
  size_t head_len;
  uint64_t body_len;
  int head_done;
} server_t;

static server_t S;

static void http_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* b) {
  tu_ep_alloc(s, sug, b);
}

/* A minimal HTTP/1.1 echo for curl: the response body is the request
 * body, then close_notify. */
static void http_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  tu_ep_t* ep = s->data;
  const char* p = buf->base;
  size_t len;
  if (n <= 0) {
    tu_ep_read(s, n, buf);
    return;
  }
  len = (size_t)n;
  if (!S.head_done) {
    size_t take = len;
    char* end;
    if (take > sizeof(S.head) - 1 - S.head_len)
      take = sizeof(S.head) - 1 - S.head_len;
    memcpy(S.head + S.head_len, p, take);
    S.head_len += take;
    S.head[S.head_len] = '\0';
    end = strstr(S.head, "\r\n\r\n");
    if (end == NULL)
      return;
    {
      char resp[256];
      const char* cl = strstr(S.head, "Content-Length:");
      size_t hl = (size_t)(end + 4 - S.head);
      size_t used = hl - (S.head_len - take);
      ck_assert_ptr_nonnull(cl);
      S.body_len = strtoull(cl + 15, NULL, 10);
      S.head_done = 1;
      ep->shut_after = S.body_len;
      snprintf(resp, sizeof(resp),
               "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n"
               "Content-Type: application/octet-stream\r\n"
               "Connection: close\r\n\r\n",
               (unsigned long long)S.body_len);
      ck_assert_int_eq(tu_ep_write(ep, resp, strlen(resp)), 0);
      ep->tx = 0;
      p += used;
      len -= used;
    }
  }
  if (len > 0) {
    uv_buf_t b = uv_buf_init((char*)p, (unsigned)len);
    tu_ep_read(s, (ssize_t)len, &b);
  }
}

static void srv_hs_cb(uvctx_tls_t* tls, int status) {
  tu_ep_t* ep = tls->stream.data;
  if (S.mode == SRV_HTTP && status == 0) {
    ep->hs_calls++;
    ep->hs_status = 0;
    ep->version = uvctx_tls_version(tls);
    ck_assert_int_eq(
        uvctx_stream_read_start(&tls->stream, http_alloc, http_read), 0);
    return;
  }
  tu_ep_hs_cb(tls, status);
  if (status != 0)
    tu_ep_close(ep);
}

static void srv_on_conn(uv_stream_t* srv, int status) {
  tu_ep_t* ep;
  ck_assert_int_eq(status, 0);
  ck_assert_int_lt(S.n, 4);
  ep = calloc(1, sizeof(*ep));
  ck_assert_ptr_nonnull(ep);
  tu_accept(srv, ep);
  tu_ep_init(ep, S.cfg, &ep->uvs, NULL, TU_ECHO);
  ep->shut_after = PEER_LEN;
  S.eps[S.n++] = ep;
  ck_assert_int_eq(uvctx_tls_handshake(&ep->tls, NULL, srv_hs_cb), 0);
}

static void server_start(int version, int mode) {
  memset(&S, 0, sizeof(S));
  /* The server takes both versions; the peer picks one. */
  (void)version;
  S.cfg = tu_server_cfg(0);
  S.mode = mode;
  S.port = tu_listen(uvt_loop, &S.tcp, srv_on_conn);
}

static void server_stop(void) {
  int i;
  tu_eps_close_all(S.eps, S.n);
  for (i = 0; i < S.n; i++)
    free(S.eps[i]);
  uvctx_tls_config_unref(S.cfg);
  uv_close((uv_handle_t*)&S.tcp, NULL);
}

/* A peer client against our echo server: the peer sends 1 MiB, reads it
 * back and the two exchange close_notify. */
static void check_client_peer_ex(const char* name, char** argv, int version,
                                 const char* out_must_match, int lenient_end,
                                 int stop);

/* As check_client_peer() for a strict peer, leaving the server running
 * (for more checks on S.eps[0]; call server_stop()). */
static void check_client_peer_keep(const char* name, char** argv, int version,
                                   const char* out) {
  check_client_peer_ex(name, argv, version, out, 0, 0);
}

static void check_client_peer(const char* name, char** argv, int version,
                              const char* out_must_match, int lenient_end) {
  check_client_peer_ex(name, argv, version, out_must_match, lenient_end, 1);
}

static void check_client_peer_ex(const char* name, char** argv, int version,
                                 const char* out_must_match, int lenient_end,
                                 int stop) {
  peer_t p;
  int64_t st;
  tu_ep_t* ep;

  peer_spawn(&p, name, argv, in_path);
  UVT_RUN_UNTIL_MS(p.exited || (S.n == 1 && S.eps[0]->closed), PEER_TIMEOUT_MS);
  st = peer_finish(&p);
  UVT_RUN_UNTIL(S.n == 1 && S.eps[0]->closed);
  ep = S.eps[0];
  ck_assert_msg(st == 0, "%s exited with %lld", name, (long long)st);
  ck_assert_msg(ep->hs_status == 0, "%s: handshake %s (%s)", name,
                uv_strerror(ep->hs_status), ep->reason);
  ck_assert_int_eq(ep->version, version);
  ck_assert_uint_eq(ep->rx, PEER_LEN);
  ck_assert_int_eq(ep->write_err, 0);
  /* The peer's close_notify arrived: a clean end, not a truncation. */
  ck_assert_msg(ep->rx_end == UV_EOF ||
                    (lenient_end && ep->rx_end == UVCTX_TLS_ETRUNCATED),
                "%s: read ended with %s", name, uv_strerror(ep->rx_end));
  if (lenient_end)
    fprintf(stderr, "%s TLS 1.%d: server read end: %s\n", name,
            version == UVCTX_TLS_1_3 ? 3 : 2,
            ep->rx_end == UV_EOF ? "close_notify" : "TCP FIN only");
  ck_assert_int_eq(ep->sd_status, 0);
  if (out_must_match)
    ck_assert_msg(file_is_pattern(p.out_path, PEER_LEN), "%s output", name);
  if (stop)
    server_stop();
}

static const char* vname(int v) {
  return v == UVCTX_TLS_1_3 ? "1.3" : "1.2";
}

/* `openssl s_client` to our server, verifying it against ca.pem as
 * localhost: fills argv[0..n) and returns n; `port` holds the address. */
static int s_client_argv(char** argv, char* port, size_t port_len) {
  int n = 0;
  snprintf(port, port_len, "127.0.0.1:%d", S.port);
  argv[n++] = "openssl";
  argv[n++] = "s_client";
  argv[n++] = "-connect";
  argv[n++] = port;
  argv[n++] = "-servername";
  argv[n++] = "localhost";
  argv[n++] = "-CAfile";
  argv[n++] = (char*)tu_cert("ca.pem");
  return n;
}

START_TEST(test_s_client) {
  int v = _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  char port[16];
  char* argv[16];
  int n = 0;
  SKIP_UNLESS("openssl");
  server_start(v, SRV_ECHO);
  n = s_client_argv(argv, port, sizeof(port));
  argv[n++] = "-verify_return_error";
  argv[n++] = "-quiet";
  argv[n++] = _i ? "-tls1_3" : "-tls1_2";
  argv[n] = NULL;
  check_client_peer("s_client", argv, v, "out", 0);
}
END_TEST

/* Client certificates: our server requires one issued by ca.pem.
 * s_client presenting server.pem (clientAuth, by that CA) gets through and
 * is named; s_client presenting none is refused with UVCTX_TLS_EVERIFY. */
START_TEST(test_s_client_cert) {
  int v = _i / 2 ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  int with_cert = _i % 2 == 0;
  char port[16];
  char* argv[20];
  int n = 0;
  tu_ep_t* ep;
  SKIP_UNLESS("openssl");
  server_start(v, SRV_ECHO);
  ck_assert_int_eq(uvctx_tls_config_ca_file(S.cfg, tu_cert("ca.pem")), 0);
  ck_assert_int_eq(
      uvctx_tls_config_client_auth(S.cfg, UVCTX_TLS_CLIENT_AUTH_REQUIRE), 0);
  n = s_client_argv(argv, port, sizeof(port));
  argv[n++] = "-verify_return_error";
  argv[n++] = "-quiet";
  argv[n++] = v == UVCTX_TLS_1_3 ? "-tls1_3" : "-tls1_2";
  if (with_cert) {
    argv[n++] = "-cert";
    argv[n++] = (char*)tu_cert("server.pem");
    argv[n++] = "-key";
    argv[n++] = (char*)tu_cert("server.key");
  }
  argv[n] = NULL;
  if (with_cert) {
    check_client_peer_keep("s_client_cert", argv, v, "out");
    ep = S.eps[0];
    ck_assert_str_eq(ep->peer, "/CN=localhost");
    server_stop();
  } else {
    peer_t p;
    peer_spawn(&p, "s_client_nocert", argv, in_path);
    UVT_RUN_UNTIL_MS(S.n == 1 && S.eps[0]->hs_calls, PEER_TIMEOUT_MS);
    ep = S.eps[0];
    ck_assert_msg(ep->hs_status == UVCTX_TLS_EVERIFY, "handshake %s (%s)",
                  uv_err_name(ep->hs_status), ep->reason);
    ck_assert_ptr_nonnull(strstr(ep->reason, "did not return a certificate"));
    ck_assert_uint_eq(ep->rx, 0);
    /* s_client learns it from the alert and gives up (its exit status
     * is its own business). */
    peer_finish(&p);
    server_stop();
  }
}
END_TEST

START_TEST(test_gnutls_cli) {
  int v = _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  char port[16];
  char* argv[16];
  int n = 0;
  SKIP_UNLESS("gnutls-cli");
  server_start(v, SRV_ECHO);
  snprintf(port, sizeof(port), "%d", S.port);
  argv[n++] = "gnutls-cli";
  argv[n++] = "--x509cafile";
  argv[n++] = (char*)tu_cert("ca.pem");
  argv[n++] = "--sni-hostname=localhost";
  argv[n++] = "--verify-hostname=localhost";
  argv[n++] = "--logfile=/dev/null";
  argv[n++] = _i ? "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3"
                 : "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2";
  argv[n++] = "-p";
  argv[n++] = port;
  argv[n++] = "127.0.0.1";
  argv[n] = NULL;
  /* gnutls-cli exits at our close_notify, sometimes without answering
   * it: its end is reported, not required. */
  check_client_peer("gnutls-cli", argv, v, "out", 1);
}
END_TEST

/* A client script of ours (test/tls/peer_client.*) run by `interp`:
 * port, CA, version, length and the input file as arguments. */
static void script_client(const char* interp, const char* file, int v) {
  char port[16];
  char len[16];
  char script[512];
  char* argv[16];
  int n = 0;
  server_start(v, SRV_ECHO);
  snprintf(port, sizeof(port), "%d", S.port);
  snprintf(len, sizeof(len), "%d", PEER_LEN);
  snprintf(script, sizeof(script), "%s/%s", UVCTX_TLS_SCRIPT_DIR, file);
  argv[n++] = (char*)interp;
  argv[n++] = script;
  argv[n++] = port;
  argv[n++] = (char*)tu_cert("ca.pem");
  argv[n++] = (char*)vname(v);
  argv[n++] = len;
  argv[n++] = in_path;
  argv[n] = NULL;
  check_client_peer(interp, argv, v, NULL, 0);
}

START_TEST(test_python) {
  SKIP_UNLESS("python3");
  script_client("python3", "peer_client.py",
                _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2);
}
END_TEST

START_TEST(test_node) {
  SKIP_UNLESS("node");
  script_client("node", "peer_client.js", _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2);
}
END_TEST

/* curl uploads 1 MiB and downloads it back from our HTTP echo. */
START_TEST(test_curl) {
  int v = _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  char url[64];
  char resolve[64];
  char data[320];
  char out[320];
  char* argv[24];
  int n = 0;
  peer_t p;
  int64_t st;
  tu_ep_t* ep;
  SKIP_UNLESS("curl");
  server_start(v, SRV_HTTP);
  snprintf(url, sizeof(url), "https://localhost:%d/echo", S.port);
  snprintf(resolve, sizeof(resolve), "localhost:%d:127.0.0.1", S.port);
  snprintf(data, sizeof(data), "@%s", in_path);
  snprintf(out, sizeof(out), "%s/curl.body", workdir);
  argv[n++] = "curl";
  argv[n++] = "-sS";
  argv[n++] = "--fail";
  argv[n++] = "--cacert";
  argv[n++] = (char*)tu_cert("ca.pem");
  argv[n++] = "--resolve";
  argv[n++] = resolve;
  argv[n++] = _i ? "--tlsv1.3" : "--tlsv1.2";
  argv[n++] = "--tls-max";
  argv[n++] = _i ? "1.3" : "1.2";
  argv[n++] = "-H";
  argv[n++] = "Expect:";
  argv[n++] = "--data-binary";
  argv[n++] = data;
  argv[n++] = "-o";
  argv[n++] = out;
  argv[n++] = url;
  argv[n] = NULL;
  peer_spawn(&p, "curl", argv, "/dev/null");
  st = peer_finish(&p);
  ck_assert_msg(st == 0, "curl exited with %lld", (long long)st);
  UVT_RUN_UNTIL(S.n == 1 && S.eps[0]->closed);
  ep = S.eps[0];
  ck_assert_int_eq(ep->hs_status, 0);
  ck_assert_int_eq(ep->version, v);
  ck_assert_uint_eq(ep->rx, PEER_LEN);
  /* curl may close the connection as soon as it has the whole body, before
   * our transport shutdown runs. */
  ck_assert_msg(ep->sd_status == 0 || ep->sd_status == UV_ENOTCONN ||
                    ep->sd_status == UV_EPIPE || ep->sd_status == UV_ECONNRESET,
                "curl: shutdown %s", uv_strerror(ep->sd_status));
  /* curl answers our close_notify with its own, or closes the TCP
   * connection right after reading the response (some builds skip
   * close_notify when the connection is not reused): either way the
   * response was complete. */
  ck_assert_msg(ep->rx_end == UV_EOF || ep->rx_end == UVCTX_TLS_ETRUNCATED,
                "curl: read ended with %s", uv_strerror(ep->rx_end));
  fprintf(stderr, "curl TLS %s: server read end: %s\n", vname(v),
          ep->rx_end == UV_EOF ? "close_notify" : "TCP FIN only");
  ck_assert(file_is_pattern(out, PEER_LEN));
  server_stop();
}
END_TEST

/* ---- peer servers, our client -------------------------------------------- */

typedef struct {
  tu_ep_t ep;
  uv_connect_t conn;
  int connect_status;
  int connected;
  uvctx_tls_config_t* cfg;
} client_t;

static void client_conn_cb(uv_connect_t* c, int status) {
  client_t* cl = c->data;
  cl->connected = 1;
  cl->connect_status = status;
  if (status != 0)
    return;
  ck_assert_int_eq(uvctx_stream_init_uv(&cl->ep.uvs, (uv_stream_t*)&cl->ep.tcp),
                   0);
  tu_ep_init(&cl->ep, cl->cfg, &cl->ep.uvs, "localhost", TU_SEND);
  cl->ep.send_len = PEER_LEN;
  tu_ep_start(&cl->ep, NULL);
}

/* Connects to 127.0.0.1:port, retrying while the peer is starting up, and
 * runs the client to its end. Returns -1 if the peer exited before a
 * connection succeeded (it could not bind its port), else 0. */
static int client_run(client_t* cl, int port, int version, peer_t* p) {
  struct sockaddr_in a;
  int tries;
  memset(cl, 0, sizeof(*cl));
  cl->cfg = tu_client_cfg(version);
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", port, &a), 0);
  for (tries = 0; tries < 100; tries++) {
    ck_assert_int_eq(uv_tcp_init(uvt_loop, &cl->ep.tcp), 0);
    cl->conn.data = cl;
    cl->connected = 0;
    ck_assert_int_eq(uv_tcp_connect(&cl->conn, &cl->ep.tcp,
                                    (const struct sockaddr*)&a, client_conn_cb),
                     0);
    UVT_RUN_UNTIL(cl->connected);
    if (cl->connect_status == 0)
      break;
    uvt_close_and_wait((uv_handle_t*)&cl->ep.tcp);
    if (p->exited) {
      uvctx_tls_config_unref(cl->cfg);
      return -1;
    }
    uvt_run_for(100);
  }
  ck_assert_int_eq(cl->connect_status, 0);
  UVT_RUN_UNTIL_MS(cl->ep.closed, PEER_TIMEOUT_MS);
  uvctx_tls_config_unref(cl->cfg);
  return 0;
}

static char* feed_buf;
static uv_write_t feed_w;

static void pipe_feed(peer_t* p);

/* Starts a peer server (argv, whose port argument is the buffer `port`)
 * on a free port and runs our client against it. A peer that exits before
 * accepting lost its port to another process between free_port() and its
 * bind: it is started again on another port, up to 5 times. */
static void server_run(client_t* cl, peer_t* p, const char* name, char** argv,
                       char* port, size_t port_len, const char* in, int feed,
                       int version) {
  int attempt;
  for (attempt = 0;; attempt++) {
    snprintf(port, port_len, "%d", free_port());
    peer_spawn(p, name, argv, in);
    if (feed)
      pipe_feed(p);
    if (client_run(cl, atoi(port), version, p) == 0)
      return;
    peer_finish(p);
    if (feed)
      free(feed_buf);
    fprintf(stderr, "%s: exited before accepting on port %s; retrying\n", name,
            port);
    ck_assert_msg(attempt < 4, "%s: could not be started", name);
  }
}

static void pipe_feed(peer_t* p) {
  uv_buf_t b;
  feed_buf = malloc(PEER_LEN);
  ck_assert_ptr_nonnull(feed_buf);
  tu_fill(feed_buf, 0, PEER_LEN);
  b = uv_buf_init(feed_buf, PEER_LEN);
  ck_assert_int_eq(uv_write(&feed_w, (uv_stream_t*)&p->in_pipe, &b, 1, NULL),
                   0);
}

START_TEST(test_s_server) {
  int v = _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  char port[16];
  char* argv[20];
  int n = 0;
  client_t cl;
  peer_t p;
  int64_t st;
  SKIP_UNLESS("openssl");
  argv[n++] = "openssl";
  argv[n++] = "s_server";
  argv[n++] = "-accept";
  argv[n++] = port;
  argv[n++] = "-naccept";
  argv[n++] = "1";
  argv[n++] = "-cert";
  argv[n++] = (char*)tu_cert("server.pem");
  argv[n++] = "-key";
  argv[n++] = (char*)tu_cert("server.key");
  argv[n++] = "-quiet";
  argv[n++] = _i ? "-tls1_3" : "-tls1_2";
  argv[n] = NULL;
  /* s_server sends its stdin (the same 1 MiB pattern) and writes what it
   * receives to stdout. Its stdin is a pipe that stays open: at end of
   * file s_server stops copying what it receives. */
  server_run(&cl, &p, "s_server", argv, port, sizeof(port), NULL, 1, v);
  st = peer_finish(&p);
  ck_assert_msg(cl.ep.hs_status == 0, "handshake %s (%s)",
                uv_strerror(cl.ep.hs_status), cl.ep.reason);
  ck_assert_int_eq(cl.ep.version, v);
  ck_assert_uint_eq(cl.ep.rx, PEER_LEN);
  ck_assert_int_eq(cl.ep.rx_bad, 0);
  ck_assert_msg(cl.ep.rx_end == UV_EOF, "read ended with %s",
                uv_strerror(cl.ep.rx_end));
  ck_assert_int_eq(cl.ep.sd_status, 0);
  ck_assert_int_eq(st, 0);
  ck_assert(file_is_pattern(p.out_path, PEER_LEN));
  free(feed_buf);
}
END_TEST

START_TEST(test_gnutls_serv) {
  int v = _i ? UVCTX_TLS_1_3 : UVCTX_TLS_1_2;
  char port[16];
  char* argv[20];
  int n = 0;
  client_t cl;
  peer_t p;
  SKIP_UNLESS("gnutls-serv");
  /* gnutls-serv --echo echoes text: lines of letters. */
  tu_text_pattern = 1;
  argv[n++] = "gnutls-serv";
  argv[n++] = "--echo";
  argv[n++] = "--crlf";
  argv[n++] = "--x509certfile";
  argv[n++] = (char*)tu_cert("server.pem");
  argv[n++] = "--x509keyfile";
  argv[n++] = (char*)tu_cert("server.key");
  argv[n++] = _i ? "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3"
                 : "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2";
  argv[n++] = "-p";
  argv[n++] = port;
  argv[n] = NULL;
  server_run(&cl, &p, "gnutls-serv", argv, port, sizeof(port), "/dev/null", 0,
             v);
  /* gnutls-serv serves forever: stop it. */
  uv_process_kill(&p.proc, SIGTERM);
  peer_finish(&p);
  ck_assert_msg(cl.ep.hs_status == 0, "handshake %s (%s)",
                uv_strerror(cl.ep.hs_status), cl.ep.reason);
  ck_assert_int_eq(cl.ep.version, v);
  ck_assert_uint_eq(cl.ep.rx, PEER_LEN);
  ck_assert_int_eq(cl.ep.rx_bad, 0);
  ck_assert_msg(cl.ep.rx_end == UV_EOF, "read ended with %s",
                uv_strerror(cl.ep.rx_end));
  ck_assert_int_eq(cl.ep.sd_status, 0);
}
END_TEST

/* ---- renegotiation ------------------------------------------------------- */

static uv_write_t reneg_w;

/* s_client -tls1_2 sends "R" (renegotiate) on its stdin; another client,
 * ours, moves 1 MiB through the same server meanwhile. The renegotiation
 * is refused; the other connection is unharmed. */
START_TEST(test_renegotiation_refused) {
  char port[16];
  char* argv[20];
  int n = 0;
  peer_t p;
  client_t cl;
  uv_buf_t b = uv_buf_init((char*)"R\n", 2);
  tu_ep_t* rep;
  SKIP_UNLESS("openssl");
  server_start(UVCTX_TLS_1_2, SRV_ECHO);
  n = s_client_argv(argv, port, sizeof(port));
  argv[n++] = "-tls1_2";
  argv[n] = NULL;
  peer_spawn(&p, "s_client_R", argv, NULL);
  UVT_RUN_UNTIL_MS(S.n == 1 && S.eps[0]->hs_calls, PEER_TIMEOUT_MS);
  rep = S.eps[0];
  ck_assert_int_eq(rep->hs_status, 0);
  ck_assert_int_eq(uv_write(&reneg_w, (uv_stream_t*)&p.in_pipe, &b, 1, NULL),
                   0);
  /* The renegotiating connection ends with an error... */
  UVT_RUN_UNTIL_MS(rep->rx_end != 0, PEER_TIMEOUT_MS);
  fprintf(stderr, "renegotiation: server read ended with %s (%s)\n",
          uv_err_name(rep->rx_end), uvctx_tls_reason(&rep->tls));
  /* Refused with a no_renegotiation warning; s_client then gives up with
   * a fatal handshake_failure alert. */
  ck_assert_int_eq(rep->rx_end, UVCTX_TLS_EALERT);
  /* ...and another on the same loop works. */
  ck_assert_int_eq(client_run(&cl, S.port, UVCTX_TLS_1_2, &p), 0);
  ck_assert_int_eq(cl.ep.hs_status, 0);
  ck_assert_uint_eq(cl.ep.rx, PEER_LEN);
  ck_assert_int_eq(cl.ep.rx_end, UV_EOF);
  uv_close((uv_handle_t*)&p.in_pipe, peer_close_cb);
  if (!p.exited)
    uv_process_kill(&p.proc, SIGTERM);
  peer_finish(&p);
  server_stop();
}
END_TEST

static Suite* peers_suite(void) {
  Suite* s = suite_create("tls_peers");
  TCase* tc = tcase_create("clients");
  tcase_add_checked_fixture(tc, peers_setup, peers_teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_s_client, 0, 2);
  tcase_add_loop_test(tc, test_s_client_cert, 0, 4);
  tcase_add_loop_test(tc, test_gnutls_cli, 0, 2);
  tcase_add_loop_test(tc, test_python, 0, 2);
  tcase_add_loop_test(tc, test_node, 0, 2);
  tcase_add_loop_test(tc, test_curl, 0, 2);
  suite_add_tcase(s, tc);
  tc = tcase_create("servers");
  tcase_add_checked_fixture(tc, peers_setup, peers_teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_s_server, 0, 2);
  tcase_add_loop_test(tc, test_gnutls_serv, 0, 2);
  suite_add_tcase(s, tc);
  tc = tcase_create("reneg");
  tcase_add_checked_fixture(tc, peers_setup, peers_teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_renegotiation_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner* sr = srunner_create(peers_suite());
  int failed;
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
