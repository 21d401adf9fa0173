#!/bin/bash
# Respawn, start, data path and reload under load, for the floor (no
# manager), preforkd and, when asked, the anchors (supervisord, gunicorn,
# Node cluster), side by side in one run with the same client
# (bench/probe.c) and, where the manager can run it, the same worker
# (bench/minimal_worker.c). Run by bench/run.sh, which builds the tools; each
# figure goes as one JSON line to $BENCH_JSONL. Only 127.0.0.1 is used.
#
# Usage: bench/compare.sh PART... (respawn start datapath reload)
# Environment (set by run.sh): bin tools top BENCH_JSONL, MANAGERS ("preforkd"
#   or "preforkd supervisord gunicorn node"), SAMPLES=200 (respawn samples per
#   manager; supervisord: SUPERVISORD_SAMPLES=40, it respawns once a second),
#   START_REPS=5 (3 for N=1000; ANCHOR_START_REPS=2 for the anchors),
#   START_NS="100 1000", DP_WORKERS=2, DP_SECONDS=3, RELOAD_WORKERS=8, RELOADS=3
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/managers.sh"
: "${bin:?run by bench/run.sh}" "${tools:?}" "${top:?}" "${BENCH_JSONL:?}"
managers=${MANAGERS:-preforkd}
samples=${SAMPLES:-200}
tmp=$(mktemp -d)
pids=""
# shellcheck disable=SC2154 # p is the trap's own loop variable
trap 'for p in $pids; do mgr_stop "$p"; done; rm -rf "$tmp"' EXIT

# The worker each manager runs, for the tables.
worker_of() {
  case $1 in
    gunicorn) echo wsgi_app.py ;; node) echo cluster.js ;; preforkd-echo) echo preforkd-echo ;;
    *) echo minimal_worker ;;
  esac
}
json_list() { paste -sd, "$1"; }
emit() { printf '%s\n' "$1" >>"$BENCH_JSONL"; }

respawn() {
  echo "== respawn: SIGKILL of the only worker -> first response from its replacement"
  local list="preforkd preforkd-echo" m n blocks dir port per
  for m in $managers; do [ "$m" = preforkd ] || list="$list $m"; done
  for m in $list; do
    mgr_available "$m" || { echo "   $m: not installed, skipped"; continue; }
    n=$samples; [ "$m" = supervisord ] && n=${SUPERVISORD_SAMPLES:-40}
    dir=$tmp/respawn-$m; mkdir -p "$dir"; port=$(free_port)
    mgr_start "$m" 1 "$port" "$dir"; pids="$pids $MGR_PID"
    # In 4 blocks, each after a block of the floor with the same worker
    # (the echo worker for preforkd-echo), so that drift hits both alike.
    : >"$dir/s"; : >"$dir/f"
    blocks=4; per=$(( (n + blocks - 1) / blocks ))
    for _ in $(seq $blocks); do
      if [ "$m" = preforkd-echo ]; then
        "$tools/probe" floor "$per" -- "$bin/preforkd-echo" --http >>"$dir/f"
      else
        "$tools/probe" floor "$per" -- "$tools/minimal_worker" >>"$dir/f"
      fi
      "$tools/probe" respawn "$port" "$MGR_PID" "$per" >>"$dir/s"
    done
    mgr_stop "$MGR_PID"
    emit "{\"bench\":\"respawn\",\"manager\":\"$m\",\"worker\":\"$(worker_of "$m")\",\"samples\":[$(json_list "$dir/s")],\"floor\":[$(json_list "$dir/f")]}"
    echo "   $m: $(wc -l <"$dir/s") samples (floor: $(wc -l <"$dir/f"))"
  done
}

start() {
  echo "== start: exec of the manager -> N workers accepting"
  local n m reps dir out cmd ms rss list
  for n in ${START_NS:-100 1000}; do
    list="floor preforkd"
    [ "$n" = 100 ] && for m in $managers; do [ "$m" = preforkd ] || list="$list $m"; done
    for m in $list; do
      mgr_available "$m" || continue
      dir=$tmp/start-$m-$n; mkdir -p "$dir"; : >"$dir/ms"; : >"$dir/rss"
      reps=${START_REPS:-5}; [ "$n" = 1000 ] && reps=3
      case $m in floor | preforkd) ;; *) reps=${ANCHOR_START_REPS:-2} ;; esac
      for _ in $(seq "$reps"); do
        export BENCH_READY_FIFO=$dir/ready
        mapfile -t cmd < <(mgr_cmd "$m" "$n" "$(free_port)" "$dir")
        out=$(PROBE_LOG=$dir/log "$tools/probe" start "$n" "$dir/ready" -- "${cmd[@]}") ||
          { echo "bench: start of $n under $m failed; its log:" >&2; tail -5 "$dir/log" >&2; exit 1; }
        unset BENCH_READY_FIFO
        read -r ms rss <<<"$out"
        echo "$ms" >>"$dir/ms"; echo "$rss" >>"$dir/rss"
      done
      emit "{\"bench\":\"start\",\"manager\":\"$m\",\"worker\":\"$(worker_of "$m")\",\"n\":$n,\"samples\":[$(json_list "$dir/ms")],\"rss_kib\":[$(json_list "$dir/rss")]}"
      echo "   $n under $m: $(paste -sd' ' "$dir/ms") ms"
    done
  done
}

# wrk_args PORT SECONDS CONNS close|keepalive: wrk's arguments, into WRK.
wrk_args() {
  WRK=(-t2 -c"$3" -d"$2s" --timeout 5s)
  [ "$4" = close ] && WRK+=(-H "Connection: close")
  WRK+=("http://127.0.0.1:$1/")
}
wrk_run() { wrk_args "$@"; wrk "${WRK[@]}"; }
# From wrk's output: "REQUESTS RPS ERRORS NON2XX CONNECT/READ/WRITE/TIMEOUT"
wrk_figures() {
  awk '/requests in/ { reqs = $1 } /Requests\/sec/ { rps = $2 }
       /Socket errors/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 } /Non-2xx/ { n = $5 }
       END { printf "%d %s %d %d %d/%d/%d/%d\n", reqs, rps, c + r + w + t, n, c, r, w, t }'
}

datapath() {
  local w=${DP_WORKERS:-2} secs=${DP_SECONDS:-3} m mode list="floor preforkd" port conns f
  for m in $managers; do [ "$m" = preforkd ] || list="$list $m"; done
  echo "== data path: wrk -t2, $w workers, keep-alive (-c64) and one request per connection (-c16)"
  declare -A ports
  for m in $list; do
    mgr_available "$m" || continue
    mkdir -p "$tmp/dp-$m"; ports[$m]=$(free_port)
    mgr_start "$m" "$w" "${ports[$m]}" "$tmp/dp-$m"; pids="$pids $MGR_PID"
    echo "$MGR_PID" >"$tmp/dp-$m/pid"
  done
  for _ in 1 2 3; do  # every manager once per round: drift hits all alike
    for mode in keepalive close; do
      [ $mode = close ] && conns=16 || conns=64
      for m in "${!ports[@]}"; do
        wrk_run "${ports[$m]}" "$secs" "$conns" "$mode" | wrk_figures >>"$tmp/dp-$m/$mode"
      done
    done
  done
  for m in "${!ports[@]}"; do
    mgr_stop "$(cat "$tmp/dp-$m/pid")"
    for mode in keepalive close; do
      f=$tmp/dp-$m/$mode
      emit "{\"bench\":\"datapath\",\"manager\":\"$m\",\"worker\":\"$(worker_of "$m")\",\"workers\":$w,\"mode\":\"$mode\",\"seconds\":$secs,\"rps\":[$(awk '{print $2}' "$f" | paste -sd,)],\"errors\":[$(awk '{print $3 + $4}' "$f" | paste -sd,)]}"
      echo "   $m $mode: $(awk '{print $2}' "$f" | paste -sd' ') req/s"
    done
  done
}

reload() {
  local w=${RELOAD_WORKERS:-8} k=${RELOADS:-3} m dir port wp t0 t1 figs
  echo "== reload under load: $w workers, wrk -t2 -c16 one request per connection, $k reloads each"
  for m in $managers; do
    mgr_available "$m" || continue
    dir=$tmp/reload-$m; mkdir -p "$dir"; port=$(free_port)
    export BENCH_GENERATION=1  # read by mgr_cmd (managers.sh)
    mgr_start "$m" "$w" "$port" "$dir"; pids="$pids $MGR_PID"
    : >"$dir/r"
    for _ in $(seq "$k"); do
      wrk_args "$port" 120 16 close
      wrk "${WRK[@]}" >"$dir/wrk" 2>&1 &  # wrk itself: SIGINT stops it, and it reports
      wp=$!
      sleep 1
      t0=$(date +%s%N)
      mgr_reload "$m" "$w" "$port" "$dir" "$MGR_PID"
      t1=$(date +%s%N)
      sleep 1
      kill -INT "$wp"; wait "$wp" || true
      figs=$(wrk_figures <"$dir/wrk")
      set -- $figs
      echo "{\"ms\":$(( (t1 - t0) / 1000000 )),\"requests\":$1,\"rps\":$2,\"errors\":$3,\"non2xx\":$4,\"crwt\":\"$5\"}" >>"$dir/r"
    done
    mgr_stop "$MGR_PID"
    emit "{\"bench\":\"reload\",\"manager\":\"$m\",\"worker\":\"$(worker_of "$m")\",\"workers\":$w,\"reloads\":[$(paste -sd, "$dir/r")]}"
    echo "   $m: $(paste -sd' ' "$dir/r")"
  done
}

for part in "$@"; do
  case $part in
    respawn | start | datapath | reload) "$part" ;;
    *) echo "bench/compare.sh: unknown part $part (respawn start datapath reload)" >&2; exit 2 ;;
  esac
done
