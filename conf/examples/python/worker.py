#!/usr/bin/python3
"""A plain HTTP worker for preforkd: standard library and the preforkd module.

Answers every request with the pid that served it, one connection at a time
(Connection: close), and reports to preforkd: READY=1, STATUS, the
`requests` counter and BUSY.
"""
import os
import signal
import socket

import preforkd

idle, stopping = False, False


def on_term(signum, frame):
    global stopping
    stopping = True
    if idle:                    # blocked in accept(): leave at once
        raise SystemExit(0)


signal.signal(signal.SIGTERM, on_term)
# A tick that interrupts accept(), so that a TERM which came just before it
# blocked still ends the worker.
signal.signal(signal.SIGALRM, lambda signum, frame: None)
signal.setitimer(signal.ITIMER_REAL, 1, 1)


def handle(conn):
    conn.settimeout(10)         # the accepted socket is ours alone
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    body = b"hello from python pid %d\n" % os.getpid()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


sockets = preforkd.listen_sockets()
if not sockets:
    raise SystemExit("no listening socket: run me under preforkd")
sock = sockets[0]
served = 0
preforkd.status("idle")
preforkd.ready()
while not stopping:
    idle = True
    conn, _ = sock.accept()
    idle = False
    preforkd.busy(True)
    with conn:
        try:
            handle(conn)
        except OSError:
            pass
    served += 1
    preforkd.counter("requests")
    preforkd.status("served %d requests" % served)
    preforkd.busy(False)
