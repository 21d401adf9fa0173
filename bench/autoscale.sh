#!/bin/sh
# Autoscaling under a load that steps light -> heavy -> light (issue #12):
# preforkd-echo --http --serial --delay-ms DELAY_MS (one request at a time per
# worker, a connection accepted only when the worker is free, BUSY=1/BUSY=0
# around each request), three runs in one go on the same schedule:
# `workers: MIN` (fixed-min), `workers: MAX` (fixed-max) and
# `workers: { min: MIN, max: MAX }` with `autoscale:` (autoscaled). Prints
# p50/p99 latency per phase, the workers and the worker-seconds of each run,
# checks the targets (autoscaled heavy-phase p99 within 20% of fixed-max's, at
# most 60% of its worker-seconds), and writes bench/results/autoscale-DATE.json
# and .png (workers and p99 per second over time). Takes about 4.5 minutes
# with the defaults. Only 127.0.0.1 is used.
#
# The load (bench/autoscale/loadgen.c) is open loop by default: requests
# arrive at random (Poisson) at a fixed rate per phase, each on a new
# connection, and a request's latency runs from when it was due, so a queue
# that builds up while the pool is too small shows in full. LOAD=closed runs
# a fixed number of clients per phase instead, each sending its next request
# when the last one is answered (a slow pool then gets fewer requests, which
# hides queueing; there for comparison).
#
# The autoscale settings (docs/benchmarks.md, "Autoscaling", says why):
# scale up fast and far (up_after 50ms, step MAX-MIN: straight to max), down
# one worker per down_after (1s) once one has been idle for that long and the
# rest would have been at most target_utilization (40%) busy over that second.
# The bench squeezes minutes of traffic into 85 s, so down_after is short; the
# rule that a worker must have been idle without a break keeps it from
# shrinking a pool between two requests, and the utilization bound from
# shrinking one that a steady load still needs (8 busy of 16: its last
# workers in accept order are idle for a second now and then). 40% rather
# than the default 50%: the mean busy workers over a 1 s window of a
# Poisson load of 8 varies by about +-0.6, and 15 x 50% = 7.5 is within it.
#
# Usage: bench/autoscale.sh [BUILD_DIR]     (default build-bench, configured
#        in Release when missing; run as root to install gnuplot when missing)
# Environment (defaults in brackets):
#   WORKER [serial]  serial: preforkd-echo --http --serial --delay-ms DELAY_MS;
#                  threaded: preforkd-echo --http --delay-ms DELAY_MS, which
#                  accepts in a thread of its own whatever arrives and queues
#                  it behind its I/O thread (the backlog leaves the kernel's
#                  accept queue: for comparison)
#   DELAY_MS [50]  per-request delay: one worker serves 1000/DELAY_MS req/s
#   MIN [4] MAX [16]  the fixed-min and fixed-max counts, the autoscale bounds
#   LOAD [open]    open (LIGHT/HEAVY in requests/s) or closed (in clients)
#   LIGHT [10]     the light phases' load (closed: 1)
#   HEAVY [160]    the heavy phase's load (closed: MAX); 160 req/s = half of
#                  what 16 workers of 50 ms serve, twice what 4 serve
#   SCHEDULE [30,30,25]  seconds of light, heavy, light
#   UP_AFTER [50ms] DOWN_AFTER [1s] COOLDOWN [2s] STEP [MAX-MIN]
#   TARGET_UTIL [40%]  the autoscaled run's autoscale: settings
#   TIMEOUT_MS [5000]  a request with no reply by then is a failure (and
#                  counts as slower than any reply in the percentiles)
#   RUNS ["fixed-min fixed-max autoscaled"]  which runs, in this order
#   OUT [bench/results]  where the JSON and the PNG go
#   KEEP           set: keep the runs' files (configs, logs, samples, requests)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build-bench}
delay=${DELAY_MS:-50}
min=${MIN:-4}
max=${MAX:-16}
load=${LOAD:-open}
worker=${WORKER:-serial}
case $worker in serial | threaded) ;; *) echo "WORKER: expected serial or threaded, got '$worker'" >&2; exit 2 ;; esac
case $load in
  open) light=${LIGHT:-10}; heavy=${HEAVY:-160}; unit=req/s ;;
  closed) light=${LIGHT:-1}; heavy=${HEAVY:-$max}; unit=clients ;;
  *) echo "LOAD: expected open or closed, got '$load'" >&2; exit 2 ;;
esac
schedule=${SCHEDULE:-30,30,25}
up_after=${UP_AFTER:-50ms}
down_after=${DOWN_AFTER:-1s}
cooldown=${COOLDOWN:-2s}
step=${STEP:-$((max - min))}
target_util=${TARGET_UTIL:-40%}
timeout_ms=${TIMEOUT_MS:-5000}
runs=${RUNS:-fixed-min fixed-max autoscaled}
out=${OUT:-$top/bench/results}
IFS=, read -r s1 s2 s3 <<EOF
$schedule
EOF
[ -n "${s3:-}" ] || { echo "SCHEDULE: expected three durations in seconds, got '$schedule'" >&2; exit 2; }
phases="light-1:$light:$s1,heavy:$heavy:$s2,light-2:$light:$s3"

command -v gnuplot >/dev/null || apt-get install -y -qq gnuplot-nox >/dev/null
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
build=$(cd "$build" && pwd)  # absolute: configs live in a temp folder
tmp=$(mktemp -d)
pf=""; sampler=""
trap 'kill $sampler $pf 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then echo "kept: $tmp" >&2; else rm -rf "$tmp"; fi' EXIT
cmake --build "$build" -j2 --target preforkd preforkctl preforkd-echo >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; exit 1; }
cc -O2 -Wall -o "$tmp/loadgen" "$top/bench/autoscale/loadgen.c" -lm
case $worker in
  serial) command="[$build/bin/preforkd-echo, --http, --serial, --delay-ms, \"$delay\"]" ;;
  threaded) command="[$build/bin/preforkd-echo, --http, --delay-ms, \"$delay\"]" ;;
esac
mkdir -p "$out"

# Two distinct free ports, below the ephemeral range as lib.sh's free_port
# (one python start for both: it costs a second on a busy machine).
free_ports() {
  python3 -c 'import random, socket
got = []
while len(got) < 2:
    p = random.randint(20000, 30000); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); got += [p] if p not in got else []
    except OSError: pass
    finally: s.close()
print(*got)'
}

# run NAME: one preforkd, its workers ready, then the load while sampling.
run() {
  name=$1
  started=$(date +%s)
  dir=$tmp/$name
  mkdir -p "$dir"
  ports=$(free_ports)
  port=${ports% *} mport=${ports#* }
  case $name in
    fixed-min) workers=$min; autoscale="" ; initial=$min ;;
    fixed-max) workers=$max; autoscale="" ; initial=$max ;;
    autoscaled)
      workers="{ min: $min, max: $max }"; initial=$min
      autoscale="autoscale: { up_after: $up_after, down_after: $down_after, cooldown: $cooldown, step: $step, target_utilization: $target_util }" ;;
  esac
  cat >"$dir/p.yaml" <<YAML
supervisor: { control_socket: $dir/ctl.sock, metrics: "127.0.0.1:$mport", shutdown_timeout: 2s }
programs:
  echo:
    command: $command
    workers: $workers
    $autoscale
    listen: ["127.0.0.1:$port"]
    ready: notify
YAML
  "$build/bin/preforkd" -c "$dir/p.yaml" >"$dir/preforkd.log" 2>&1 &
  pf=$!
  # The sampler starts with preforkd (it retries until /metrics answers); its
  # lines say when the first workers are ready: one python, not one per poll.
  python3 "$top/bench/autoscale/sample.py" "$mport" echo 0.2 "$dir/samples.txt" 2>"$dir/sample.err" &
  sampler=$!
  ok=""
  for _ in $(seq 600); do
    [ "$(tail -1 "$dir/samples.txt" 2>/dev/null | cut -d' ' -f3)" = "$initial" ] && { ok=yes; break; }
    sleep 0.05
  done
  [ -n "$ok" ] || { echo "$name: $initial workers did not become ready:" >&2; tail -20 "$dir/preforkd.log" >&2; exit 1; }
  sleep 1  # a second of the idle pool on the curve, and every worker's first BUSY=0
  "$tmp/loadgen" "$load" "$port" "$timeout_ms" "$dir/load.txt" "$light:$s1,$heavy:$s2,$light:$s3"
  sleep 0.5
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=""
  "$build/bin/preforkctl" -s "$dir/ctl.sock" shutdown >/dev/null 2>&1 || kill -TERM "$pf" 2>/dev/null || true
  wait "$pf" || true
  pf=""
  grep -E ', scaling (up|down) to [0-9]+$' "$dir/preforkd.log" >"$dir/decisions.txt" || true
  echo "$name: done in $(($(date +%s) - started)) s ($(grep -c . "$dir/decisions.txt") autoscale decisions)" >&2
}

date=$(date -u +%Y%m%dT%H%M%SZ)
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
case $worker in
  serial) what="preforkd-echo --http --serial --delay-ms $delay" ;;
  threaded) what="preforkd-echo --http --delay-ms $delay (threaded: accepts whatever arrives)" ;;
esac
echo "$what ($((1000 / delay)) req/s per worker); load $load:" \
     "light $light $unit for ${s1}s, heavy $heavy $unit for ${s2}s, light $light $unit for ${s3}s;" \
     "one connection per request, timeout ${timeout_ms} ms"
echo "fixed-min: workers: $min; fixed-max: workers: $max; autoscaled: workers: { min: $min, max: $max }," \
     "autoscale: { up_after: $up_after, down_after: $down_after, cooldown: $cooldown, step: $step, target_utilization: $target_util }"
echo "$(nproc) CPU(s) ($model), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
specs=""
for r in $runs; do
  run "$r"
  specs="$specs $r=$tmp/$r"
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
# shellcheck disable=SC2086 # $specs: one word per run
python3 "$top/bench/autoscale/analyze.py" --phases "$phases" --timeout-ms "$timeout_ms" --unit "$unit" \
  --json "$out/autoscale-$date.json" --png "$out/autoscale-$date.png" \
  --title "preforkd autoscaling: $worker worker, $delay ms/request; $load load $light/$heavy/$light $unit; up_after $up_after, down_after $down_after, cooldown $cooldown, step $step, util $target_util" \
  --meta date="$date" --meta nproc="$(nproc)" --meta cpu="$model" --meta kernel="$(uname -r)" \
  --meta worker="$what" --meta delay_ms="$delay" --meta load="$load" --meta schedule="$schedule" \
  --meta min="$min" --meta max="$max" --meta timeout_ms="$timeout_ms" \
  --meta autoscale="up_after $up_after, down_after $down_after, cooldown $cooldown, step $step" \
  --meta commit="$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  $specs
for r in $runs; do
  if [ -s "$tmp/$r/decisions.txt" ]; then
    echo "$r: preforkd's decisions:"; sed 's/^/  /' "$tmp/$r/decisions.txt"
  fi
done
