#!/usr/bin/env bash
# check-package.sh — the Debian package, checked the way a user meets it. One
# command, as root on Debian 12 (CI runs it as its third stage, .ci/run):
#
#   packaging/check-package.sh [--worktree]
#
# It installs what it needs (apt-get), builds the .deb from a clean copy of
# the repository (packaging/build-deb.sh: HEAD, or with --worktree the working
# tree as git sees it), runs lintian (any E: or W: fails), installs the
# package with dpkg -i, checks its units with systemd-analyze verify, runs the
# installed preforkd -t on the installed configuration, starts the installed
# preforkd with it, waits for 4 ready workers (preforkctl), echoes a line
# through nc, stops it with SIGTERM (exit 0), purges the package and checks
# that none of its files is left. On failure it names the step; either way it
# kills the preforkd it started and purges what it installed.
#
# It needs 127.0.0.1:7000 and /run/preforkd/preforkd.sock free (the shipped
# configuration), and refuses to run where preforkd is already installed,
# since it ends by purging the package.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
source_flag=()
if [ "${1:-}" = "--worktree" ]; then
  source_flag=(--worktree)
elif [ $# -gt 0 ]; then
  echo "usage: packaging/check-package.sh [--worktree]" >&2
  exit 2
fi

step=""
t0=$(date +%s)
work=$(mktemp -d /tmp/preforkd-check.XXXXXX)
preforkd_pid=""
installed=0
run_dir_existed=0
[ -e /run/preforkd ] && run_dir_existed=1

begin() {
  step=$1
  echo "== check-package: $step"
}
fail() {
  echo "check-package: $*" >&2
  exit 1
}
cleanup() {
  local rc=$?
  set +e
  if [ -n "$preforkd_pid" ] && kill -0 "$preforkd_pid" 2>/dev/null; then
    # QUIT: preforkd SIGKILLs its workers' groups itself, then exits.
    kill -QUIT "$preforkd_pid"
    for _ in $(seq 1 50); do kill -0 "$preforkd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$preforkd_pid" 2>/dev/null
    wait "$preforkd_pid" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/preforkd.log" ]; then
    echo "--- the installed preforkd's log:" >&2
    tail -n 40 "$work/preforkd.log" >&2
  fi
  if [ "$installed" = 1 ] && dpkg-query -W -f='${db:Status-Status}' preforkd 2>/dev/null | grep -qv '^not-installed$'; then
    dpkg --purge preforkd >/dev/null 2>&1
  fi
  [ "$run_dir_existed" = 0 ] && rm -rf /run/preforkd  # preforkd made it for its control socket
  rm -rf "$work"
  if [ "$rc" -ne 0 ]; then
    echo "check-package: FAILED at step \"$step\" (exit $rc)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

begin "preflight"
[ "$(id -u)" -eq 0 ] || fail "run as root (apt-get, dpkg -i, a supervisor that binds and drops privileges)"
if dpkg-query -W -f='${db:Status-Status}' preforkd 2>/dev/null | grep -qv '^not-installed$'; then
  fail "preforkd is installed here; this check ends by purging it. Remove it first: dpkg --purge preforkd"
fi
if (exec 3<>/dev/tcp/127.0.0.1/7000) 2>/dev/null; then
  fail "something listens on 127.0.0.1:7000, the port of the shipped configuration"
fi

begin "install the tools and the build dependencies"
export DEBIAN_FRONTEND=noninteractive
"$repo/packaging/install-build-deps.sh" >/dev/null
# debhelper + dpkg-dev: dpkg-buildpackage; lintian; systemd: systemd-analyze;
# man-db: systemd-analyze verify opens the units' Documentation= man pages;
# netcat-openbsd: the echo round trip. No fakeroot: Rules-Requires-Root: no.
apt-get install -y -qq --no-install-recommends \
  debhelper dpkg-dev lintian systemd man-db mandoc netcat-openbsd git >/dev/null

begin "build the .deb from a clean copy (${source_flag[*]:-HEAD})"
version=$(sed -n 's/^project(preforkd VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
arch=$(dpkg --print-architecture)
deb=$(DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" DEB_BUILD_PROFILES=nocheck \
      "$repo/packaging/build-deb.sh" "${source_flag[@]}" "$work/out" | tail -n 1)
[ "$deb" = "$work/out/preforkd_${version}_${arch}.deb" ] && [ -f "$deb" ] \
  || fail "expected $work/out/preforkd_${version}_${arch}.deb, got \"$deb\""
echo "$(basename "$deb"): $(du -k "$deb" | cut -f1) KiB"

begin "one version: CMakeLists.txt, debian/changelog and the package"
sh "$repo/packaging/check-version.sh" "$version"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "the .deb's Version is $(dpkg-deb -f "$deb" Version)"

begin "lintian (no error, no warning)"
lintian_out=$(lintian --fail-on error,warning "$work/out/preforkd_${version}_${arch}.changes" 2>&1) \
  || { echo "$lintian_out"; fail "lintian failed"; }
[ -z "$lintian_out" ] || echo "$lintian_out"
if echo "$lintian_out" | grep -q '^[EW]: '; then fail "lintian reported errors or warnings"; fi
echo "lintian: clean"

begin "record the file system before dpkg -i"
# The package's paths that exist before it is installed (/usr, /etc...) may
# stay after the purge; every other one must go.
dpkg-deb -c "$deb" | awk '{print $6}' | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^$' | sort -u >"$work/deb-paths"
while IFS= read -r p; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
done <"$work/deb-paths" >"$work/existed-before"

begin "dpkg -i"
installed=1
dpkg -i "$deb" >/dev/null
dpkg -L preforkd | grep -vx "/\." | sort -u >"$work/dpkg-L"
for f in /usr/sbin/preforkd /usr/bin/preforkctl /usr/lib/preforkd/preforkd-echo \
         /usr/include/preforkd/worker.h /etc/preforkd/preforkd.yaml \
         /lib/systemd/system/preforkd.service /etc/logrotate.d/preforkd \
         /usr/share/man/man8/preforkd.8.gz /usr/share/man/man1/preforkctl.1.gz \
         /usr/share/man/man5/preforkd.yaml.5.gz /usr/share/man/man7/preforkd-worker.7.gz \
         /usr/share/doc/preforkd/copyright /usr/share/doc/preforkd/examples/preforkd.yaml \
         /usr/share/doc/preforkd/examples/preforkd.socket; do
  grep -qx "$f" "$work/dpkg-L" || fail "the package does not install $f"
done
grep -qE '^/usr/share/doc/preforkd/README\.md(\.gz)?$' "$work/dpkg-L" || fail "no README in /usr/share/doc/preforkd"
dpkg-query -W -f='${Conffiles}\n' preforkd | grep -q '^ /etc/preforkd/preforkd.yaml ' \
  || fail "/etc/preforkd/preforkd.yaml is not a conffile"
[ "$(/usr/sbin/preforkd -V)" = "preforkd $version" ] || fail "/usr/sbin/preforkd -V says $(/usr/sbin/preforkd -V)"

begin "systemd-analyze verify the unit and the example socket"
# Works without a running systemd (containers): verify loads the units in a
# private manager. The example socket is verified under its real name beside
# the installed service, which it activates.
mkdir "$work/units"
cp /usr/share/doc/preforkd/examples/preforkd.socket "$work/units/"
verify_out=$(cd "$work/units" && systemd-analyze verify /lib/systemd/system/preforkd.service ./preforkd.socket 2>&1) \
  || { echo "$verify_out"; fail "systemd-analyze verify failed"; }
[ -z "$verify_out" ] || { echo "$verify_out"; fail "systemd-analyze verify printed warnings"; }
echo "units: clean"

begin "the installed preforkd -t on the installed configuration"
out=$(/usr/sbin/preforkd -t -c /etc/preforkd/preforkd.yaml)
[ "$out" = "/etc/preforkd/preforkd.yaml: ok" ] || fail "preforkd -t said: $out"

begin "start the installed preforkd with the shipped configuration"
/usr/sbin/preforkd -c /etc/preforkd/preforkd.yaml >"$work/preforkd.log" 2>&1 &
preforkd_pid=$!

begin "wait for 4 ready workers (preforkctl status)"
ready=0
for _ in $(seq 1 200); do  # 20 s
  kill -0 "$preforkd_pid" 2>/dev/null || fail "preforkd exited early"
  ready=$(preforkctl --json status 2>/dev/null | grep -o '"state":"ready"' | wc -l || true)
  [ "$ready" -eq 4 ] && break
  sleep 0.1
done
[ "$ready" -eq 4 ] || fail "$ready ready workers after 20 s, expected 4"
preforkctl status
for w in $(cat "/proc/$preforkd_pid/task/$preforkd_pid/children"); do
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$w/status")
  [ "$uid" = "$(id -u nobody)" ] || fail "worker $w runs as uid $uid, not nobody"
done
echo "4 workers, all running as nobody"

begin "an echo round trip through nc 127.0.0.1 7000"
reply=$(printf 'hello from check-package\n' | nc -N -w 5 127.0.0.1 7000)
[ "$reply" = "hello from check-package" ] || fail "nc got \"$reply\""
echo "echoed: $reply"

begin "preforkctl --json status"
json=$(preforkctl --json status)
echo "$json"
case "$json" in '{'*'"ok":true'*'"name":"echo"'*) ;; *) fail "not an ok reply for the echo program" ;; esac

begin "SIGTERM: graceful stop, exit 0"
kill -TERM "$preforkd_pid"
for _ in $(seq 1 400); do  # 40 s: shutdown_timeout is 30 s
  kill -0 "$preforkd_pid" 2>/dev/null || break
  sleep 0.1
done
rc=0
kill -0 "$preforkd_pid" 2>/dev/null && fail "preforkd still runs 40 s after SIGTERM"
wait "$preforkd_pid" || rc=$?
preforkd_pid=""
[ "$rc" -eq 0 ] || fail "preforkd exited with $rc"
[ ! -e /run/preforkd/preforkd.sock ] || fail "the control socket is left behind"
[ ! -e /run/preforkd/preforkd.pid ] || fail "the pidfile is left behind"
grep 'shutdown complete' "$work/preforkd.log"

begin "dpkg --purge"
dpkg --purge preforkd >/dev/null
installed=0

begin "no file of the package is left"
if dpkg -L preforkd >/dev/null 2>&1; then fail "dpkg -L still knows preforkd"; fi
left=$(comm -23 "$work/dpkg-L" "$work/existed-before" | while IFS= read -r p; do
         if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
       done)
[ -z "$left" ] || fail "left behind after the purge: $left"
[ ! -e /etc/preforkd ] || fail "/etc/preforkd is left behind"
[ ! -e /var/log/preforkd ] || fail "/var/log/preforkd is left behind"
echo "$(wc -l <"$work/dpkg-L") paths installed, none left"

step=""
echo "check-package: all steps passed in $(( $(date +%s) - t0 )) s"
