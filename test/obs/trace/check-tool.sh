#!/bin/sh
# check-tool.sh TOOL DIR: runs uvctx-trace on DIR/sample.json, a hand-written
# trace whose answers are known (an address reused after a free, a free
# whose creation predates the trace, a late deadline, a leaked value
# context, a callback of unknown depth, dropped events), and checks the
# summary line by line and the heatmap as XML.
set -eu
tool=$1
dir=$2
out=$(mktemp)
svg=$(mktemp)
trap 'rm -f "$out" "$svg"' EXIT

"$tool" summary "$dir/sample.json" > "$out"
fail=0
expect() {
  if ! grep -qxF -- "$1" "$out"; then
    echo "check-tool: missing line: $1" >&2
    fail=1
  fi
}
expect "events: 17"
expect "events emitted: 20"
expect "events written: 17"
expect "events dropped: 3"
expect "contexts created: 5"
expect "contexts freed: 5"
expect "contexts never released: 1"
expect "cancels: 2"
expect "callbacks: 4"
expect "flows: 2"
expect "deadlines fired: 1"
expect "deadlines late: 1 (over 1000.000 us)"
expect "  ?               1      100.000      100.000      100.000"
expect "  1               1       20.000       20.000       20.000"
expect "  2               1       60.000       60.000       60.000"
expect "  3               1       10.000       10.000       10.000"
expect "  all             4       20.000      100.000      100.000"
expect "  op 8 ctx 0xa0 depth 1 cause ECONNRESET at 4000.000 us: 3 callbacks, last after 100.000 us, max delay 100.000 us"
expect "  ctx 0xc0 at 3500.000 us: 2497.000 us late"
expect "  ctx 0xd0 value depth 2 parent 0xa0 created at 4.000 us by leaky+0x8 in ./app"
if [ $fail -ne 0 ]; then
  cat "$out" >&2
  exit 1
fi

"$tool" heatmap "$dir/sample.json" -o "$svg"
head -c 5 "$svg" | grep -q '<?xml'
if command -v xmllint > /dev/null 2>&1; then
  xmllint --noout "$svg"
fi
# Usage errors exit 2, unreadable traces 1.
set +e
"$tool" summary > /dev/null 2>&1
[ $? -eq 2 ] || { echo "check-tool: usage error not 2" >&2; exit 1; }
"$tool" summary "$dir/does-not-exist.json" > /dev/null 2>&1
[ $? -eq 1 ] || { echo "check-tool: missing file not 1" >&2; exit 1; }
echo "check-tool: ok"
