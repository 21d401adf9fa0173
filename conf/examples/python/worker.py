#!/usr/bin/python3
"""A plain HTTP worker for preforkd: standard library and the preforkd module.

Answers every request with the pid that served it, one connection at a time
(Connection: close), and reports to preforkd: READY=1, STATUS, the
`requests` counter and BUSY. TERM ends it after the request in hand, or
within a second when it has none.
"""
import os
import signal
import socket
import struct

import preforkd

stopping = False


def on_term(signum, frame):
    # Only a flag: raising here could land between accept() returning and
    # the connection being kept, and drop a connection the kernel gave us.
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)


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
# accept() gives up after 1 s (EAGAIN), so that the loop sees a TERM that
# came while it waited. SO_RCVTIMEO belongs to the socket every worker of
# this program shares: they all set the same (never O_NONBLOCK, see
# preforkd-worker(7)).
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
served = 0
preforkd.status("idle")
preforkd.ready()
while not stopping:
    try:
        conn, _ = sock.accept()
    except (BlockingIOError, InterruptedError):
        continue                # no connection within 1 s: look at `stopping`
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
