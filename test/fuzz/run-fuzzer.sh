#!/bin/sh
# Fuzzes one libFuzzer target for a fixed time, starting from the committed
# seed corpus; exits non-zero on a crash, leak, timeout or broken invariant,
# leaving the reproducer in WORK/artifacts (see docs/fuzzing.md).
#
#   run-fuzzer.sh FUZZER SEEDS WORK SECONDS
set -eu
fuzzer=$1 seeds=$2 work=$3 seconds=$4
mkdir -p "$work/corpus" "$work/artifacts"
# New inputs go to WORK/corpus; the seeds are read, never written.
if "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 \
  -max_len=16384 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
  "$work/corpus" "$seeds"; then
  exit 0
fi
echo "run-fuzzer.sh: $(basename "$fuzzer") failed; reproducer(s):" >&2
ls -l "$work/artifacts" >&2
echo "replay one with: $(dirname "$fuzzer")/$(basename "$fuzzer")_replay FILE" >&2
exit 1
