# Relay benchmarks (issue 5): bare_relay, the bare libuv relay of
# relay_peers.c as a standalone listening process, for
# bench/relay/relay-bench.sh to run beside uvctx-relay and socat. Its smoke
# run (and the run scripts/bench.sh makes of every benchmark program)
# relays a known pattern through itself and checks every byte.
uvctx_add_bench(bare_relay
  SOURCES bare_relay_main.c relay_peers.c
  SMOKE_ARGS --quick)
