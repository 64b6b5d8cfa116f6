/* tls_role.c owns the one-sided TLS fuzz targets, built twice: as a server
 * (FZ_SERVER=1: the input is what a client sends, seeded with real
 * ClientHellos) and as a client (FZ_SERVER=0: the input is a server's
 * flight, seeded with real ones). The session runs its handshake under a
 * context over a memory stream that delivers the input in pieces (the first
 * byte picks their size), then EOF. At the end of every input: the
 * handshake callback ran exactly once, a failure has a reason, no read
 * callback came after the end of the stream, the close callback ran once,
 * and nothing is left (fz_loop_end: contexts, allocations, SSL objects,
 * handles). */
#include <string.h>

#include "fuzz.h"
#include "uvctx/tls.h"

#ifndef FZ_SERVER
#error "FZ_SERVER must be 0 or 1"
#endif

typedef struct one_s {
  fz_mem_t mem;
  uvctx_tls_t tls;
  uvctx_t* ctx;
  int hs_calls;
  int hs_status;
  int ended; /* the plaintext read side reported its end */
  int reads_after_end;
  int closes;
  char buf[4096];
} one_t;

static void on_close(uvctx_stream_t* s) {
  one_t* o = s->data;
  o->closes++;
  fz_mem_release(&o->mem);
}

static void close_all(one_t* o) {
  uvctx_stream_close(&o->tls.stream, on_close);
}

static void on_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* b) {
  one_t* o = s->data;
  (void)sug;
  *b = uv_buf_init(o->buf, sizeof(o->buf));
}

static void on_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  one_t* o = s->data;
  (void)b;
  if (o->ended) {
    o->reads_after_end++;
    return;
  }
  if (n >= 0 || n == UV_ENOBUFS)
    return;
  o->ended = 1;
  close_all(o);
}

static void on_handshake(uvctx_tls_t* tls, int status) {
  one_t* o = tls->stream.data;
  static const char hello[] = "hello\n";
  uv_buf_t b = uv_buf_init((char*)hello, sizeof(hello) - 1);
  static uvctx_write_t w;

  o->hs_calls++;
  o->hs_status = status;
  if (status == UVCTX_TLS_EPROTO || status == UVCTX_TLS_EALERT ||
      status == UVCTX_TLS_EVERIFY)
    FZ_CHECK(uvctx_tls_reason(tls) != NULL);
  if (status != 0) {
    close_all(o);
    return;
  }
  FZ_CHECK(uvctx_stream_write(&w, &tls->stream, &b, 1, NULL) == 0);
  FZ_CHECK(uvctx_stream_read_start(&tls->stream, on_alloc, on_read) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uvctx_tls_config_t* cfg = fz_tls_config(FZ_SERVER); /* before the count */
  fz_loop_t f;
  one_t* o;
  fz_in_t in = {data, size};
  size_t chunk;

  fz_openssl_deterministic();
  fz_loop_begin(&f);
  o = calloc(1, sizeof(*o));
  FZ_CHECK(o != NULL);
  fz_mem_init(&o->mem, &f.loop);
  /* Pieces of 1 to 255 bytes, or all at once. */
  chunk = fz_byte(&in);
  o->mem.chunk = chunk;
  o->mem.s.data = o;
  FZ_CHECK(uvctx_tls_init(&o->tls, cfg, &o->mem.s,
                          FZ_SERVER ? NULL : "localhost") == 0);
  o->tls.stream.data = o;
  FZ_CHECK(uvctx_with_cancel(uvctx_background(f.l), &o->ctx) == 0);
  FZ_CHECK(uvctx_tls_handshake(&o->tls, o->ctx, on_handshake) == 0);
  FZ_CHECK(o->hs_calls == 0); /* never inside the call */
  fz_mem_feed(&o->mem, in.p, in.n);
  fz_mem_eof(&o->mem);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  /* The transport's EOF ends everything: the handshake reported, then the
   * session closed. */
  FZ_CHECK(o->hs_calls == 1);
  FZ_CHECK(o->closes == 1);
  FZ_CHECK(o->reads_after_end == 0);
  uvctx_release(o->ctx);
  fz_loop_end(&f);
  free(o);
  return 0;
}
