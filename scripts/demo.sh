#!/usr/bin/env bash
# The first command to run on a fresh Debian machine: installs the missing
# packages, builds uvctx and its programs in build/demo (no tests, no
# benchmarks) and runs the demos.
#
#   scripts/demo.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=build/demo

./scripts/test.sh --deps-only

echo "=== building uvctx in $build"
cmake -S . -B "$build" -DUVCTX_BUILD_TESTS=OFF -DUVCTX_BUILD_BENCH=OFF \
  -DUVCTX_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

# Runs one demo program from the build directory.
run_demo() {
  local prog=$1
  shift
  echo
  echo "=== $prog${*:+ $*}"
  "$build/$prog" "$@"
}

# The library in miniature, then the main program: uvctx-relay in front of
# a local HTTP server, with real clients (scripts/relay-demo.sh).
run_demo uvctx-demo

# PostgreSQL under contexts, on a private cluster started for the demo
# (test/pg/cluster.sh), when the server and the module are available.
if [ -x "$build/uvctx-pg-demo" ]; then
  pg_state=$(mktemp "${TMPDIR:-/tmp}/uvctx-pg-demo-XXXXXX")
  if sh test/pg/cluster.sh start "$pg_state" && ! grep -q PG_UNAVAILABLE "$pg_state"
  then
    # shellcheck disable=SC1090
    . "$pg_state"
    run_demo uvctx-pg-demo "$PG_CONNINFO" || status=$?
  else
    echo
    echo "=== uvctx-pg-demo skipped: $(cat "$pg_state")"
  fi
  sh test/pg/cluster.sh stop "$pg_state"
  [ "${status:-0}" -eq 0 ] || exit "$status"
fi

echo
echo "=== uvctx-relay (scripts/relay-demo.sh)"
./scripts/relay-demo.sh --build "$build"

