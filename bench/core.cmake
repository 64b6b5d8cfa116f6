# Core benchmarks (contexts, deadlines, watches). Each program takes --quick
# for its CTest smoke run and --scale X for real runs; scripts/bench.sh runs
# them in a Release build beside the Go peer in peers/go.
uvctx_add_bench(bench_ctx SOURCES bench_ctx.c SMOKE_ARGS --quick)
uvctx_add_bench(bench_mem SOURCES bench_mem.c SMOKE_ARGS --quick)
uvctx_add_bench(bench_xthread SOURCES bench_xthread.c SMOKE_ARGS --quick)
uvctx_add_bench(bench_deadline SOURCES bench_deadline.c SMOKE_ARGS --quick)
uvctx_add_bench(bench_scaling SOURCES bench_scaling.c SMOKE_ARGS --quick)

# The Go peer, compiled and run once per benchmark so that it cannot rot
# either. Standard library only: GOPROXY=off keeps it off the network.
find_program(UVCTX_GO_EXECUTABLE go)
if(UVCTX_GO_EXECUTABLE)
  add_test(NAME bench_go_peer_smoke
    COMMAND ${UVCTX_GO_EXECUTABLE} test -count=1 -run ^$ -bench .
            -benchtime=1x
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/peers/go)
  set_tests_properties(bench_go_peer_smoke PROPERTIES TIMEOUT 300
    LABELS bench ENVIRONMENT "GOPROXY=off;GOFLAGS=;GOWORK=off")
endif()
