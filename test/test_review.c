/* Regression tests for bugs found by reviewing the I/O layer (stream, copy,
 * TLS): each test failed before its fix. Real peers: Unix socketpairs for
 * copy, OpenSSL over the in-process memory transport of tls/tlsutil.h. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "copy_peers.h"
#include "helpers.h"
#include "uvctx/copy.h"

#if UVCTX_WITH_TLS
#include "tls/tlsutil.h"
#endif

/* ---- copy: KEEP_OPEN_IDLE must not lose bytes it read ------------------ */

static int ko_calls;
static int ko_status;
static uint64_t ko_bytes;

static void ko_copy_cb(uvctx_copy_t* c, int status, uint64_t bytes) {
  (void)c;
  ko_calls++;
  ko_status = status;
  ko_bytes = bytes;
}

static char ko_buf[64];
static size_t ko_got;

static void ko_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* b) {
  (void)s;
  (void)sug;
  *b = uv_buf_init(ko_buf + ko_got, (unsigned)(sizeof(ko_buf) - ko_got));
}

static void ko_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)b;
  if (n > 0)
    ko_got += (size_t)n;
}

static int ko_closed;
static void ko_close_cb(uvctx_stream_t* s) {
  (void)s;
  ko_closed++;
}

/* The context is cancelled while bytes are waiting on the source: the
 * copy's read callback sees them before its watch callback runs. With
 * UVCTX_COPY_KEEP_OPEN_IDLE and nothing in flight, the copy used to drop
 * the buffer it had just read and leave the streams open, so the bytes were
 * gone from a stream handed back as usable. Either the streams are closed,
 * or every unwritten byte is still readable from the source. */
START_TEST(test_keep_open_idle_cancel_loses_no_bytes) {
  cp_handle_t a, b;
  uvctx_stream_t src;
  uvctx_copy_t c;
  uvctx_copy_options_t o;
  uvctx_t* ctx;
  uv_buf_t buf;

  ko_calls = 0;
  ko_got = 0;
  ko_closed = 0;
  cp_unix_pair(&a, &b);
  ck_assert_int_eq(uvctx_stream_init_uv(&src, &a.s), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  memset(&o, 0, sizeof(o));
  o.flags = UVCTX_COPY_KEEP_OPEN_IDLE | UVCTX_COPY_NO_SHUTDOWN;
  /* src == dst: an echo; the peer never reads, so nothing matters but
   * what the copy does with the bytes it reads. */
  ck_assert_int_eq(uvctx_copy_start(&c, ctx, &src, &src, &o, ko_copy_cb),
                   0);
  /* One turn, so that the source's descriptor is polled. */
  uvt_run_for(10);
  ck_assert_int_eq(ko_calls, 0);
  /* Bytes become readable first, then the context is done: the read is
   * dispatched before the watch's mailbox. */
  buf = uv_buf_init("hello", 5);
  ck_assert_int_eq(uv_try_write(&b.s, &buf, 1), 5);
  ck_assert_int_eq(uvctx_cancel(ctx), 0);
  UVT_RUN_UNTIL(ko_calls == 1);
  ck_assert_int_eq(ko_status, UV_ECANCELED);
  ck_assert_uint_eq(ko_bytes, 0);
  if (!uvctx_stream_is_closing(&src)) {
    /* Left open: the bytes must still be there. */
    ck_assert_int_eq(uvctx_stream_read_start(&src, ko_alloc, ko_read), 0);
    uvt_run_for(100);
    ck_assert_msg(ko_got == 5,
                  "streams left open but %zu of 5 read bytes remain",
                  ko_got);
    ck_assert_int_eq(memcmp(ko_buf, "hello", 5), 0);
    uvctx_stream_close(&src, ko_close_cb);
  } else {
    ko_closed = 1; /* the copy's close callback ran before ko_copy_cb */
  }
  UVT_RUN_UNTIL(ko_closed == 1);
  uvctx_release(ctx);
  cp_close(&b);
  cp_wait_closed();
}
END_TEST

#if UVCTX_WITH_TLS

static void tls_teardown(void) {
  ck_assert_uint_eq(uvctx__tls_live_ssl(), 0);
  uvt_teardown();
}

/* Runs a handshake between `ccfg` and `scfg` over a memory transport and
 * returns the server's handshake status (the client's lands in *cli). */
static int handshake_status(uvctx_tls_config_t* ccfg,
                            uvctx_tls_config_t* scfg, int* cli) {
  tu_mpipe_t p;
  tu_ep_t* ce = calloc(1, sizeof(*ce));
  tu_ep_t* se = calloc(1, sizeof(*se));
  int srv;

  ck_assert_ptr_nonnull(ce);
  ck_assert_ptr_nonnull(se);
  tu_mp_init(&p, uvt_loop, SIZE_MAX);
  tu_ep_init(ce, ccfg, &p.end[0].s, "localhost", TU_IDLE);
  tu_ep_init(se, scfg, &p.end[1].s, NULL, TU_IDLE);
  tu_ep_start(ce, NULL);
  tu_ep_start(se, NULL);
  UVT_RUN_UNTIL(ce->hs_calls == 1 && se->hs_calls == 1);
  *cli = ce->hs_status;
  srv = se->hs_status;
  tu_ep_close(ce);
  tu_ep_close(se);
  UVT_RUN_UNTIL(ce->closed && se->closed);
  tu_mp_close_pump(&p);
  UVT_RUN_UNTIL(p.pump_closed);
  free(ce);
  free(se);
  return srv;
}

/* A failed uvctx_tls_config_cert_file() must leave the certificate set
 * before it in place ("the configuration is unchanged as far as that
 * setting goes"). It used to install the new certificate before checking
 * the key, and OpenSSL then dropped the old key that no longer matched: the
 * server was left with a certificate and no key, and every handshake
 * failed. */
START_TEST(test_cert_failure_keeps_previous) {
  uvctx_tls_config_t* scfg = tu_server_cfg(0);
  uvctx_tls_config_t* ccfg = tu_client_cfg(0);
  int cli = 1;
  int srv;

  /* A certificate with a key that is not its own. */
  ck_assert_int_eq(uvctx_tls_config_cert_file(scfg, tu_cert("stranger.pem"),
                                              tu_cert("mismatch.key")),
                   UV_EINVAL);
  /* No key at all. */
  ck_assert_int_eq(uvctx_tls_config_cert_file(scfg, tu_cert("stranger.pem"),
                                              tu_cert("stranger.pem")),
                   UV_EINVAL);
  srv = handshake_status(ccfg, scfg, &cli);
  ck_assert_int_eq(srv, 0);
  ck_assert_int_eq(cli, 0);
  uvctx_tls_config_unref(scfg);
  uvctx_tls_config_unref(ccfg);
}
END_TEST

/* ---- TLS: a rejected cipher call changes nothing ------------------------- */

/* The TLS 1.2 list was applied before the TLS 1.3 string was checked, so a
 * call that returned UV_EINVAL still narrowed the server to one suite. The
 * server's TLS 1.2 list is left at its default here only if nothing was
 * applied: a client offering a different suite must still get through. */
START_TEST(test_ciphers_failure_keeps_previous) {
  uvctx_tls_config_t* scfg = tu_server_cfg(UVCTX_TLS_1_2);
  uvctx_tls_config_t* ccfg = tu_client_cfg(UVCTX_TLS_1_2);
  int cli = 1;
  int srv;

  ck_assert_int_eq(uvctx_tls_config_ciphers(ccfg, "ECDHE-ECDSA-AES128-GCM-SHA256",
                                            NULL),
                   0);
  ck_assert_int_eq(uvctx_tls_config_ciphers(scfg, "ECDHE-ECDSA-CHACHA20-POLY1305",
                                            "NO_SUCH_SUITE"),
                   UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(uvctx_tls_config_reason(scfg), "1.3"));
  srv = handshake_status(ccfg, scfg, &cli);
  ck_assert_int_eq(srv, 0);
  ck_assert_int_eq(cli, 0);
  uvctx_tls_config_unref(scfg);
  uvctx_tls_config_unref(ccfg);
}
END_TEST

/* ---- TLS: a corrupt PEM entry is an error, not the end of the list ------- */

static char* slurp(const char* path, size_t* len) {
  FILE* f = fopen(path, "rb");
  char* buf;
  long n;
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  ck_assert_int_ge(n, 0);
  rewind(f);
  buf = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

START_TEST(test_corrupt_pem_entry_rejected) {
  static const char bad[] = "-----BEGIN CERTIFICATE-----\n"
                            "bm90IGEgY2VydGlmaWNhdGUsIGp1c3QgdGV4dA==\n"
                            "-----END CERTIFICATE-----\n";
  uvctx_tls_config_t* c = NULL;
  size_t clen, klen, n;
  char* cert = slurp(tu_cert("server.pem"), &clen);
  char* key = slurp(tu_cert("server.key"), &klen);
  char* chain = malloc(clen + sizeof(bad));
  ck_assert_ptr_nonnull(chain);
  memcpy(chain, cert, clen);
  memcpy(chain + clen, bad, sizeof(bad));
  n = clen + sizeof(bad) - 1;

  /* The good entry alone loads: the test's inputs are sound. */
  ck_assert_int_eq(uvctx_tls_config_new(UVCTX_TLS_SERVER, &c), 0);
  ck_assert_int_eq(uvctx_tls_config_cert_mem(c, cert, clen, key, klen), 0);
  /* A corrupt certificate after it, in a chain or a CA bundle. */
  ck_assert_int_eq(uvctx_tls_config_cert_mem(c, chain, n, key, klen),
                   UV_EINVAL);
  uvctx_tls_config_unref(c);
  c = NULL;
  ck_assert_int_eq(uvctx_tls_config_new(UVCTX_TLS_CLIENT, &c), 0);
  ck_assert_int_eq(uvctx_tls_config_ca_mem(c, cert, clen), 0);
  ck_assert_int_eq(uvctx_tls_config_ca_mem(c, chain, n), UV_EINVAL);
  uvctx_tls_config_unref(c);
  free(chain);
  free(cert);
  free(key);
}
END_TEST

/* ---- TLS: reading again after a clean end -------------------------------- */

typedef struct {
  tu_ep_t ep;
  int reads_eof;
  int reads_err;
  int last_err;
  int sd_calls;
  int sd_status;
  uvctx_shutdown_t sd;
} again_t;

static void again_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* buf) {
  again_t* a = s->data;
  (void)sug;
  *buf = uv_buf_init(a->ep.rbuf, sizeof(a->ep.rbuf));
}

static void again_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  again_t* a = s->data;
  (void)buf;
  if (n == UV_EOF)
    a->reads_eof++;
  else if (n < 0) {
    a->reads_err++;
    a->last_err = (int)n;
  }
}

static void again_sd_cb(uvctx_shutdown_t* req, int status) {
  again_t* a = req->data;
  a->sd_calls++;
  a->sd_status = status;
}

/* After the peer's close_notify and transport EOF were read (a clean
 * UV_EOF), uvctx_stream_read_start() again used to report
 * UVCTX_TLS_ETRUNCATED and fail the session: the shutdown that followed
 * (our close_notify) then failed too. A libuv stream reports UV_EOF again;
 * so must a TLS one, and the session stays healthy. */
START_TEST(test_tls_read_again_after_eof) {
  uvctx_tls_config_t* scfg = tu_server_cfg(0);
  uvctx_tls_config_t* ccfg = tu_client_cfg(0);
  tu_mpipe_t p;
  again_t* c = calloc(1, sizeof(*c));
  again_t* s = calloc(1, sizeof(*s));

  ck_assert_ptr_nonnull(c);
  ck_assert_ptr_nonnull(s);
  tu_mp_init(&p, uvt_loop, SIZE_MAX);
  tu_ep_init(&c->ep, ccfg, &p.end[0].s, "localhost", TU_IDLE);
  tu_ep_init(&s->ep, scfg, &p.end[1].s, NULL, TU_IDLE);
  tu_ep_start(&c->ep, NULL);
  tu_ep_start(&s->ep, NULL);
  UVT_RUN_UNTIL(c->ep.hs_calls == 1 && s->ep.hs_calls == 1);
  ck_assert_int_eq(c->ep.hs_status, 0);
  ck_assert_int_eq(s->ep.hs_status, 0);
  c->ep.tls.stream.data = c;
  s->ep.tls.stream.data = s;

  /* The client ends its side: close_notify, then its transport's EOF. */
  c->sd.data = c;
  ck_assert_int_eq(uvctx_stream_shutdown(&c->sd, &c->ep.tls.stream,
                                         again_sd_cb), 0);
  ck_assert_int_eq(uvctx_stream_read_start(&s->ep.tls.stream, again_alloc,
                                           again_read), 0);
  UVT_RUN_UNTIL(c->sd_calls == 1 && s->reads_eof == 1);
  ck_assert_int_eq(c->sd_status, 0);
  uvt_run_for(20); /* the transport's EOF arrives too */
  ck_assert_int_eq(s->reads_err, 0);

  /* Reading again after the end. */
  ck_assert_int_eq(uvctx_stream_read_start(&s->ep.tls.stream, again_alloc,
                                           again_read), 0);
  uvt_run_for(50);
  ck_assert_msg(s->reads_err == 0, "read error %d after a clean EOF",
                s->last_err);
  ck_assert_int_eq(s->reads_eof, 2);
  /* The server still ends its side cleanly. */
  s->sd.data = s;
  ck_assert_int_eq(uvctx_stream_shutdown(&s->sd, &s->ep.tls.stream,
                                         again_sd_cb), 0);
  UVT_RUN_UNTIL(s->sd_calls == 1);
  ck_assert_int_eq(s->sd_status, 0);

  c->ep.tls.stream.data = &c->ep;
  s->ep.tls.stream.data = &s->ep;
  tu_ep_close(&c->ep);
  tu_ep_close(&s->ep);
  UVT_RUN_UNTIL(c->ep.closed && s->ep.closed);
  tu_mp_close_pump(&p);
  UVT_RUN_UNTIL(p.pump_closed);
  uvctx_tls_config_unref(scfg);
  uvctx_tls_config_unref(ccfg);
  free(c);
  free(s);
}
END_TEST

#endif /* UVCTX_WITH_TLS */

/* ---- copy: a detached stream is refused ----------------------------------- */

static void never_cb(uvctx_copy_t* c, int status, uint64_t bytes) {
  (void)c;
  (void)status;
  (void)bytes;
  ck_abort_msg("the callback of a refused copy ran");
}

/* A stream detached from its handle takes no operation and never calls
 * back; a copy started on it used to return 0 and then hang forever with its
 * memory held. Now the start is refused and nothing is allocated. */
START_TEST(test_copy_refuses_detached_stream) {
  cp_handle_t a, b;
  uvctx_stream_t src, dst;
  uvctx_copy_t c;
  uint64_t before;

  cp_unix_pair(&a, &b);
  ck_assert_int_eq(uvctx_stream_init_uv(&src, &a.s), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&dst, &b.s), 0);
  ck_assert_int_eq(uvctx_stream_uv_detach(&dst), 0);
  before = uvctx_live_allocations();
  ck_assert_int_eq(uvctx_copy_start(&c, uvt_bg, &src, &dst, NULL, never_cb),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_copy_start(&c, uvt_bg, &dst, &src, NULL, never_cb),
                   UV_EINVAL);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  uvt_run_for(5);
  uvctx_stream_close(&src, NULL);
  cp_close(&b); /* detached: the handle is ours again */
  cp_wait_closed();
}
END_TEST

static Suite* review_suite(void) {
  Suite* s = suite_create("review");
  TCase* tc = tcase_create("copy");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, test_keep_open_idle_cancel_loses_no_bytes);
  tcase_add_test(tc, test_copy_refuses_detached_stream);
  suite_add_tcase(s, tc);
#if UVCTX_WITH_TLS
  tc = tcase_create("tls");
  tcase_add_checked_fixture(tc, uvt_setup, tls_teardown);
  tcase_add_test(tc, test_cert_failure_keeps_previous);
  tcase_add_test(tc, test_tls_read_again_after_eof);
  tcase_add_test(tc, test_ciphers_failure_keeps_previous);
  tcase_add_test(tc, test_corrupt_pem_entry_rejected);
  suite_add_tcase(s, tc);
#endif
  return s;
}

int main(void) {
  return uvt_main(review_suite());
}
