#!/usr/bin/env bash
# The test command: builds uvctx with -Werror in each mode and runs every
# CTest test (Check suites, benchmark smoke runs, the install test).
#
#   scripts/test.sh                   plain, address, thread and fuzz, in order
#   scripts/test.sh plain [thread]    only the modes named
#   scripts/test.sh plain -- -R ctx   extra arguments after -- go to ctest
#   scripts/test.sh --deps-only       install missing Debian packages, exit
#
# Modes: plain (no sanitizer), address (ASan + LeakSanitizer + UBSan),
# thread (TSan), fuzz (clang, ASan + UBSan + libFuzzer: builds only the
# fuzz targets of test/fuzz/ and fuzzes each for UVCTX_FUZZ_SECONDS, 60 by
# default; every other mode replays their corpora). Each builds in
# build/test-<mode> under the repository.
# Missing Debian packages are installed first (apt-get, as root or through
# sudo), including every TLS peer the tests talk to, and the tests run with
# UVCTX_REQUIRE_PEERS=1: a missing peer fails its test instead of skipping
# it. Exits non-zero if any mode fails to configure, build or test.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(build-essential cmake pkg-config libuv1-dev libssl-dev check
  golang-go openssl curl python3 gnutls-bin socat nodejs clang-format
  postgresql libpq-dev prometheus chromium clang libclang-rt-14-dev
  slowhttptest wrk iproute2)

install_deps() {
  local missing=() pkg sudo=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "test.sh: no dpkg-query (not Debian?); not checking packages" >&2
    return 0
  fi
  for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
      grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "test.sh: installing missing packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "test.sh: not root and no sudo; install: ${missing[*]}" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

modes=()
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    plain | address | thread | fuzz) modes+=("$1") ;;
    --deps-only)
      install_deps
      exit
      ;;
    --)
      shift
      ctest_args=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "test.sh: unknown argument '$1' (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done
[ ${#modes[@]} -eq 0 ] && modes=(plain address thread fuzz)

install_deps

jobs=$(nproc 2>/dev/null || echo 2)

# Runs one mode; prints its summary line and returns non-zero on failure.
# Sets mode_passed/mode_failed/mode_skipped to the CTest counts it saw.
run_mode() {
  local mode=$1 dir="build/test-$1" sanitize="" start log rc=0
  local -a env_vars=(UVCTX_REQUIRE_PEERS=1)
  local -a cc=() configure=() build=() select=()
  local asan=detect_leaks=1:abort_on_error=1
  local ubsan=print_stacktrace=1:halt_on_error=1
  local tsan=halt_on_error=1:second_deadlock_stack=1
  # Options already in the environment come last, so they win.
  case "$mode" in
    address)
      sanitize=address
      env_vars+=("ASAN_OPTIONS=$asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
        "UBSAN_OPTIONS=$ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}")
      ;;
    thread)
      sanitize=thread
      env_vars+=("TSAN_OPTIONS=$tsan${TSAN_OPTIONS:+:$TSAN_OPTIONS}")
      ;;
    fuzz)
      # libFuzzer is clang's; only the fuzzers are built and run.
      sanitize=address
      cc=(env CC=clang)
      configure=(-DUVCTX_FUZZ=ON -DUVCTX_BUILD_BENCH=OFF
        "-DUVCTX_FUZZ_SECONDS=${UVCTX_FUZZ_SECONDS:-60}")
      build=(--target uvctx_fuzzers)
      select=(-L '^fuzz$')
      env_vars+=("ASAN_OPTIONS=$asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
        "UBSAN_OPTIONS=$ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}")
      ;;
  esac
  mode_passed=0
  mode_failed=0
  mode_skipped=0
  start=$(date +%s)
  log="$dir/ctest.log"
  echo
  echo "=== $mode: configure and build in $dir"
  if ! "${cc[@]}" cmake -S . -B "$dir" -DUVCTX_WERROR=ON \
    -DUVCTX_SANITIZE="$sanitize" "${configure[@]}"; then
    mode_summary "$mode" "$start" "configure failed"
    return 1
  fi
  if ! cmake --build "$dir" -j "$jobs" "${build[@]}"; then
    mode_summary "$mode" "$start" "build failed"
    return 1
  fi
  echo "=== $mode: ctest"
  (cd "$dir" && env "${env_vars[@]}" ctest --output-on-failure -j2 \
    "${select[@]}" "${ctest_args[@]}") 2>&1 | tee "$log" || rc=$?
  # "100% tests passed, 0 tests failed out of 12"
  local line total
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" |
    tail -n 1 || true)
  if [ -n "$line" ]; then
    mode_failed=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
    total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
    # CTest counts a skipped test (exit 77) as not failed; list it apart.
    # "The following tests did not run:" / "  24 - relay_drain (Skipped)"
    mode_skipped=$(grep -cE '^[[:space:]]*[0-9]+ - .* \(Skipped\)$' "$log" ||
      true)
    mode_passed=$((total - mode_failed - mode_skipped))
  elif [ "$rc" -eq 0 ]; then
    rc=1 # no summary line: no tests ran, which is a failure too
  fi
  if [ "$rc" -ne 0 ]; then
    mode_summary "$mode" "$start" \
      "FAILED: $mode_passed passed, $mode_failed failed, $mode_skipped skipped"
    return 1
  fi
  mode_summary "$mode" "$start" \
    "ok: $mode_passed passed, 0 failed, $mode_skipped skipped"
}

summaries=()
mode_summary() {
  local s
  s=$(printf '%-8s %-52s %5ds' "$1" "$3" "$(($(date +%s) - $2))")
  summaries+=("$s")
  echo "=== $s"
}

all_start=$(date +%s)
modes_ok=0
modes_bad=0
tests_ok=0
tests_bad=0
tests_skipped=0
for mode in "${modes[@]}"; do
  if run_mode "$mode"; then
    modes_ok=$((modes_ok + 1))
  else
    modes_bad=$((modes_bad + 1))
  fi
  tests_ok=$((tests_ok + mode_passed))
  tests_bad=$((tests_bad + mode_failed))
  tests_skipped=$((tests_skipped + mode_skipped))
done

echo
echo "=== summary (mode, result, wall time)"
printf '  %s\n' "${summaries[@]}"
echo "tests: $tests_ok passed, $tests_bad failed, $tests_skipped skipped;" \
  "modes: $modes_ok passed, $modes_bad failed;" \
  "$(($(date +%s) - all_start))s"
[ "$modes_bad" -eq 0 ]
