/* bench_uv.c: each operation of <uvctx/uv.h> beside the bare libuv call it
 * wraps, in the same run, as nanoseconds per operation (a chain of
 * operations, each started from the previous one's callback; median of
 * several rounds that alternate ours and the peer's), and the cancel path
 * of each (start, cancel, callback, with a fresh context per operation)
 * beside the bare operation stopped the way libuv stops it (uv_close,
 * uv_cancel, a signal). uv_sleep_cancel_ctx_premade is the sleep's cancel
 * path again with the contexts made before the chain and freed after it,
 * untimed: the split between the operation and its fresh context.
 *
 *   uv_sleep_0ms/1ms      uvctx_sleep          uv_timer init/start/close
 *   uv_tcp_connect        uvctx_tcp_connect    uv_tcp_connect (+ close)
 *   uv_getaddrinfo        uvctx_getaddrinfo    uv_getaddrinfo "localhost"
 *   uv_queue_work         uvctx_queue_work     uv_queue_work (empty job)
 *   uv_spawn              uvctx_spawn          uv_spawn /bin/true
 *   uv_pingpong_64b       uvctx_send/recv      uv_write/uv_read_start
 *
 * Usage: bench_uv [--quick] [--scale X] [--only PREFIX]: --only runs the
 * rows whose name starts with PREFIX. Loopback only. */
#include <signal.h>

#include "bench.h"
#include "uvctx/uv.h"

static uv_loop_t loop;
static uvctx_loop_t* L;
static uvctx_t* ctx;    /* a cancellable context "ours" runs under */
static uvctx_t* op_ctx; /* the cancel paths' per-operation context */
static size_t left;     /* operations still to run in this chain */
static int done;

/* Runs `start` n times in a chain (each callback starts the next through
 * next()) and returns ns per operation. Never inlined, so that a profiler
 * can cut a run at its entry and exit (callgrind --dump-before=chain
 * --dump-after=chain gives one part per chain, ours and the peer's in
 * turn). */
__attribute__((noinline)) static double chain(void (*start)(void), size_t n) {
  uint64_t t0;
  left = n;
  done = 0;
  t0 = bench_now();
  start();
  while (!done)
    uv_run(&loop, UV_RUN_ONCE);
  return (double)(bench_now() - t0) / (double)n;
}

static void next(void (*start)(void)) {
  if (--left == 0)
    done = 1;
  else
    start();
}

/* ---- sleep --------------------------------------------------------------- */

static uint64_t sleep_ms;
static uvctx_sleep_t sreq;
static uv_timer_t timer;

static void our_sleep(void);
static void our_sleep_cb(uvctx_sleep_t* r, int st) {
  (void)r;
  BENCH_OK(st);
  next(our_sleep);
}
static void our_sleep(void) {
  BENCH_OK(uvctx_sleep(&sreq, ctx, sleep_ms, our_sleep_cb));
}

static void bare_sleep(void);
static void bare_timer_closed(uv_handle_t* h) {
  (void)h;
  next(bare_sleep);
}
static void bare_timer_cb(uv_timer_t* t) {
  uv_close((uv_handle_t*)t, bare_timer_closed);
}
static void bare_sleep(void) {
  BENCH_OK(uv_timer_init(&loop, &timer));
  BENCH_OK(uv_timer_start(&timer, bare_timer_cb, sleep_ms, 0));
}

static void our_sleep_0ms(void) {
  sleep_ms = 0;
  our_sleep();
}
static void bare_sleep_0ms(void) {
  sleep_ms = 0;
  bare_sleep();
}
static void our_sleep_1ms(void) {
  sleep_ms = 1;
  our_sleep();
}
static void bare_sleep_1ms(void) {
  sleep_ms = 1;
  bare_sleep();
}

static void our_sleep_cancel(void);
static void our_sleep_cancel_cb(uvctx_sleep_t* r, int st) {
  (void)r;
  BENCH_ASSERT(st == UV_ECANCELED);
  uvctx_release(op_ctx);
  next(our_sleep_cancel);
}
static void our_sleep_cancel(void) {
  BENCH_OK(uvctx_with_cancel(ctx, &op_ctx));
  BENCH_OK(uvctx_sleep(&sreq, op_ctx, 60000, our_sleep_cancel_cb));
  BENCH_OK(uvctx_cancel(op_ctx));
}
/* The same cancel path under contexts made before the chain and freed
 * after it, outside the timed section: what the operation costs apart
 * from the fresh context a caller makes to cancel it (the row above). */
static uvctx_t** premade;
static size_t premade_next, premade_n;

static void premade_make(size_t n) {
  size_t i;
  premade = malloc(n * sizeof(*premade));
  BENCH_ASSERT(premade != NULL);
  for (i = 0; i < n; i++)
    BENCH_OK(uvctx_with_cancel(ctx, &premade[i]));
  premade_next = 0;
  premade_n = n;
}
static void premade_free(void) {
  size_t i;
  for (i = 0; i < premade_n; i++)
    uvctx_unref(premade[i]);
  free(premade);
  premade = NULL;
}

static void our_sleep_cancel_premade(void);
static void our_sleep_cancel_premade_cb(uvctx_sleep_t* r, int st) {
  (void)r;
  BENCH_ASSERT(st == UV_ECANCELED);
  next(our_sleep_cancel_premade);
}
static void our_sleep_cancel_premade(void) {
  uvctx_t* c = premade[premade_next++];
  BENCH_OK(uvctx_sleep(&sreq, c, 60000, our_sleep_cancel_premade_cb));
  BENCH_OK(uvctx_cancel(c));
}

static void bare_sleep_cancel(void);
static void bare_sleep_cancel_closed(uv_handle_t* h) {
  (void)h;
  next(bare_sleep_cancel);
}
static void bare_sleep_cancel(void) {
  BENCH_OK(uv_timer_init(&loop, &timer));
  BENCH_OK(uv_timer_start(&timer, bare_timer_cb, 60000, 0));
  uv_close((uv_handle_t*)&timer, bare_sleep_cancel_closed);
}

/* ---- connect ------------------------------------------------------------- */

static uv_tcp_t server;
static struct sockaddr_in server_addr;
static uv_tcp_t client;
static uv_connect_t creq;
static uvctx_connect_t ucreq;

static void accepted_closed(uv_handle_t* h) {
  free(h);
}
static void on_conn(uv_stream_t* s, int status) {
  uv_tcp_t* c;
  if (status != 0)
    return;
  c = malloc(sizeof(*c));
  BENCH_ASSERT(c != NULL);
  BENCH_OK(uv_tcp_init(&loop, c));
  BENCH_OK(uv_accept(s, (uv_stream_t*)c));
  uv_close((uv_handle_t*)c, accepted_closed);
}

static void our_connect(void);
static void our_client_closed(uv_handle_t* h) {
  (void)h;
  next(our_connect);
}
static void our_connect_cb(uvctx_connect_t* r, int st) {
  (void)r;
  BENCH_OK(st);
  uv_close((uv_handle_t*)&client, our_client_closed);
}
static void our_connect(void) {
  BENCH_OK(uv_tcp_init(&loop, &client));
  BENCH_OK(uvctx_tcp_connect(&ucreq, ctx, &client,
                             (struct sockaddr*)&server_addr, our_connect_cb));
}

static void bare_connect(void);
static void bare_client_closed(uv_handle_t* h) {
  (void)h;
  next(bare_connect);
}
static void bare_connect_cb(uv_connect_t* r, int st) {
  (void)r;
  BENCH_OK(st);
  uv_close((uv_handle_t*)&client, bare_client_closed);
}
static void bare_connect(void) {
  BENCH_OK(uv_tcp_init(&loop, &client));
  BENCH_OK(uv_tcp_connect(&creq, &client, (struct sockaddr*)&server_addr,
                          bare_connect_cb));
}

static void our_connect_cancel(void);
static void our_connect_cancel_cb(uvctx_connect_t* r, int st) {
  (void)r;
  BENCH_ASSERT(st == UV_ECANCELED);
  uvctx_release(op_ctx);
  next(our_connect_cancel);
}
static void our_connect_cancel(void) {
  BENCH_OK(uvctx_with_cancel(ctx, &op_ctx));
  BENCH_OK(uv_tcp_init(&loop, &client));
  BENCH_OK(uvctx_tcp_connect(&ucreq, op_ctx, &client,
                             (struct sockaddr*)&server_addr,
                             our_connect_cancel_cb));
  BENCH_OK(uvctx_cancel(op_ctx));
}
static void bare_connect_cancel(void);
static void bare_connect_cancel_cb(uv_connect_t* r, int st) {
  (void)r;
  (void)st; /* UV_ECANCELED, from the close */
}
static void bare_connect_cancel_closed(uv_handle_t* h) {
  (void)h;
  next(bare_connect_cancel);
}
static void bare_connect_cancel(void) {
  BENCH_OK(uv_tcp_init(&loop, &client));
  BENCH_OK(uv_tcp_connect(&creq, &client, (struct sockaddr*)&server_addr,
                          bare_connect_cancel_cb));
  uv_close((uv_handle_t*)&client, bare_connect_cancel_closed);
}

/* ---- getaddrinfo --------------------------------------------------------- */

static uvctx_getaddrinfo_t ugai;
static uv_getaddrinfo_t gai;
static struct addrinfo hints;

static void our_gai(void);
static void our_gai_cb(uvctx_getaddrinfo_t* r, int st, struct addrinfo* res) {
  (void)r;
  BENCH_OK(st);
  uv_freeaddrinfo(res);
  next(our_gai);
}
static void our_gai(void) {
  BENCH_OK(
      uvctx_getaddrinfo(&ugai, ctx, "localhost", "80", &hints, our_gai_cb));
}
static void bare_gai(void);
static void bare_gai_cb(uv_getaddrinfo_t* r, int st, struct addrinfo* res) {
  (void)r;
  BENCH_OK(st);
  uv_freeaddrinfo(res);
  next(bare_gai);
}
static void bare_gai(void) {
  BENCH_OK(uv_getaddrinfo(&loop, &gai, bare_gai_cb, "localhost", "80", &hints));
}

/* The cancel paths of lookups and work cancel requests still queued: the
 * pool's threads are held by blocking jobs meanwhile, so that uv_cancel()
 * succeeds for the peer as it does for ours. */
enum { POOL = 4 };
static uv_work_t blockers[POOL];
static uv_sem_t block_go, block_started;
static int blockers_after;

static void block_job(uv_work_t* w) {
  (void)w;
  uv_sem_post(&block_started);
  uv_sem_wait(&block_go);
}
static void block_after(uv_work_t* w, int st) {
  (void)w;
  (void)st;
  blockers_after++;
}
static void pool_hold(void) {
  int i;
  BENCH_OK(uv_sem_init(&block_go, 0));
  BENCH_OK(uv_sem_init(&block_started, 0));
  blockers_after = 0;
  for (i = 0; i < POOL; i++)
    BENCH_OK(uv_queue_work(&loop, &blockers[i], block_job, block_after));
  for (i = 0; i < POOL; i++)
    uv_sem_wait(&block_started);
}
static void pool_release(void) {
  int i;
  for (i = 0; i < POOL; i++)
    uv_sem_post(&block_go);
  while (blockers_after < POOL)
    uv_run(&loop, UV_RUN_ONCE);
  uv_sem_destroy(&block_go);
  uv_sem_destroy(&block_started);
}

static void our_gai_cancel(void);
static void our_gai_cancel_cb(uvctx_getaddrinfo_t* r, int st,
                              struct addrinfo* res) {
  (void)r;
  BENCH_ASSERT(st == UV_ECANCELED && res == NULL);
  uvctx_release(op_ctx);
  next(our_gai_cancel);
}
static void our_gai_cancel(void) {
  BENCH_OK(uvctx_with_cancel(ctx, &op_ctx));
  BENCH_OK(uvctx_getaddrinfo(&ugai, op_ctx, "localhost", "80", &hints,
                             our_gai_cancel_cb));
  BENCH_OK(uvctx_cancel(op_ctx));
}
static void bare_gai_cancel(void);
static void bare_gai_cancel_cb(uv_getaddrinfo_t* r, int st,
                               struct addrinfo* res) {
  (void)r;
  (void)res;
  BENCH_ASSERT(st == UV_EAI_CANCELED);
  next(bare_gai_cancel);
}
static void bare_gai_cancel(void) {
  BENCH_OK(uv_getaddrinfo(&loop, &gai, bare_gai_cancel_cb, "localhost", "80",
                          &hints));
  BENCH_OK(uv_cancel((uv_req_t*)&gai));
}
static void our_gai_cancel_held(void) {
  pool_hold();
  our_gai_cancel();
}
static void bare_gai_cancel_held(void) {
  pool_hold();
  bare_gai_cancel();
}

/* ---- work ---------------------------------------------------------------- */

static uvctx_work_t uwork;
static uv_work_t work;

static int our_job(uvctx_work_t* r) {
  (void)r;
  return 0;
}
static void our_work(void);
static void our_after(uvctx_work_t* r, int st) {
  (void)r;
  BENCH_OK(st);
  next(our_work);
}
static void our_work(void) {
  BENCH_OK(uvctx_queue_work(&uwork, ctx, our_job, our_after));
}
static void bare_job(uv_work_t* w) {
  (void)w;
}
static void bare_work(void);
static void bare_after(uv_work_t* w, int st) {
  (void)w;
  BENCH_OK(st);
  next(bare_work);
}
static void bare_work(void) {
  BENCH_OK(uv_queue_work(&loop, &work, bare_job, bare_after));
}

static void our_work_cancel(void);
static void our_after_cancel(uvctx_work_t* r, int st) {
  (void)r;
  BENCH_ASSERT(st == UV_ECANCELED);
  uvctx_release(op_ctx);
  next(our_work_cancel);
}
static void our_work_cancel(void) {
  BENCH_OK(uvctx_with_cancel(ctx, &op_ctx));
  BENCH_OK(uvctx_queue_work(&uwork, op_ctx, our_job, our_after_cancel));
  BENCH_OK(uvctx_cancel(op_ctx));
}
static void bare_work_cancel(void);
static void bare_after_cancel(uv_work_t* w, int st) {
  (void)w;
  BENCH_ASSERT(st == UV_ECANCELED);
  next(bare_work_cancel);
}
static void bare_work_cancel(void) {
  BENCH_OK(uv_queue_work(&loop, &work, bare_job, bare_after_cancel));
  BENCH_OK(uv_cancel((uv_req_t*)&work));
}
static void our_work_cancel_held(void) {
  pool_hold();
  our_work_cancel();
}
static void bare_work_cancel_held(void) {
  pool_hold();
  bare_work_cancel();
}

/* ---- spawn --------------------------------------------------------------- */

static uvctx_process_t uproc;
static uv_process_t proc;
static uv_process_options_t popts;
static char* true_argv[] = {"/bin/true", NULL};
static char* sleep_argv[] = {"/bin/sleep", "10", NULL};

static void our_spawn(void);
static void our_exit(uvctx_process_t* p, int st, int64_t es, int ts) {
  (void)p;
  (void)ts;
  BENCH_OK(st);
  BENCH_ASSERT(es == 0);
  next(our_spawn);
}
static void our_spawn(void) {
  popts.exit_cb = NULL;
  popts.file = true_argv[0];
  popts.args = true_argv;
  BENCH_OK(uvctx_spawn(&uproc, ctx, &popts, NULL, our_exit));
}
static void bare_spawn(void);
static void bare_proc_closed(uv_handle_t* h) {
  (void)h;
  next(bare_spawn);
}
static void bare_exit(uv_process_t* p, int64_t es, int ts) {
  (void)ts;
  BENCH_ASSERT(es == 0);
  uv_close((uv_handle_t*)p, bare_proc_closed);
}
static void bare_spawn(void) {
  popts.exit_cb = bare_exit;
  popts.file = true_argv[0];
  popts.args = true_argv;
  BENCH_OK(uv_spawn(&loop, &proc, &popts));
}

static void our_spawn_cancel(void);
static void our_exit_cancel(uvctx_process_t* p, int st, int64_t es, int ts) {
  (void)p;
  (void)es;
  BENCH_ASSERT(st == UV_ECANCELED && ts == SIGTERM);
  uvctx_release(op_ctx);
  next(our_spawn_cancel);
}
static void our_spawn_cancel(void) {
  popts.exit_cb = NULL;
  popts.file = sleep_argv[0];
  popts.args = sleep_argv;
  BENCH_OK(uvctx_with_cancel(ctx, &op_ctx));
  BENCH_OK(uvctx_spawn(&uproc, op_ctx, &popts, NULL, our_exit_cancel));
  BENCH_OK(uvctx_cancel(op_ctx));
}
static void bare_spawn_cancel(void);
static void bare_cancel_closed(uv_handle_t* h) {
  (void)h;
  next(bare_spawn_cancel);
}
static void bare_exit_cancel(uv_process_t* p, int64_t es, int ts) {
  (void)es;
  BENCH_ASSERT(ts == SIGTERM);
  uv_close((uv_handle_t*)p, bare_cancel_closed);
}
static void bare_spawn_cancel(void) {
  popts.exit_cb = bare_exit_cancel;
  popts.file = sleep_argv[0];
  popts.args = sleep_argv;
  BENCH_OK(uv_spawn(&loop, &proc, &popts));
  BENCH_OK(uv_process_kill(&proc, SIGTERM));
}

/* ---- ping-pong ----------------------------------------------------------- */

/* A sends 64 bytes, B answers with 64 bytes: one operation. Ours: one
 * uvctx_send and uvctx_recv on each side per message (a receive is one
 * read start/stop); the peer: raw libuv, both sides reading throughout. */
enum { MSG = 64 };
static uv_tcp_t pa, pb;
static uvctx_stream_t sa, sb;
static char msg[MSG], abuf[MSG], bbuf[MSG];
static uvctx_send_t asend, bsend;
static uvctx_recv_t arecv, brecv;
static size_t a_got, b_got;
static uvctx_t* pp_ctx; /* ends B's standing receive after a chain */
static int b_stopped;

static void sent_cb(uvctx_send_t* r, int st) {
  (void)r;
  BENCH_OK(st);
}
static void b_recv_cb(uvctx_recv_t* r, ssize_t n) {
  uv_buf_t b = uv_buf_init(msg, MSG);
  (void)r;
  if (n == UV_ECANCELED) {
    b_stopped = 1;
    return;
  }
  BENCH_ASSERT(n > 0);
  b_got += (size_t)n;
  if (b_got == MSG) {
    b_got = 0;
    BENCH_OK(uvctx_send(&bsend, pp_ctx, &sb, &b, 1, sent_cb));
  }
  BENCH_OK(uvctx_recv(&brecv, pp_ctx, &sb, uv_buf_init(bbuf, MSG), b_recv_cb));
}
static void our_ping(void);
static void a_recv_cb(uvctx_recv_t* r, ssize_t n) {
  (void)r;
  BENCH_ASSERT(n > 0);
  a_got += (size_t)n;
  if (a_got < MSG) {
    BENCH_OK(
        uvctx_recv(&arecv, pp_ctx, &sa, uv_buf_init(abuf, MSG), a_recv_cb));
    return;
  }
  a_got = 0;
  next(our_ping);
}
static void our_ping(void) {
  uv_buf_t b = uv_buf_init(msg, MSG);
  BENCH_OK(uvctx_send(&asend, pp_ctx, &sa, &b, 1, sent_cb));
  BENCH_OK(uvctx_recv(&arecv, pp_ctx, &sa, uv_buf_init(abuf, MSG), a_recv_cb));
}
static void our_ping_begin(void) {
  BENCH_OK(uvctx_stream_init_uv(&sa, (uv_stream_t*)&pa));
  BENCH_OK(uvctx_stream_init_uv(&sb, (uv_stream_t*)&pb));
  BENCH_OK(uvctx_with_cancel(ctx, &pp_ctx));
  b_stopped = 0;
  BENCH_OK(uvctx_recv(&brecv, pp_ctx, &sb, uv_buf_init(bbuf, MSG), b_recv_cb));
  our_ping();
}
/* Ends B's standing receive and gives the handles back for the peer. */
static void our_ping_end(void) {
  uvctx_release(pp_ctx);
  while (!b_stopped)
    uv_run(&loop, UV_RUN_ONCE);
  BENCH_OK(uvctx_stream_uv_detach(&sa));
  BENCH_OK(uvctx_stream_uv_detach(&sb));
}

static uv_write_t aw, bw;
static void raw_alloc(uv_handle_t* h, size_t n, uv_buf_t* b) {
  (void)n;
  *b = uv_buf_init(h == (uv_handle_t*)&pa ? abuf : bbuf, MSG);
}
static void raw_written(uv_write_t* w, int st) {
  (void)w;
  BENCH_OK(st);
}
static void bare_ping(void);
static void raw_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  uv_buf_t b = uv_buf_init(msg, MSG);
  (void)buf;
  if (n == 0)
    return;
  BENCH_ASSERT(n > 0);
  if (s == (uv_stream_t*)&pb) {
    b_got += (size_t)n;
    if (b_got == MSG) {
      b_got = 0;
      BENCH_OK(uv_write(&bw, (uv_stream_t*)&pb, &b, 1, raw_written));
    }
    return;
  }
  a_got += (size_t)n;
  if (a_got < MSG)
    return;
  a_got = 0;
  next(bare_ping);
}
static void bare_ping(void) {
  uv_buf_t b = uv_buf_init(msg, MSG);
  BENCH_OK(uv_write(&aw, (uv_stream_t*)&pa, &b, 1, raw_written));
}
static void bare_ping_begin(void) {
  BENCH_OK(uv_read_start((uv_stream_t*)&pa, raw_alloc, raw_read));
  BENCH_OK(uv_read_start((uv_stream_t*)&pb, raw_alloc, raw_read));
  bare_ping();
}
static void bare_ping_end(void) {
  uv_read_stop((uv_stream_t*)&pa);
  uv_read_stop((uv_stream_t*)&pb);
}

static int pair_accepted, pair_connected;
static void on_pair_conn(uv_stream_t* s, int status) {
  BENCH_OK(status);
  BENCH_OK(uv_tcp_init(&loop, &pb));
  BENCH_OK(uv_accept(s, (uv_stream_t*)&pb));
  pair_accepted = 1;
}
static void pair_connect_cb(uv_connect_t* r, int st) {
  (void)r;
  BENCH_OK(st);
  pair_connected = 1;
}
static void pair_open(void) {
  static uv_tcp_t ls;
  struct sockaddr_in a;
  int len = sizeof(a);
  BENCH_OK(uv_tcp_init(&loop, &ls));
  BENCH_OK(uv_ip4_addr("127.0.0.1", 0, &a));
  BENCH_OK(uv_tcp_bind(&ls, (struct sockaddr*)&a, 0));
  BENCH_OK(uv_listen((uv_stream_t*)&ls, 4, on_pair_conn));
  BENCH_OK(uv_tcp_getsockname(&ls, (struct sockaddr*)&a, &len));
  BENCH_OK(uv_tcp_init(&loop, &pa));
  BENCH_OK(uv_tcp_connect(&creq, &pa, (struct sockaddr*)&a, pair_connect_cb));
  while (!pair_connected || !pair_accepted)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t*)&ls, NULL);
  BENCH_OK(uv_tcp_nodelay(&pa, 1));
  BENCH_OK(uv_tcp_nodelay(&pb, 1));
}

/* ---- main ---------------------------------------------------------------- */

typedef struct scen_s {
  const char* name;
  const char* peer;
  size_t full, quick;
  void (*ours)(void);
  void (*bare)(void);
  void (*after_ours)(void);      /* after each chain of ours, optional */
  void (*after_bare)(void);      /* after each chain of the peer's */
  void (*before_ours)(size_t n); /* before each chain of ours, untimed */
} scen_t;

static void measure(const scen_t* s, const bench_opts_t* o) {
  enum { ROUNDS = 5 };
  double ours[ROUNDS], bare[ROUNDS];
  size_t n = bench_count(o, s->full, s->quick);
  int rounds = o->quick ? 1 : ROUNDS;
  int i;
  for (i = 0; i < rounds; i++) {
    if (s->before_ours != NULL)
      s->before_ours(n);
    ours[i] = chain(s->ours, n);
    if (s->after_ours != NULL)
      s->after_ours();
    bare[i] = chain(s->bare, n);
    if (s->after_bare != NULL)
      s->after_bare();
  }
  bench_result_peer(s->name, "ns/op", bench_median(ours, (size_t)rounds),
                    s->peer, bench_median(bare, (size_t)rounds));
}

static void close_walk(uv_handle_t* h, void* arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int main(int argc, char** argv) {
  static const scen_t scens[] = {
      {"uv_sleep_0ms", "uv_timer", 20000, 20, our_sleep_0ms, bare_sleep_0ms,
       NULL, NULL, NULL},
      {"uv_sleep_1ms", "uv_timer", 500, 3, our_sleep_1ms, bare_sleep_1ms, NULL,
       NULL, NULL},
      {"uv_tcp_connect", "uv_tcp_connect", 3000, 10, our_connect, bare_connect,
       NULL, NULL, NULL},
      {"uv_getaddrinfo", "uv_getaddrinfo", 5000, 10, our_gai, bare_gai, NULL,
       NULL, NULL},
      {"uv_queue_work", "uv_queue_work", 20000, 20, our_work, bare_work, NULL,
       NULL, NULL},
      {"uv_spawn", "uv_spawn", 200, 3, our_spawn, bare_spawn, NULL, NULL, NULL},
      {"uv_pingpong_64b", "uv_write+uv_read_start", 20000, 20, our_ping_begin,
       bare_ping_begin, our_ping_end, bare_ping_end, NULL},
      {"uv_sleep_cancel", "uv_timer+uv_close", 20000, 20, our_sleep_cancel,
       bare_sleep_cancel, NULL, NULL, NULL},
      {"uv_sleep_cancel_ctx_premade", "uv_timer+uv_close", 20000, 20,
       our_sleep_cancel_premade, bare_sleep_cancel, premade_free, NULL,
       premade_make},
      {"uv_tcp_connect_cancel", "uv_tcp_connect+uv_close", 3000, 10,
       our_connect_cancel, bare_connect_cancel, NULL, NULL, NULL},
      {"uv_getaddrinfo_cancel", "uv_getaddrinfo+uv_cancel", 20000, 20,
       our_gai_cancel_held, bare_gai_cancel_held, pool_release, pool_release,
       NULL},
      {"uv_queue_work_cancel", "uv_queue_work+uv_cancel", 20000, 20,
       our_work_cancel_held, bare_work_cancel_held, pool_release, pool_release,
       NULL},
      {"uv_spawn_cancel", "uv_spawn+uv_process_kill", 200, 3, our_spawn_cancel,
       bare_spawn_cancel, NULL, NULL, NULL},
  };
  bench_opts_t o;
  int len = sizeof(server_addr);
  const char* only = NULL;
  size_t i;
  int a, kept;

  /* --only PREFIX is taken out of argv; the rest are the common options. */
  for (a = kept = 1; a < argc; a++) {
    if (strcmp(argv[a], "--only") == 0 && a + 1 < argc)
      only = argv[++a];
    else
      argv[kept++] = argv[a];
  }
  bench_parse(kept, argv, &o);
  signal(SIGPIPE, SIG_IGN);
  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init(&loop, &L));
  BENCH_OK(uvctx_with_cancel(uvctx_background(L), &ctx));
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  memset(msg, 'p', sizeof(msg));
  BENCH_OK(uv_tcp_init(&loop, &server));
  BENCH_OK(uv_ip4_addr("127.0.0.1", 0, &server_addr));
  BENCH_OK(uv_tcp_bind(&server, (struct sockaddr*)&server_addr, 0));
  BENCH_OK(uv_listen((uv_stream_t*)&server, 512, on_conn));
  BENCH_OK(uv_tcp_getsockname(&server, (struct sockaddr*)&server_addr, &len));
  pair_open();

  for (i = 0; i < sizeof(scens) / sizeof(scens[0]); i++)
    if (only == NULL || strncmp(scens[i].name, only, strlen(only)) == 0)
      measure(&scens[i], &o);

  uvctx_release(ctx);
  BENCH_OK(uvctx_loop_close(L));
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  BENCH_OK(uv_loop_close(&loop));
  BENCH_ASSERT(uvctx_live_allocations() == 0);
  return 0;
}
