#!/usr/bin/env bash
# The uvctx-relay demo: a short, self-contained show on loopback. It
# installs what it needs (apt-get, only when something is missing), builds
# the relay, makes a throwaway certificate, starts a local HTTP upstream
# (python3 -m http.server) and the relay with TLS in front of it, then
# shows with real clients (curl, openssl s_client):
#
#   1. a normal HTTPS request through the relay;
#   2. a client that connects and never sends its ClientHello, cut at the
#      handshake deadline;
#   3. a TLS client that goes quiet, closed at the idle deadline;
#   4. a graceful drain on SIGTERM: the download in flight completes, a new
#      connection is refused, the relay exits 0.
#
# Between 3 and 4 it scrapes the relay's /metrics (--metrics) for its
# connection counters.
#
#   scripts/relay-demo.sh [--build DIR]   (default DIR: build/relay-demo)
#
# Bounded (under 30 s once built); every process it starts is killed on the
# way out, even on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=build/relay-demo
if [ "${1:-}" = "--build" ] && [ -n "${2:-}" ]; then
  build=$2
fi

# ---- what the demo needs ----------------------------------------------------
need_pkgs=()
for pair in cmake:cmake cc:build-essential pkg-config:pkg-config \
  openssl:openssl curl:curl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
for pkg in libuv1-dev libssl-dev; do
  if command -v dpkg-query >/dev/null 2>&1 &&
    ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
    grep -q 'install ok installed'; then
    need_pkgs+=("$pkg")
  fi
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "relay-demo: installing ${need_pkgs[*]}"
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

relay="$build/uvctx-relay"
if [ ! -x "$relay" ]; then
  echo "=== building uvctx-relay in $build"
  cmake -S . -B "$build" -DUVCTX_BUILD_TESTS=OFF -DUVCTX_BUILD_BENCH=OFF \
    -DUVCTX_BUILD_TOOLS=ON >/dev/null
  cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" \
    --target uvctx-relay >/dev/null
fi

# ---- cleanup, whatever happens ----------------------------------------------
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "relay-demo: $*" >&2
  if [ -s "$tmp/relay.log" ]; then
    echo "--- relay log:" >&2
    tail -n 15 "$tmp/relay.log" >&2
  fi
  exit 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Waits (bounded) until file $1 has a line matching $2; prints it.
wait_line() {
  local i
  for i in $(seq 100); do
    if grep -E "$2" "$1" 2>/dev/null | tail -n 1 | grep .; then
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# A field of a logfmt line: field "reason" <<< "$line".
field() { sed -nE "s/.* $1=([^ ]*).*/\1/p"; }

# ---- the stage --------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null ||
  die "openssl could not make a certificate"

mkdir "$tmp/www"
echo "hello from the upstream, through uvctx-relay" >"$tmp/www/hello.txt"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$tmp/www/big.bin"

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/www" \
  >"$tmp/http.out" 2>/dev/null &
pids+=($!)
up_port=$(wait_line "$tmp/http.out" 'port [0-9]+' |
  sed -nE 's/.*port ([0-9]+).*/\1/p') || die "the upstream did not start"

"$relay" --listen 127.0.0.1:0 --connect "127.0.0.1:$up_port" \
  --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" \
  --handshake-timeout 1s --idle-timeout 2s --drain-timeout 10s \
  --metrics 127.0.0.1:0 --log-level open >"$tmp/relay.out" \
  2>"$tmp/relay.log" &
relay_pid=$!
pids+=("$relay_pid")
port=$(wait_line "$tmp/relay.out" '^listening on' |
  sed -E 's/.*:([0-9]+)$/\1/') || die "the relay did not start"
metrics_port=$(wait_line "$tmp/relay.out" '^metrics on' |
  sed -E 's/.*:([0-9]+)$/\1/') || die "the relay did not serve /metrics"

echo "=== uvctx-relay: TLS on 127.0.0.1:$port in front of http.server on" \
  "127.0.0.1:$up_port"
echo "    (handshake deadline 1s, idle deadline 2s, drain deadline 10s)"

# Waits for the close line of connection $1 and prints it.
close_of() { wait_line "$tmp/relay.log" "event=close conn=$1 "; }

# ---- 1. a normal request ----------------------------------------------------
body=$(curl -sS --max-time 10 --cacert "$tmp/cert.pem" \
  "https://localhost:$port/hello.txt") || die "curl failed"
line=$(close_of 1) || die "no close line for the request"
echo "[1/4] curl https://localhost:$port/hello.txt -> \"$body\""
detail=$(field detail <<<"$line")
echo "      relay: reason=$(field reason <<<"$line")${detail:+ ($detail)}" \
  "bytes_down=$(field bytes_down <<<"$line")" \
  "duration_ms=$(field duration_ms <<<"$line")"
if [ "$(field reason <<<"$line")" = reset ]; then
  echo "      (curl hung up before the relay's close_notify reached it;" \
    "see docs/relay.md)"
fi

# ---- 2. a stalled handshake -------------------------------------------------
stall='import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
t0 = time.monotonic()
s.recv(1)  # never sends a ClientHello; returns when the relay closes
print("%.2f" % (time.monotonic() - t0))'
took=$(python3 -c "$stall" "$port") || die "the stalled client was not cut"
line=$(close_of 2) || die "no close line for the stalled client"
echo "[2/4] a client that connects and never says hello -> cut after" \
  "${took}s (reason=$(field reason <<<"$line"))"

# ---- 3. an idle connection --------------------------------------------------
# s_client completes its handshake, then has nothing to say for 3 s.
t0=$(now)
sleep 3 | openssl s_client -connect "127.0.0.1:$port" -CAfile "$tmp/cert.pem" \
  -quiet >/dev/null 2>&1 || true
line=$(close_of 3) || die "no close line for the idle client"
echo "[3/4] openssl s_client, handshake done, then silence -> closed after" \
  "$(field duration_ms <<<"$line") ms (reason=$(field reason <<<"$line"))"

# ---- the relay's own view ---------------------------------------------------
scrape=$(curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics") ||
  die "GET /metrics failed"
# The relay's counters are per worker (loop="worker-N"): sum them.
accepted=$(awk '/^uvctx_relay_connections_accepted_total[{ ]/ { n += $2 }
  END { print n + 0 }' <<<"$scrape")
closed=$(awk 'match($0, /^uvctx_relay_connections_closed_total\{.*reason="[^"]+"/) {
    r = $0; sub(/.*reason="/, "", r); sub(/".*/, "", r); n[r] += $2 }
  END { for (r in n) if (n[r] > 0) printf "%s=%d ", r, n[r] }' <<<"$scrape")
echo "      GET http://127.0.0.1:$metrics_port/metrics -> accepted $accepted," \
  "closed by reason: ${closed% }"

# ---- 4. a graceful drain ----------------------------------------------------
curl -sS --max-time 20 --limit-rate 8M --cacert "$tmp/cert.pem" \
  -o "$tmp/big.got" "https://localhost:$port/big.bin" &
curl_pid=$!
pids+=("$curl_pid")
wait_line "$tmp/relay.log" "event=open conn=4 " >/dev/null ||
  die "the download did not start"
sleep 0.5
t0=$(now)
kill -TERM "$relay_pid"
wait_line "$tmp/relay.log" "event=draining" >/dev/null || die "no drain"
sleep 0.2
if curl -sS --max-time 5 --cacert "$tmp/cert.pem" -o /dev/null \
  "https://localhost:$port/hello.txt" 2>"$tmp/refused.err"; then
  die "a new connection was served while draining"
fi
wait "$curl_pid" || die "the download in flight failed"
status=0
wait "$relay_pid" || status=$?
took=$(since "$t0")
cmp -s "$tmp/big.got" "$tmp/www/big.bin" || die "the download differs"
line=$(close_of 4) || die "no close line for the download"
echo "[4/4] SIGTERM during a 24 MiB download at 8 MiB/s ->" \
  "new connection refused ($(sed -E 's/^curl: \([0-9]+\) //' \
    "$tmp/refused.err" | head -n 1)),"
echo "      download complete and byte-exact" \
  "(reason=$(field reason <<<"$line")), relay exit status $status after" \
  "${took}s"
[ "$status" -eq 0 ] || die "the relay exited with status $status"
echo "=== relay log: $(grep -c 'event=close' "$tmp/relay.log") close lines," \
  "e.g.:"
sed -n '/event=close conn=2 /p' "$tmp/relay.log"
