#!/bin/sh
# demo-smoke.sh DEMO TOOL: runs uvctx-trace-demo briefly into a temporary
# file and summarizes the trace it wrote (the CTest smoke run of the demo).
set -eu
t=$(mktemp)
trap 'rm -f "$t" "$t.svg"' EXIT
"$1" "$t" 40
"$2" summary "$t" > /dev/null
"$2" heatmap "$t" -o "$t.svg"
