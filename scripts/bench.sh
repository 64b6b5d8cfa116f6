#!/usr/bin/env bash
# Runs every benchmark for real and prints one table: scenario, uvctx
# figure, peer figure, ratio, target, met?
#
#   scripts/bench.sh [-B build-dir] [--scale X] [--quick] [--core] [--no-go]
#
# It builds a Release tree of its own (default: $TMPDIR/build-bench, or
# $UVCTX_BENCH_BUILD; extra CMake arguments in $UVCTX_BENCH_CMAKE_ARGS) and
# runs each benchmark registered with uvctx_add_bench() without arguments:
# full counts, --scale X passed to the core ones, --core for those alone,
# each killed after $UVCTX_BENCH_TIMEOUT seconds (600). It runs the Go peer
# in bench/peers/go when `go` is installed, and any bench/peers/*/run.sh.
# Every program prints lines
#
#   bench=NAME unit=UNIT value=X [peer=P peer_value=Y ratio=R] [target=T]
#
# Go figures are joined to the core lines by scenario name. Targets come
# from the table below, or from a line's own target= field; T is one of
# ratio<=X, ratio>=X, value<=X, value>=X, value<=peer+X. The joined lines
# are kept in <build-dir>/bench-results.txt; the table goes to stdout,
# progress to stderr. Run it on a quiet machine: it takes a few minutes
# and nothing else should be running benchmarks at the same time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${UVCTX_BENCH_BUILD:-${TMPDIR:-/tmp}/build-bench}
scale=
quick=0
core_only=0
with_go=1

while [ $# -gt 0 ]; do
  case $1 in
    -B) build=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --core) core_only=1; shift ;;
    --no-go) with_go=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '%s\n' "bench.sh: $*" >&2; }

# Every benchmark registered with uvctx_add_bench() has a CTest smoke run
# named smoke_<program>; only those programs (and what they need) are
# built, so a test suite that does not build does not stop the benchmarks.
list_benches() {
  ctest --test-dir "$build" -N -L bench | sed -n 's/^ *Test *#[0-9]*: smoke_//p'
}

log "building Release in $build"
mkdir -p "$build"
# shellcheck disable=SC2086 # a list of arguments, split on purpose
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DUVCTX_SANITIZE= \
  -DUVCTX_BUILD_BENCH=ON ${UVCTX_BENCH_CMAKE_ARGS:-} \
  >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; exit 1; }
targets=$(list_benches)
[ -n "$targets" ] || { log "no benchmark registered"; exit 1; }
# shellcheck disable=SC2086
cmake --build "$build" -j2 --target $targets >"$build/build.log" 2>&1 ||
  { tail -40 "$build/build.log" >&2; exit 1; }

raw=$build/bench-raw.txt
gofile=$build/bench-go.txt
results=$build/bench-results.txt
failed=0
: >"$raw"
: >"$gofile"

# bench_pg runs on a private PostgreSQL cluster started for this run (the
# test suite's test/pg/cluster.sh), beside node-postgres installed from the
# committed package-lock.json into the build tree (never into the source).
pg_state=$build/pg-cluster.env
if [ "$core_only" = 0 ] && grep -qx bench_pg <<<"$targets"; then
  if sh "$root/test/pg/cluster.sh" start "$pg_state" 2>"$build/pg-cluster.err"
  then
    export UVCTX_PG_STATE=$pg_state
    trap 'sh "$root/test/pg/cluster.sh" stop "$pg_state"' EXIT
  else
    log "could not start a PostgreSQL cluster (see $build/pg-cluster.err)"
  fi
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$build/node-pg"
    cp "$root/bench/peers/node-pg/package.json" \
      "$root/bench/peers/node-pg/package-lock.json" "$build/node-pg/"
    if (cd "$build/node-pg" && npm ci --no-audit --no-fund) \
      >"$build/node-pg/npm.log" 2>&1; then
      export UVCTX_BENCH_NODE_PG=$build/node-pg
    else
      log "npm ci of node-postgres failed (see $build/node-pg/npm.log)"
    fi
  fi
fi

# The core programs first, in a fixed order, then every other benchmark.
core="bench_ctx bench_mem bench_xthread bench_deadline bench_scaling"
others=$(for f in $targets; do
  [ "$core_only" = 1 ] && break
  case " $core " in *" $f "*) ;; *) echo "$f" ;; esac
done)
for prog in $core $others; do
  exe=$build/bench/$prog
  if [ ! -f "$exe" ] || [ ! -x "$exe" ]; then continue; fi
  args=()
  if [ "$quick" = 1 ]; then
    args=(--quick)
  elif [ -n "$scale" ]; then
    case " $core " in *" $prog "*) args=(--scale "$scale") ;; esac
  fi
  log "running $prog ${args[*]:-}"
  rc=0
  timeout "${UVCTX_BENCH_TIMEOUT:-600}" "$exe" ${args[@]+"${args[@]}"} \
    >"$build/$prog.out" 2>"$build/$prog.err" || rc=$?
  if [ "$rc" -eq 77 ]; then
    # The program's peer or server is missing (bench_pg without a cluster).
    log "$prog skipped: $(tail -1 "$build/$prog.err")"
    continue
  elif [ "$rc" -ne 0 ]; then
    log "$prog FAILED (see $build/$prog.err)"
    tail -5 "$build/$prog.err" >&2
    echo "bench=$prog unit=run value=failed" >>"$raw"
    failed=1
    continue
  fi
  grep '^bench=' "$build/$prog.out" >>"$raw" || true
done

# The Go peer: standard library only, never the network.
if [ "$with_go" = 1 ] && command -v go >/dev/null 2>&1; then
  export GOPROXY=off GOFLAGS='' GOWORK=off
  if [ -z "${HOME:-}" ] || [ ! -w "${HOME:-/nonexistent}" ]; then
    export GOCACHE=$build/go/cache GOPATH=$build/go/path
  fi
  if [ "$quick" = 1 ]; then
    gotime=1x; memtime=1000x
  else
    gotime=${UVCTX_BENCH_GOTIME:-1s}; memtime=1000000x
  fi
  log "running the Go peer ($(go version | cut -d' ' -f3))"
  (cd "$root/bench/peers/go" &&
    go test -count=1 -run '^$' -benchtime="$gotime" \
      -bench '^Benchmark(WithCancel|WithTimeout|Value|Fanout|Chain|Scaling|PoolAcquireRelease)' &&
    go test -count=1 -run '^$' -benchtime="$memtime" -bench '^BenchmarkMem') \
    >"$gofile" 2>&1 ||
    { log "Go peer FAILED"; tail -20 "$gofile" >&2; failed=1; }
elif [ "$with_go" = 1 ]; then
  log "go is not installed: no Go peer figures"
fi

# uvctx-relay (issue 5) beside socat: its own script, on the relay built in
# this Release tree.
if [ "$core_only" = 0 ] &&
  cmake --build "$build" -j2 --target uvctx-relay >>"$build/build.log" 2>&1
then
  # Seven interleaved runs of 1 GiB each for the throughput medians.
  relay_args=(--bytes 1073741824 --runs 7)
  [ "$quick" = 1 ] && relay_args=(--bytes 67108864 --conns 200 --live 1000)
  log "running bench/relay/relay-bench.sh ${relay_args[*]:-}"
  if ! timeout "${UVCTX_BENCH_TIMEOUT:-600}" "$root/bench/relay/relay-bench.sh" \
      --relay "$build/uvctx-relay" ${relay_args[@]+"${relay_args[@]}"} \
      >"$build/relay-bench.out" 2>"$build/relay-bench.err"; then
    log "relay-bench.sh FAILED (see $build/relay-bench.err)"
    echo "bench=relay_bench unit=run value=failed" >>"$raw"
    failed=1
  fi
  grep '^bench=' "$build/relay-bench.out" >>"$raw" || true
  # Memory per slow reader beside HAProxy, plain and TLS, where the tools
  # are installed (scripts/bench.sh does not install them).
  if command -v slowhttptest >/dev/null && command -v haproxy >/dev/null &&
    command -v node >/dev/null; then
    sr_args=()
    [ "$quick" = 1 ] && sr_args=(--conns 200 --secs 10)
    for mode in plain tls; do
      log "running bench/relay/slowread.sh $mode ${sr_args[*]:-}"
      if ! timeout "${UVCTX_BENCH_TIMEOUT:-600}" "$root/bench/relay/slowread.sh" \
          --relay "$build/uvctx-relay" ${sr_args[@]+"${sr_args[@]}"} \
          $([ "$mode" = tls ] && echo --tls) \
          >"$build/slowread-$mode.out" 2>"$build/slowread-$mode.err"; then
        log "slowread.sh $mode FAILED (see $build/slowread-$mode.err)"
        echo "bench=slowread_$mode unit=run value=failed" >>"$raw"
        failed=1
      fi
      grep '^bench=' "$build/slowread-$mode.out" >>"$raw" || true
    done
  else
    log "slowhttptest, haproxy or node missing: no slow-read memory figures"
  fi
fi

# Other peers (e.g. bench/peers/node) may provide a run.sh hook that prints
# bench= lines; they are added as they are.
for hook in "$root"/bench/peers/*/run.sh; do
  [ "$core_only" = 1 ] && break
  [ -x "$hook" ] || continue
  log "running $hook"
  UVCTX_BENCH_BUILD=$build UVCTX_BENCH_QUICK=$quick "$hook" \
    2>"$build/peer-hook.err" | grep '^bench=' >>"$raw" || true
done

awk -v gofile="$gofile" -v results="$results" '
function fmt(x) {
  if (x == "") return "-"
  if (x !~ /^-?[0-9.]+$/ || x ~ /^-?[0-9]+$/) return x
  if (x + 0 >= 1000) return sprintf("%.0f", x)
  if (x + 0 >= 100) return sprintf("%.1f", x)
  return sprintf("%.2f", x)
}
BEGIN {
  # Go benchmark name -> scenario and the unit to read.
  g["BenchmarkWithCancelCancel"] = "with_cancel_cancel_unref ns/op"
  g["BenchmarkWithTimeoutCancel"] = "with_timeout_release ns/op"
  g["BenchmarkValueChain"] = "with_value_chain_d10 ns/level"
  g["BenchmarkMemCancel"] = "bytes_per_cancel_ctx B/ctx"
  g["BenchmarkMemTimeout"] = "bytes_per_deadline_ctx B/ctx"
  g["BenchmarkPoolAcquireRelease"] = "pool_acquire_release ns/op"
  while ((getline line < gofile) > 0) {
    n = split(line, f, /[ \t]+/)
    if (f[1] !~ /^Benchmark/) continue
    name = f[1]; sub(/-[0-9]+$/, "", name)
    if (name in g) { split(g[name], m, " "); scen = m[1]; unit = m[2] }
    else if (name ~ /^BenchmarkValue\//) {
      scen = "value_lookup_" substr(name, 16); unit = "ns/op"
    } else if (name ~ /^BenchmarkFanout\//) {
      scen = "cancel_fanout_" substr(name, 17); unit = "ns/child"
    } else if (name ~ /^BenchmarkChain\//) {
      scen = "cancel_chain_" substr(name, 16); unit = "ns/level"
    } else if (name ~ /^BenchmarkScaling\//) {
      # BenchmarkScaling/own_root/t2 -> scaling_own_root_t2_ns
      scen = substr(name, 18); sub(/\//, "_", scen)
      scen = "scaling_" scen "_ns"; unit = "ns/op"
    } else continue
    for (i = 2; i < n; i++) if (f[i + 1] == unit) go[scen] = f[i]
  }
  # Go speedups, beside the scaling_<shape>_t<N> lines of bench_scaling.
  split("own_root branch shared", shapes, " ")
  for (s in shapes) for (k = 2; k <= 4; k *= 2) {
    one = "scaling_" shapes[s] "_t1_ns"; many = "scaling_" shapes[s] "_t" k "_ns"
    if ((one in go) && (many in go) && go[many] > 0)
      go["scaling_" shapes[s] "_t" k] = go[one] / go[many]
  }
  # The targets of issue 2 (docs: DESIGN.md, Performance targets).
  t["with_cancel_cancel_unref"] = "ratio<=0.3"
  t["with_timeout_release"] = "ratio<=0.3"
  t["value_lookup_d10"] = "ratio<=0.3"
  t["bytes_per_cancel_ctx"] = "value<=96"
  t["bytes_per_deadline_ctx"] = "value<=128"
  t["xthread_cancel_p50"] = "ratio<=1.2"
  t["xthread_cancel_p99"] = "ratio<=1.2"
  t["with_timeout_release_hires"] = "ratio<=0.3"
  t["deadline_1ms_early"] = "value<=0"
  t["deadline_1ms_late_p99"] = "value<=peer+1000"
  t["deadline_1ms_hires_early"] = "value<=0"
  t["deadline_1ms_hires_late_p99"] = "value<=peer+1000"
  # Issues 3-5, keyed by scenario@peer where one scenario has several peers.
  # peer=bare_libuv(_relay): the faster of the two bare relay variants.
  t["relay_throughput@bare_libuv"] = "ratio>=0.98"
  t["relay_cpu_per_gb@bare_libuv"] = "ratio<=1.1"
  t["copy_abort_latency_p99"] = "value<=1000"
  t["tls13_handshakes"] = "ratio>=0.9"
  t["tls13_copy_chacha20_poly1305"] = "ratio>=0.8"
  t["tls13_copy_aes_128_gcm"] = "ratio>=0.8"
  t["relay_throughput@socat"] = "ratio>=1"
  t["relay_throughput@bare_libuv_relay"] = "ratio>=0.97"
  t["relay_cpu_per_gb@bare_libuv_relay"] = "ratio<=1"
  # Memory per slow reader (KiB RSS per held connection, beside HAProxy).
  t["slowread_rss_per_conn"] = "value<=64"
  t["slowread_rss_per_conn_tls"] = "value<=128"
  # Churn from several loops (bench_scaling): speedups over one
  # thread; wall ns per operation against Go (lower is ahead).
  t["scaling_own_root_t2"] = "value>=1.8"
  t["scaling_own_root_t4"] = "value>=1.6"
  t["scaling_branch_t2"] = "value>=1.8"
  t["scaling_branch_t4"] = "value>=1.6"
  t["scaling_shared_t2"] = "value>=0.9"
  t["scaling_shared_t4"] = "value>=0.8"
  t["scaling_own_root_t2_ns"] = "ratio<=1"
  t["scaling_branch_t2_ns"] = "ratio<=1"
  t["scaling_shared_t2_ns"] = "ratio<=0.667"
  # Observability costs: scraped every second, within 2 % of unscraped.
  t["relay_throughput_scraped"] = "ratio>=0.98"
  t["relay_connrate_scraped"] = "ratio>=0.98"
  # The pool and PostgreSQL (DESIGN.md, Performance targets).
  t["pg_select1@node-postgres"] = "ratio>=1.3"
  t["pg_select1@pgbench"] = "ratio>=0.85"
  t["pg_select_param@node-postgres"] = "ratio>=1.3"
  t["pg_select_param@pgbench"] = "ratio>=0.85"
  printf "%-39s %20s %24s %7s %18s %5s\n", "scenario", "uvctx", "peer",
    "ratio", "target", "met?"
}
{
  delete kv
  for (i = 1; i <= NF; i++) {
    p = index($i, "=")
    if (p) kv[substr($i, 1, p - 1)] = substr($i, p + 1)
  }
  name = kv["bench"]; unit = kv["unit"]; v = kv["value"]
  peer = ("peer" in kv) ? kv["peer"] : ""
  pv = ("peer_value" in kv) ? kv["peer_value"] : ""
  # The timerfd (hires) variants share the Go peer of the default ones.
  gname = name; sub(/_hires/, "", gname)
  if (peer == "" && (gname in go)) { peer = "go"; pv = go[gname] }
  ratio = ""
  if (pv != "" && pv + 0 > 0 && unit != "count" && v != "failed")
    ratio = sprintf("%.3f", v / pv)
  key = name "@" peer
  target = ("target" in kv) ? kv["target"] : \
    ((key in t) ? t[key] : ((name in t) ? t[name] : ""))
  if (name ~ /^cancel_(fanout|chain)_/ && target == "") target = "ratio<=0.1"
  met = "-"
  if (v == "failed") met = "FAIL"
  else if (target ~ /^ratio/ && ratio == "") met = "n/a"
  else if (target != "") {
    x = (target ~ /^ratio/) ? ratio + 0 : v + 0
    lim = target; sub(/^(ratio|value)(<=|>=)/, "", lim)
    if (lim ~ /^peer\+/) {
      if (pv == "") { met = "n/a"; lim = "" }
      else lim = pv + substr(lim, 6)
    }
    if (lim != "") {
      ok = (target ~ /<=/) ? (x <= lim + 0) : (x >= lim + 0)
      met = ok ? "yes" : "NO"
    }
  }
  line = "bench=" name " unit=" unit " value=" v
  if (peer != "") line = line " peer=" peer " peer_value=" pv
  if (ratio != "") line = line " ratio=" ratio
  if (target != "") line = line " target=" target " met=" met
  print line > results
  printf "%-39s %20s %24s %7s %18s %5s\n", name, fmt(v) " " unit,
    (peer == "" ? "-" : fmt(pv) " (" peer ")"), (ratio == "" ? "-" : ratio),
    (target == "" ? "-" : target), met
}' "$raw"
log "parseable lines: $results"
# A benchmark never fails on a figure; only a program that crashed or
# reported a library error makes the run fail.
exit "$failed"
