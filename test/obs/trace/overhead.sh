#!/bin/sh
# overhead.sh [BASE] [RUNS] [CUR]: the cost of the always-on loop counters.
# Builds test/obs/trace/overhead.c against BASE (default 593a299, the core
# before the counters) and CUR (default: this working tree), each commit
# checked out read-only in a temporary git worktree removed at the end,
# runs the two programs RUNS times each (default 7), alternating, and
# prints the median ns/op of each workload and the ratio CUR/BASE. About
# half a minute on 2 cores; not a test.
#
#   test/obs/trace/overhead.sh                      593a299 vs working tree
#   test/obs/trace/overhead.sh 0755514 7 5253616    the counters commit alone
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
base_rev=${1:-593a299}
runs=${2:-7}
cur_rev=${3:-}
work=$(mktemp -d)
cleanup() {
  git -C "$root" worktree remove --force "$work/base" 2>/dev/null || true
  git -C "$root" worktree remove --force "$work/cur" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

git -C "$root" worktree add --detach "$work/base" "$base_rev" >/dev/null 2>&1
if [ -n "$cur_rev" ]; then
  git -C "$root" worktree add --detach "$work/cur" "$cur_rev" >/dev/null 2>&1
fi
for tree in base cur; do
  src=$root
  [ $tree = base ] && src=$work/base
  [ $tree = cur ] && [ -n "$cur_rev" ] && src=$work/cur
  cmake -S "$src" -B "$work/build-$tree" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DUVCTX_BUILD_TESTS=OFF -DUVCTX_BUILD_BENCH=OFF -DUVCTX_BUILD_TOOLS=OFF \
    -DUVCTX_WITH_TLS=OFF >/dev/null
  cmake --build "$work/build-$tree" -j2 --target uvctx_static >/dev/null
  cc -O2 -I"$src/include" "$root/test/trace/overhead.c" \
    "$work/build-$tree/libuvctx.a" -luv -lpthread -ldl -o "$work/ovh-$tree"
done
i=0
while [ $i -lt "$runs" ]; do
  "$work/ovh-base" >> "$work/base.txt"
  "$work/ovh-cur" >> "$work/cur.txt"
  i=$((i + 1))
done
med() { grep "^$1 " "$2" | awk '{print $2}' | sort -n |
  awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-14s %10s %10s %8s\n' workload "$base_rev" "${cur_rev:-current}" ratio
for w in cancel_child timeout; do
  b=$(med $w "$work/base.txt")
  c=$(med $w "$work/cur.txt")
  printf '%-14s %10s %10s %8s\n' $w "$b ns" "$c ns" \
    "$(awk -v b="$b" -v c="$c" 'BEGIN {printf "%.3f", c / b}')"
done
