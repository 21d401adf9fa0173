#!/usr/bin/python3
"""A worker that reports only through the Python helper library (lib/python).

On start: GAUGE connections=7, COUNTER requests +3 then +2 (so 5), BUSY=1,
STATUS "python lib: <socket names>", then READY=1. Each of its listening
sockets answers every connection with its name (from LISTEN_FDNAMES) and
closes it. With LIB_TEST_NO_PIPE=1 it forgets PREFORKD_NOTIFY_FD first, so
that the library falls back to NOTIFY_SOCKET datagrams. SIGTERM: exit 0.
"""
import os
import signal
import sys
import threading

if os.environ.get("LIB_TEST_NO_PIPE") == "1":
    del os.environ["PREFORKD_NOTIFY_FD"]

import preforkd  # noqa: E402  (PYTHONPATH: lib/python of the source tree)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve(sock, name):
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.sendall(name.encode() + b"\n")


named = preforkd.named_sockets()
assert preforkd.listen_sockets() == list(named.values())   # the same objects again
for name, sock in named.items():
    threading.Thread(target=serve, args=(sock, name), daemon=True).start()
ok = [preforkd.gauge("connections", 7), preforkd.counter("requests", 3), preforkd.counter("requests", 2),
      preforkd.busy(True), preforkd.status("python lib: " + ",".join(named)), preforkd.ready()]
if not all(ok):
    sys.exit("a report failed: %r" % (ok,))
while True:
    signal.pause()
