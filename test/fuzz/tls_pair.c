/* tls_pair.c owns the TLS client/server fuzz target: both roles of the
 * shim over two memory streams, with the input deciding everything the
 * network would: how many bytes move each way and when, a byte flipped in
 * flight, writes of either side, a half-close, a cancelled handshake, loop
 * turns. Invariants at the end of every input: each side received a prefix
 * of what the other sent, in order and unchanged (a flipped byte may end a
 * session, never corrupt its data); with nothing flipped or cancelled,
 * everything sent arrived; each handshake and close callback ran exactly
 * once; nothing is left (fz_loop_end). */
#include <inttypes.h>
#include <string.h>

#include "fuzz.h"
#include "uvctx/tls.h"

typedef struct side_s {
  fz_mem_t mem;
  uvctx_tls_t tls;
  uvctx_t* ctx;
  struct side_s* peer;
  int hs_calls;
  int hs_status;
  int closes;
  int ended;
  int shut;
  uint64_t sent;     /* accepted by uvctx_stream_write() */
  uint64_t received; /* plaintext delivered to us */
  int bad;           /* received bytes differ from what peer sent */
  int writes;        /* in flight */
  char buf[16384];
} side_t;

typedef struct wr_s {
  uvctx_write_t req;
  side_t* side;
  char data[];
} wr_t;

/* Bytes per read callback of the transports (0: all there is). */
static const size_t chunks[4] = {0, 7, 300, 4096};

static uint8_t pat(int dir, uint64_t i) {
  uint64_t z = (i + (uint64_t)dir * 0x51ed27) * 0x9e3779b97f4a7c15u;
  return (uint8_t)(z >> 56);
}

static int is_server(const side_t* s) {
  return s->peer < s; /* the server is sides[1] */
}

static void on_close(uvctx_stream_t* st) {
  side_t* s = st->data;
  s->closes++;
}

static void side_close(side_t* s) {
  if (!uvctx_stream_is_closing(&s->tls.stream))
    uvctx_stream_close(&s->tls.stream, on_close);
}

static void on_alloc(uvctx_stream_t* st, size_t sug, uv_buf_t* b) {
  side_t* s = st->data;
  (void)sug;
  *b = uv_buf_init(s->buf, sizeof(s->buf));
}

static void on_read(uvctx_stream_t* st, ssize_t n, const uv_buf_t* b) {
  side_t* s = st->data;
  int dir = is_server(s) ? 0 : 1; /* what the peer sent: its direction */
  ssize_t i;

  if (n > 0) {
    FZ_CHECK(!s->ended);
    for (i = 0; i < n; i++)
      if ((uint8_t)b->base[i] != pat(dir, s->received + (uint64_t)i))
        s->bad = 1;
    s->received += (uint64_t)n;
    FZ_CHECK(s->received <= s->peer->sent);
    return;
  }
  if (n == 0 || n == UV_ENOBUFS)
    return;
  FZ_CHECK(!s->ended);
  s->ended = 1;
}

static void on_handshake(uvctx_tls_t* tls, int status) {
  side_t* s = tls->stream.data;
  s->hs_calls++;
  s->hs_status = status;
  if (status != 0) {
    side_close(s);
    return;
  }
  FZ_CHECK(uvctx_stream_read_start(&tls->stream, on_alloc, on_read) == 0);
}

static void on_write(uvctx_write_t* req, int status) {
  wr_t* w = (wr_t*)req;
  (void)status;
  w->side->writes--;
  free(w);
}

static void side_write(side_t* s, size_t n) {
  wr_t* w;
  uv_buf_t b;
  size_t i;
  int dir = is_server(s) ? 1 : 0;

  if (uvctx_stream_is_closing(&s->tls.stream) || s->shut)
    return;
  w = malloc(sizeof(*w) + n);
  FZ_CHECK(w != NULL);
  w->side = s;
  for (i = 0; i < n; i++)
    w->data[i] = (char)pat(dir, s->sent + i);
  b = uv_buf_init(w->data, (unsigned)n);
  if (uvctx_stream_write(&w->req, &s->tls.stream, &b, 1, on_write) != 0) {
    free(w); /* a failed session refuses writes: nothing was accepted */
    return;
  }
  s->sent += n;
  s->writes++;
}

static void on_shutdown(uvctx_shutdown_t* req, int status) {
  (void)status;
  free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uvctx_tls_config_t* cfgs[2] = {fz_tls_config(0), fz_tls_config(1)};
  fz_loop_t f;
  side_t* sides;
  side_t *c, *s;
  fz_in_t in = {data, size};
  int tampered = 0;
  int rounds;
  int i;

  fz_openssl_deterministic();
  fz_loop_begin(&f);
  sides = calloc(2, sizeof(*sides));
  FZ_CHECK(sides != NULL);
  c = &sides[0];
  s = &sides[1];
  c->peer = s;
  s->peer = c;
  for (i = 0; i < 2; i++) {
    side_t* x = &sides[i];
    fz_mem_init(&x->mem, &f.loop);
    x->mem.chunk = chunks[fz_below(&in, 4)];
    FZ_CHECK(uvctx_tls_init(&x->tls, cfgs[i], &x->mem.s,
                            i ? NULL : "localhost") == 0);
    x->tls.stream.data = x;
    FZ_CHECK(uvctx_with_cancel(uvctx_background(f.l), &x->ctx) == 0);
    FZ_CHECK(uvctx_tls_handshake(&x->tls, x->ctx, on_handshake) == 0);
  }
  while (in.n > 0) {
    unsigned op = fz_below(&in, 8);
    side_t* x = fz_below(&in, 2) ? s : c;
    unsigned arg = fz_byte(&in);
    switch (op) {
      case 0:
      case 1:
        fz_mem_move(&x->mem, &x->peer->mem, (size_t)(arg + 1) * 16);
        break;
      case 2:
        side_write(x, (size_t)arg * 64 + 1);
        break;
      case 3:
        if (x->mem.out_len > 0) {
          /* One byte in flight changed, then delivered. */
          x->mem.out[arg % x->mem.out_len] ^= (uint8_t)(1 + fz_byte(&in));
          tampered = 1;
        }
        break;
      case 4:
        fz_loop_turns(&f, 1 + (int)(arg % 4));
        break;
      case 5:
        if (!x->shut && !uvctx_stream_is_closing(&x->tls.stream)) {
          uvctx_shutdown_t* sd = malloc(sizeof(*sd));
          FZ_CHECK(sd != NULL);
          if (uvctx_stream_shutdown(sd, &x->tls.stream, on_shutdown) == 0)
            x->shut = 1;
          else
            free(sd);
        }
        break;
      case 6:
        if (arg < 16) {
          uvctx_cancel(x->ctx);
          tampered = 1;
        }
        break;
      default:
        fz_loop_turns(&f, 1);
        break;
    }
  }
  /* Let everything in flight arrive: until a round moves nothing and
   * delivers nothing. */
  for (rounds = 0; rounds < 100000; rounds++) {
    size_t before = c->mem.in_off + s->mem.in_off;
    size_t moved = fz_mem_move(&c->mem, &s->mem, SIZE_MAX);
    moved += fz_mem_move(&s->mem, &c->mem, SIZE_MAX);
    fz_loop_turns(&f, 2);
    if (moved == 0 && c->mem.out_len == 0 && s->mem.out_len == 0 &&
        c->mem.in_off + s->mem.in_off == before)
      break;
  }
  if (getenv("UVCTX_FUZZ_VERBOSE") != NULL)
    fprintf(stderr,
            "handshakes %d/%d (%s/%s), client sent %" PRIu64 " got %" PRIu64
            ", server sent %" PRIu64 " got %" PRIu64 "%s\n",
            c->hs_calls, s->hs_calls, uv_err_name(c->hs_status),
            uv_err_name(s->hs_status), c->sent, c->received, s->sent,
            s->received, tampered ? ", tampered" : "");
  FZ_CHECK(s->hs_calls <= 1 && c->hs_calls <= 1);
  for (i = 0; i < 2; i++) {
    side_t* x = &sides[i];
    FZ_CHECK(!x->bad);
    if (!tampered) {
      if (x->hs_calls != 1 || x->hs_status != 0)
        fprintf(stderr, "side %d: %d handshake calls, status %s (%s)\n", i,
                x->hs_calls, uv_err_name(x->hs_status),
                uvctx_tls_reason(&x->tls) ? uvctx_tls_reason(&x->tls) : "-");
      FZ_CHECK(x->hs_calls == 1 && x->hs_status == 0);
      FZ_CHECK(x->received == x->peer->sent);
    }
  }
  side_close(c);
  side_close(s);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  for (i = 0; i < 2; i++) {
    FZ_CHECK(sides[i].closes == 1);
    FZ_CHECK(sides[i].hs_calls == 1);
    FZ_CHECK(sides[i].writes == 0);
    fz_mem_release(&sides[i].mem);
    uvctx_release(sides[i].ctx);
  }
  fz_loop_end(&f);
  free(sides);
  return 0;
}
