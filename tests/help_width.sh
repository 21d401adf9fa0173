#!/bin/sh
# Both binaries' --help fit 80 columns with no broken lines: no line over 80
# characters, no trailing blank, and no line that is only a stray word end
# (a lone ")" or "2", what Boost's wrapping left before).
# Usage: help_width.sh PREFORKD PREFORKCTL
set -eu
status=0
for bin in "$@"; do
  out=$("$bin" --help) || { echo "$bin --help failed"; exit 1; }
  echo "$out" | awk -v bin="$bin" '
    length($0) > 80 { printf "%s --help line %d is %d columns: %s\n", bin, NR, length($0), $0; bad = 1 }
    / $/ { printf "%s --help line %d ends in a blank: [%s]\n", bin, NR, $0; bad = 1 }
    { t = $0; gsub(/^ +| +$/, "", t) }
    t != "" && length(t) < 3 { printf "%s --help line %d is a broken line: [%s]\n", bin, NR, $0; bad = 1 }
    END { exit bad }' || status=1
done
exit $status
