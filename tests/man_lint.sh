#!/bin/sh
# Fails if groff reports any warning for a man page (`man` renders them with groff).
set -eu
status=0
for page in "$@"; do
  out=$(groff -man -ww -z "$page" 2>&1) || status=1
  if [ -n "$out" ]; then
    echo "$page:"; echo "$out"; status=1
  fi
done
exit $status
