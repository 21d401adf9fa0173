#!/bin/sh
# Replacing every worker under load: the wall time of a reload that changes
# the command line of WORKERS (100) preforkd-echo --http workers (their
# environment changes, so each one is replaced new-before-old: one canary,
# then batches of reload.batch), and what the clients saw meanwhile: wrk's
# requests, req/s, socket errors (connect/read/write/timeout) and non-2xx
# replies, plus the requests the workers themselves counted during the
# operation. The same for `preforkctl restart` (the rolling restart) as a
# baseline, and a window with no operation as the steady state. `preforkctl`
# replies when the operation has finished, which is what is timed. Only
# 127.0.0.1 is ever targeted.
# Usage: bench/reload_bench.sh [--restart] [BUILD_DIR]
#   --restart  measure `preforkctl restart` in place of the reload (the
#              stand-in while a build has no reload); the table says so
# Environment: WORKERS=100 BATCH=10 (a number or "25%") SETTLE=1s CONNS=64
#   MARGIN=1 (seconds of load before and after each operation) STEADY=5
#   LIMIT=180 (seconds: wrk stops then even if the operation has not
#   finished; such a row is marked "*") DELAY=0 (ms each wrk connection
#   waits between requests, via a wrk Lua delay(); 0 = as fast as it can)
set -eu
. "$(dirname "$0")/lib.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
stand_in=no
if [ "${1:-}" = --restart ]; then stand_in=yes; shift; fi
build=$(cd "${1:-$top/build-bench}" && pwd)  # absolute: configs live in a temp folder
workers=${WORKERS:-100}
batch=${BATCH:-10}
settle=${SETTLE:-1s}
conns=${CONNS:-64}
margin=${MARGIN:-1}
steady=${STEADY:-5}
limit=${LIMIT:-180}
delay=${DELAY:-0}
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
tmp=$(mktemp -d)
# By pid: dash's $(jobs -p) runs in a subshell, which has no jobs. And set -e
# holds in the trap too.
pf=""; wrk_pid=""
trap 'kill $wrk_pid $pf 2>/dev/null || true; rm -rf "$tmp"' EXIT
cmake --build "$build" --target preforkd preforkctl preforkd-echo >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; exit 1; }

port=$(free_port)
sock=$tmp/ctl.sock
ctl() { "$build/bin/preforkctl" -s "$sock" "$@"; }

# config GENERATION: every worker gets RELOAD_BENCH_GENERATION=GENERATION, so
# a new generation changes how every worker is started.
config() {
  cat >"$tmp/p.yaml" <<YAML
supervisor: { control_socket: $sock, shutdown_timeout: 60s }
programs:
  echo:
    command: [$build/bin/preforkd-echo, --http]
    workers: $workers
    listen: ["127.0.0.1:$port"]
    ready: notify
    environment: { RELOAD_BENCH_GENERATION: "$1" }
    reload: { batch: $batch, settle: $settle }
YAML
}

# Workers in state ready, and the requests they counted (past workers included).
ready() { ctl --json status | python3 -c 'import json, sys
print(sum(w["state"] == "ready" for p in json.load(sys.stdin)["programs"] for w in p["workers"]))'; }
served() { ctl --json stats | python3 -c 'import json, sys
print(sum(p["counters"].get("requests", 0) for p in json.load(sys.stdin)["programs"]))'; }

wait_ready() {
  for _ in $(seq 600); do
    [ "$(ready 2>/dev/null || echo 0)" = "$workers" ] && return 0
    sleep 0.1
  done
  echo "not all $workers workers became ready:" >&2; tail -20 "$tmp/preforkd.log" >&2; exit 1
}

pace=""
if [ "$delay" != 0 ]; then
  echo "function delay() return $delay end" >"$tmp/delay.lua"
  pace="-s $tmp/delay.lua"
fi

generation=1
reload() { generation=$((generation + 1)); config $generation; ctl reload; }
steady_state() { sleep "$steady"; }

# measure LABEL COMMAND...: wrk from MARGIN s before COMMAND until MARGIN s
# after it, or until LIMIT s, whichever comes first.
measure() {
  label=$1; shift
  # shellcheck disable=SC2086 # $pace is empty or two words
  wrk -t2 -c"$conns" -d"${limit}s" --timeout 5s $pace "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 &
  wrk_pid=$!
  sleep "$margin"
  before=$(served)
  t0=$(date +%s%N)
  if "$@" >"$tmp/op.out" 2>&1; then result=ok; else result=FAILED; fi
  t1=$(date +%s%N)
  [ -s "$tmp/op.out" ] && result="$result: $(tail -1 "$tmp/op.out")"
  sleep 0.3  # workers report their counters at most every 100 ms
  during=$(($(served) - before))
  ms=$(((t1 - t0) / 1000000))
  [ "$label" = "steady state" ] && time="-" || time="$((ms / 1000)).$(printf %03d $((ms % 1000)))s"
  if kill -0 "$wrk_pid" 2>/dev/null; then
    sleep "$margin"
    kill -INT "$wrk_pid" 2>/dev/null || true  # it may have just reached LIMIT
  else
    time="$time*"  # the load had stopped (LIMIT) before the operation finished
    outlived=yes
  fi
  wait "$wrk_pid" || true
  wrk_pid=""
  awk -v label="$label" -v time="$time" -v during="$during" -v result="$result" '
    /requests in/ { reqs = $1; window = $4; sub(/,$/, "", window) }
    /Requests\/sec/ { rps = $2 }
    /Socket errors/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
    /Non-2xx/ { non2xx = $5 }
    END { printf "%-34s %8s %10s %10s %7s %9.0f %13s %7d  %s\n", label, time, during, reqs, window, rps,
                 (c + 0) "/" (r + 0) "/" (w + 0) "/" (t + 0), non2xx, result }' "$tmp/wrk.out"
}

config $generation
"$build/bin/preforkd" -c "$tmp/p.yaml" >"$tmp/preforkd.log" 2>&1 &
pf=$!
wait_ready

case $batch in *%) per="$batch of $workers" ;; *) per="$batch at a time" ;; esac
echo "$workers workers of preforkd-echo --http (ready: notify) on 127.0.0.1:$port;" \
     "reload: { batch: $batch ($per after a canary), settle: $settle }"
echo "$(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo "wrk -t2 -c$conns --timeout 5s keep-alive$([ "$delay" != 0 ] && echo ", ${delay}ms between a connection's requests")," \
     "from ${margin}s before each operation until ${margin}s after it (at most ${limit}s)"
if [ $stand_in = yes ]; then
  echo "measured: \`preforkctl restart echo\` twice (the second one stands in for the reload: --restart)"
else
  echo "measured: \`preforkctl reload\` after changing every worker's environment, and \`preforkctl restart echo\`"
fi
printf "%-34s %8s %10s %10s %7s %9s %13s %7s  %s\n" operation time served wrk-reqs window req/s "errs c/r/w/t" non-2xx \
       "preforkctl's reply"
measure "steady state" steady_state
measure "restart (baseline)" ctl restart echo
wait_ready
if [ $stand_in = yes ]; then
  measure "restart (stand-in for the reload)" ctl restart echo
else
  measure "reload (every worker's env)" reload
fi
wait_ready
echo "served: requests the workers counted while preforkctl waited; wrk-reqs/window/req/s/errs: wrk's whole window"
[ -n "${outlived:-}" ] && echo "*: the operation outlived the load (wrk stops after LIMIT=${limit}s); its time includes unloaded seconds"
if grep -E ' (warn|warning|error|critical):' "$tmp/preforkd.log" >"$tmp/warnings"; then
  echo "preforkd's warnings and errors:"; head -20 "$tmp/warnings"
fi
ctl shutdown >/dev/null
wait "$pf" || true
pf=""
