#!/usr/bin/env bash
# Benchmarks of uvctx-relay beside socat, in the same run, on loopback:
#
#   throughput   BYTES (default 2 GiB) through one plain TCP connection:
#                MB/s and relay CPU-seconds per GB, beside `socat -b 65536`
#   connrate     CONNS tiny requests (connect, 5 bytes each way, close),
#                relay with 2 workers, beside socat in fork mode
#
#   bench/relay/relay-bench.sh [--relay PATH] [--bytes N] [--conns N]
#                              [throughput] [connrate]
#
# PATH defaults to build/bench/uvctx-relay, then build/relay-demo/... .
# Prints one parseable line per figure:
#   bench=NAME unit=UNIT value=V peer=socat peer_value=P ratio=V/P
# (for cpu_per_gb lower is better; the ratio is still ours/theirs). Not a
# test: nothing is asserted. Needs socat and python3.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/bench/relay"
relay=""
bytes=$((2 * 1024 * 1024 * 1024))
conns=5000
what=()
while [ $# -gt 0 ]; do
  case "$1" in
    --relay) relay=$2; shift ;;
    --bytes) bytes=$2; shift ;;
    --conns) conns=$2; shift ;;
    throughput | connrate) what+=("$1") ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "relay-bench: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ ${#what[@]} -eq 0 ] && what=(throughput connrate)
if [ -z "$relay" ]; then
  for cand in "$root/build/bench/uvctx-relay" \
    "$root/build/relay-demo/uvctx-relay" "$root/build/demo/uvctx-relay"; do
    [ -x "$cand" ] && relay=$cand && break
  done
fi
if [ ! -x "$relay" ]; then
  echo "relay-bench: no relay binary (--relay)" >&2
  exit 2
fi
for tool in socat python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "relay-bench: needs $tool" >&2
    exit 2
  fi
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# CPU seconds (user+system) of a live process.
cpu_of() {
  awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); split($0, f, " ");
    printf "%.3f", (f[12] + f[13]) / t }' "/proc/$1/stat"
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
line() { # name unit value peer_value
  local ratio="nan"
  if awk "BEGIN { exit !($4 > 0) }"; then ratio=$(calc "$3 / $4"); fi
  echo "bench=$1 unit=$2 value=$3 peer=socat peer_value=$4 ratio=$ratio"
}

# Starts a relay (args...) and sets relay_port / relay_pid.
start_relay() {
  "$relay" --listen 127.0.0.1:0 "$@" >"$tmp/relay.out" 2>"$tmp/relay.log" &
  relay_pid=$!
  pids+=("$relay_pid")
  local i
  for i in $(seq 200); do
    relay_port=$(sed -nE 's/^listening on .*:([0-9]+)$/\1/p' "$tmp/relay.out")
    [ -n "$relay_port" ] && return 0
    sleep 0.02
  done
  echo "relay-bench: relay did not start" >&2
  exit 1
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# One transfer of $bytes to the sink through the proxy on port $1; prints
# the seconds it took, until the sink has everything.
transfer() {
  local t0 t1
  t0=$(now)
  head -c "$bytes" /dev/zero |
    socat -u -b 65536 STDIN "TCP:127.0.0.1:$1"
  wait "$sink_pid" 2>/dev/null || true
  t1=$(now)
  calc "$t1 - $t0"
}
# Runs a command and writes its CPU seconds (user+system) to file $1: for
# a peer that exits by itself, whose /proc entry is gone when we look.
cpu_wrap() {
  python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f" % (r.ru_utime + r.ru_stime))' "$@"
}
start_sink() {
  sink_port=$(free_port)
  socat -u -b 65536 "TCP-LISTEN:$sink_port,reuseaddr,bind=127.0.0.1" \
    OPEN:/dev/null &
  sink_pid=$!
  pids+=("$sink_pid")
  wait_port_quiet "$sink_port"
}
# The sink accepts one connection: probe it with ss, not a connection.
wait_port_quiet() {
  local i
  for i in $(seq 200); do
    if ss -ltn 2>/dev/null | grep -q "127.0.0.1:$1 "; then return 0; fi
    sleep 0.02
  done
}

bench_throughput() {
  local s mb r_sec r_cpu c0 s_sec s_cpu
  mb=$(calc "$bytes / 1000000")
  # uvctx-relay
  start_sink
  start_relay --connect "127.0.0.1:$sink_port" --idle-timeout 0
  c0=$(cpu_of "$relay_pid")
  r_sec=$(transfer "$relay_port")
  r_cpu=$(calc "$(cpu_of "$relay_pid") - $c0")
  stop "$relay_pid"
  # socat, one connection (it exits when the connection ends)
  start_sink
  s=$(free_port)
  cpu_wrap "$tmp/socat.cpu" socat -b 65536 \
    "TCP-LISTEN:$s,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$sink_port" &
  local socat_pid=$!
  pids+=("$socat_pid")
  wait_port_quiet "$s"
  s_sec=$(transfer "$s")
  wait "$socat_pid" 2>/dev/null || true
  s_cpu=$(cat "$tmp/socat.cpu")
  line relay_throughput MB/s "$(calc "$mb / $r_sec")" "$(calc "$mb / $s_sec")"
  line relay_cpu_per_gb cpu-s/GB "$(calc "$r_cpu * 1000 / $mb")" \
    "$(calc "$s_cpu * 1000 / $mb")"
}

bench_connrate() {
  local echo_port s out r_rate s_rate
  python3 -u "$here/connrate.py" echo >"$tmp/echo.out" &
  pids+=($!)
  for _ in $(seq 200); do
    echo_port=$(sed -nE 's/^port ([0-9]+)$/\1/p' "$tmp/echo.out")
    [ -n "$echo_port" ] && break
    sleep 0.02
  done
  start_relay --connect "127.0.0.1:$echo_port" --workers 2
  out=$(python3 "$here/connrate.py" client "$relay_port" "$conns" 32)
  r_rate=$(sed -nE 's/.*rate=([0-9.]+).*/\1/p' <<<"$out")
  stop "$relay_pid"
  s=$(free_port)
  socat "TCP-LISTEN:$s,fork,reuseaddr,backlog=4096,bind=127.0.0.1" \
    "TCP:127.0.0.1:$echo_port" 2>/dev/null &
  local socat_pid=$!
  pids+=("$socat_pid")
  wait_port_quiet "$s"
  out=$(python3 "$here/connrate.py" client "$s" "$conns" 32)
  s_rate=$(sed -nE 's/.*rate=([0-9.]+).*/\1/p' <<<"$out")
  stop "$socat_pid"
  line relay_connrate conn/s "$r_rate" "$s_rate"
}

for w in "${what[@]}"; do
  "bench_$w"
done
