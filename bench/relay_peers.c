/* relay_peers.c owns the peer relays of bench_relay: a bare libuv relay of
 * the same shape as uvctx_copy (64 KiB buffers, the same high/low marks),
 * its try-write variant (one buffer, uv_try_write first) and a blocking
 * read/write relay. No uvctx code on purpose. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay_peers.h"

double relay_thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Buffers are recycled through a small free list, as any careful libuv
 * relay does: a malloc and free of 64 KiB per read would make the baseline
 * pay for glibc trimming the heap, not for relaying. */
#define BARE_POOL 16

/* Like uvctx_copy's fixed pool of 8, reading also pauses while that many
 * buffers wait for their write callbacks: libuv reads up to 32 times per
 * readiness event and calls write callbacks a loop turn later, so without
 * this cap the bare relay would hold dozens of 64 KiB buffers at once. */
#define BARE_INFLIGHT 8

typedef struct bare_s {
  char* pool[BARE_POOL];
  int pooled;
  int inflight;
  uv_loop_t loop;
  uv_tcp_t in;
  uv_tcp_t out;
  uv_shutdown_t shut;
  uv_timer_t timer;
  int reading;
  int eof;
  int closes;
  uint64_t t0;
  uint64_t t1;
} bare_t;

typedef struct bare_write_s {
  uv_write_t req;
  bare_t* b;
  char* base;
} bare_write_t;

static void bare_close_cb(uv_handle_t* h) {
  bare_t* b = h->data;
  if (--b->closes == 0)
    b->t1 = uv_hrtime();
}

static void bare_close_all(bare_t* b) {
  if (uv_is_closing((uv_handle_t*)&b->in))
    return;
  b->closes = 2;
  uv_close((uv_handle_t*)&b->in, bare_close_cb);
  uv_close((uv_handle_t*)&b->out, bare_close_cb);
}

static void bare_alloc(uv_handle_t* h, size_t n, uv_buf_t* buf) {
  bare_t* b = h->data;
  (void)n;
  *buf = uv_buf_init(b->pooled > 0 ? b->pool[--b->pooled] : malloc(RELAY_BUF),
                     RELAY_BUF);
}

static void bare_buf_put(bare_t* b, char* base) {
  if (base != NULL && b->pooled < BARE_POOL)
    b->pool[b->pooled++] = base;
  else
    free(base);
}

static void bare_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

static void bare_write_cb(uv_write_t* req, int status) {
  bare_write_t* w = (bare_write_t*)req;
  bare_t* b = w->b;
  bare_buf_put(b, w->base);
  free(w);
  b->inflight--;
  if (status != 0) {
    bare_close_all(b);
    return;
  }
  if (!b->reading && !b->eof && !uv_is_closing((uv_handle_t*)&b->in) &&
      b->out.write_queue_size <= RELAY_LOW && b->inflight < BARE_INFLIGHT) {
    b->reading = 1;
    uv_read_start((uv_stream_t*)&b->in, bare_alloc, bare_read);
  }
}

static void bare_shutdown_cb(uv_shutdown_t* req, int status) {
  (void)status;
  bare_close_all(req->data);
}

static void bare_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  bare_t* b = s->data;
  bare_write_t* w;
  uv_buf_t out;
  if (n > 0) {
    w = malloc(sizeof(*w));
    w->b = b;
    w->base = buf->base;
    out = uv_buf_init(buf->base, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t*)&b->out, &out, 1, bare_write_cb)) {
      bare_buf_put(b, w->base);
      free(w);
      bare_close_all(b);
      return;
    }
    b->inflight++;
    if (b->out.write_queue_size > RELAY_HIGH - RELAY_BUF ||
        b->inflight >= BARE_INFLIGHT) {
      b->reading = 0;
      uv_read_stop(s);
    }
    return;
  }
  bare_buf_put(b, buf->base);
  if (n == 0)
    return;
  b->reading = 0;
  if (n == UV_EOF) {
    b->eof = 1;
    b->shut.data = b;
    if (uv_shutdown(&b->shut, (uv_stream_t*)&b->out, bare_shutdown_cb))
      bare_close_all(b);
    return;
  }
  bare_close_all(b);
}

/* ---- the try-write variant ----------------------------------------------
 * What a careful libuv relay does: every read lands in one reused buffer
 * and goes out at once with uv_try_write(); only when the socket is full
 * is the unwritten tail handed to uv_write(), and reading pauses until it
 * has completed (the buffer is the tail's until then). */

typedef struct tbare_s {
  char* buf;
  uv_loop_t loop;
  uv_tcp_t in;
  uv_tcp_t out;
  uv_write_t wreq;
  uv_shutdown_t shut;
  int eof;
} tbare_t;

static void tbare_close_all(tbare_t* b) {
  if (uv_is_closing((uv_handle_t*)&b->in))
    return;
  uv_close((uv_handle_t*)&b->in, NULL);
  uv_close((uv_handle_t*)&b->out, NULL);
}

static void tbare_alloc(uv_handle_t* h, size_t n, uv_buf_t* buf) {
  tbare_t* b = h->data;
  (void)n;
  *buf = uv_buf_init(b->buf, RELAY_BUF);
}

static void tbare_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

static void tbare_write_cb(uv_write_t* req, int status) {
  tbare_t* b = req->data;
  if (status != 0) {
    tbare_close_all(b);
    return;
  }
  if (!b->eof && !uv_is_closing((uv_handle_t*)&b->in))
    uv_read_start((uv_stream_t*)&b->in, tbare_alloc, tbare_read);
}

static void tbare_shutdown_cb(uv_shutdown_t* req, int status) {
  (void)status;
  tbare_close_all(req->data);
}

static void tbare_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  tbare_t* b = s->data;
  uv_buf_t out;
  int w;
  if (n > 0) {
    out = uv_buf_init(buf->base, (unsigned)n);
    w = uv_try_write((uv_stream_t*)&b->out, &out, 1);
    if (w == n)
      return;
    if (w < 0 && w != UV_EAGAIN) {
      tbare_close_all(b);
      return;
    }
    if (w > 0) {
      out.base += w;
      out.len -= (size_t)w;
    }
    b->wreq.data = b;
    if (uv_write(&b->wreq, (uv_stream_t*)&b->out, &out, 1, tbare_write_cb)) {
      tbare_close_all(b);
      return;
    }
    uv_read_stop(s);
    return;
  }
  if (n == 0)
    return;
  uv_read_stop(s);
  if (n == UV_EOF) {
    b->eof = 1;
    b->shut.data = b;
    if (uv_shutdown(&b->shut, (uv_stream_t*)&b->out, tbare_shutdown_cb))
      tbare_close_all(b);
    return;
  }
  tbare_close_all(b);
}

void relay_bare_try(uv_os_sock_t in, uv_os_sock_t out, double* cpu) {
  tbare_t b;
  double c0 = relay_thread_cpu();
  memset(&b, 0, sizeof(b));
  b.buf = malloc(RELAY_BUF);
  uv_loop_init(&b.loop);
  uv_tcp_init(&b.loop, &b.in);
  uv_tcp_init(&b.loop, &b.out);
  uv_tcp_open(&b.in, in);
  uv_tcp_open(&b.out, out);
  b.in.data = &b;
  b.out.data = &b;
  uv_read_start((uv_stream_t*)&b.in, tbare_alloc, tbare_read);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  uv_loop_close(&b.loop);
  *cpu = relay_thread_cpu() - c0;
  free(b.buf);
}

static void bare_open(bare_t* b, uv_os_sock_t in, uv_os_sock_t out) {
  uv_loop_init(&b->loop);
  uv_tcp_init(&b->loop, &b->in);
  uv_tcp_init(&b->loop, &b->out);
  uv_tcp_open(&b->in, in);
  uv_tcp_open(&b->out, out);
  b->in.data = b;
  b->out.data = b;
  b->reading = 1;
  uv_read_start((uv_stream_t*)&b->in, bare_alloc, bare_read);
}

void relay_bare(uv_os_sock_t in, uv_os_sock_t out, double* cpu) {
  bare_t b = {0};
  double c0 = relay_thread_cpu();
  bare_open(&b, in, out);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  uv_loop_close(&b.loop);
  *cpu = relay_thread_cpu() - c0;
  while (b.pooled > 0)
    free(b.pool[--b.pooled]);
}

static void bare_abort_cb(uv_timer_t* t) {
  bare_t* b = t->data;
  uv_close((uv_handle_t*)t, NULL);
  b->t0 = uv_hrtime();
  bare_close_all(b);
}

uint64_t relay_bare_abort(uv_os_sock_t in, uv_os_sock_t out,
                          uint64_t after_ms) {
  bare_t b = {0};
  bare_open(&b, in, out);
  uv_timer_init(&b.loop, &b.timer);
  b.timer.data = &b;
  uv_timer_start(&b.timer, bare_abort_cb, after_ms, 0);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  uv_loop_close(&b.loop);
  while (b.pooled > 0)
    free(b.pool[--b.pooled]);
  return b.t1 - b.t0;
}

void relay_blocking(uv_os_sock_t in, uv_os_sock_t out, double* cpu) {
  char* buf = malloc(RELAY_BUF);
  double c0 = relay_thread_cpu();
  ssize_t n;
  ssize_t off;
  ssize_t w;
  for (;;) {
    n = read(in, buf, RELAY_BUF);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (off = 0; off < n; off += w) {
      w = write(out, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) {
        w = 0;
        continue;
      }
      if (w <= 0)
        goto done;
    }
  }
  shutdown(out, SHUT_WR);
done:
  close(in);
  close(out);
  free(buf);
  *cpu = relay_thread_cpu() - c0;
}
