#!/bin/sh
# The soak (issue #14): preforkd running preforkd-echo --http and Debian's
# gunicorn on 127.0.0.1 under continuous checked load, while a random worker
# is SIGKILLed every 50 ms, a HUP with a changed command arrives every 10 s,
# a USR2 (in-place upgrade) every 60 s, TTIN/TTOU storms every 15 s, and
# `preforkctl status` and GET /metrics clients hammer it in parallel. The
# last quarter of the run is calm (all of that but the SIGKILLs), where no
# client failure is excused.
#
# Prints, and writes as JSON to bench/results/soak-<date>.json: connections
# made, failures by kind (refused, reset, timeout, bad response) and phase,
# workers killed, reloads, upgrades, zombies, preforkd's fd count and RSS at
# start and end, the longest `preforkctl status`. Exit status 1 if a
# must-be-zero count is not (refused or bad responses in any phase, any
# failure in the calm phase, a zombie left 5 s unreaped or at the end,
# failed status or /metrics calls, an upgrade that did not take over) or
# fds or RSS grew beyond a small bound; 2 if it could not be set up.
# bench/soak/driver.py has the details.
#
# Usage: bench/soak.sh [MINUTES]    (default: $SOAK_MINUTES, else 10)
# Builds what it needs in build/ (reused if the tests' build made it).
# Environment: SOAK_CALM=0.25 (calm share), SOAK_GUNICORN_SHARE=0.05 (share
# of the SIGKILLs that hit a gunicorn: each costs a Python boot),
# SOAK_PAUSE_US=1000 (client threads' pause between requests).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-${SOAK_MINUTES:-10}}
case $minutes in
  ''|*[!0-9.]*) echo "usage: bench/soak.sh [MINUTES]" >&2; exit 2 ;;
esac
build=$top/build
tmp=$(mktemp -d /tmp/preforkd-soak-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== soak: building preforkd, preforkctl, preforkd-echo in $build"
[ -f "$build/CMakeCache.txt" ] || cmake -S "$top" -B "$build" >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log" >&2; exit 2; }
cmake --build "$build" -j2 --target preforkd preforkctl preforkd-echo >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; exit 2; }
cc -O2 -Wall -Wextra -pthread -o "$tmp/soak-client" "$top/bench/soak/client.c" ||
  { echo "soak: cannot build bench/soak/client.c" >&2; exit 2; }
# Debian's gunicorn (a Build-Depends of the tests), run by Debian's python3.
if [ ! -x /usr/bin/gunicorn ] || ! /usr/bin/python3 -c 'import gunicorn' 2>/dev/null; then
  echo "== soak: installing gunicorn (apt-get)"
  apt-get install -y -qq gunicorn python3-gunicorn >/dev/null ||
    { echo "soak: needs /usr/bin/gunicorn (apt-get install gunicorn)" >&2; exit 2; }
fi

mkdir -p "$top/bench/results"
out=$top/bench/results/soak-$(date +%Y%m%d-%H%M%S).json
status=0
/usr/bin/python3 "$top/bench/soak/driver.py" --minutes "$minutes" --build "$build" --client "$tmp/soak-client" \
  --tmp "$tmp" --out "$out" --calm "${SOAK_CALM:-0.25}" --gunicorn-share "${SOAK_GUNICORN_SHARE:-0.05}" \
  --pause-us "${SOAK_PAUSE_US:-1000}" || status=$?
if [ "$status" -ne 0 ] && [ -f "$tmp/preforkd.log" ]; then
  cp "$tmp/preforkd.log" "${out%.json}.log"
  echo "== soak: the last lines of preforkd's log (all of it: ${out%.json}.log)"
  tail -40 "$tmp/preforkd.log"
fi
exit "$status"
