"""preforkd: report to preforkd from a Python worker, and find its sockets.

Standard library only. Under preforkd (see preforkd-worker(7)) the
functions write lines of the notify protocol to the pipe named by
PREFORKD_NOTIFY_FD, or, without one, send them as datagrams to
NOTIFY_SOCKET (so that they also work under systemd). Run by anything
else they do nothing and return False, so a worker runs unchanged
outside preforkd.

    import preforkd
    sock = preforkd.listen_sockets()[0]   # fd 3, blocking: never settimeout()
    preforkd.ready()
    while True:
        conn, _ = sock.accept()
        preforkd.busy(True)
        ...
        preforkd.counter("requests")      # +1, sent as the running total
        preforkd.busy(False)

Telemetry never blocks: a line that does not fit into the pipe at once,
or that finds preforkd gone, is dropped and the function returns False.
"""

import os
import re
import socket
import threading

__all__ = [
    "enabled", "notify", "ready", "stopping", "watchdog", "heartbeat", "status",
    "counter", "gauge", "busy", "listen_sockets", "listen_names", "named_sockets",
    "watchdog_usec",
]

MAX_LINE = 4096            # bytes per line, its newline included
MAX_STATUS = 512           # bytes of STATUS text preforkd keeps
LISTEN_FDS_START = 3
_NAME = re.compile(r"[a-z0-9_]{1,48}\Z")

_lock = threading.Lock()
_pipe = None                # (pid, fd) once checked, fd -1: none
_dgram = None               # (pid, socket or None)
_counters = {}              # name -> (pid, total): this process's totals
_sockets = None             # [socket.socket] once adopted


def _pipe_fd():
    global _pipe
    pid = os.getpid()
    if _pipe is None or _pipe[0] != pid:
        fd = -1
        value = os.environ.get("PREFORKD_NOTIFY_FD", "")
        if value.isdigit():
            try:
                os.fstat(int(value))
                fd = int(value)
            except OSError:
                pass
        _pipe = (pid, fd)
    return _pipe[1]


def _socket():
    global _dgram
    pid = os.getpid()
    if _dgram is None or _dgram[0] != pid:
        sock = None
        addr = os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        if addr.startswith(("/", "\0")):
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.connect(addr)
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
        _dgram = (pid, sock)
    return _dgram[1]


def enabled():
    """True when there is somewhere to report to (run by preforkd or systemd)."""
    with _lock:
        return _pipe_fd() >= 0 or _socket() is not None


def notify(*lines):
    """Sends protocol lines ("KEY=VALUE", no newline) as they are.

    Each goes out in one write, so lines of several threads or processes
    do not mix. Returns True when every line was handed over, False when
    not run under preforkd, or when the pipe was full or preforkd gone
    (the line is then dropped: telemetry never waits).
    """
    data = []
    for line in lines:
        raw = line.encode("utf-8", "replace") if isinstance(line, str) else bytes(line)
        if b"\n" in raw or len(raw) + 1 > MAX_LINE:
            raise ValueError("a notify line is one line of at most %d bytes" % (MAX_LINE - 1))
        data.append(raw + b"\n")
    with _lock:
        fd = _pipe_fd()
        sock = None if fd >= 0 else _socket()
    if fd < 0 and sock is None:
        return False
    ok = True
    for raw in data:
        try:
            if fd >= 0:
                ok = os.write(fd, raw) == len(raw) and ok
            else:
                sock.send(raw)
        except OSError:          # EAGAIN (pipe full), EPIPE (preforkd gone), ...
            ok = False
    return ok


def ready():
    """READY=1: the worker can serve (programs with `ready: notify`)."""
    return notify("READY=1")


def stopping():
    """STOPPING=1: the worker drains and no longer accepts."""
    return notify("STOPPING=1")


def watchdog():
    """WATCHDOG=1: the heartbeat, at least every third of watchdog_usec()."""
    return notify("WATCHDOG=1")


heartbeat = watchdog


def watchdog_usec():
    """The program's watchdog_timeout in microseconds, 0 without one."""
    value = os.environ.get("WATCHDOG_USEC", "")
    return int(value) if value.isdigit() else 0


def status(text):
    """STATUS=text, shown by `preforkctl status` (one line, 512 bytes kept)."""
    text = " ".join(str(text).splitlines())
    raw = text.encode("utf-8", "replace")[:MAX_STATUS]
    return notify(b"STATUS=" + raw.decode("utf-8", "ignore").encode("utf-8"))


def _check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("a counter or gauge name is 1 to 48 of a-z, 0-9 and _: %r" % (name,))


def counter(name, delta=1):
    """Adds delta (>= 0) to this process's counter `name` and reports the total.

    The protocol's counters are cumulative per worker; the total is kept
    here, per process. Processes that share one worker's pipe (a master
    and its forked children) must use different names.
    """
    _check_name(name)
    if not isinstance(delta, int) or delta < 0:
        raise ValueError("a counter only grows: delta must be an int >= 0, not %r" % (delta,))
    pid = os.getpid()
    with _lock:
        owner, total = _counters.get(name, (pid, 0))
        if owner != pid:        # forked: the parent's total is not ours
            total = 0
        total = min(total + delta, 2**64 - 1)
        _counters[name] = (pid, total)
    return notify("COUNTER_%s=%d" % (name, total))


def gauge(name, value):
    """Reports the current value (a signed 64-bit int) of gauge `name`."""
    _check_name(name)
    if not isinstance(value, int) or not -2**63 <= value < 2**63:
        raise ValueError("a gauge is a signed 64-bit int, not %r" % (value,))
    return notify("GAUGE_%s=%d" % (name, value))


def busy(flag=True):
    """BUSY=1 when a request starts, BUSY=0 (busy(False)) when it ends."""
    return notify("BUSY=1" if flag else "BUSY=0")


def _listen_count():
    if os.environ.get("LISTEN_PID", "") != str(os.getpid()):
        return 0
    value = os.environ.get("LISTEN_FDS", "")
    return int(value) if value.isdigit() else 0


def listen_names():
    """The inherited sockets' names (LISTEN_FDNAMES), in fd order."""
    n = _listen_count()
    names = os.environ.get("LISTEN_FDNAMES", "").split(":") if n else []
    return [names[i] if i < len(names) else "unknown" for i in range(n)]


def listen_sockets(inheritable=False):
    """The inherited listening sockets, fds 3 .. 3+N-1, as socket.socket objects.

    [] when none were passed to this process (LISTEN_PID is another's).
    The same objects on every call. They stay blocking: never call
    settimeout() or setblocking(False) on them, the flag would change the
    socket under every other worker (preforkd-worker(7)). Unless
    `inheritable`, they are made close-on-exec, so that programs the
    worker runs do not keep the ports open.
    """
    global _sockets
    with _lock:
        # Adopted once per process tree: a forked child keeps its parent's
        # objects (a second object on the same fd would close it twice).
        if _sockets is None:
            socks = []
            for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + _listen_count()):
                try:
                    os.set_inheritable(fd, inheritable)
                    socks.append(socket.socket(fileno=fd))
                except OSError:
                    break
            _sockets = socks
        return list(_sockets)


def named_sockets(inheritable=False):
    """{name: socket.socket} of listen_sockets() (a later duplicate name wins)."""
    return dict(zip(listen_names(), listen_sockets(inheritable)))
