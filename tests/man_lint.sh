#!/bin/sh
# Fails if groff (what `man` renders with) reports any warning for a man page,
# or mandoc -Tlint (every level, style included) reports anything.
set -eu
if ! command -v mandoc >/dev/null 2>&1; then
  echo "man_lint.sh: mandoc is not installed (Build-Depends; run packaging/install-build-deps.sh)" >&2
  exit 1
fi
status=0
for page in "$@"; do
  out=$(groff -man -ww -z "$page" 2>&1) || status=1
  if [ -n "$out" ]; then
    echo "$page (groff):"; echo "$out"; status=1
  fi
  out=$(mandoc -Tlint "$page" 2>&1) || true  # the exit status says "warnings"; the output is what counts
  if [ -n "$out" ]; then
    echo "$page (mandoc):"; echo "$out"; status=1
  fi
done
exit $status
