/* Shared helpers of the core benchmark programs: the scale argument, the
 * clock, percentiles, the resident set size and the one-line result format
 * that scripts/bench.sh parses:
 *
 *   bench=NAME unit=UNIT value=X [peer=P peer_value=Y ratio=X/Y]
 *
 * Everything is static inline so that each program takes only what it uses.
 * Benchmarks report; they never assert on a time. They do exit non-zero when
 * the library returns an error, so that the CTest smoke runs catch rot. */
#ifndef UVCTX_BENCH_H
#define UVCTX_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "uvctx.h"

/* Exit with a message when a library call fails: a benchmark that measures
 * a failing path measures nothing. */
#define BENCH_OK(expr)                                                   \
  do {                                                                   \
    int bench_rc_ = (expr);                                              \
    if (bench_rc_ != 0) {                                                \
      fprintf(stderr, "%s:%d: %s: %d (%s)\n", __FILE__, __LINE__, #expr, \
              bench_rc_, bench_rc_ < 0 ? uv_strerror(bench_rc_) : "?");  \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

#define BENCH_ASSERT(cond)                                                 \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

/* --quick: tiny counts for the CTest smoke runs (which also run under ASan
 * and TSan, so they must stay well under a second). --scale X multiplies
 * the full counts (0.1 for a fast look, 2 for steadier figures). */
typedef struct bench_opts_s {
  int quick;
  double scale;
} bench_opts_t;

static inline void bench_usage(const char* prog) {
  fprintf(stderr, "usage: %s [--quick] [--scale X]\n", prog);
}

static inline void bench_parse(int argc, char** argv, bench_opts_t* o) {
  int i;

  o->quick = 0;
  o->scale = 1.0;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      o->quick = 1;
    } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
      o->scale = strtod(argv[++i], NULL);
      if (!(o->scale > 0)) {
        bench_usage(argv[0]);
        exit(2);
      }
    } else {
      bench_usage(argv[0]);
      exit(2);
    }
  }
}

/* --only PREFIX, for the programs that run named workloads: takes it out
 * of argv before bench_parse() sees the rest, and returns the new argc.
 * *only is the prefix, or NULL (every workload). */
static inline int bench_take_only(int argc, char** argv, const char** only) {
  int i, kept;

  *only = NULL;
  for (i = kept = 1; i < argc; i++) {
    if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      *only = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0) {
      fprintf(stderr, "usage: %s [--quick] [--scale X] [--only PREFIX]\n",
              argv[0]);
      exit(0);
    } else {
      argv[kept++] = argv[i];
    }
  }
  return kept;
}

/* Whether the workload `name` runs under --only `only`. */
static inline int bench_wanted(const char* only, const char* name) {
  return only == NULL || strncmp(name, only, strlen(only)) == 0;
}

/* The count to use: `quick` in smoke runs, else `full` times the scale
 * (at least 1). */
static inline size_t bench_count(const bench_opts_t* o, size_t full,
                                 size_t quick) {
  double n;

  if (o->quick)
    return quick;
  n = (double)full * o->scale;
  return n < 1 ? 1 : (size_t)n;
}

static inline uint64_t bench_now(void) {
  return uv_hrtime();
}

static inline int bench_cmp_double(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return (x > y) - (x < y);
}

static inline int bench_cmp_i64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a;
  int64_t y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n), n > 0; sorts v. */
static inline double bench_median(double* v, size_t n) {
  qsort(v, n, sizeof(*v), bench_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline double bench_mean(const double* v, size_t n) {
  double sum = 0;
  size_t i;

  for (i = 0; i < n; i++)
    sum += v[i];
  return sum / (double)n;
}

/* The p-th percentile (nearest rank) of a sorted sample, n > 0. */
static inline int64_t bench_pct(const int64_t* sorted, size_t n, double p) {
  size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return sorted[rank - 1];
}

/* Resident set size in bytes, from /proc/self/statm (its second field is
 * resident pages). -1 if it cannot be read. */
static inline int64_t bench_rss(void) {
  FILE* f;
  long long size;
  long long resident;
  int n;

  f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return -1;
  n = fscanf(f, "%lld %lld", &size, &resident);
  fclose(f);
  if (n != 2)
    return -1;
  return (int64_t)resident * (int64_t)sysconf(_SC_PAGESIZE);
}

/* "1k", "10k", "100k", or the number itself: the size suffix of scenario
 * names, shared with the Go peer's sub-benchmark names. */
static inline const char* bench_size_name(size_t n, char* buf, size_t len) {
  if (n >= 1000 && n % 1000 == 0)
    snprintf(buf, len, "%zuk", n / 1000);
  else
    snprintf(buf, len, "%zu", n);
  return buf;
}

static inline void bench_result(const char* name, const char* unit,
                                double value) {
  printf("bench=%s unit=%s value=%.2f\n", name, unit, value);
  fflush(stdout);
}

/* A figure with its peer measured in the same run (a bare libuv baseline). */
static inline void bench_result_peer(const char* name, const char* unit,
                                     double value, const char* peer,
                                     double peer_value) {
  printf("bench=%s unit=%s value=%.2f peer=%s peer_value=%.2f", name, unit,
         value, peer, peer_value);
  if (peer_value > 0)
    printf(" ratio=%.3f", value / peer_value);
  printf("\n");
  fflush(stdout);
}

#endif /* UVCTX_BENCH_H */
