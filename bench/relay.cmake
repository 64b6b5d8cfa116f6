# Relay benchmarks: bare_relay, the bare libuv relays of
# relay_peers.c (uv_write, or with --try-write uv_try_write first) as a
# standalone listening process, for
# bench/relay/relay-bench.sh to run beside uvctx-relay and socat. Its smoke
# run (and the run scripts/bench.sh makes of every benchmark program)
# relays a known pattern through itself and checks every byte.
uvctx_add_bench(bare_relay
  SOURCES bare_relay_main.c relay_peers.c
  SMOKE_ARGS --quick)
# The try-write variant's self-check. Not labelled bench: scripts/bench.sh
# takes every test so labelled for a program of that name.
add_test(NAME smoke_bare_relay_try COMMAND bare_relay --quick --try-write)
set_tests_properties(smoke_bare_relay_try PROPERTIES TIMEOUT 300)
# The plain-TCP sender and sink of relay-bench.sh (load.py is its
# fallback); its smoke run moves 1 MiB through loopback and counts it.
uvctx_add_bench(relay_load
  SOURCES relay_load.c
  SMOKE_ARGS --quick)
