/* test_stream.c owns the Check suite of the stream interface: the libuv
 * implementation over TCP and uv_pipe_t (argument checks, reads, writes,
 * shutdown, close with requests pending, detach, resets seen as errors),
 * and the generic layer's guarantees checked with an in-test stream kind. */
#include <signal.h>
#include <sys/ioctl.h>

#include "copy_peers.h"
#include "uvctx/stream_impl.h"

static cp_listener_t L;
static int listening;

static void st_setup(void) {
  listening = 0;
  uvt_setup();
}

static void st_teardown(void) {
  if (listening) {
    cp_unlisten(&L);
    cp_wait_closed();
  }
  uvt_teardown();
}

static void tcp_pair(cp_handle_t* a, cp_handle_t* b) {
  if (!listening) {
    cp_listen(&L);
    listening = 1;
  }
  cp_tcp_pair(&L, a, b);
}

/* ---- the libuv implementation -------------------------------------------- */

static void noop_alloc(uv_handle_t* h, size_t n, uv_buf_t* b) {
  static char buf[64];
  (void)h;
  (void)n;
  *b = uv_buf_init(buf, sizeof(buf));
}

static void noop_read(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)n;
  (void)b;
}

START_TEST(test_init_uv_checks) {
  cp_handle_t a;
  cp_handle_t b;
  uv_timer_t t;
  uvctx_stream_t s;
  int marker;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  ck_assert_int_eq(uvctx_stream_init_uv(NULL, &a.s), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, NULL), UV_EINVAL);
  ck_assert_int_eq(uv_timer_init(uvt_loop, &t), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, (uv_stream_t*)&t), UV_EINVAL);
  cp_close_h((uv_handle_t*)&t);
  tcp_pair(&a, &b);
  /* A reading handle belongs to someone else. */
  ck_assert_int_eq(uv_read_start(&a.s, noop_alloc, noop_read), 0);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), UV_EINVAL);
  uv_read_stop(&a.s);
  /* h->data is taken over, and given back by detach. */
  a.h.data = &marker;
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), 0);
  ck_assert_ptr_eq(a.h.data, &s);
  ck_assert_ptr_eq(uvctx_stream_uv_handle(&s), &a.s);
  ck_assert_ptr_eq(uvctx_stream_loop(&s), uvt_loop);
  ck_assert_int_eq(uvctx_stream_uv_detach(&s), 0);
  ck_assert_ptr_eq(a.h.data, &marker);
  ck_assert_uint_eq(uvctx_stream_write_queue_size(&s), 0);
  ck_assert_int_eq(uvctx_stream_uv_detach(&s), UV_EINVAL);
  /* A closing handle. */
  cp_close(&b);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &b.s), UV_EINVAL);
  cp_close(&a);
  cp_wait_closed();
}
END_TEST

typedef struct rec_s {
  char log[64]; /* the order callbacks ran in: w (write ok), c (write
                   cancelled), s (shutdown), x (close), r (read) */
  int n;
  int statuses[32];
  int nst;
  uint64_t got;
  int eof;
  int err;
  char buf[65536];
} rec_t;

static rec_t R;

static void rec(char c) {
  ck_assert_int_lt(R.n, (int)sizeof(R.log) - 1);
  R.log[R.n++] = c;
  R.log[R.n] = '\0';
}

static void s_alloc(uvctx_stream_t* s, size_t n, uv_buf_t* b) {
  (void)s;
  (void)n;
  *b = uv_buf_init(R.buf, sizeof(R.buf));
}

static void s_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)b;
  if (n > 0) {
    R.got += (uint64_t)n;
  } else if (n == UV_EOF) {
    R.eof = 1;
  } else if (n < 0) {
    R.err = (int)n;
  }
}

static void s_write_cb(uvctx_write_t* w, int status) {
  (void)w;
  rec(status == 0 ? 'w' : 'c');
  if (R.nst < 32)
    R.statuses[R.nst++] = status;
}

static void s_shutdown_cb(uvctx_shutdown_t* r, int status) {
  (void)r;
  (void)status;
  rec('s');
}

static void s_close_cb(uvctx_stream_t* s) {
  rec('x');
  free(s->data); /* the handle's memory, freed in the close callback */
}

static void roundtrip(int unix_pipes) {
  cp_handle_t* h = calloc(1, sizeof(*h));
  cp_handle_t peer;
  uvctx_stream_t s;
  uvctx_write_t w;
  uvctx_shutdown_t sh;
  cp_sink_t sink;
  cp_sender_t snd;
  uv_buf_t b[3];
  char x[3][1000];

  memset(&R, 0, sizeof(R));
  memset(&peer, 0, sizeof(peer));
  if (unix_pipes)
    cp_unix_pair(h, &peer);
  else
    tcp_pair(h, &peer);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &h->s), 0);
  s.data = h;
  cp_sink_init(&sink, &peer.s, 4096, 0, 1);
  /* Three buffers in one write, in order. */
  cp_fill(x[0], 0, 1000);
  cp_fill(x[1], 1000, 1000);
  cp_fill(x[2], 2000, 1000);
  b[0] = uv_buf_init(x[0], 1000);
  b[1] = uv_buf_init(x[1], 1000);
  b[2] = uv_buf_init(x[2], 1000);
  ck_assert_int_eq(uvctx_stream_write(&w, &s, b, 0, s_write_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_write(&w, &s, b, 3, s_write_cb), 0);
  ck_assert_uint_eq(uvctx_write_size(&w), 3000);
  ck_assert_ptr_eq(uvctx_write_stream(&w), &s);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&s), 1);
  ck_assert_int_eq(R.n, 0); /* never inside the call */
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &s, s_shutdown_cb), 0);
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &s, s_shutdown_cb), UV_ENOTCONN);
  ck_assert_int_eq(uvctx_stream_write(&w, &s, b, 1, s_write_cb), UV_EPIPE);
  ck_assert_int_eq(R.n, 0);
  UVT_RUN_UNTIL(sink.eof);
  ck_assert_str_eq(R.log, "ws");
  ck_assert_uint_eq(sink.received, 3000);
  ck_assert_uint_eq(sink.bad, 0);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&s), 0);
  /* Reading: the peer sends and shuts down. */
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), 0);
  cp_sender_start(&snd, &peer.s, 200000, 5000, 3, 1);
  UVT_RUN_UNTIL(R.eof);
  ck_assert_uint_eq(R.got, 200000);
  ck_assert_int_eq(R.err, 0);
  ck_assert_int_eq(uvctx_stream_read_stop(&s), 0);
  uvctx_stream_close(&s, s_close_cb);
  ck_assert(uvctx_stream_is_closing(&s));
  uvctx_stream_close(&s, s_close_cb); /* does nothing */
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_write(&w, &s, b, 1, s_write_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &s, s_shutdown_cb), UV_EINVAL);
  ck_assert_int_eq(R.n, 2);
  UVT_RUN_UNTIL(R.n == 3);
  ck_assert_str_eq(R.log, "wsx");
  cp_close(&peer);
  cp_sink_free(&sink);
  cp_wait_closed();
  ck_assert_uint_eq(snd.writes_started, snd.writes_done);
}

START_TEST(test_roundtrip_tcp) {
  roundtrip(0);
}
END_TEST

START_TEST(test_roundtrip_pipe) {
  roundtrip(1);
}
END_TEST

/* A TCP pair with 16 KiB kernel buffers each way, so that a peer that
 * reads nothing stalls writes soon; `s` a stream over `h` with h as its
 * data (freed by s_close_cb). Clears the record. */
static void small_tcp_stream(cp_handle_t* h, cp_handle_t* peer,
                             uvctx_stream_t* s) {
  memset(&R, 0, sizeof(R));
  memset(peer, 0, sizeof(*peer));
  tcp_pair(h, peer);
  cp_small_buffers(h, 16 * 1024);
  cp_small_buffers(peer, 16 * 1024);
  ck_assert_int_eq(uvctx_stream_init_uv(s, &h->s), 0);
  s->data = h;
}

/* Close with writes queued behind a stalled peer and a shutdown pending:
 * every write callback and the shutdown callback run before the close
 * callback, which frees the handle's memory (ASan watches). */
START_TEST(test_close_with_pending) {
  cp_handle_t* h = calloc(1, sizeof(*h));
  cp_handle_t peer;
  uvctx_stream_t s;
  uvctx_write_t w[16];
  uvctx_shutdown_t sh;
  uv_buf_t b;
  static char big[256 * 1024];
  int i;
  int cancelled;
  size_t queued;
  uv_os_fd_t fd;
  int outq;
  int inq;

  small_tcp_stream(h, &peer, &s);
  b = uv_buf_init(big, sizeof(big));
  for (i = 0; i < 16; i++)
    ck_assert_int_eq(uvctx_stream_write(&w[i], &s, &b, 1, s_write_cb), 0);
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &s, s_shutdown_cb), 0);
  uvt_run_for(20);
  /* The peer reads nothing, so every byte written and no longer queued is
   * in the kernel: in h's send queue until acknowledged (outq), then in
   * the peer's receive queue (inq). Hence written - inq - outq <= queued
   * <= written - inq. outq is read first: a byte moving between the two
   * reads is counted twice, never missed. */
  queued = uvctx_stream_write_queue_size(&s);
  ck_assert_int_eq(uv_fileno(&h->h, &fd), 0);
  ck_assert_int_eq(ioctl(fd, TIOCOUTQ, &outq), 0);
  ck_assert_int_eq(uv_fileno(&peer.h, &fd), 0);
  ck_assert_int_eq(ioctl(fd, FIONREAD, &inq), 0);
  ck_assert_uint_gt(queued, 0);
  ck_assert_uint_le(queued + (size_t)inq, 16 * sizeof(big));
  ck_assert_uint_ge(queued + (size_t)inq + (size_t)outq, 16 * sizeof(big));
  uvctx_stream_close(&s, s_close_cb);
  ck_assert_ptr_null(strchr(R.log, 'x'));
  UVT_RUN_UNTIL(R.n == 18);
  ck_assert_int_eq(R.log[16], 's');
  ck_assert_int_eq(R.log[17], 'x');
  cancelled = 0;
  for (i = 0; i < 16; i++)
    if (R.log[i] == 'c') {
      cancelled++;
      ck_assert_int_eq(R.statuses[i], UV_ECANCELED);
    }
  ck_assert_int_gt(cancelled, 0);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&s), 0);
  cp_close(&peer);
  cp_wait_closed();
}
END_TEST

/* The try-write: bytes the kernel takes at once arrive in order with the
 * queued ones; while a write is pending it answers UV_EAGAIN (the queued
 * bytes go first), after a shutdown UV_EPIPE, on a closing stream
 * UV_EINVAL; a full socket takes only part of a large buffer. */
START_TEST(test_try_write_uv) {
  cp_handle_t* h = calloc(1, sizeof(*h));
  cp_handle_t peer;
  uvctx_stream_t s;
  uvctx_write_t w;
  uvctx_shutdown_t sh;
  cp_sink_t sink;
  uv_buf_t b[2];
  static char big[4 << 20];
  char x[2][1000];
  uint64_t off;
  int n;

  small_tcp_stream(h, &peer, &s);
  ck_assert_int_eq(uvctx_stream_try_write(NULL, b, 1), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_try_write(&s, NULL, 1), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 0), UV_EINVAL);
  /* Two buffers at once, into an empty socket: all of it. */
  cp_fill(x[0], 0, 1000);
  cp_fill(x[1], 1000, 1000);
  b[0] = uv_buf_init(x[0], 1000);
  b[1] = uv_buf_init(x[1], 1000);
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 2), 2000);
  off = 2000;
  /* A buffer larger than both kernel buffers: only part goes. */
  cp_fill(big, off, sizeof(big));
  b[0] = uv_buf_init(big, sizeof(big));
  n = uvctx_stream_try_write(&s, b, 1);
  ck_assert_int_gt(n, 0);
  ck_assert_int_lt(n, (int)sizeof(big));
  /* The rest is queued; until it is written, try_write refuses. */
  b[0] = uv_buf_init(big + n, sizeof(big) - (size_t)n);
  ck_assert_int_eq(uvctx_stream_write(&w, &s, b, 1, s_write_cb), 0);
  off += sizeof(big);
  cp_fill(x[0], off, 1000);
  b[0] = uv_buf_init(x[0], 1000);
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 1), UV_EAGAIN);
  cp_sink_init(&sink, &peer.s, 64 * 1024, 0, 1);
  UVT_RUN_UNTIL(R.n == 1);
  ck_assert_str_eq(R.log, "w");
  /* Nothing queued any more: the next bytes go straight out again. */
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 1), 1000);
  off += 1000;
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &s, s_shutdown_cb), 0);
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 1), UV_EPIPE);
  UVT_RUN_UNTIL(sink.eof);
  ck_assert_uint_eq(sink.received, off);
  ck_assert_uint_eq(sink.bad, 0);
  uvctx_stream_close(&s, s_close_cb);
  ck_assert_int_eq(uvctx_stream_try_write(&s, b, 1), UV_EINVAL);
  UVT_RUN_UNTIL(R.n == 3);
  ck_assert_str_eq(R.log, "wsx");
  cp_close(&peer);
  cp_sink_free(&sink);
  cp_wait_closed();
}
END_TEST

/* detach refuses while a write is pending, then hands the open handle
 * back with its data. */
START_TEST(test_detach) {
  cp_handle_t a;
  cp_handle_t peer;
  uvctx_stream_t s;
  uvctx_write_t w;
  uv_buf_t b;
  int marker;
  char x[10] = "0123456789";
  memset(&R, 0, sizeof(R));
  memset(&a, 0, sizeof(a));
  memset(&peer, 0, sizeof(peer));
  tcp_pair(&a, &peer);
  a.h.data = &marker;
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), 0);
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), 0);
  b = uv_buf_init(x, sizeof(x));
  ck_assert_int_eq(uvctx_stream_write(&w, &s, &b, 1, s_write_cb), 0);
  ck_assert_int_eq(uvctx_stream_uv_detach(&s), UV_EBUSY);
  UVT_RUN_UNTIL(R.n == 1);
  ck_assert_int_eq(uvctx_stream_uv_detach(&s), 0);
  ck_assert_ptr_eq(a.h.data, &marker);
  ck_assert(!uv_is_active(&a.h)); /* reading stopped */
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), UV_EINVAL);
  /* Yours again: use it with plain libuv. */
  ck_assert_int_eq(uv_read_start(&a.s, noop_alloc, noop_read), 0);
  cp_close(&a);
  cp_close(&peer);
  cp_wait_closed();
}
END_TEST

static void stream_closed(uvctx_stream_t* s) {
  (void)s;
  cp_closes_pending__--;
}

/* A peer's reset after data: libuv 1.44 may report it as UV_EOF (POLLHUP
 * after a partial read); the stream reports the reset. */
START_TEST(test_reset_is_an_error) {
  cp_handle_t a;
  cp_handle_t peer;
  uvctx_stream_t s;
  cp_sender_t snd;
  int i;
  for (i = 0; i < UVT_SCALE(50, 10); i++) {
    memset(&R, 0, sizeof(R));
    memset(&a, 0, sizeof(a));
    memset(&peer, 0, sizeof(peer));
    tcp_pair(&a, &peer);
    ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), 0);
    ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), 0);
    cp_sender_start(&snd, &peer.s, 1 + (uint64_t)i * 997, 4096, 1, 0);
    UVT_RUN_UNTIL(snd.writes_done == snd.writes_started);
    cp_closes_pending__++;
    ck_assert_int_eq(uv_tcp_close_reset(&peer.tcp, cp_on_close__), 0);
    UVT_RUN_UNTIL(R.eof || R.err);
    ck_assert_int_eq(R.eof, 0);
    ck_assert_int_eq(R.err, UV_ECONNRESET);
    cp_closes_pending__++;
    uvctx_stream_close(&s, stream_closed);
    cp_wait_closed();
  }
}
END_TEST

/* A second read_start while reading swaps the callbacks and keeps reading
 * (libuv itself refuses a second uv_read_start with UV_EALREADY). */
static int first_reads;
static void first_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)n;
  (void)b;
  first_reads++;
}

START_TEST(test_read_start_twice) {
  cp_handle_t a;
  cp_handle_t peer;
  uvctx_stream_t s;
  cp_sender_t snd;

  memset(&R, 0, sizeof(R));
  memset(&a, 0, sizeof(a));
  memset(&peer, 0, sizeof(peer));
  first_reads = 0;
  tcp_pair(&a, &peer);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), 0);
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, first_read), 0);
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, s_read), 0);
  cp_sender_start(&snd, &peer.s, 100000, 4096, 7, 1);
  UVT_RUN_UNTIL(R.eof || R.err);
  ck_assert_int_eq(R.err, 0);
  ck_assert_uint_eq(R.got, 100000);
  ck_assert_int_eq(first_reads, 0);
  cp_closes_pending__++;
  uvctx_stream_close(&s, stream_closed);
  cp_close(&peer);
  cp_wait_closed();
}
END_TEST

/* After UV_EOF the read side is finished: no read callback comes by
 * itself, but a read_start after it reports UV_EOF again, from the loop and
 * never inside the call, as libuv does (include/uvctx/stream.h says so). */
static int eofs;
static void eof_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b) {
  (void)s;
  (void)b;
  if (n == UV_EOF)
    eofs++;
  else
    s_read(s, n, b);
}

START_TEST(test_read_start_after_eof_reports_eof_again) {
  cp_handle_t a;
  cp_handle_t peer;
  uvctx_stream_t s;
  cp_sender_t snd;
  int round;

  memset(&R, 0, sizeof(R));
  memset(&a, 0, sizeof(a));
  memset(&peer, 0, sizeof(peer));
  eofs = 0;
  tcp_pair(&a, &peer);
  ck_assert_int_eq(uvctx_stream_init_uv(&s, &a.s), 0);
  ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, eof_read), 0);
  cp_sender_start(&snd, &peer.s, 5000, 1000, 5, 1);
  UVT_RUN_UNTIL(eofs == 1);
  ck_assert_uint_eq(R.got, 5000);
  /* Nothing more comes by itself. */
  uvt_run_for(50);
  ck_assert_int_eq(eofs, 1);
  for (round = 2; round <= 3; round++) {
    ck_assert_int_eq(uvctx_stream_read_start(&s, s_alloc, eof_read), 0);
    ck_assert_int_eq(eofs, round - 1); /* not inside the call */
    UVT_RUN_UNTIL(eofs == round);
    uvt_run_for(20);
    ck_assert_int_eq(eofs, round); /* once per read_start */
  }
  ck_assert_uint_eq(R.got, 5000);
  ck_assert_int_eq(R.err, 0);
  cp_closes_pending__++;
  uvctx_stream_close(&s, stream_closed);
  cp_close(&peer);
  cp_wait_closed();
}
END_TEST

/* ---- the generic layer, with an in-test stream kind ---------------------- */

/* A loopback kind: writes land in its own read side, completed from an idle
 * handle; close reports close_done from the loop BEFORE cancelling its
 * writes, to check that the generic layer holds the close callback back. */
typedef struct mem_s {
  uvctx_stream_t s;
  uv_idle_t idle;
  uvctx_write_t* q[8];
  int nq;
  int closing;
  int close_reported;
  size_t queued;
} mem_t;

static void mem_tick(uv_idle_t* i) {
  mem_t* m = i->data;
  int k;
  if (m->closing && !m->close_reported) {
    m->close_reported = 1;
    uvctx_stream_close_done(&m->s); /* writes still pending */
    return;
  }
  for (k = 0; k < m->nq; k++) {
    uvctx_write_t* w = m->q[k];
    m->queued -= uvctx_write_size(w);
    uvctx_stream_write_done(w, m->closing ? UV_ECANCELED : 0);
  }
  m->nq = 0;
  if (m->closing)
    uv_close((uv_handle_t*)&m->idle, NULL);
}

static int mem_read_start(uvctx_stream_t* s) {
  (void)s;
  return 0;
}

static int mem_read_stop(uvctx_stream_t* s) {
  (void)s;
  return 0;
}

static int mem_write(uvctx_stream_t* s, uvctx_write_t* req,
                     const uv_buf_t bufs[], unsigned n) {
  mem_t* m = CP_CONTAINER_OF(s, mem_t, s);
  (void)bufs;
  (void)n;
  if (m->nq == 8)
    return UV_ENOBUFS;
  m->q[m->nq++] = req;
  m->queued += uvctx_write_size(req);
  uv_idle_start(&m->idle, mem_tick);
  return 0;
}

static int mem_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req) {
  (void)s;
  (void)req;
  return UV_ENOSYS;
}

static void mem_close(uvctx_stream_t* s) {
  mem_t* m = CP_CONTAINER_OF(s, mem_t, s);
  m->closing = 1;
  uv_idle_start(&m->idle, mem_tick);
}

static size_t mem_qsize(const uvctx_stream_t* s) {
  return CP_CONTAINER_OF(s, mem_t, s)->queued;
}

static const uvctx_stream_ops_t mem_ops = {
    "mem",        mem_read_start, mem_read_stop, mem_write,
    mem_shutdown, mem_close,      mem_qsize,     NULL};

static void mem_close_cb(uvctx_stream_t* s) {
  (void)s;
  rec('x');
}

START_TEST(test_generic_layer) {
  mem_t m;
  uvctx_stream_ops_t broken = mem_ops;
  uvctx_write_t w[2];
  uvctx_shutdown_t sh;
  uv_buf_t b;
  uv_buf_t got;
  char x[5] = "hello";
  memset(&R, 0, sizeof(R));
  memset(&m, 0, sizeof(m));
  broken.close = NULL;
  ck_assert_int_eq(uvctx_stream_init(&m.s, &broken, uvt_loop), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_init(&m.s, &mem_ops, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_stream_init(&m.s, &mem_ops, uvt_loop), 0);
  ck_assert_ptr_null(uvctx_stream_uv_handle(&m.s));
  /* A kind without a try-write (try_write NULL) says so. */
  b = uv_buf_init(x, sizeof(x));
  ck_assert_int_eq(uvctx_stream_try_write(&m.s, &b, 1), UV_ENOSYS);
  ck_assert_int_eq(uvctx_stream_uv_detach(&m.s), UV_EINVAL);
  ck_assert_int_eq(uv_idle_init(uvt_loop, &m.idle), 0);
  m.idle.data = &m;
  b = uv_buf_init(x, sizeof(x));
  /* An op's error: no callback, nothing pending. */
  ck_assert_int_eq(uvctx_stream_shutdown(&sh, &m.s, s_shutdown_cb), UV_ENOSYS);
  ck_assert_int_eq(uvctx_stream_write(&w[0], &m.s, &b, 1, s_write_cb), 0);
  ck_assert_uint_eq(uvctx_stream_write_queue_size(&m.s), 5);
  /* Emitting while not reading does nothing. */
  uvctx_stream_emit_alloc(&m.s, 100, &got);
  ck_assert_ptr_null(got.base);
  ck_assert_int_eq(uvctx_stream_read_start(&m.s, s_alloc, s_read), 0);
  uvctx_stream_emit_alloc(&m.s, 100, &got);
  ck_assert_ptr_eq(got.base, R.buf);
  uvctx_stream_emit_read(&m.s, 5, &got);
  ck_assert_uint_eq(R.got, 5);
  ck_assert_int_eq(uvctx_stream_read_stop(&m.s), 0);
  uvctx_stream_emit_read(&m.s, 5, &got);
  ck_assert_uint_eq(R.got, 5);
  UVT_RUN_UNTIL(R.n == 1);
  ck_assert_str_eq(R.log, "w");
  ck_assert_int_eq(uvctx_stream_write(&w[0], &m.s, &b, 1, s_write_cb), 0);
  ck_assert_int_eq(uvctx_stream_write(&w[1], &m.s, &b, 1, s_write_cb), 0);
  uvctx_stream_close(&m.s, mem_close_cb);
  ck_assert_uint_eq(uvctx_stream_writes_pending(&m.s), 2);
  UVT_RUN_UNTIL(R.n == 4);
  /* The implementation reported its close first; the close callback still
   * ran last. */
  ck_assert_str_eq(R.log, "wccx");
  uvt_run_for(2);
}
END_TEST

static Suite* stream_suite(void) {
  Suite* s = suite_create("stream");
  TCase* tc = tcase_create("uv");
  tcase_add_checked_fixture(tc, st_setup, st_teardown);
  tcase_add_test(tc, test_init_uv_checks);
  tcase_add_test(tc, test_roundtrip_tcp);
  tcase_add_test(tc, test_roundtrip_pipe);
  tcase_add_test(tc, test_close_with_pending);
  tcase_add_test(tc, test_detach);
  tcase_add_test(tc, test_try_write_uv);
  tcase_add_test(tc, test_reset_is_an_error);
  tcase_add_test(tc, test_read_start_twice);
  tcase_add_test(tc, test_read_start_after_eof_reports_eof_again);
  suite_add_tcase(s, tc);
  tc = tcase_create("generic");
  tcase_add_checked_fixture(tc, st_setup, st_teardown);
  tcase_add_test(tc, test_generic_layer);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner* sr;
  int failed;
  signal(SIGPIPE, SIG_IGN);
  sr = srunner_create(stream_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
