#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — builds the libFuzzer targets with clang
# (build-fuzz/, -DPREFORKD_FUZZ=ON: -fsanitize=fuzzer,address,undefined) and
# runs each for SECONDS (default 60) on a scratch copy of its corpus in
# fuzz/corpus/<target>/, with its dictionary when it has one. Exits 1 on
# any crash, leak, timeout (a single input over 10 s), out-of-memory (over
# 2 GiB RSS) or sanitizer report; the input that did it is kept in
# build-fuzz/findings/ and the log printed. Every target runs even after
# one failed. New corpus entries stay in the scratch copy: add the ones
# worth keeping (any finding, as fuzz/corpus/<target>/regress-*) by hand.
#
# One target for longer, e.g. an hour: fuzz/run.sh 3600 config
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(config notify control http upgrade_state); fi
build=${PREFORKD_FUZZ_BUILD:-$root/build-fuzz}

if ! command -v clang++ >/dev/null; then
  echo "fuzz/run.sh: clang++ not found (packaging/install-build-deps.sh installs clang)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DPREFORKD_FUZZ=ON -DPREFORKD_TESTS=OFF >/dev/null
fuzzers=()
for t in "${targets[@]}"; do fuzzers+=("${t}_fuzz"); done
cmake --build "$build" -j2 --target "${fuzzers[@]}"

findings=$build/findings
mkdir -p "$findings"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# One target: its summary line in $build/<target>.summary, exit 1 on a finding.
run_one() {
  local t=$1 work=$build/work/$1 log=$build/$1.log
  rm -rf "$work" "$findings/$t-"*
  mkdir -p "$work"
  cp "$here/corpus/$t/"* "$work/"
  local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048
              -print_final_stats=1 -artifact_prefix="$findings/$t-")
  [ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")
  local seeds
  seeds=$(find "$work" -type f | wc -l)
  if "$build/fuzz/${t}_fuzz" "${args[@]}" "$work" >"$log" 2>&1; then
    echo "$t: ok, $(grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" \
      | sed 's/^stat:://' | tr -s ' ' | tr '\n' ' ')corpus $seeds -> $(find "$work" -type f | wc -l) inputs" \
      >"$build/$t.summary"
    return 0
  fi
  { echo "$t: FAILED (log $log)"; tail -60 "$log"; ls "$findings/$t-"* 2>/dev/null || true; } >"$build/$t.summary"
  return 1
}

# Two at a time (libFuzzer runs on one core): 5 targets x 60 s take 3 min.
jobs=${FUZZ_JOBS:-2}
declare -A running=()
failed=()
reap() {
  local pid status=0
  wait -n -p pid "${!running[@]}" || status=$?
  cat "$build/${running[$pid]}.summary"
  [ "$status" -eq 0 ] || failed+=("${running[$pid]}")
  unset "running[$pid]"
}
echo "== fuzzing ${targets[*]}: ${seconds}s each, $jobs at a time"
for t in "${targets[@]}"; do
  while [ ${#running[@]} -ge "$jobs" ]; do reap; done
  run_one "$t" &
  running[$!]=$t
done
while [ ${#running[@]} -gt 0 ]; do reap; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in $findings)"
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${seconds}s each, no finding"
