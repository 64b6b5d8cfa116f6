/* fuzz_support.c owns the pieces every fuzz target shares (fuzz.h): input
 * decisions, the per-input loop fixture with its leak checks, the seeded
 * RAND, and the memory stream. */
#include <string.h>

#include "fuzz.h"

#ifdef UVCTX_WITH_TLS
#define OPENSSL_SUPPRESS_DEPRECATED /* RAND_METHOD: what OpenSSL's fuzzers use \
                                     */
#include <openssl/rand.h>

#include "tls/tls_internal.h"
#include "uvctx/tls.h"
#endif

/* ---- input --------------------------------------------------------------- */

unsigned fz_byte(fz_in_t* in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

unsigned fz_below(fz_in_t* in, unsigned n) {
  return fz_byte(in) % n;
}

/* ---- the loop ------------------------------------------------------------ */

void fz_loop_begin(fz_loop_t* f) {
  f->allocs = uvctx_live_allocations();
  FZ_CHECK(uv_loop_init(&f->loop) == 0);
  FZ_CHECK(uvctx_loop_init(&f->loop, &f->l) == 0);
}

void fz_loop_turns(fz_loop_t* f, int turns) {
  while (turns-- > 0)
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void walk_cb(uv_handle_t* h, void* arg) {
  (void)arg;
  fprintf(stderr, "handle left open: %s\n", uv_handle_type_name(h->type));
}

void fz_loop_end(fz_loop_t* f) {
  int rc;

  uv_run(&f->loop, UV_RUN_DEFAULT);
  rc = uvctx_loop_close(f->l);
  if (rc != 0)
    uvctx_loop_dump(f->l, stderr);
  FZ_CHECK(rc == 0);
  /* The binding's own handles close in the next pass. */
  uv_run(&f->loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&f->loop);
  if (rc != 0)
    uv_walk(&f->loop, walk_cb, NULL);
  FZ_CHECK(rc == 0);
  FZ_CHECK(uvctx_live_allocations() == f->allocs);
#ifdef UVCTX_WITH_TLS
  FZ_CHECK(uvctx__tls_live_ssl() == 0);
#endif
}

/* ---- deterministic OpenSSL ----------------------------------------------- */

#ifdef UVCTX_WITH_TLS
/* splitmix64, rewound for every input. */
static uint64_t rand_state;

static int fz_rand_bytes(unsigned char* buf, int num) {
  int i;
  for (i = 0; i < num; i++) {
    uint64_t z = (rand_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    buf[i] = (unsigned char)(z ^ (z >> 31));
  }
  return 1;
}

static int fz_rand_status(void) {
  return 1;
}

static int fz_rand_seed(const void* buf, int num) {
  (void)buf;
  (void)num;
  return 1;
}

static int fz_rand_add(const void* buf, int num, double entropy) {
  (void)buf;
  (void)num;
  (void)entropy;
  return 1;
}

static const RAND_METHOD fz_rand = {fz_rand_seed,  fz_rand_bytes,
                                    NULL,          fz_rand_add,
                                    fz_rand_bytes, fz_rand_status};

void fz_openssl_deterministic(void) {
  static int installed;
  if (!installed) {
    FZ_CHECK(RAND_set_rand_method(&fz_rand) == 1);
    installed = 1;
  }
  rand_state = 0x75766374785f667au; /* "uvctx_fz" */
}

uvctx_tls_config_t* fz_tls_config(int server) {
  static uvctx_tls_config_t* cfg[2];
  char cert[512], key[512];
  uvctx_tls_config_t* c;

  if (cfg[server] != NULL)
    return cfg[server];
  FZ_CHECK(uvctx_tls_config_new(server ? UVCTX_TLS_SERVER : UVCTX_TLS_CLIENT,
                                &c) == 0);
  if (server) {
    snprintf(cert, sizeof(cert), "%s/server.pem", UVCTX_TLS_CERT_DIR);
    snprintf(key, sizeof(key), "%s/server.key", UVCTX_TLS_CERT_DIR);
    if (uvctx_tls_config_cert_file(c, cert, key) != 0) {
      fprintf(stderr, "fuzz: %s\n", uvctx_tls_config_reason(c));
      abort();
    }
  } else {
    FZ_CHECK(uvctx_tls_config_verify(c, 0) == 0);
  }
  cfg[server] = c;
  return c;
}
#else
void fz_openssl_deterministic(void) {
}
#endif

/* ---- the memory stream --------------------------------------------------- */

static int grow(uint8_t** p, size_t* cap, size_t need) {
  size_t c = *cap ? *cap : 4096;
  uint8_t* q;
  while (c < need)
    c *= 2;
  if (c == *cap)
    return 0;
  q = realloc(*p, c);
  FZ_CHECK(q != NULL);
  *p = q;
  *cap = c;
  return 0;
}

static fz_mem_t* mem_of(const uvctx_stream_t* s) {
  return (fz_mem_t*)((char*)s - offsetof(fz_mem_t, s));
}

static void mem_pump(uv_idle_t* h);

static void mem_kick(fz_mem_t* m) {
  if (!m->pump_closed && !uv_is_closing((uv_handle_t*)&m->pump))
    uv_idle_start(&m->pump, mem_pump);
}

/* The pump: completes writes and the shutdown, reports the close, and
 * delivers input while someone reads. Runs from the loop only. */
static void mem_pump(uv_idle_t* h) {
  fz_mem_t* m = (fz_mem_t*)((char*)h - offsetof(fz_mem_t, pump));
  uvctx_write_t* w = m->wq_head;
  int busy = 0;

  m->wq_head = NULL;
  m->wq_tail = &m->wq_head;
  while (w != NULL) {
    uvctx_write_t* next = w->next_;
    uvctx_stream_write_done(w, m->closing ? UV_ECANCELED : 0);
    w = next;
  }
  if (m->sd != NULL) {
    uvctx_shutdown_t* sd = m->sd;
    m->sd = NULL;
    uvctx_stream_shutdown_done(sd, m->closing ? UV_ECANCELED : 0);
  }
  if (m->closing) {
    uv_idle_stop(h);
    if (!m->close_reported) {
      m->close_reported = 1;
      uvctx_stream_close_done(&m->s);
    }
    return;
  }
  if (m->reading && !m->ended) {
    uv_buf_t buf = uv_buf_init(NULL, 0);
    size_t left = m->in_len - m->in_off;
    if (m->inject != 0) {
      int err = m->inject;
      m->inject = 0;
      m->ended = 1;
      uvctx_stream_emit_read(&m->s, err, &buf);
    } else if (left > 0) {
      size_t k;
      uvctx_stream_emit_alloc(&m->s, 65536, &buf);
      if (m->closing || !m->reading)
        return;
      if (buf.base == NULL || buf.len == 0) {
        uvctx_stream_emit_read(&m->s, UV_ENOBUFS, &buf);
        return;
      }
      k = left < buf.len ? left : buf.len;
      if (m->chunk != 0 && k > m->chunk)
        k = m->chunk;
      memcpy(buf.base, m->in + m->in_off, k);
      m->in_off += k;
      uvctx_stream_emit_read(&m->s, (ssize_t)k, &buf);
      busy = 1;
    } else if (m->eof) {
      m->ended = 1;
      uvctx_stream_emit_read(&m->s, UV_EOF, &buf);
    }
  }
  if (!busy && m->wq_head == NULL && m->sd == NULL && !m->closing)
    uv_idle_stop(h);
}

static int mem_read_start(uvctx_stream_t* s) {
  fz_mem_t* m = mem_of(s);
  m->reading = 1;
  m->ended = 0; /* a read_start after the end reports it again */
  mem_kick(m);
  return 0;
}

static int mem_read_stop(uvctx_stream_t* s) {
  mem_of(s)->reading = 0;
  return 0;
}

static int mem_write(uvctx_stream_t* s, uvctx_write_t* req,
                     const uv_buf_t bufs[], unsigned nbufs) {
  fz_mem_t* m = mem_of(s);
  unsigned i;
  for (i = 0; i < nbufs; i++) {
    grow(&m->out, &m->out_cap, m->out_len + bufs[i].len);
    memcpy(m->out + m->out_len, bufs[i].base, bufs[i].len);
    m->out_len += bufs[i].len;
  }
  req->next_ = NULL;
  *m->wq_tail = req;
  m->wq_tail = &req->next_;
  mem_kick(m);
  return 0;
}

static int mem_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req) {
  fz_mem_t* m = mem_of(s);
  m->sd = req;
  mem_kick(m);
  return 0;
}

static void mem_close(uvctx_stream_t* s) {
  fz_mem_t* m = mem_of(s);
  m->closing = 1;
  m->reading = 0;
  mem_kick(m);
}

static size_t mem_queued(const uvctx_stream_t* s) {
  (void)s;
  return 0; /* copied at once */
}

static const uvctx_stream_ops_t mem_ops = {
    "fuzz-mem",   mem_read_start, mem_read_stop, mem_write,
    mem_shutdown, mem_close,      mem_queued,    NULL /* no try-write */};

int fz_mem_init(fz_mem_t* m, uv_loop_t* loop) {
  memset(m, 0, sizeof(*m));
  FZ_CHECK(uvctx_stream_init(&m->s, &mem_ops, loop) == 0);
  FZ_CHECK(uv_idle_init(loop, &m->pump) == 0);
  m->wq_tail = &m->wq_head;
  return 0;
}

void fz_mem_feed(fz_mem_t* m, const void* p, size_t n) {
  if (n == 0)
    return;
  /* Compact what was delivered, then append. */
  if (m->in_off > 0) {
    memmove(m->in, m->in + m->in_off, m->in_len - m->in_off);
    m->in_len -= m->in_off;
    m->in_off = 0;
  }
  grow(&m->in, &m->in_cap, m->in_len + n);
  memcpy(m->in + m->in_len, p, n);
  m->in_len += n;
  mem_kick(m);
}

size_t fz_mem_move(fz_mem_t* from, fz_mem_t* to, size_t n) {
  if (n > from->out_len)
    n = from->out_len;
  if (n == 0)
    return 0; /* out may be NULL: no memmove on it */
  fz_mem_feed(to, from->out, n);
  memmove(from->out, from->out + n, from->out_len - n);
  from->out_len -= n;
  return n;
}

void fz_mem_eof(fz_mem_t* m) {
  m->eof = 1;
  mem_kick(m);
}

void fz_mem_fail(fz_mem_t* m, int err) {
  m->inject = err;
  mem_kick(m);
}

static void pump_closed(uv_handle_t* h) {
  fz_mem_t* m = (fz_mem_t*)((char*)h - offsetof(fz_mem_t, pump));
  m->pump_closed = 1;
}

void fz_mem_release(fz_mem_t* m) {
  free(m->in);
  free(m->out);
  m->in = m->out = NULL;
  m->in_len = m->in_off = m->in_cap = m->out_len = m->out_cap = 0;
  if (!uv_is_closing((uv_handle_t*)&m->pump))
    uv_close((uv_handle_t*)&m->pump, pump_closed);
}
