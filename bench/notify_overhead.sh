#!/bin/sh
# Cost of the worker's telemetry: preforkd-echo --http under preforkd (1
# worker) with its counters on (requests, connections, bytes_in, bytes_out,
# active_connections: counted per I/O thread, reported at most every 100 ms)
# vs --no-stats (neither counted nor reported). Both run at once on their own
# ports; 3 alternating rounds each of wrk -t2 -c64 -d5s keep-alive (on, off;
# off, on; on, off), so that drift hits both alike. The target is on/off >= 0.99. Only 127.0.0.1 is ever
# targeted.
# Usage: bench/notify_overhead.sh [BUILD_DIR]
set -eu
. "$(dirname "$0")/lib.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build-bench}" && pwd)  # absolute: configs live in a temp folder
secs=5
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
tmp=$(mktemp -d)
# By pid: dash's $(jobs -p) runs in a subshell, which has no jobs; and set -e
# holds in the trap too, so a failed kill would fail the script.
on_pid=""; off_pid=""
trap 'kill $on_pid $off_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

rps() { wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }


# start NAME PORT [EXTRA_ARG]: preforkd with one preforkd-echo --http worker.
start() {
  cat >"$tmp/$1.yaml" <<YAML
supervisor: { control_socket: $tmp/$1.sock }
programs:
  echo:
    command: [$build/bin/preforkd-echo, --http${3:+, $3}]
    workers: 1
    listen: ["127.0.0.1:$2"]
YAML
  "$build/bin/preforkd" -c "$tmp/$1.yaml" >"$tmp/$1.log" 2>&1 &
  for _ in $(seq 100); do [ -n "$(port_of "$tmp/$1.log")" ] && return; sleep 0.05; done
  echo "preforkd ($1) did not start:" >&2; cat "$tmp/$1.log" >&2; exit 1
}

on_port=$(free_port)
off_port=$(free_port)
while [ "$off_port" = "$on_port" ]; do off_port=$(free_port); done
start on "$on_port"
on_pid=$!
start off "$off_port" --no-stats
off_pid=$!
sleep 0.2

on=""; off=""
for round in 1 2 3; do  # who goes first alternates too
  if [ $round = 2 ]; then
    off="$off $(rps "$off_port")"; on="$on $(rps "$on_port")"
  else
    on="$on $(rps "$on_port")"; off="$off $(rps "$off_port")"
  fi
done
echo "http keep-alive (wrk -t2 -c64 -d${secs}s, 1 worker under preforkd):"
echo "  stats on:   $on req/s"
echo "  --no-stats: $off req/s"
python3 -c "
on = list(map(float, '$on'.split())); off = list(map(float, '$off'.split()))
print('  on/off: sums = %.3f, best = %.3f, per round = %s' % (
    sum(on) / sum(off), max(on) / max(off),
    ' '.join('%.3f' % (a / b) for a, b in zip(on, off))))"
kill -TERM "$on_pid" "$off_pid"; wait "$on_pid" "$off_pid" || true
on_pid=""; off_pid=""
