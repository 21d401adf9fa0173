#!/bin/sh
# Builds preforkd in Release and runs the benchmarks; prints the figures.
# Usage: bench/run.sh [respawn|start|idle|all]   (run as root for wrk install)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build-bench"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPREFORKD_TESTS=ON >/dev/null
[ "${1:-}" = autoscale ] && exec "$top/bench/autoscale.sh" "$build"  # ~4 min, not in "all" (docs/benchmarks.md)
cmake --build "$build" -j"$(nproc)" --target preforkd-core-bench >/dev/null
echo "== core (${1:-all})"
"$build/bin/preforkd-core-bench" "${1:-all}"
if [ "${1:-all}" = all ]; then
  echo "== data path (wrk, 127.0.0.1)"
  "$top/bench/http_bench.sh" "$build"
fi
