#!/bin/bash
# The benchmark suite (issue #13): builds preforkd in Release (build-bench/),
# runs every benchmark on 127.0.0.1 and prints the figures; writes
# bench/results/<date>.json (every sample), .md (the table) and .png charts.
# Figures, never assertions: compare ratios measured in the same run.
#
# Usage: bench/run.sh [--anchors] [all|PART...]
#   PARTS: respawn start storm datapath reload idle notify reload100 autoscale
#   all (the default): every part but reload100 and autoscale, which take
#   several minutes each and run on their own: bench/run.sh reload100
#   (bench/reload_bench.sh: 100 preforkd-echo workers replaced under
#   keep-alive load) and bench/run.sh autoscale (bench/autoscale.sh)
#   --anchors  also supervisord, gunicorn (sync) and Node's cluster module in
#              respawn, start (100), datapath and reload; installs Debian's
#              supervisor, python3-gunicorn and nodejs (as root) if missing
# Environment: SAMPLES=200 (respawn), DP_SECONDS=3, RELOAD_WORKERS=8, and
# the ones of bench/compare.sh.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build-bench
bin=$build/bin
tools=$build/bench-tools
results=$top/bench/results
t_start=$(date +%s)

anchors=no
parts=()
for a in "$@"; do
  case $a in
    --anchors) anchors=yes ;;
    all) parts+=(respawn start storm datapath reload idle notify) ;;
    respawn | start | storm | datapath | reload | idle | notify | reload100 | autoscale) parts+=("$a") ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$a' (see bench/run.sh --help)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(respawn start storm datapath reload idle notify)
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

# Tools: install from Debian when root, else say what is missing.
apt_updated=no
need() {  # need PATH_OR_COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    [ $apt_updated = yes ] || { apt-get update -qq >/dev/null; apt_updated=yes; }
    echo "bench: installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null  # $2: one or more packages
  fi
  command -v "$1" >/dev/null || { echo "bench/run.sh: $1 is missing: apt-get install $2 (as root)" >&2; exit 1; }
}
need cmake cmake; need cc gcc; need python3 python3; need wrk wrk; need gnuplot gnuplot-nox
managers=preforkd
if [ $anchors = yes ]; then
  need supervisord supervisor; need node nodejs
  need /usr/bin/gunicorn "python3-gunicorn gunicorn" # Debian's, run by /usr/bin/python3
  managers="preforkd supervisord gunicorn node"
fi

echo "== build (Release, $build)"
mkdir -p "$build"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPREFORKD_TESTS=ON >"$build/bench-build.log" 2>&1 ||
  { cat "$build/bench-build.log" >&2; exit 1; }
cmake --build "$build" -j2 --target preforkd preforkctl preforkd-echo preforkd-test-worker \
  preforkd-core-bench preforkd-notify-bench >>"$build/bench-build.log" 2>&1 ||
  { tail -30 "$build/bench-build.log" >&2; exit 1; }
mkdir -p "$tools"
cc -O2 -Wall -o "$tools/minimal_worker" "$top/bench/minimal_worker.c"
cc -O2 -Wall -o "$tools/probe" "$top/bench/probe.c"

date=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$results"
jsonl=$results/$date.jsonl
: >"$jsonl"
load() { cut -d' ' -f1-3 /proc/loadavg; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
printf '{"bench":"meta","date":"%s","commit":"%s","nproc":%s,"cpu":"%s","mem_gib":%s,"kernel":"%s","os":"%s","anchors":"%s","load_start":"%s"}\n' \
  "$date" "$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" "$cpu" \
  "$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)" "$(uname -r)" \
  "$(. /etc/os-release && echo "$PRETTY_NAME")" "$anchors" "$(load)" >>"$jsonl"
echo "== $(nproc) CPU(s), load average $(load) at the start; results: $results/$date.*"

export bin tools top BENCH_JSONL=$jsonl MANAGERS=$managers
# text: the output of a script, kept in the JSON as it was printed
text() {  # text NAME COMMAND...
  local name=$1 out; shift
  out=$("$@" 2>&1) || { echo "$out"; echo "bench: $name failed" >&2; exit 1; }
  echo "$out"
  python3 -c 'import json, sys; print(json.dumps({"bench": "text", "name": sys.argv[1], "text": sys.stdin.read()}))' \
    "$name" <<<"$out" >>"$jsonl"
}
core() {  # core PART: preforkd-core-bench, its "@" lines into the JSON
  local out
  out=$("$bin/preforkd-core-bench" "$@") || { echo "$out"; echo "bench: core $1 failed" >&2; exit 1; }
  grep -v '^@' <<<"$out" || true
  grep '^@' <<<"$out" | cut -c2- >>"$jsonl" || true
}

for p in respawn start datapath reload; do
  want $p && "$top/bench/compare.sh" $p
done
if want storm; then echo "== respawn storm: SIGKILL of 1000 workers at once"; core storm --workers 1000; fi
if want idle; then echo "== idle: 100 workers, 10 s"; core idle; fi
if want reload100; then
  echo "== reload of 100 preforkd-echo --http workers under keep-alive load (bench/reload_bench.sh)"
  text reload_bench "$top/bench/reload_bench.sh" "$build"
fi
if want notify; then
  echo "== notify ingest (preforkd-notify-bench) and a worker's telemetry cost (bench/notify_overhead.sh)"
  text notify_bench "$bin/preforkd-notify-bench" all
  text notify_overhead "$top/bench/notify_overhead.sh" "$build"
fi
if want autoscale; then
  echo "== autoscaling (bench/autoscale.sh, about 4 minutes)"
  OUT=$results "$top/bench/autoscale.sh" "$build"
fi
# the newest autoscale JSON, if any (from this run or an earlier one)
latest=$(ls -t "$results"/autoscale-*.json 2>/dev/null | head -1 || true)
[ -n "$latest" ] && printf '{"bench":"autoscale_file","path":"%s"}\n' "$latest" >>"$jsonl"

printf '{"bench":"meta_end","load_end":"%s","seconds":%d}\n' "$(load)" $(( $(date +%s) - t_start )) >>"$jsonl"
python3 "$top/bench/report.py" "$jsonl"
echo "== total $(( $(date +%s) - t_start )) s; load average $(load) at the end"
