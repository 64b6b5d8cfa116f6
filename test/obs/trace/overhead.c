/* overhead.c: the core loop the always-on counters sit on, timed on the
 * loop's own thread, for test/obs/trace/overhead.sh, which builds it against
 * two trees (with and without the counters) and compares them.
 *
 *   cancel_child   with_cancel child of a cancelable parent, cancel, unref
 *   timeout        with_timeout(background, 1 h), release
 *
 * Prints one line per workload: name and the median over rounds of the
 * mean ns per operation. Public API only, so that it builds against any
 * version of the tree. */
#include <stdio.h>
#include <stdlib.h>

#include <uvctx.h>

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  enum { ROUNDS = 9 };
  size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 1000000;
  double cancel_ns[ROUNDS], timeout_ns[ROUNDS];
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* parent;
  int r;

  if (n == 0 || uv_loop_init(&loop) != 0 || uvctx_loop_init(&loop, &l) != 0)
    return 1;
  if (uvctx_with_cancel(uvctx_background(l), &parent) != 0)
    return 1;
  for (r = 0; r < ROUNDS; r++) {
    uint64_t t0 = uv_hrtime();
    size_t i;
    for (i = 0; i < n; i++) {
      uvctx_t* c;
      if (uvctx_with_cancel(parent, &c) != 0)
        return 1;
      uvctx_cancel(c);
      uvctx_unref(c);
    }
    cancel_ns[r] = (double)(uv_hrtime() - t0) / (double)n;
    t0 = uv_hrtime();
    for (i = 0; i < n; i++) {
      uvctx_t* c;
      if (uvctx_with_timeout(uvctx_background(l), 3600000, &c) != 0)
        return 1;
      uvctx_release(c);
    }
    timeout_ns[r] = (double)(uv_hrtime() - t0) / (double)n;
    uv_run(&loop, UV_RUN_NOWAIT); /* timer re-syncs, outside the timing */
  }
  qsort(cancel_ns, ROUNDS, sizeof(double), cmp);
  qsort(timeout_ns, ROUNDS, sizeof(double), cmp);
  printf("cancel_child %.2f\ntimeout %.2f\n", cancel_ns[ROUNDS / 2],
         timeout_ns[ROUNDS / 2]);
  uvctx_release(parent);
  if (uvctx_loop_close(l) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) != 0;
}
