#!/bin/sh
# T1: the supervisor installs no signal handler at all: every signal it acts
# on is blocked and read from a signalfd. The only sigaction/signal calls
# allowed set SIG_DFL (sys/signal_fd.cpp, and the child path of sys/spawn.cpp).
set -eu
src=${1:?usage: no_signal_handlers.sh SUPERVISOR_DIR}
# A call with arguments, not a member like ExitStatus::signal().
bad=$(grep -rnE '(^|[^.>_[:alnum:]])(sigaction|signal|sigset|bsd_signal)[[:space:]]*\([^)]' "$src" \
      | grep -vE 'sys/(signal_fd|spawn)\.cpp:' | grep -vE '^\S+:\s*//' || true)
handlers=$(grep -rnE 'sa_handler\s*=|sa_sigaction\s*=' "$src" | grep -v 'SIG_DFL' || true)
if [ -n "$bad$handlers" ]; then
  echo "signal handler code outside the allowed places:"; echo "$bad"; echo "$handlers"
  exit 1
fi
echo "no signal handler in $src"
