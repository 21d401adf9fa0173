#!/bin/sh
# Data-path cost: wrk against preforkd-echo --http run standalone (it binds
# the socket itself) vs the same binary as preforkd's workers (inherited
# socket), both with W worker processes' worth of CPU: standalone is one
# process, so preforkd runs 1 worker too. Short connections (Connection:
# close) and keep-alive. Only 127.0.0.1 is ever targeted.
# Usage: bench/http_bench.sh [BUILD_DIR] [SECONDS]
set -eu
. "$(dirname "$0")/lib.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build-bench}" && pwd)  # absolute: configs live in a temp folder
secs=${2:-5}
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

# rps PORT CONNECTIONS close|keepalive
rps() {
  if [ "$3" = close ]; then
    wrk -t2 -c"$2" -d"${secs}s" -H "Connection: close" "http://127.0.0.1:$1/"
  else
    wrk -t2 -c"$2" -d"${secs}s" "http://127.0.0.1:$1/"
  fi | awk '/Requests\/sec/ {print $2}'
}

sport=$(free_port)
pport=$(free_port)
# Standalone.
"$build/bin/preforkd-echo" --http --listen "127.0.0.1:$sport" >"$tmp/standalone.log" 2>&1 &
sa=$!
# Under preforkd.
cat >"$tmp/p.yaml" <<YAML
supervisor: { control_socket: $tmp/ctl.sock }
programs:
  echo:
    command: [$build/bin/preforkd-echo, --http]
    workers: 1
    listen: ["127.0.0.1:$pport"]
YAML
"$build/bin/preforkd" -c "$tmp/p.yaml" >"$tmp/preforkd.log" 2>&1 &
pf=$!
for _ in $(seq 100); do [ -n "$(port_of "$tmp/preforkd.log")" ] && break; sleep 0.05; done
sleep 0.2

for mode in close keepalive; do
  if [ $mode = close ]; then conns=16; else conns=64; fi
  s=""; p=""
  for _ in 1 2 3; do  # alternate, so that drift hits both alike
    s="$s $(rps "$sport" $conns $mode)"; p="$p $(rps "$pport" $conns $mode)"
  done
  echo "http $mode: standalone$s req/s; under preforkd$p req/s" \
       "(preforkd/standalone, sums = $(python3 -c "print(round(sum(map(float,'$p'.split()))/sum(map(float,'$s'.split())),3))"))"
done
kill $sa; kill -TERM $pf; wait $pf || true
