# shellcheck shell=bash disable=SC2154  # bin, tools, top: set by the caller
# The managers bench/compare.sh measures side by side (sourced, bash). Each
# one runs N copies of a worker on one listening socket, 127.0.0.1:PORT:
#
#   floor       no manager: `probe launch` binds and fork+execs N copies of
#               the minimal C worker with the socket at fd 3, and nothing else
#   preforkd    the minimal C worker (fd 3, LISTEN_FDS)
#   preforkd-echo  preforkd-echo --http (preforkd's own example worker)
#   supervisord the minimal C worker as an [fcgi-program]: supervisord binds
#               the socket and passes it as fd 0 to every copy (numprocs=N),
#               so every copy accepts from one shared queue that stays open
#               while a copy is replaced, as with preforkd and the floor
#   gunicorn    sync workers running bench/anchors/wsgi_app.py
#   node        bench/anchors/cluster.js (cluster module, its default
#               scheduling: the primary accepts and hands out connections)
#
# Needs: $tools (probe, minimal_worker), $bin (preforkd, preforkctl,
# preforkd-echo), $top. Every function takes the manager's work folder DIR.

# mgr_cmd MANAGER N PORT DIR: writes the manager's configuration into DIR and
# prints its command line, one word a line (read with mapfile).
mgr_cmd() {
  local m=$1 n=$2 port=$3 dir=$4
  case $m in
    floor)
      printf '%s\n' "$tools/probe" launch "$n" "$port" -- "$tools/minimal_worker" ;;
    preforkd | preforkd-echo)
      local cmd="[$tools/minimal_worker]"
      [ "$m" = preforkd-echo ] && cmd="[$bin/preforkd-echo, --http]"
      cat >"$dir/preforkd.yaml" <<YAML
# written by bench/managers.sh
supervisor: { control_socket: $dir/ctl.sock, shutdown_timeout: 20s }
programs:
  w:
    command: $cmd
    workers: $n
    listen: ["127.0.0.1:$port"]
    environment: { BENCH_READY_FIFO: "${BENCH_READY_FIFO:-}", BENCH_GENERATION: "${BENCH_GENERATION:-1}" }
    # every SIGKILL of the respawn bench is a fresh failure, not a streak
    backoff: { reset_after: 0s }
YAML
      printf '%s\n' "$bin/preforkd" -c "$dir/preforkd.yaml" ;;
    supervisord)
      cat >"$dir/supervisord.conf" <<CONF
; written by bench/managers.sh
[supervisord]
nodaemon=true
logfile=$dir/supervisord.log
pidfile=$dir/supervisord.pid
childlogdir=$dir
[unix_http_server]
file=$dir/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$dir/supervisor.sock
[fcgi-program:w]
socket=tcp://127.0.0.1:$port
socket_backlog=4096
command=$tools/minimal_worker --fd 0
numprocs=$n
process_name=%(program_name)s_%(process_num)04d
autorestart=true
startsecs=0
startretries=1000000
stopwaitsecs=10
stdout_logfile=NONE
stderr_logfile=NONE
CONF
      printf '%s\n' supervisord -c "$dir/supervisord.conf" ;;
    gunicorn)
      printf '%s\n' /usr/bin/gunicorn -w "$n" -b "127.0.0.1:$port" --backlog 4096 \
        -c "$top/bench/anchors/gunicorn_conf.py" --chdir "$top/bench/anchors" wsgi_app:app ;;
    node)
      printf '%s\n' node "$top/bench/anchors/cluster.js" "$n" "$port" ;;
    *) echo "bench: unknown manager $m" >&2; return 1 ;;
  esac
}

# mgr_start MANAGER N PORT DIR: starts it in the background (MGR_PID) and
# waits until it answers on PORT.
mgr_start() {
  local m=$1 n=$2 port=$3 dir=$4 cmd
  mapfile -t cmd < <(mgr_cmd "$m" "$n" "$port" "$dir")
  setsid "${cmd[@]}" >"$dir/$m.log" 2>&1 &
  MGR_PID=$!
  if ! "$tools/probe" wait "$port" 60; then
    echo "bench: $m did not answer on 127.0.0.1:$port within 60 s; its log:" >&2
    tail -20 "$dir/$m.log" >&2
    return 1
  fi
  # every copy up (supervisord and node start theirs one after the other)
  local i
  for i in $(seq 600); do
    [ "$("$tools/probe" children "$MGR_PID" | wc -l)" -ge "$n" ] && return 0
    sleep 0.1
  done
  echo "bench: $m has fewer than $n workers after 60 s" >&2
  return 1
}

# mgr_stop PID: TERM, wait up to 30 s, then KILL its session.
mgr_stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# mgr_reload MANAGER N PORT DIR PID: replaces every worker, returns when done.
#   preforkd    a new `environment:` in the config, then `preforkctl reload`
#               (replies when the rollout has finished: new before old)
#   supervisord has no reload that replaces running processes; the gentlest
#               it offers: `supervisorctl restart` of each copy in turn
#   gunicorn    SIGHUP (new workers, then the old ones stop gracefully)
#   node        SIGHUP to cluster.js (new worker, then disconnect an old one)
# For gunicorn and node, done = N workers, none of the old ones.
mgr_reload() {
  local m=$1 n=$2 port=$3 dir=$4 pid=$5 old i
  case $m in
    preforkd | preforkd-echo)
      BENCH_GENERATION=$(( ${BENCH_GENERATION:-1} + 1 ))
      mgr_cmd "$m" "$n" "$port" "$dir" >/dev/null
      "$bin/preforkctl" -s "$dir/ctl.sock" reload >/dev/null ;;
    supervisord)
      for i in $(seq 0 $((n - 1))); do
        supervisorctl -c "$dir/supervisord.conf" restart "w:w_$(printf %04d "$i")" >/dev/null
      done ;;
    gunicorn | node)
      old=$("$tools/probe" children "$pid" | sort)
      kill -HUP "$pid"
      for i in $(seq 3000); do
        cur=$("$tools/probe" children "$pid" | sort)
        if [ "$(printf '%s\n' "$cur" | grep -c .)" = "$n" ] && [ -z "$(comm -12 <(echo "$old") <(echo "$cur"))" ]; then
          return 0
        fi
        sleep 0.01
      done
      echo "bench: $m: the reload did not finish in 30 s" >&2; return 1 ;;
  esac
}

# The managers that are installed, of those asked for.
mgr_available() {
  case $1 in
    supervisord) command -v supervisord >/dev/null && command -v supervisorctl >/dev/null ;;
    gunicorn) [ -x /usr/bin/gunicorn ] ;;
    node) command -v node >/dev/null ;;
    *) return 0 ;;
  esac
}
