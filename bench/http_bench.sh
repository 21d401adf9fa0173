#!/bin/sh
# Data-path cost: wrk against preforkd-echo --http run standalone (it binds
# the socket itself) vs the same binary as preforkd's workers (inherited
# socket), both with W worker processes' worth of CPU: standalone is one
# process, so preforkd runs 1 worker too. Short connections (Connection:
# close) and keep-alive. Only 127.0.0.1 is ever targeted.
# Usage: bench/http_bench.sh [BUILD_DIR] [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build-bench}
secs=${2:-5}
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

port_of() { grep -o 'listening on 127.0.0.1:[0-9]*' "$1" | head -1 | sed 's/.*://'; }
rps() { wrk -t2 -c"$2" -d"${secs}s" $3 "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }

# Standalone.
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/bin/preforkd-echo" --http --listen "127.0.0.1:$sport" >"$tmp/standalone.log" 2>&1 &
sa=$!
# Under preforkd.
cat >"$tmp/p.yaml" <<YAML
programs:
  echo:
    command: [$build/bin/preforkd-echo, --http]
    workers: 1
    listen: ["127.0.0.1:0"]
YAML
"$build/bin/preforkd" -c "$tmp/p.yaml" >"$tmp/preforkd.log" 2>&1 &
pf=$!
for _ in $(seq 100); do [ -n "$(port_of "$tmp/preforkd.log")" ] && break; sleep 0.05; done
pport=$(port_of "$tmp/preforkd.log")
sleep 0.2

for mode in close keepalive; do
  if [ $mode = close ]; then hdr='-H Connection:close'; conns=16; else hdr=''; conns=64; fi
  s=$(rps "$sport" $conns "$hdr"); p=$(rps "$pport" $conns "$hdr")
  s2=$(rps "$sport" $conns "$hdr"); p2=$(rps "$pport" $conns "$hdr")
  echo "http $mode: standalone $s, $s2 req/s; under preforkd $p, $p2 req/s" \
       "(preforkd/standalone = $(python3 -c "print(round(($p+$p2)/($s+$s2),3))"))"
done
kill $sa; kill -TERM $pf; wait $pf || true
