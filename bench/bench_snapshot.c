/* Obs benchmark: copying a loop's live contexts, as /debug/contexts asks
 * every worker of uvctx-relay to. The tree is the relay's with 10,000
 * connections on two worker loops: a server root on a control loop, one
 * branch per worker homed on it (uvctx_with_cancel_on), and under each
 * branch a cancel context and a value context per connection. The figure
 * is uvctx_loop_snapshot() of one worker (which holds the library lock
 * for the copy and names nothing), beside its peer, uvctx_loop_dump() of
 * the same loop into /dev/null (which names every creation site and
 * formats every line under the lock): medians of interleaved rounds. */
#include "bench.h"

#include <uvctx/snapshot.h>

static const uvctx_key_t key_peer = {"peer", NULL, NULL};

int main(int argc, char** argv) {
  bench_opts_t o;
  uv_loop_t loops[3];
  uvctx_loop_t* l[3];
  uvctx_t* root;
  uvctx_t* branch[2];
  uvctx_t** conns;
  size_t n, rounds, i, r;
  double* snap_us;
  double* dump_us;
  FILE* null;
  static int v;

  bench_parse(argc, argv, &o);
  n = bench_count(&o, 10000, 200);
  rounds = o.quick ? 3 : 21;
  for (i = 0; i < 3; i++) {
    BENCH_OK(uv_loop_init(&loops[i]));
    BENCH_OK(uvctx_loop_init(&loops[i], &l[i]));
  }
  BENCH_OK(uvctx_with_cancel(uvctx_background(l[2]), &root));
  for (i = 0; i < 2; i++)
    BENCH_OK(uvctx_with_cancel_on(root, l[i], &branch[i]));
  conns = malloc(2 * n * sizeof(*conns));
  snap_us = malloc(rounds * sizeof(*snap_us));
  dump_us = malloc(rounds * sizeof(*dump_us));
  null = fopen("/dev/null", "w");
  BENCH_ASSERT(conns != NULL && snap_us != NULL && dump_us != NULL &&
               null != NULL);
  for (i = 0; i < n; i++) {
    uvctx_t* b = branch[i % 2];
    BENCH_OK(uvctx_with_cancel(b, &conns[2 * i]));
    BENCH_OK(uvctx_with_value(conns[2 * i], &key_peer, &v, &conns[2 * i + 1]));
  }

  for (r = 0; r < rounds; r++) {
    uvctx_ctx_info_t* recs = NULL;
    size_t got = 0;
    uint64_t t0;

    /* Alternate which goes first. */
    if (r % 2) {
      t0 = bench_now();
      uvctx_loop_dump(l[0], null);
      dump_us[r] = (double)(bench_now() - t0) / 1e3;
    }
    t0 = bench_now();
    BENCH_OK(uvctx_loop_snapshot(l[0], &recs, &got));
    snap_us[r] = (double)(bench_now() - t0) / 1e3;
    /* Worker 0 holds half the connections (2 contexts each) and its
     * branch. */
    BENCH_ASSERT(got == 2 * ((n + 1) / 2) + 1);
    uvctx_snapshot_free(recs);
    if (r % 2 == 0) {
      t0 = bench_now();
      uvctx_loop_dump(l[0], null);
      dump_us[r] = (double)(bench_now() - t0) / 1e3;
    }
  }
  printf("# %zu connections (%zu contexts) over 2 worker loops; one worker "
         "copied, %zu rounds\n",
         n, 2 * n + 3, rounds);
  bench_result_peer("snapshot_one_worker", "us", bench_median(snap_us, rounds),
                    "loop_dump", bench_median(dump_us, rounds));

  for (i = 2 * n; i-- > 0;)
    uvctx_release(conns[i]);
  uvctx_release(branch[0]);
  uvctx_release(branch[1]);
  uvctx_release(root);
  for (i = 0; i < 3; i++) {
    BENCH_OK(uvctx_loop_close(l[i]));
    BENCH_OK(uv_run(&loops[i], UV_RUN_DEFAULT));
    BENCH_OK(uv_loop_close(&loops[i]));
  }
  fclose(null);
  free(conns);
  free(snap_us);
  free(dump_us);
  return 0;
}
