# Copy benchmarks: relay throughput, CPU per GB and abort latency
# beside a bare libuv relay, a blocking relay and Node's stream.pipeline.
uvctx_add_bench(bench_relay
  SOURCES bench_relay.c relay_peers.c
  SMOKE_ARGS --quick)
target_compile_definitions(bench_relay PRIVATE
  UVCTX_BENCH_NODE_DIR="${CMAKE_CURRENT_SOURCE_DIR}/peers/node")
