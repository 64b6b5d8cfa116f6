/* bench_relay.c owns the copy benchmarks: loopback relay throughput and
 * relay CPU per GB (sender thread -> relay thread -> sink thread, over TCP
 * on 127.0.0.1) for the uvctx copy beside two bare libuv relays, a blocking
 * relay and, when node is installed, Node's stream.pipeline; and the abort
 * latency from uvctx_cancel() to the copy's callback while data flows,
 * beside a bare libuv close of both handles.
 *
 *   bench_relay [--quick] [--bytes N] [--rounds N] [--runs N] [--no-node]
 *               [--pin]
 *
 * Throughput: each relay moves BYTES (default 2 GiB) ROUNDS times (default
 * 7), the kinds interleaved; the median round of each is reported, with
 * the spread of the per-round ratios. The bare libuv relay comes in two
 * variants (uv_write for every buffer; uv_try_write first, queuing only
 * the tail): peer=bare_libuv is the faster of the two, and each is also
 * reported on its own. --pin puts the sender and sink threads on CPU 0 and
 * the relay thread on CPU 1, the same placement for every kind, so that
 * where the scheduler puts three busy threads on two cores does not decide
 * a round (the lines then carry pinned=1).
 *
 * One parseable line per figure:
 *   bench=... unit=... value=... peer=... peer_value=... ratio=...
 * Nothing here asserts on time. */
#define _GNU_SOURCE /* pthread_setaffinity_np */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_peers.h"
#include "uvctx/copy.h"

static int listen_fd = -1;
static int pin; /* --pin: the load on CPU 0, the relay on CPU 1 */

static void pin_self(int cpu) {
  cpu_set_t set;
  if (!pin)
    return;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
    fprintf(stderr, "bench_relay: --pin: cannot use CPU %d\n", cpu);
    exit(2);
  }
}
static struct sockaddr_in listen_addr;

static void die(const char* what) {
  fprintf(stderr, "bench_relay: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void listener_open(void) {
  socklen_t len = sizeof(listen_addr);
  memset(&listen_addr, 0, sizeof(listen_addr));
  listen_addr.sin_family = AF_INET;
  listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd < 0 ||
      bind(listen_fd, (struct sockaddr*)&listen_addr, sizeof(listen_addr)) ||
      listen(listen_fd, 16) ||
      getsockname(listen_fd, (struct sockaddr*)&listen_addr, &len))
    die("listen");
}

/* A connected loopback TCP pair: *client connects, *server is accepted. */
static void tcp_pair(int* client, int* server) {
  *client = socket(AF_INET, SOCK_STREAM, 0);
  if (*client < 0 ||
      connect(*client, (struct sockaddr*)&listen_addr, sizeof(listen_addr)))
    die("connect");
  *server = accept(listen_fd, NULL, NULL);
  if (*server < 0)
    die("accept");
}

/* ---- sender and sink threads --------------------------------------------- */

typedef struct peer_s {
  int fd;
  uint64_t bytes; /* sender: to send (UINT64_MAX: until an error) */
  uint64_t done;
  uint64_t t_end;
} peer_t;

static void sender_main(void* arg) {
  peer_t* p = arg;
  char* buf = calloc(1, RELAY_BUF);
  while (p->done < p->bytes) {
    uint64_t left = p->bytes - p->done;
    ssize_t n = write(p->fd, buf, left < RELAY_BUF ? (size_t)left : RELAY_BUF);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    p->done += (uint64_t)n;
  }
  shutdown(p->fd, SHUT_WR);
  close(p->fd);
  free(buf);
}

static void sink_main(void* arg) {
  peer_t* p = arg;
  char* buf = malloc(RELAY_BUF);
  for (;;) {
    ssize_t n = read(p->fd, buf, RELAY_BUF);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    p->done += (uint64_t)n;
  }
  p->t_end = uv_hrtime();
  close(p->fd);
  free(buf);
}

static void pinned_sink(void* arg) {
  pin_self(0);
  sink_main(arg);
}

static void pinned_sender(void* arg) {
  pin_self(0);
  sender_main(arg);
}

/* ---- the uvctx relay ----------------------------------------------------- */

typedef struct urelay_s {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* ctx;
  uv_tcp_t in_h;
  uv_tcp_t out_h;
  uvctx_stream_t in;
  uvctx_stream_t out;
  uvctx_copy_t copy;
  uv_timer_t timer;
  int status;
  uint64_t t0;
  uint64_t t1;
} urelay_t;

static void urelay_copy_cb(uvctx_copy_t* c, int status, uint64_t bytes) {
  urelay_t* r = c->data;
  (void)bytes;
  r->t1 = uv_hrtime();
  r->status = status;
  if (status == 0) {
    uvctx_stream_close(&r->in, NULL);
    uvctx_stream_close(&r->out, NULL);
  }
}

static void urelay_cancel_cb(uv_timer_t* t) {
  urelay_t* r = t->data;
  uv_close((uv_handle_t*)t, NULL);
  r->t0 = uv_hrtime();
  uvctx_cancel(r->ctx);
}

/* Relays in -> out with uvctx_copy on a loop of its own; cancels after
 * `cancel_ms` if not 0. Returns the status. */
static int urelay_run(urelay_t* r, int in, int out, uint64_t cancel_ms) {
  memset(r, 0, sizeof(*r));
  if (uv_loop_init(&r->loop) || uvctx_loop_init(&r->loop, &r->l) ||
      uvctx_with_cancel(uvctx_background(r->l), &r->ctx))
    die("uvctx init");
  uv_tcp_init(&r->loop, &r->in_h);
  uv_tcp_init(&r->loop, &r->out_h);
  uv_tcp_open(&r->in_h, in);
  uv_tcp_open(&r->out_h, out);
  uvctx_stream_init_uv(&r->in, (uv_stream_t*)&r->in_h);
  uvctx_stream_init_uv(&r->out, (uv_stream_t*)&r->out_h);
  r->copy.data = r;
  if (uvctx_copy_start(&r->copy, r->ctx, &r->in, &r->out, NULL, urelay_copy_cb))
    die("uvctx_copy_start");
  if (cancel_ms) {
    uv_timer_init(&r->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, urelay_cancel_cb, cancel_ms, 0);
  }
  uv_run(&r->loop, UV_RUN_DEFAULT);
  uvctx_release(r->ctx);
  if (uvctx_loop_close(r->l))
    die("uvctx_loop_close");
  uv_run(&r->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&r->loop))
    die("uv_loop_close");
  return r->status;
}

/* ---- one throughput run -------------------------------------------------- */

enum { K_UVCTX, K_BARE, K_BARE_TRY, K_BLOCKING, K_N };
static const char* kind_name[] = {"uvctx_copy", "bare_libuv_write",
                                  "bare_libuv_try", "blocking"};

typedef struct run_s {
  int kind;
  int in;
  int out;
  double cpu;
} run_t;

static void relay_main(void* arg) {
  run_t* r = arg;
  pin_self(1);
  if (r->kind == K_UVCTX) {
    urelay_t* u = malloc(sizeof(*u));
    double c0 = relay_thread_cpu();
    if (urelay_run(u, r->in, r->out, 0) != 0)
      fprintf(stderr, "bench_relay: copy failed: %s\n", uv_err_name(u->status));
    r->cpu = relay_thread_cpu() - c0;
    free(u);
  } else if (r->kind == K_BARE) {
    relay_bare(r->in, r->out, &r->cpu);
  } else if (r->kind == K_BARE_TRY) {
    relay_bare_try(r->in, r->out, &r->cpu);
  } else {
    relay_blocking(r->in, r->out, &r->cpu);
  }
}

typedef struct result_s {
  double mbps;
  double cpu_per_gb;
} result_t;

static result_t throughput(int kind, uint64_t bytes) {
  peer_t snd = {0};
  peer_t sink = {0};
  run_t run = {0};
  uv_thread_t ts, tk, tr;
  uint64_t t0;
  result_t res;
  int in;
  int out;

  tcp_pair(&snd.fd, &in);
  tcp_pair(&out, &sink.fd);
  snd.bytes = bytes;
  run.kind = kind;
  run.in = in;
  run.out = out;
  t0 = uv_hrtime();
  uv_thread_create(&tk, pinned_sink, &sink);
  uv_thread_create(&tr, relay_main, &run);
  uv_thread_create(&ts, pinned_sender, &snd);
  uv_thread_join(&ts);
  uv_thread_join(&tr);
  uv_thread_join(&tk);
  if (sink.done != bytes) {
    fprintf(stderr, "bench_relay: %s moved %" PRIu64 " of %" PRIu64 "\n",
            kind_name[kind], sink.done, bytes);
    exit(1);
  }
  res.mbps = (double)bytes / 1e6 / ((double)(sink.t_end - t0) / 1e9);
  res.cpu_per_gb = run.cpu / ((double)bytes / 1e9);
  return res;
}

/* ---- Node's stream.pipeline ---------------------------------------------- */

#ifndef UVCTX_BENCH_NODE_DIR
#define UVCTX_BENCH_NODE_DIR "bench/peers/node"
#endif

static int node_available(void) {
  return system("node --version >/dev/null 2>&1") == 0;
}

/* The Node relay listens on a port it prints, connects to the sink's port
 * and relays one connection with stream.pipeline. */
static int node_throughput(uint64_t bytes, result_t* res) {
  int sink_listen;
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  char cmd[1024];
  FILE* f;
  int port = 0;
  peer_t snd = {0};
  peer_t sink = {0};
  uv_thread_t ts, tk;
  uint64_t t0;
  struct rusage ru0, ru1;
  struct pollfd pfd;
  double cpu;

  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sink_listen = socket(AF_INET, SOCK_STREAM, 0);
  if (sink_listen < 0 || bind(sink_listen, (struct sockaddr*)&sa, len) ||
      listen(sink_listen, 4) ||
      getsockname(sink_listen, (struct sockaddr*)&sa, &len))
    die("sink listen");
  snprintf(cmd, sizeof(cmd), "%snode %s/relay.js %d",
           pin ? "taskset -c 1 " : "", UVCTX_BENCH_NODE_DIR,
           ntohs(sa.sin_port));
  getrusage(RUSAGE_CHILDREN, &ru0);
  f = popen(cmd, "r");
  if (f == NULL || fscanf(f, "%d", &port) != 1 || port <= 0) {
    if (f != NULL)
      pclose(f);
    close(sink_listen);
    return -1;
  }
  snd.fd = socket(AF_INET, SOCK_STREAM, 0);
  sa.sin_port = htons((uint16_t)port);
  if (snd.fd < 0 || connect(snd.fd, (struct sockaddr*)&sa, sizeof(sa)))
    die("connect node");
  /* Bounded: a broken node peer must not hang the benchmark. */
  pfd.fd = sink_listen;
  pfd.events = POLLIN;
  if (poll(&pfd, 1, 10000) != 1) {
    close(snd.fd);
    pclose(f);
    close(sink_listen);
    return -1;
  }
  sink.fd = accept(sink_listen, NULL, NULL);
  if (sink.fd < 0)
    die("accept node");
  snd.bytes = bytes;
  t0 = uv_hrtime();
  uv_thread_create(&tk, pinned_sink, &sink);
  uv_thread_create(&ts, pinned_sender, &snd);
  uv_thread_join(&ts);
  uv_thread_join(&tk);
  pclose(f);
  getrusage(RUSAGE_CHILDREN, &ru1);
  close(sink_listen);
  if (sink.done != bytes)
    return -1;
  cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
        (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
        (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
        (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  res->mbps = (double)bytes / 1e6 / ((double)(sink.t_end - t0) / 1e9);
  res->cpu_per_gb = cpu / ((double)bytes / 1e9);
  return 0;
}

/* ---- abort latency ------------------------------------------------------- */

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a;
  uint64_t y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

/* ns from the abort to its completion, data flowing: uvctx (cancel to the
 * copy's callback) or bare libuv (closing both handles to the last close
 * callback). */
static uint64_t abort_once(int uvctx) {
  peer_t snd = {0};
  peer_t sink = {0};
  uv_thread_t ts, tk;
  uint64_t ns;
  int in;
  int out;

  tcp_pair(&snd.fd, &in);
  tcp_pair(&out, &sink.fd);
  snd.bytes = UINT64_MAX;
  uv_thread_create(&tk, sink_main, &sink);
  uv_thread_create(&ts, sender_main, &snd);
  if (uvctx) {
    urelay_t* u = malloc(sizeof(*u));
    if (urelay_run(u, in, out, 20) != UV_ECANCELED) {
      fprintf(stderr, "bench_relay: abort status %s\n", uv_err_name(u->status));
      exit(1);
    }
    ns = u->t1 - u->t0;
    free(u);
  } else {
    ns = relay_bare_abort(in, out, 20);
  }
  uv_thread_join(&ts);
  uv_thread_join(&tk);
  return ns;
}

static void abort_latency(int runs) {
  uint64_t* u = calloc((size_t)runs, sizeof(*u));
  uint64_t* b = calloc((size_t)runs, sizeof(*b));
  int i;
  int p99;
  for (i = 0; i < runs; i++) {
    u[i] = abort_once(1);
    b[i] = abort_once(0);
  }
  qsort(u, (size_t)runs, sizeof(*u), cmp_u64);
  qsort(b, (size_t)runs, sizeof(*b), cmp_u64);
  p99 = (runs * 99 + 99) / 100 - 1;
  printf(
      "bench=copy_abort_latency_p50 unit=us value=%.1f peer=bare_libuv_close "
      "peer_value=%.1f ratio=%.2f\n",
      u[runs / 2] / 1e3, b[runs / 2] / 1e3,
      (double)u[runs / 2] / (double)(b[runs / 2] ? b[runs / 2] : 1));
  printf(
      "bench=copy_abort_latency_p99 unit=us value=%.1f peer=bare_libuv_close "
      "peer_value=%.1f ratio=%.2f\n",
      u[p99] / 1e3, b[p99] / 1e3,
      (double)u[p99] / (double)(b[p99] ? b[p99] : 1));
  free(u);
  free(b);
}

#define MAX_ROUNDS 15

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The throughput and CPU lines of uvctx against one peer; `variant` names
 * which relay stands for the peer when it is a pick of several. The
 * spread: the lowest and highest ratio of a round to the same round's
 * peer transfer. */
static void report(const char* peer, const char* variant, const result_t* us,
                   const result_t* them, const double* us_mb,
                   const double* them_mb, int rounds) {
  double lo = 0, hi = 0, q;
  int j;
  for (j = 0; j < rounds; j++) {
    q = us_mb[j] / them_mb[j];
    if (j == 0 || q < lo)
      lo = q;
    if (j == 0 || q > hi)
      hi = q;
  }
  printf("bench=relay_throughput unit=MB/s value=%.0f peer=%s peer_value=%.0f "
         "ratio=%.3f ratio_min=%.3f ratio_max=%.3f rounds=%d%s%s%s\n",
         us->mbps, peer, them->mbps, us->mbps / them->mbps, lo, hi, rounds,
         variant ? " variant=" : "", variant ? variant : "",
         pin ? " pinned=1" : "");
  printf("bench=relay_cpu_per_gb unit=cpu_s/GB value=%.3f peer=%s "
         "peer_value=%.3f ratio=%.3f%s%s%s\n",
         us->cpu_per_gb, peer, them->cpu_per_gb,
         us->cpu_per_gb / them->cpu_per_gb, variant ? " variant=" : "",
         variant ? variant : "", pin ? " pinned=1" : "");
}

int main(int argc, char** argv) {
  uint64_t bytes = 2ull << 30;
  int rounds = 7;
  int runs = 100;
  int use_node = 1;
  result_t r[K_N];
  result_t nr;
  int i;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      bytes = 32u << 20;
      rounds = 1;
      runs = 5;
      use_node = 0;
    } else if (strcmp(argv[i], "--bytes") == 0 && i + 1 < argc) {
      bytes = strtoull(argv[++i], NULL, 0);
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--no-node") == 0) {
      use_node = 0;
    } else if (strcmp(argv[i], "--node") == 0) {
      use_node = 1;
    } else if (strcmp(argv[i], "--pin") == 0) {
      pin = 1;
    } else {
      fprintf(stderr, "usage: bench_relay [--quick] [--bytes N] [--rounds N] "
                      "[--runs N] [--no-node|--node] [--pin]\n");
      return 2;
    }
  }
  if (runs < 1)
    runs = 1;
  if (rounds < 1)
    rounds = 1;
  if (rounds > MAX_ROUNDS)
    rounds = MAX_ROUNDS;
  signal(SIGPIPE, SIG_IGN);
  listener_open();

  /* Interleave the kinds, round after round (a rotating order), so that
   * drift on a shared machine hits all of them, and report each kind's
   * median round: single transfers on this VM vary by a fifth either way.
   * The bare libuv peer is the faster (by median) of its two variants, the
   * uv_write one and the try-write one; the spread is that of the ratios
   * of the rounds, each against the same peer's transfer in that round. */
  {
    double mb[K_N][MAX_ROUNDS], cpu[K_N][MAX_ROUNDS], tmp[MAX_ROUNDS];
    int k, j, best;
    for (j = 0; j < rounds; j++)
      for (k = 0; k < K_N; k++) {
        int kind = (k + j) % K_N;
        result_t x = throughput(kind, bytes);
        mb[kind][j] = x.mbps;
        cpu[kind][j] = x.cpu_per_gb;
        fprintf(stderr, "bench_relay: round %d %s %.0f MB/s %.3f cpu-s/GB\n",
                j + 1, kind_name[kind], x.mbps, x.cpu_per_gb);
      }
    for (k = 0; k < K_N; k++) {
      memcpy(tmp, mb[k], sizeof(tmp));
      r[k].mbps = median(tmp, rounds);
      memcpy(tmp, cpu[k], sizeof(tmp));
      r[k].cpu_per_gb = median(tmp, rounds);
    }
    best = r[K_BARE_TRY].mbps >= r[K_BARE].mbps ? K_BARE_TRY : K_BARE;
    report("bare_libuv", kind_name[best], &r[K_UVCTX], &r[best], mb[K_UVCTX],
           mb[best], rounds);
    for (k = K_BARE; k < K_N; k++)
      report(kind_name[k], NULL, &r[K_UVCTX], &r[k], mb[K_UVCTX], mb[k],
             rounds);
  }
  if (use_node && node_available()) {
    if (node_throughput(bytes, &nr) == 0) {
      printf("bench=relay_throughput unit=MB/s value=%.0f "
             "peer=node_pipeline peer_value=%.0f ratio=%.3f\n",
             r[K_UVCTX].mbps, nr.mbps, r[K_UVCTX].mbps / nr.mbps);
      printf("bench=relay_cpu_per_gb unit=cpu_s/GB value=%.3f "
             "peer=node_pipeline peer_value=%.3f ratio=%.3f\n",
             r[K_UVCTX].cpu_per_gb, nr.cpu_per_gb,
             r[K_UVCTX].cpu_per_gb / nr.cpu_per_gb);
    } else {
      fprintf(stderr, "bench_relay: the node peer failed; skipped\n");
    }
  }
  abort_latency(runs);
  close(listen_fd);
  return 0;
}
