/* Core benchmark: bytes per live context. A million cancel contexts, then
 * (in a fresh process) a million deadline contexts (with_timeout of 1 h),
 * all children of one cancelable parent as in the Go peer
 * (bench/peers/go/ctx_test.go, BenchmarkMem*). The figure is the resident
 * set growth (/proc/self/statm) over the count, so it includes malloc's
 * chunk headers and rounding and the deadline heap, which is what a server
 * holding many requests pays.
 *
 * Each kind is measured in a forked child: memory freed by an earlier
 * measurement stays in malloc's arenas and would be reused without growing
 * the resident set, making the second figure look free. */
#include <sys/wait.h>

#include "bench.h"

enum { KIND_CANCEL, KIND_DEADLINE };

static void measure(int kind, size_t n) {
  uv_loop_t loop;
  uvctx_loop_t* ul;
  uvctx_loop_counts_t counts;
  uvctx_t** ctxs;
  uvctx_t* root;
  uint64_t live0;
  int64_t rss0;
  int64_t rss1;
  size_t i;
  int rc;

  BENCH_OK(uv_loop_init(&loop));
  BENCH_OK(uvctx_loop_init(&loop, &ul));
  BENCH_OK(uvctx_with_cancel(uvctx_background(ul), &root));
  /* The array that keeps the contexts is touched before the first reading
   * so that its pages are not counted. Not with zeros: the compiler turns
   * malloc + memset(0) into calloc, which leaves fresh mmap pages untouched
   * (that once added 8 B to every figure). */
  ctxs = malloc(n * sizeof(*ctxs));
  BENCH_ASSERT(ctxs != NULL);
  memset(ctxs, 0xa5, n * sizeof(*ctxs));

  live0 = uvctx_live_allocations();
  rss0 = bench_rss();
  for (i = 0; i < n; i++) {
    if (kind == KIND_CANCEL)
      BENCH_OK(uvctx_with_cancel(root, &ctxs[i]));
    else
      BENCH_OK(uvctx_with_timeout(root, 3600 * 1000, &ctxs[i]));
  }
  rss1 = bench_rss();
  BENCH_ASSERT(rss0 > 0 && rss1 > 0);

  uvctx_loop_counts(ul, &counts);
  BENCH_ASSERT(counts.contexts >= n);
  if (kind == KIND_DEADLINE)
    BENCH_ASSERT(counts.deadlines == n);
  fprintf(stderr, "# %zu %s contexts: %llu library blocks, rss +%lld B\n", n,
          kind == KIND_CANCEL ? "cancel" : "deadline",
          (unsigned long long)(uvctx_live_allocations() - live0),
          (long long)(rss1 - rss0));
  bench_result(kind == KIND_CANCEL ? "bytes_per_cancel_ctx"
                                   : "bytes_per_deadline_ctx",
               "B/ctx", (double)(rss1 - rss0) / (double)n);

  for (i = 0; i < n; i++)
    uvctx_release(ctxs[i]);
  uvctx_release(root);
  free(ctxs);
  rc = uvctx_loop_close(ul);
  if (rc != 0)
    uvctx_loop_dump(ul, stderr);
  BENCH_OK(rc);
  BENCH_OK(uv_run(&loop, UV_RUN_DEFAULT));
  BENCH_OK(uv_loop_close(&loop));
  BENCH_ASSERT(uvctx_live_allocations() == 0);
}

int main(int argc, char** argv) {
  static const int kinds[2] = {KIND_CANCEL, KIND_DEADLINE};
  bench_opts_t o;
  size_t n;
  pid_t pid;
  int status;
  int failed;
  int i;

  bench_parse(argc, argv, &o);
  n = bench_count(&o, 1000000, 1000);
  failed = 0;
  for (i = 0; i < 2; i++) {
    fflush(stdout);
    pid = fork();
    BENCH_ASSERT(pid >= 0);
    if (pid == 0) {
      measure(kinds[i], n);
      fflush(stdout);
      _exit(0);
    }
    BENCH_ASSERT(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      failed = 1;
  }
  return failed;
}
