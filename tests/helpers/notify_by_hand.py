#!/usr/bin/python3
"""A worker that sends sd_notify's datagram by hand, as the preforkd-worker(7)
example does: no library, only the socket module.

  notify_by_hand.py [--oversized] [--long-line]

Sends "READY=1\\nSTATUS=by hand" to NOTIFY_SOCKET, then sleeps until SIGTERM
(exit 0). With --oversized it first sends a datagram too long for preforkd
(10000 bytes), which must be dropped and counted, not make anything ready.
With --long-line it first sends a datagram that fits (6000 bytes) but holds
a line over the 4096-byte line limit: that line is counted, the one before
it is read.
"""
import os
import signal
import socket
import sys

addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(addr)
if "--oversized" in sys.argv:
    sock.send(b"READY=1\nSTATUS=" + b"x" * 10000)
if "--long-line" in sys.argv:
    sock.send(b"COUNTER_before_long=1\nSTATUS=" + b"y" * 6000)
sock.send(b"READY=1\nSTATUS=by hand")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
