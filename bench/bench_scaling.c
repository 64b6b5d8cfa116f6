/* Core benchmark: context churn from several threads, each on a loop of its
 * own, and an unrelated loop's latency while one loop cancels a big tree.
 *
 * Churn: every thread makes a with_cancel child of its parent, cancels it
 * and unrefs it, over and over, in three shapes (the Go peer,
 * bench/peers/go/ctx_test.go BenchmarkScaling, runs the same ones):
 *
 *   own_root  each thread under a root of its own loop's background
 *   branch    each thread under a branch (uvctx_with_cancel_on) of one
 *             server root: the relay's shape
 *   shared    every thread under one shared parent (children homed on the
 *             parent's loop)
 *
 * at 1, 2 and 4 threads (4 oversubscribes this 2-core machine; `--shape
 * NAME` runs one shape alone, and no stall). Threads
 * start together; the figure is the wall time from the common start to the
 * last thread's end over all threads' operations, best of three trials:
 *
 *   scaling_<shape>_t<N>_ns  wall ns per operation (Go: ns/op)
 *   scaling_<shape>_t<N>     speedup over the 1-thread figure (Go: the
 *                            same ratio of its own figures)
 *   scaling_<shape>_t<N>_cpu_ns  CPU time per operation, the mean of the
 *                            threads' (CLOCK_THREAD_CPUTIME_ID), in the
 *                            same trial: on a machine other work shares,
 *                            the wall figure counts the time a thread
 *                            waits for a core, this one only what the
 *                            operations cost (contended lines and locks
 *                            raise it above the 1-thread figure)
 *   scaling_<shape>_t<N>_others  cores that other processes (and the
 *                            hypervisor, as steal) kept busy during that
 *                            trial, from /proc/stat less this process's
 *                            CPU time (10 ms resolution): a 2-thread
 *                            figure means something only where this is
 *                            near 0 on a 2-core machine
 *
 * Stall: loop B's thread times each of its create/cancel/unref operations,
 * first alone (quiet), then while loop A's thread repeatedly builds a root
 * with 200,000 children and cancels it (busy), then while A's thread does
 * the same allocation, walk and free of 200,000 blocks with malloc() and
 * no uvctx call (control: what the machine, its scheduler and allocator
 * cost B with no lock or line of uvctx in common). Figures, for busy and
 * for the control, each beside quiet:
 *
 *   stall_worst_op               the worst operation, in us
 *   stall_worst_unswitched_op    the worst one during which B's thread was
 *                                not switched out (getrusage())
 *   stall_switched_ops           how many were switched out
 *   stall_voluntary_switches     switches where B's thread blocked or
 *                                slept (a wait in uvctx's lock would)
 *   stall_p99                    the p99, and its ratio to quiet's */
/* getrusage(RUSAGE_THREAD) */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

#define TRIALS 3
#define MAX_THREADS 4

enum { SHAPE_OWN_ROOT, SHAPE_BRANCH, SHAPE_SHARED, SHAPES };
static const char* const shape_names[SHAPES] = {"own_root", "branch", "shared"};

typedef struct worker_s {
  uv_thread_t thread;
  uv_loop_t loop;
  uvctx_loop_t* ul;
  uvctx_t* parent;
  size_t n;
  uint64_t end;
  double cpu_ns; /* thread CPU time over the operations */
} worker_t;

static worker_t workers[MAX_THREADS];
static atomic_int ready;
static atomic_int go;

static double thread_cpu_ns(void) {
  struct timespec ts;
  BENCH_ASSERT(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void churn(void* arg) {
  worker_t* w = arg;
  uvctx_t* c;
  size_t i;
  double cpu0;
  atomic_fetch_add(&ready, 1);
  while (!atomic_load(&go)) {
  }
  cpu0 = thread_cpu_ns();
  for (i = 0; i < w->n; i++) {
    BENCH_OK(uvctx_with_cancel(w->parent, &c));
    BENCH_OK(uvctx_cancel(c));
    uvctx_unref(c);
  }
  w->end = uv_hrtime();
  w->cpu_ns = thread_cpu_ns() - cpu0;
}

static void close_loop(uv_loop_t* loop, uvctx_loop_t* ul) {
  int rc = uvctx_loop_close(ul);
  if (rc != 0)
    uvctx_loop_dump(ul, stderr);
  BENCH_OK(rc);
  BENCH_OK(uv_run(loop, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(loop));
}

/* Jiffies (1/100 s) the whole machine spent busy, steal included, or -1. */
static double machine_busy_s(void) {
  unsigned long long v[8] = {0};
  FILE* f = fopen("/proc/stat", "r");
  int n;
  if (f == NULL)
    return -1;
  n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
             &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n != 8)
    return -1;
  /* user nice system [idle iowait] irq softirq steal */
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0;
}

static double self_cpu_s(void) {
  struct rusage ru;
  BENCH_ASSERT(getrusage(RUSAGE_SELF, &ru) == 0);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* One trial: wall ns per operation over all threads, the threads' mean
 * CPU ns per operation, and the cores other work took meanwhile. The
 * loops are set up on the main thread and run by nobody, so every thread
 * may use its own. */
typedef struct result_s {
  double wall_ns;
  double cpu_ns;
  double others; /* -1 if /proc/stat cannot be read */
} result_t;

static result_t trial(int shape, int threads, size_t n) {
  result_t r;
  uvctx_t* top = NULL;
  uint64_t start, end = 0;
  double busy0, self0;
  int i;

  for (i = 0; i < threads; i++) {
    worker_t* w = &workers[i];
    BENCH_OK(uv_loop_init(&w->loop));
    BENCH_OK(uvctx_loop_init(&w->loop, &w->ul));
    w->n = n;
  }
  if (shape != SHAPE_OWN_ROOT)
    BENCH_OK(uvctx_with_cancel(uvctx_background(workers[0].ul), &top));
  for (i = 0; i < threads; i++) {
    worker_t* w = &workers[i];
    if (shape == SHAPE_OWN_ROOT)
      BENCH_OK(uvctx_with_cancel(uvctx_background(w->ul), &w->parent));
    else if (shape == SHAPE_BRANCH)
      BENCH_OK(uvctx_with_cancel_on(top, w->ul, &w->parent));
    else
      w->parent = uvctx_ref(top);
  }
  atomic_store(&ready, 0);
  atomic_store(&go, 0);
  for (i = 0; i < threads; i++)
    BENCH_OK(uv_thread_create(&workers[i].thread, churn, &workers[i]));
  while (atomic_load(&ready) != threads) {
  }
  busy0 = machine_busy_s();
  self0 = self_cpu_s();
  start = uv_hrtime();
  atomic_store(&go, 1);
  for (i = 0; i < threads; i++) {
    BENCH_OK(uv_thread_join(&workers[i].thread));
    if (workers[i].end > end)
      end = workers[i].end;
  }
  r.others = -1;
  if (busy0 >= 0) {
    double busy = machine_busy_s() - busy0;
    double mine = self_cpu_s() - self0;
    double wall = (double)(uv_hrtime() - start) / 1e9;
    r.others = busy > mine ? (busy - mine) / wall : 0;
  }
  r.cpu_ns = 0;
  for (i = 0; i < threads; i++)
    r.cpu_ns += workers[i].cpu_ns / (double)(n * (size_t)threads);
  for (i = 0; i < threads; i++) {
    BENCH_ASSERT(uvctx_err(workers[i].parent) == 0);
    if (shape == SHAPE_SHARED)
      uvctx_unref(workers[i].parent); /* a reference to `top` */
    else
      uvctx_release(workers[i].parent);
  }
  uvctx_release(top);
  for (i = 0; i < threads; i++)
    close_loop(&workers[i].loop, workers[i].ul);
  BENCH_ASSERT(uvctx_live_allocations() == 0);
  r.wall_ns = (double)(end - start) / (double)(n * (size_t)threads);
  return r;
}

/* `only`: the one shape to run (its index), or -1 for all. */
static void bench_churn(const bench_opts_t* o, int only) {
  static const int counts[] = {1, 2, 4};
  size_t n = bench_count(o, 2000000, 500);
  int s, k, t;
  for (s = 0; s < SHAPES; s++) {
    double one = 0;
    if (only >= 0 && s != only)
      continue;
    for (k = 0; k < 3; k++) {
      char name[64];
      result_t best = {0, 0, 0};
      for (t = 0; t < TRIALS; t++) {
        result_t r = trial(s, counts[k], n);
        if (t == 0 || r.wall_ns < best.wall_ns)
          best = r;
      }
      if (k == 0)
        one = best.wall_ns;
      snprintf(name, sizeof(name), "scaling_%s_t%d_ns", shape_names[s],
               counts[k]);
      bench_result(name, "ns/op", best.wall_ns);
      snprintf(name, sizeof(name), "scaling_%s_t%d_cpu_ns", shape_names[s],
               counts[k]);
      bench_result(name, "ns/op", best.cpu_ns);
      if (best.others >= 0) {
        snprintf(name, sizeof(name), "scaling_%s_t%d_others", shape_names[s],
                 counts[k]);
        bench_result(name, "cores", best.others);
      }
      if (k > 0) {
        snprintf(name, sizeof(name), "scaling_%s_t%d", shape_names[s],
                 counts[k]);
        bench_result(name, "x", one / best.wall_ns);
      }
    }
  }
}

/* ---- stall --------------------------------------------------------------- */

typedef struct stall_s {
  uv_loop_t loop_a, loop_b;
  uvctx_loop_t *a, *b;
  atomic_int phase; /* 0 quiet, 1 busy, 2 stop */
  atomic_int walks; /* big cancels (or control walks) done by A */
  size_t children;
} stall_t;

/* Loop A's thread: a root with `children` children, cancelled and freed,
 * until told to stop. The children are kept in an array so that the
 * cancel (the walk) is the only tree-wide operation timed by B. */
static void big_cancels(void* arg) {
  stall_t* s = arg;
  uvctx_t** kids = malloc(s->children * sizeof(*kids));
  uvctx_t* root;
  size_t i;
  BENCH_ASSERT(kids != NULL);
  while (atomic_load(&s->phase) != 2) {
    BENCH_OK(uvctx_with_cancel(uvctx_background(s->a), &root));
    for (i = 0; i < s->children; i++)
      BENCH_OK(uvctx_with_cancel(root, &kids[i]));
    BENCH_OK(uvctx_cancel(root));
    atomic_fetch_add(&s->walks, 1);
    for (i = 0; i < s->children; i++)
      uvctx_unref(kids[i]);
    uvctx_unref(root);
  }
  free(kids);
}

/* The control: A's thread allocates as many blocks of a context's size,
 * links them, walks the list writing each (as a cancel writes each child)
 * and frees them, with malloc() and no uvctx call. */
typedef struct block_s {
  struct block_s* next;
  char body[64];
} block_t;

static void big_walks(void* arg) {
  stall_t* s = arg;
  block_t** blocks = malloc(s->children * sizeof(*blocks));
  size_t i;
  BENCH_ASSERT(blocks != NULL);
  while (atomic_load(&s->phase) != 2) {
    block_t* head = NULL;
    block_t* b;
    for (i = 0; i < s->children; i++) {
      blocks[i] = malloc(sizeof(block_t));
      BENCH_ASSERT(blocks[i] != NULL);
      blocks[i]->next = head;
      head = blocks[i];
    }
    for (b = head; b != NULL; b = b->next)
      b->body[0] = 1;
    atomic_fetch_add(&s->walks, 1);
    for (i = 0; i < s->children; i++)
      free(blocks[i]);
  }
  free(blocks);
}

/* B's operations in one phase: each one's time, and the worst of those
 * during which B's thread was not switched out. */
typedef struct phase_s {
  int64_t* samples;
  int64_t worst_unswitched;
  size_t switched; /* operations during which the thread was switched out */
  long voluntary;  /* of all its switches, those where it gave up the CPU */
} phase_t;

/* Context switches of the calling thread so far (in *voluntary those
 * where it blocked or slept), or -1. */
static long switches(long* voluntary) {
#if defined(RUSAGE_THREAD)
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) == 0) {
    *voluntary = ru.ru_nvcsw;
    return ru.ru_nvcsw + ru.ru_nivcsw;
  }
#endif
  *voluntary = 0;
  return -1;
}

/* Loop B's operations, each timed: `n` of them in ph->samples. A slow one
 * (over 20 us: longer than any operation that kept the CPU) is checked
 * for a context switch since the last check, so that what the scheduler
 * took can be told from what B waited for in uvctx. */
static void timed_ops(stall_t* s, phase_t* ph, size_t n) {
  uvctx_t* parent;
  uvctx_t* c;
  long vol0, vol;
  long sw = switches(&vol0);
  size_t i;
  ph->worst_unswitched = 0;
  ph->switched = 0;
  BENCH_OK(uvctx_with_cancel(uvctx_background(s->b), &parent));
  for (i = 0; i < n; i++) {
    uint64_t t0 = uv_hrtime();
    int64_t dt;
    BENCH_OK(uvctx_with_cancel(parent, &c));
    BENCH_OK(uvctx_cancel(c));
    uvctx_unref(c);
    dt = (int64_t)(uv_hrtime() - t0);
    ph->samples[i] = dt;
    if (dt > 20000) {
      long now = switches(&vol);
      if (now != sw && sw >= 0) {
        ph->switched++;
        sw = now;
        continue;
      }
    }
    if (dt > ph->worst_unswitched)
      ph->worst_unswitched = dt;
  }
  switches(&vol);
  ph->voluntary = vol - vol0;
  uvctx_release(parent);
  qsort(ph->samples, n, sizeof(*ph->samples), bench_cmp_i64);
}

/* B's operations while A's thread runs `fn` (from its first walk on). */
static void busy_ops(stall_t* s, uv_thread_cb fn, phase_t* ph, size_t n) {
  uv_thread_t ta;
  atomic_store(&s->phase, 1);
  atomic_store(&s->walks, 0);
  BENCH_OK(uv_thread_create(&ta, fn, s));
  /* Wait for A's first walk to be done, so that every sample overlaps A's
   * work. */
  while (atomic_load(&s->walks) == 0)
    uv_sleep(1);
  timed_ops(s, ph, n);
  atomic_store(&s->phase, 2);
  BENCH_OK(uv_thread_join(&ta));
}

static void print_stall(const char* name, const phase_t* busy,
                        const phase_t* quiet, size_t n, int target) {
  double q99 = (double)bench_pct(quiet->samples, n, 99);
  double b99 = (double)bench_pct(busy->samples, n, 99);
  printf("bench=%s_worst_op unit=us value=%.2f peer=quiet peer_value=%.2f%s\n",
         name, (double)busy->samples[n - 1] / 1000.0,
         (double)quiet->samples[n - 1] / 1000.0,
         target ? " target=value<=1000" : "");
  printf("bench=%s_worst_unswitched_op unit=us value=%.2f peer=quiet "
         "peer_value=%.2f\n",
         name, (double)busy->worst_unswitched / 1000.0,
         (double)quiet->worst_unswitched / 1000.0);
  printf("bench=%s_switched_ops unit=count value=%zu peer=quiet "
         "peer_value=%zu\n",
         name, busy->switched, quiet->switched);
  printf("bench=%s_voluntary_switches unit=count value=%ld peer=quiet "
         "peer_value=%ld\n",
         name, busy->voluntary, quiet->voluntary);
  printf("bench=%s_p99 unit=ns value=%.0f peer=quiet peer_value=%.0f "
         "ratio=%.3f%s\n",
         name, b99, q99, q99 > 0 ? b99 / q99 : 0.0,
         target ? " target=ratio<=2" : "");
  fflush(stdout);
}

static void bench_stall(const bench_opts_t* o) {
  stall_t s;
  size_t n = bench_count(o, 2000000, 2000);
  phase_t quiet, busy, control;
  int walks;

  quiet.samples = malloc(n * sizeof(*quiet.samples));
  busy.samples = malloc(n * sizeof(*busy.samples));
  control.samples = malloc(n * sizeof(*control.samples));
  BENCH_ASSERT(quiet.samples != NULL && busy.samples != NULL &&
               control.samples != NULL);
  /* Touched before use, so that no operation is followed by a page fault
   * that the next one's timing might catch the end of. */
  memset(quiet.samples, 0xa5, n * sizeof(*quiet.samples));
  memset(busy.samples, 0xa5, n * sizeof(*busy.samples));
  memset(control.samples, 0xa5, n * sizeof(*control.samples));
  memset(&s, 0, sizeof(s));
  s.children = o->quick ? 2000 : 200000;
  BENCH_OK(uv_loop_init(&s.loop_a));
  BENCH_OK(uv_loop_init(&s.loop_b));
  BENCH_OK(uvctx_loop_init(&s.loop_a, &s.a));
  BENCH_OK(uvctx_loop_init(&s.loop_b, &s.b));

  timed_ops(&s, &quiet, n);
  busy_ops(&s, big_cancels, &busy, n);
  walks = atomic_load(&s.walks);
  busy_ops(&s, big_walks, &control, n);
  fprintf(stderr,
          "# stall: %d cancels of a %zu-child root during %zu ops; "
          "control: %d malloc walks of as many blocks\n",
          walks, s.children, n, atomic_load(&s.walks));
  print_stall("stall", &busy, &quiet, n, 1);
  print_stall("stall_control", &control, &quiet, n, 0);
  close_loop(&s.loop_a, s.a);
  close_loop(&s.loop_b, s.b);
  free(quiet.samples);
  free(busy.samples);
  free(control.samples);
}

/* `--shape NAME` (own_root, branch or shared) runs that churn shape alone
 * and no stall; the other arguments are bench_parse()'s. */
int main(int argc, char** argv) {
  bench_opts_t o;
  int only = -1;
  int i, j, s;
  for (i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--shape") != 0)
      continue;
    for (s = 0; s < SHAPES && only < 0; s++)
      if (strcmp(argv[i + 1], shape_names[s]) == 0)
        only = s;
    if (only < 0) {
      fprintf(stderr, "%s: --shape own_root|branch|shared\n", argv[0]);
      return 2;
    }
    for (j = i; j + 2 < argc + 1; j++)
      argv[j] = argv[j + 2];
    argc -= 2;
    break;
  }
  bench_parse(argc, argv, &o);
  bench_churn(&o, only);
  if (only < 0)
    bench_stall(&o);
  return 0;
}
