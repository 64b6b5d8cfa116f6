#!/usr/bin/env bash
# Benchmarks of uvctx-relay beside its peers, in the same run, on loopback:
#
#   throughput   BYTES (default 2 GiB) through one plain TCP connection:
#                MB/s and relay CPU-seconds per GB, beside the bare libuv
#                relay (bench/bare_relay_main.c, a listening process) in
#                both its variants (uv_write; --try-write: uv_try_write
#                first), compared as peer=bare_libuv_relay with the faster
#                of the two (variant= says which) and each on its own, and
#                `socat -b 65536`; ratio_min/ratio_max: the spread of the
#                per-run ratios
#   tls          TLS_BYTES (default BYTES/2: 1 GiB) from a TLS 1.3 client
#                through a TLS-terminating server to a plain sink: MB/s and
#                server CPU-seconds per GB, uvctx-relay --tls-cert/--tls-key
#                beside stunnel4 in server mode, same throwaway certificate
#                (installs Debian's stunnel4 when missing, as root or with
#                sudo, unless --no-install; otherwise skipped with a reason)
#   connrate     CONNS tiny requests (connect, 5 bytes each way, close),
#                relay with 2 workers, beside socat in fork mode
#   scrape       the throughput and connrate runs of uvctx-relay with
#                --metrics scraped every second (obs-load.py scrape, one
#                keep-alive connection, as Prometheus does) beside the same
#                runs without --metrics, in rotating order; and the relay's
#                CPU time per scrape (2,000 back to back) over the 1 s
#                interval: the share of a core that scraping takes
#   contexts     LIVE (default 10000) connections held through a relay with
#                2 workers; GET /debug/contexts back to back for 2 s against
#                2 s without, ROUNDS (--runs) times: the request's wall time,
#                and the workers' p99 busy time per loop iteration (from
#                /debug/loops) during the requests beside before them
#
#   bench/relay/relay-bench.sh [--relay PATH] [--bare PATH] [--load PATH]
#       [--bytes N] [--tls-bytes N] [--conns N] [--live N] [--runs N]
#       [--pin] [--no-install] [throughput] [tls] [connrate] [scrape]
#       [contexts]
#
# PATH defaults to build/uvctx-relay (then build/bench/uvctx-relay, ...);
# the bare relay to bench/bare_relay in the relay's build tree, and the
# plain load (sender and sink, --load) to bench/relay_load there (load.py
# when it is not built; the TLS sender is load.py always). --runs N
# (default 1) repeats each transfer N times, the peers in a rotating order,
# and reports medians. --pin runs the throughput transfers with the sender
# and the sink on CPU 0 and the proxy under test on CPU 1 (taskset), the
# same placement for every peer, so that where the scheduler puts three busy
# processes on two cores does not decide a run; its lines carry pinned=1.
# Prints one parseable line per figure:
#   bench=NAME unit=UNIT value=V peer=P peer_value=PV ratio=V/PV [cipher=C]
# (for cpu_per_gb lower is better; the ratio is still ours/theirs), and
# every single run on stderr. Not a test: nothing is asserted, but a
# transfer that does not deliver every byte fails the run. Needs socat,
# python3, openssl and ss. Bounded: every socket of the load has a 120 s
# timeout, and every process started here is killed by its PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/bench/relay"
relay=""
bare=""
load=""
bytes=$((2 * 1024 * 1024 * 1024))
tls_bytes=""
conns=5000
live=10000
runs=1
pin=0
install=1
what=()
while [ $# -gt 0 ]; do
  case "$1" in
    --relay) relay=$2; shift ;;
    --bare) bare=$2; shift ;;
    --load) load=$2; shift ;;
    --bytes) bytes=$2; shift ;;
    --tls-bytes) tls_bytes=$2; shift ;;
    --conns) conns=$2; shift ;;
    --live) live=$2; shift ;;
    --runs) runs=$2; shift ;;
    --pin) pin=1 ;;
    --no-install) install=0 ;;
    throughput | tls | connrate | scrape | contexts) what+=("$1") ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "relay-bench: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ ${#what[@]} -eq 0 ] && what=(throughput tls connrate scrape contexts)
[ -n "$tls_bytes" ] || tls_bytes=$((bytes / 2))
if [ -z "$relay" ]; then
  for cand in "$root/build/uvctx-relay" "$root/build/bench/uvctx-relay" \
    "$root/build/relay-demo/uvctx-relay" "$root/build/demo/uvctx-relay"; do
    [ -x "$cand" ] && relay=$cand && break
  done
fi
if [ ! -x "$relay" ]; then
  echo "relay-bench: no relay binary (--relay)" >&2
  exit 2
fi
if [ -z "$bare" ]; then
  for cand in "$(dirname "$relay")/bench/bare_relay" \
    "$root/build/bench/bare_relay"; do
    [ -x "$cand" ] && bare=$cand && break
  done
fi
# The plain-TCP load: --load, or relay_load (bench/relay_load.c) from the
# relay's build tree, or load.py when it is not built. The TLS sender is
# load.py always.
if [ -n "$load" ] && [ ! -x "$load" ]; then
  echo "relay-bench: --load $load is not an executable" >&2
  exit 2
fi
for cand in "$(dirname "$relay")/bench/relay_load" \
  "$root/build/bench/relay_load"; do
  [ -z "$load" ] && [ -x "$cand" ] && load=$cand && break
done
# The CPU placement of the load (sender, sink) and of the proxy under test:
# none, unless bench_throughput sets them for --pin.
on_load=()
on_proxy=()
tools=(socat python3 openssl ss)
[ "$pin" = 1 ] && tools+=(taskset)
for tool in "${tools[@]}"; do
  if ! command -v "$tool" >/dev/null; then
    echo "relay-bench: needs $tool" >&2
    exit 2
  fi
done

# shellcheck source=common.sh
. "$here/common.sh"

# Waits for a process we started (in the background, so that a signal to
# this script is acted on at once), forgets its PID, so that the trap never
# signals a PID the system may have given to someone else since, and returns
# its status.
reap() {
  local p rc=0 rest=()
  wait "$1" 2>/dev/null || rc=$?
  for p in ${pids[@]+"${pids[@]}"}; do
    [ "$p" = "$1" ] || rest+=("$p")
  done
  pids=(${rest[@]+"${rest[@]}"})
  return "$rc"
}
stop() { kill -TERM "$1" 2>/dev/null || true; reap "$1" || true; }
die() { # with the last lines each proxy of the run logged
  local f
  echo "relay-bench: $*" >&2
  for f in "$tmp"/*.log; do
    [ -s "$f" ] || continue
    echo "relay-bench: last lines of ${f##*/}:" >&2
    tail -n 5 "$f" >&2
  done
  exit 1
}
note() { echo "relay-bench: $*" >&2; }

# CPU seconds (user+system, every thread) of a live process.
cpu_of() {
  awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); split($0, f, " ");
    printf "%.3f", (f[12] + f[13]) / t }' "/proc/$1/stat"
}
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# The median of a space-separated list of numbers.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END {
  if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n",
    (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
line() { # name unit value peer peer_value [extra fields]
  local ratio="nan"
  if awk "BEGIN { exit !($5 > 0) }"; then ratio=$(calc "$3 / $5"); fi
  echo "bench=$1 unit=$2 value=$3 peer=$4 peer_value=$5 ratio=$ratio${6:+ $6}"
}

# Starts a program that prints "listening on ADDR:PORT" first (uvctx-relay,
# bare_relay) with args...; sets lport / lpid.
start_listener() {
  local name=$1
  shift
  # Emptied first: the poll below must not read the last run's port.
  : >"$tmp/$name.out"
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  lpid=$!
  pids+=("$lpid")
  local i
  for i in $(seq 250); do
    lport=$(sed -nE 's/^listening on .*:([0-9]+)$/\1/p' "$tmp/$name.out")
    [ -n "$lport" ] && return 0
    kill -0 "$lpid" 2>/dev/null || break
    sleep 0.02
  done
  cat "$tmp/$name.log" >&2
  die "$name did not start"
}
# A peer that cannot print its port (socat, stunnel) gets a free one, and we
# probe it with ss, not with a connection that it would take as the one.
wait_port_quiet() {
  local i
  for i in $(seq 250); do
    if ss -ltn 2>/dev/null | grep -q "127.0.0.1:$1 "; then return 0; fi
    sleep 0.02
  done
  die "nothing listens on port $1"
}
# Runs a command and writes its CPU seconds (user+system) to file $1: for
# a peer that exits by itself, whose /proc entry is gone when we look. A
# TERM (from cleanup) is passed on to the command.
cpu_wrap() {
  python3 -c 'import resource, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *a: (p.terminate(), sys.exit(1)))
p.wait()
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f" % (r.ru_utime + r.ru_stime))' "$@"
}

# Starts a helper that prints "port N" first (NAME, then its command);
# sets hport and hpid. Its output file is emptied first, so that the poll
# never reads the last run's port.
start_helper() {
  local name=$1 i
  shift
  : >"$tmp/$name.out"
  "$@" >"$tmp/$name.out" &
  hpid=$!
  pids+=("$hpid")
  for i in $(seq 250); do
    hport=$(sed -nE 's/^port ([0-9]+)$/\1/p' "$tmp/$name.out")
    [ -n "$hport" ] && return 0
    sleep 0.02
  done
  die "$name did not start"
}
# The sink: one connection read to EOF; it times first byte to EOF itself.
start_sink() {
  if [ -n "$load" ]; then
    start_helper sink ${on_load[@]+"${on_load[@]}"} "$load" sink
  else
    start_helper sink ${on_load[@]+"${on_load[@]}"} python3 -u \
      "$here/load.py" sink
  fi
  sink_port=$hport
  sink_pid=$hpid
}
# The asyncio echo server of connrate.py; sets echo_port and echo_pid.
start_echo() {
  start_helper echo python3 -u "$here/connrate.py" echo
  echo_port=$hport
  echo_pid=$hpid
}

# Sends $2 bytes to port $1 (TLS with $3 = CA file), waits for the sink and
# sets secs (the sink's first byte to EOF) and cipher; fails the run unless
# every byte arrived.
transfer() {
  local got sp
  if [ -n "$load" ] && [ -z "${3:-}" ]; then
    ${on_load[@]+"${on_load[@]}"} "$load" send "$1" "$2" >"$tmp/send.out" &
  else
    ${on_load[@]+"${on_load[@]}"} python3 "$here/load.py" send "$1" "$2" \
      ${3:+--tls "$3"} >"$tmp/send.out" &
  fi
  sp=$!
  pids+=("$sp")
  reap "$sp" || die "the sender failed"
  reap "$sink_pid" || true
  got=$(sed -nE 's/^bytes=([0-9]+) .*/\1/p' "$tmp/sink.out")
  [ "$got" = "$2" ] || die "the sink got ${got:-nothing} of $2 bytes"
  secs=$(sed -nE 's/^bytes=[0-9]+ seconds=([0-9.]+).*/\1/p' "$tmp/sink.out")
  cipher=$(sed -nE 's/.* cipher=([^ ]+).*/\1/p' "$tmp/send.out")
}

# One run of one peer: sets mbps and cpugb.
tput_uvctx() {
  local c0
  start_sink
  start_listener relay "${on_proxy[@]}" "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$sink_port" --idle-timeout 0
  c0=$(cpu_of "$lpid")
  transfer "$lport" "$bytes"
  cpu=$(calc "$(cpu_of "$lpid") - $c0")
  stop "$lpid"
}
tput_bare() { # [--try-write]
  local c0
  start_sink
  start_listener bare "${on_proxy[@]}" "$bare" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$sink_port" "$@"
  c0=$(cpu_of "$lpid")
  transfer "$lport" "$bytes"
  cpu=$(calc "$(cpu_of "$lpid") - $c0")
  stop "$lpid"
}
tput_baretry() { tput_bare --try-write; }
tput_socat() { # one connection: it exits when the connection ends
  local s p
  start_sink
  s=$(free_port)
  cpu_wrap "$tmp/socat.cpu" "${on_proxy[@]}" socat -b 65536 \
    "TCP-LISTEN:$s,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$sink_port" &
  p=$!
  pids+=("$p")
  wait_port_quiet "$s"
  transfer "$s" "$bytes"
  reap "$p" || true
  cpu=$(cat "$tmp/socat.cpu")
}

# The per-run ratios of each peer, and the name of each bare variant.
declare -A ratios=()
declare -A variant=([bare]=write [baretry]=try_write)
# name-of-peer key [extra fields]: the throughput line against one peer,
# with the spread of its per-run ratios.
tput_line() {
  local lo hi
  lo=$(tr ' ' '\n' <<<"${ratios[$2]}" | grep . | sort -g | head -1)
  hi=$(tr ' ' '\n' <<<"${ratios[$2]}" | grep . | sort -g | tail -1)
  line relay_throughput MB/s "$(median "${rate[uvctx]}")" "$1" \
    "$(median "${rate[$2]}")" "ratio_min=$lo ratio_max=$hi runs=$runs${3:+ $3}${pinned:+ $pinned}"
}

bench_throughput() {
  local mb peers=(uvctx bare baretry socat) i k p best pinned=""
  local -A rate=() cpugb=() run_rate=()
  # Seen by the tput_* functions and transfer() (bash scopes dynamically).
  local on_load=() on_proxy=()
  if [ "$pin" = 1 ]; then
    on_load=(taskset -c 0)
    on_proxy=(taskset -c 1)
    pinned="pinned=1"
  fi
  mb=$(calc "$bytes / 1000000")
  note "plain load: ${load:-$here/load.py (no relay_load built)}"
  if [ -z "$bare" ]; then
    note "no bare_relay binary (--bare; built as bench/bare_relay):" \
      "no peer=bare_libuv_relay lines"
    peers=(uvctx socat)
  fi
  # The ratios of each run, ours over the peer's of the same run.
  for ((i = 0; i < runs; i++)); do
    for ((k = 0; k < ${#peers[@]}; k++)); do
      p=${peers[(i + k) % ${#peers[@]}]}
      "tput_$p"
      run_rate[$p]=$(calc "$mb / $secs")
      rate[$p]+=" ${run_rate[$p]}"
      cpugb[$p]+=" $(calc "$cpu * 1000 / $mb")"
      note "throughput run $((i + 1)) $p: $(calc "$mb / $secs") MB/s," \
        "cpu $cpu s"
    done
    for p in "${peers[@]}"; do
      [ "$p" = uvctx ] && continue
      ratios[$p]+=" $(calc "${run_rate[uvctx]} / ${run_rate[$p]}")"
    done
  done
  if [ -n "$bare" ]; then
    best=bare
    if awk "BEGIN { exit !($(median "${rate[baretry]}") >= \
        $(median "${rate[bare]}")) }"; then best=baretry; fi
    tput_line bare_libuv_relay "$best" "variant=${variant[$best]}"
    tput_line bare_libuv_relay_write bare
    tput_line bare_libuv_relay_try baretry
  fi
  tput_line socat socat
  if [ -n "$bare" ]; then
    line relay_cpu_per_gb cpu-s/GB "$(median "${cpugb[uvctx]}")" \
      bare_libuv_relay "$(median "${cpugb[$best]}")" \
      "variant=${variant[$best]}${pinned:+ $pinned}"
  fi
  line relay_cpu_per_gb cpu-s/GB "$(median "${cpugb[uvctx]}")" socat \
    "$(median "${cpugb[socat]}")" "$pinned"
}

# Debian's stunnel4, installed only when missing and only as root or with
# a password-less sudo; sets stunnel_bin, or skip_reason.
ensure_stunnel() {
  local sudo=()
  stunnel_bin=$(command -v stunnel4 || command -v stunnel || true)
  [ -n "$stunnel_bin" ] && return 0
  if [ "$install" = 0 ]; then
    skip_reason="stunnel4 is not installed (--no-install)"
    return 1
  fi
  if ! command -v apt-get >/dev/null; then
    skip_reason="stunnel4 is not installed, and there is no apt-get"
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      skip_reason="stunnel4 is not installed; installing it needs root or sudo"
      return 1
    fi
  fi
  note "installing stunnel4 with apt-get"
  if ! timeout 300 ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends stunnel4 \
      >"$tmp/apt.log" 2>&1; then
    # Stale package lists are the usual reason: refresh them once.
    timeout 300 ${sudo[@]+"${sudo[@]}"} apt-get update -q \
      >>"$tmp/apt.log" 2>&1 || true
    timeout 300 ${sudo[@]+"${sudo[@]}"} \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends stunnel4 >>"$tmp/apt.log" 2>&1 || true
  fi
  stunnel_bin=$(command -v stunnel4 || command -v stunnel || true)
  if [ -z "$stunnel_bin" ]; then
    tail -5 "$tmp/apt.log" >&2
    skip_reason="apt-get install stunnel4 failed"
    return 1
  fi
}

tls_uvctx() {
  local c0
  start_sink
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$sink_port" --idle-timeout 0 \
    --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"
  c0=$(cpu_of "$lpid")
  transfer "$lport" "$tls_bytes" "$tmp/cert.pem"
  cpu=$(calc "$(cpu_of "$lpid") - $c0")
  stop "$lpid"
}
tls_stunnel() {
  local s c0 p
  start_sink
  s=$(free_port)
  # Nothing but what a terminating setup needs; TLS settings are stunnel's
  # defaults (the client asks for TLS 1.3, and the cipher is reported).
  cat >"$tmp/stunnel.conf" <<EOF
foreground = yes
pid =
output = $tmp/stunnel.log
[bench]
accept = 127.0.0.1:$s
connect = 127.0.0.1:$sink_port
cert = $tmp/cert.pem
key = $tmp/key.pem
EOF
  "$stunnel_bin" "$tmp/stunnel.conf" >>"$tmp/stunnel.log" 2>&1 &
  p=$!
  pids+=("$p")
  wait_port_quiet "$s"
  c0=$(cpu_of "$p")
  transfer "$s" "$tls_bytes" "$tmp/cert.pem"
  cpu=$(calc "$(cpu_of "$p") - $c0")
  stop "$p"
}

bench_tls() {
  local mb i k p extra peers=(uvctx stunnel)
  local -A rate=() cpugb=() ciph=()
  mb=$(calc "$tls_bytes / 1000000")
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >"$tmp/openssl.log" 2>&1 ||
    { cat "$tmp/openssl.log" >&2; die "openssl could not make a certificate"; }
  if ! ensure_stunnel; then
    note "TLS beside stunnel4 skipped: $skip_reason"
    peers=(uvctx)
  fi
  for ((i = 0; i < runs; i++)); do
    for ((k = 0; k < ${#peers[@]}; k++)); do
      p=${peers[(i + k) % ${#peers[@]}]}
      "tls_$p"
      rate[$p]+=" $(calc "$mb / $secs")"
      cpugb[$p]+=" $(calc "$cpu * 1000 / $mb")"
      ciph[$p]=$cipher
      note "tls run $((i + 1)) $p: $(calc "$mb / $secs") MB/s, cpu $cpu s," \
        "$cipher"
    done
  done
  extra="cipher=${ciph[uvctx]}"
  if [ ${#peers[@]} -eq 1 ]; then
    echo "bench=relay_tls_throughput unit=MB/s" \
      "value=$(median "${rate[uvctx]}") $extra"
    echo "bench=relay_tls_cpu_per_gb unit=cpu-s/GB" \
      "value=$(median "${cpugb[uvctx]}") $extra"
    return 0
  fi
  if [ "${ciph[uvctx]}" != "${ciph[stunnel]}" ]; then
    note "the two servers negotiated different ciphers:" \
      "${ciph[uvctx]} and ${ciph[stunnel]}"
    extra="$extra peer_cipher=${ciph[stunnel]}"
  fi
  line relay_tls_throughput MB/s "$(median "${rate[uvctx]}")" stunnel4 \
    "$(median "${rate[stunnel]}")" "$extra"
  line relay_tls_cpu_per_gb cpu-s/GB "$(median "${cpugb[uvctx]}")" stunnel4 \
    "$(median "${cpugb[stunnel]}")" "$extra"
}

bench_connrate() {
  local echo_port echo_pid s out r_rate s_rate socat_pid
  start_echo
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$echo_port" --workers 2
  out=$(python3 "$here/connrate.py" client "$lport" "$conns" 32)
  r_rate=$(sed -nE 's/.*rate=([0-9.]+).*/\1/p' <<<"$out")
  stop "$lpid"
  s=$(free_port)
  socat "TCP-LISTEN:$s,fork,reuseaddr,backlog=4096,bind=127.0.0.1" \
    "TCP:127.0.0.1:$echo_port" 2>/dev/null &
  socat_pid=$!
  pids+=("$socat_pid")
  wait_port_quiet "$s"
  out=$(python3 "$here/connrate.py" client "$s" "$conns" 32)
  s_rate=$(sed -nE 's/.*rate=([0-9.]+).*/\1/p' <<<"$out")
  stop "$socat_pid"
  stop "$echo_pid"
  line relay_connrate conn/s "$r_rate" socat "$s_rate"
}

# ---- observability costs --------------------------------------------------


# The relay's metrics port, from its second line.
metrics_port() {
  local i mp
  for i in $(seq 250); do
    mp=$(sed -nE 's/^metrics on .*:([0-9]+)$/\1/p' "$tmp/relay.out")
    [ -n "$mp" ] && echo "$mp" && return 0
    sleep 0.02
  done
  die "the relay printed no metrics port"
}
# Starts a scraper of metrics port $1 for at most $2 seconds; sets spid.
start_scraper() {
  python3 "$here/obs-load.py" scrape "$1" "$2" >"$tmp/scrape.out" &
  spid=$!
  pids+=("$spid")
}
# One throughput run with --metrics scraped every second: sets cpu, secs.
tput_scraped() {
  local c0
  start_sink
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$sink_port" --idle-timeout 0 --metrics 127.0.0.1:0
  start_scraper "$(metrics_port)" 600
  c0=$(cpu_of "$lpid")
  transfer "$lport" "$bytes"
  cpu=$(calc "$(cpu_of "$lpid") - $c0")
  stop "$spid"
  stop "$lpid"
}
# One connrate run ($1 = scraped or plain) against echo port $2: sets
# conn_rate.
connrate_run() {
  local extra=() out
  [ "$1" = scraped ] && extra=(--metrics 127.0.0.1:0)
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$2" --workers 2 ${extra[@]+"${extra[@]}"}
  [ "$1" = scraped ] && start_scraper "$(metrics_port)" 600
  out=$(python3 "$here/connrate.py" client "$lport" "$conns" 32)
  conn_rate=$(sed -nE 's/.*rate=([0-9.]+).*/\1/p' <<<"$out")
  [ "$1" = scraped ] && stop "$spid"
  stop "$lpid"
}

bench_scrape() {
  local mb i k p echo_port echo_pid mp
  local -A tput=() crate=()
  mb=$(calc "$bytes / 1000000")
  start_echo
  for i in $(seq "$runs"); do
    # Rotate which goes first, so that neither always meets a warm cache.
    for k in 0 1; do
      p=plain
      [ $(((i + k) % 2)) = 1 ] && p=scraped
      if [ "$p" = plain ]; then tput_uvctx; else tput_scraped; fi
      tput[$p]+=" $(calc "$mb / $secs")"
      connrate_run "$p" "$echo_port"
      crate[$p]+=" $conn_rate"
      note "run $i $p: $(calc "$mb / $secs") MB/s, $conn_rate conn/s"
    done
  done
  # What one scrape costs the relay, in CPU time (every thread), which
  # does not depend on the machine's load the way the paired runs do:
  # 2,000 back-to-back scrapes of a relay with 2 workers whose counters
  # the connections just made have moved, over the 1 s interval.
  local c0 c1 sc per
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$echo_port" --workers 2 --metrics 127.0.0.1:0
  mp=$(metrics_port)
  python3 "$here/connrate.py" client "$lport" 1000 32 >/dev/null
  c0=$(cpu_of "$lpid")
  sc=$(python3 "$here/obs-load.py" burst "$mp" 2000)
  c1=$(cpu_of "$lpid")
  stop "$lpid"
  stop "$echo_pid"
  per=$(calc "($c1 - $c0) / 2000 * 1000000")
  line relay_throughput_scraped MB/s "$(median "${tput[scraped]}")" \
    unscraped "$(median "${tput[plain]}")"
  line relay_connrate_scraped conn/s "$(median "${crate[scraped]}")" \
    unscraped "$(median "${crate[plain]}")"
  # line() rounds ratios to 0.001; this one is far smaller.
  echo "bench=relay_scrape_cpu unit=us value=$per peer=scrape_interval_us" \
    "peer_value=1000000 ratio=$(awk "BEGIN { printf \"%.6f\", $per / 1e6 }")" \
    "${sc##* } target=ratio<=0.02"
}

bench_contexts() {
  local echo_port echo_pid mp out
  # LIVE connections are 2 * LIVE descriptors in the relay, LIVE in the
  # load and LIVE in the echo server; the relay needs a few dozen more.
  ulimit -n $((2 * live + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  if [ "$(ulimit -n)" != unlimited ] &&
    [ "$(ulimit -n)" -lt $((2 * live + 64)) ]; then
    note "descriptor limit $(ulimit -n): --live $live lowered to" \
      "$((($(ulimit -n) - 64) / 2))"
    live=$((($(ulimit -n) - 64) / 2))
  fi
  start_echo
  start_listener relay "$relay" --listen 127.0.0.1:0 \
    --connect "127.0.0.1:$echo_port" --workers 2 --idle-timeout 0 \
    --max-connections $((live + 100)) --metrics 127.0.0.1:0
  mp=$(metrics_port)
  out=$(python3 "$here/obs-load.py" contexts "$lport" "$mp" "$live" "$runs")
  echo "$out" >&2
  stop "$lpid"
  stop "$echo_pid"
  field() { sed -nE "s/.* $1=([0-9.]+).*/\1/p" <<<"$out" | tr '\n' ' '; }
  line debug_contexts_wall ms "$(median "$(field wall_ms)")" none 0 \
    "contexts=$(median "$(field contexts)") live=$live"
  line debug_contexts_copy us "$(median "$(field copy_us)")" none 0
  line debug_contexts_stall_p99 ns "$(median "$(field busy_p99_ns)")" \
    no_request "$(median "$(field quiet_p99_ns)")"
  line debug_contexts_stall_max_bucket ns \
    "$(median "$(field busy_max_bucket_ns)")" no_request \
    "$(median "$(field quiet_max_bucket_ns)")"
}

for w in "${what[@]}"; do
  "bench_$w"
done
