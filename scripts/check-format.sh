#!/usr/bin/env bash
# Fails if any C source or header of the repository differs from what
# clang-format (with the committed .clang-format) makes of it. Run by the
# test command as the CTest test format_check; fix drift with
#   clang-format -i $(git ls-files '*.c' '*.h')
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! command -v clang-format >/dev/null 2>&1; then
  echo "check-format.sh: clang-format not found" >&2
  exit 77
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -co --exclude-standard '*.c' '*.h')
else
  mapfile -t files < <(find include lib test tools bench examples \
    -name '*.c' -o -name '*.h')
fi
bad=0
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "format drift: $f"
    bad=$((bad + 1))
  fi
done
echo "check-format.sh: ${#files[@]} files, $bad with drift"
[ "$bad" -eq 0 ]
