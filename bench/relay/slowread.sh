#!/usr/bin/env bash
# Memory under a slow-read attack (slowhttptest -X), uvctx-relay beside
# HAProxy in tcp mode, in the same run, on loopback:
#
#   bench/relay/slowread.sh [--relay PATH] [--conns N] [--secs S] [--tls]
#
# An HTTP upstream (bench/relay/http_backend.js, node) serves 1 MiB per
# GET; slowhttptest opens N connections (default 2000) through the proxy,
# pipelines 3 GETs on each, advertises a 512-1024 byte window and reads 32
# bytes every 5 s, for S seconds (default 30). For each proxy it samples
# the proxy's resident set (VmRSS) before the attack and, every 0.5 s, with
# the count of its established client connections: the figure is the RSS
# growth at the most connections held, per connection. It prints
#   bench=slowread_rss_per_conn[_tls] unit=KiB value=V peer=haproxy
#     peer_value=PV ratio=V/PV conns=N peer_conns=PN
# With --tls both terminate TLS (the same throwaway certificate). Needs
# slowhttptest, haproxy, node, openssl, ss. uvctx-relay runs with
# --send-timeout 0 and --idle-timeout 0 and HAProxy with long timeouts, so
# that both hold every attacker for the whole attack: what is measured is
# the memory each held connection costs. Bounded: every process started
# here is killed by its PID on exit; the attack ends after S seconds.
# At 2000 connections a run (--tls most) takes the kernel to its TCP
# memory limit ("TCP: out of memory" in dmesg): loopback tests that run
# meanwhile may see connections reset; run nothing else beside it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/bench/relay"
relay="$root/build/uvctx-relay"
conns=2000
secs=30
tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --relay) relay=$2; shift ;;
    --conns) conns=$2; shift ;;
    --secs) secs=$2; shift ;;
    --tls) tls=1 ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "slowread: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
for tool in slowhttptest haproxy node openssl ss; do
  command -v "$tool" >/dev/null || { echo "slowread: needs $tool" >&2; exit 2; }
done
[ -x "$relay" ] || { echo "slowread: no relay binary (--relay)" >&2; exit 2; }
# Both proxies hold two sockets per attacker, slowhttptest one; HAProxy
# refuses to start unless the limit covers twice its maxconn.
ulimit -n $((conns * 8 + 1024))

# shellcheck source=common.sh
. "$here/common.sh"
note() { echo "slowread: $*" >&2; }
die() { note "$*"; exit 1; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
established() { # port: established connections to it
  ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l
}

node "$here/http_backend.js" >"$tmp/backend.out" 2>"$tmp/backend.err" &
pids+=($!)
for i in $(seq 250); do
  bport=$(sed -nE 's/^port ([0-9]+)$/\1/p' "$tmp/backend.out")
  [ -n "$bport" ] && break
  sleep 0.02
done
[ -n "${bport:-}" ] || die "the backend did not start"

scheme=http
if [ "$tls" = 1 ]; then
  scheme=https
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/both.pem"
fi

# Runs the attack against port $1 of process $2; sets rss0, rss1, held.
attack() {
  local port=$1 pid=$2 t peak=0 n
  sleep 1
  rss0=$(rss_kib "$pid")
  slowhttptest -X -c "$conns" -r 1000 -l "$secs" -k 3 -n 5 -w 512 -y 1024 \
    -z 32 -p 10 -u "$scheme://127.0.0.1:$port/" >"$tmp/attack.log" 2>&1 &
  local sp=$!
  pids+=("$sp")
  held=0
  rss1=0
  # The plateau: sample until the attack ends; keep the RSS at the most
  # connections held (the latest sample among equals, once they have all
  # received their first bytes).
  for t in $(seq $((secs * 2))); do
    sleep 0.5
    kill -0 "$sp" 2>/dev/null || break
    n=$(established "$port")
    peak=$(rss_kib "$pid")
    if [ "$n" -ge "$held" ]; then rss1=$peak; held=$n; fi
  done
  wait "$sp" 2>/dev/null || true
}

# uvctx-relay.
relay_args=(--listen 127.0.0.1:0 --connect "127.0.0.1:$bport"
  --idle-timeout 0 --send-timeout 0 --max-connections $((conns * 2)))
[ "$tls" = 1 ] && relay_args+=(--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem")
"$relay" "${relay_args[@]}" >"$tmp/relay.out" 2>"$tmp/relay.log" &
rpid=$!
pids+=("$rpid")
for i in $(seq 250); do
  rport=$(sed -nE 's/^listening on .*:([0-9]+)$/\1/p' "$tmp/relay.out")
  [ -n "$rport" ] && break
  sleep 0.02
done
[ -n "${rport:-}" ] || { cat "$tmp/relay.log" >&2; die "the relay did not start"; }
attack "$rport" "$rpid"
r0=$rss0 r1=$rss1 rheld=$held
note "uvctx-relay: rss $r0 -> $r1 KiB, $rheld connections held"
kill "$rpid"

# HAProxy, tcp mode, the same upstream.
hport=$(free_port)
bind="bind 127.0.0.1:$hport"
[ "$tls" = 1 ] && bind="$bind ssl crt $tmp/both.pem"
cat >"$tmp/haproxy.cfg" <<CFG
global
  maxconn $((conns * 2))
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend f
  $bind
  default_backend b
backend b
  server s1 127.0.0.1:$bport
CFG
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
hpid=$!
pids+=("$hpid")
for i in $(seq 250); do
  ss -ltn 2>/dev/null | grep -q "127.0.0.1:$hport " && break
  kill -0 "$hpid" 2>/dev/null || { cat "$tmp/haproxy.log" >&2; die "haproxy exited"; }
  sleep 0.02
done
attack "$hport" "$hpid"
h0=$rss0 h1=$rss1 hheld=$held
note "haproxy: rss $h0 -> $h1 KiB, $hheld connections held"

name=slowread_rss_per_conn
[ "$tls" = 1 ] && name=${name}_tls
awk -v n="$name" -v r0="$r0" -v r1="$r1" -v rc="$rheld" -v h0="$h0" \
  -v h1="$h1" -v hc="$hheld" 'BEGIN {
  v = rc > 0 ? (r1 - r0) / rc : 0; pv = hc > 0 ? (h1 - h0) / hc : 0
  printf "bench=%s unit=KiB value=%.1f peer=haproxy peer_value=%.1f ratio=%s conns=%d peer_conns=%d\n",
    n, v, pv, (pv > 0 ? sprintf("%.2f", v / pv) : "nan"), rc, hc }'
