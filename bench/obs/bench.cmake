# Obs benchmarks: copying a loop's contexts (/debug/contexts of uvctx-relay)
# beside the leak report's text.
uvctx_add_bench(bench_snapshot
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/../bench_snapshot.c SMOKE_ARGS --quick)
