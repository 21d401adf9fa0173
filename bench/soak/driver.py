#!/usr/bin/python3
"""bench/soak/driver.py — the soak run behind bench/soak.sh (see there).

Runs preforkd with two programs on 127.0.0.1, preforkd-echo --http and
Debian's gunicorn, under checked load (soak-client, one per program), and
meanwhile: a SIGKILL to a random worker every 50 ms, a HUP with a changed
command every 10 s, a USR2 (in-place upgrade) every 60 s, TTIN/TTOU storms,
and `preforkctl status` and GET /metrics clients hammering in parallel.

Two phases. "chaos" (the first 75 % by default): all of the above. "calm"
(the rest): everything but the SIGKILLs, once every program is back to its
full count of ready workers. In the calm phase every client failure counts
against preforkd, since no worker is killed; in the chaos phase resets and
timeouts are what killed workers cost their clients and are reported, not
failed on (refused connections and bad responses fail either phase).

Prints a summary and writes it as JSON; exits 1 if a must-be-zero count is
not zero or preforkd's fds or RSS grew beyond the bound, 2 if the set-up
failed. Standard library only; /usr/bin/python3 (Debian's, as gunicorn).
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

ECHO_WORKERS = 8
WEB_WORKERS = 2
GUNICORN_APP = """\
def wsgi(environ, start_response):
    body = b'hello from gunicorn\\n'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"""

# What may grow between the start and the end of the run (same workers, all
# ready, no client connected): a few fds (a control or metrics client being
# closed as we look), and the RSS by what allocator caches and log buffers
# may keep.
FD_BOUND = 4
RSS_BOUND_KIB = 4096
# A child still a zombie this long after it was first seen has not been reaped.
ZOMBIE_AFTER = 5.0


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    for _ in range(200):
        p = random.randint(20000, 30000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            pass
        finally:
            s.close()
    raise RuntimeError("no free port")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def children(pid):
    return [int(p) for p in read(f"/proc/{pid}/task/{pid}/children").split()]


def proc_state(pid):
    s = read(f"/proc/{pid}/stat")
    return s[s.rfind(")") + 2] if ")" in s else None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_kib(pid):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def cmdline(pid):
    return read(f"/proc/{pid}/cmdline").replace("\0", " ")


class Soak:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.tmp = args.tmp
        self.sock = os.path.join(self.tmp, "ctl.sock")
        self.conf = os.path.join(self.tmp, "preforkd.yaml")
        self.logfile = os.path.join(self.tmp, "preforkd.log")
        self.echo_port = free_port()
        self.web_port = free_port()
        while self.web_port == self.echo_port:
            self.web_port = free_port()
        self.metrics_port = free_port()
        self.stop = threading.Event()        # everything stops
        self.chaos = threading.Event()       # SIGKILLs allowed
        self.lock = threading.Lock()
        self.counts = {"killed": 0, "killed_gunicorn": 0, "hup": 0, "usr2": 0, "ttin": 0, "ttou": 0,
                       "storms": 0, "restores": 0, "restore_failures": 0,
                       "status_calls": 0, "status_failures": 0, "metrics_calls": 0, "metrics_failures": 0}
        self.status_latencies = []
        self.metrics_latencies = []
        self.failure_examples = []
        self.notes = []
        self.failed_calls = []  # (kind, wall start, wall end, why) of failed status and /metrics calls
        self.zombie_seen = {}      # pid -> first time seen as Z
        self.zombies_persistent = set()
        self.zombie_times = []  # (pid, wall clock when it had been a zombie for ZOMBIE_AFTER)
        self.zombie_age_max = 0.0
        self.zombies_transient = 0
        self.fd_max = 0
        self.rss_max = 0
        self.variant = 0
        self.pf = None
        self.calm_metrics = ""

    # ---- set-up ----
    def config(self, variant):
        echo_cmd = [f"{self.build}/bin/preforkd-echo", "--http"]
        if variant % 2:
            echo_cmd += ["--io-threads", "2"]
        # A change to the command replaces every worker: keep-alive 2 <-> 3.
        web_cmd = ["/usr/bin/gunicorn", "--workers", "1", "--keep-alive", str(2 + variant % 2), "app:wsgi"]
        q = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"
        # backoff: a worker killed every second or so must come back at
        # once, not after a 30 s backoff. guard off: a rollout whose new
        # worker is SIGKILLed would otherwise be rolled back every time.
        return f"""supervisor:
  control_socket: {self.sock}
  metrics: "127.0.0.1:{self.metrics_port}"
  shutdown_timeout: 20s
programs:
  echo:
    command: {q(echo_cmd)}
    workers: {ECHO_WORKERS}
    listen: ["127.0.0.1:{self.echo_port}"]
    ready: notify
    stdout: null
    backoff: {{ min: 50ms, max: 500ms, reset_after: 200ms }}
    reload: {{ batch: 50%, settle: 200ms, guard: 0s }}
    stop_timeout: 5s
  web:
    command: {q(web_cmd)}
    directory: {self.tmp}
    workers: {WEB_WORKERS}
    listen: ["127.0.0.1:{self.web_port}"]
    ready: notify
    start_timeout: 20s
    backoff: {{ min: 50ms, max: 500ms, reset_after: 200ms }}
    reload: {{ batch: 1, settle: 200ms, guard: 0s }}
    stop_timeout: 5s
"""

    def write_config(self, variant):
        tmp = self.conf + ".new"
        with open(tmp, "w") as f:
            f.write(self.config(variant))
        os.rename(tmp, self.conf)

    def ctl(self, *args, timeout=30):
        return subprocess.run([f"{self.build}/bin/preforkctl", "-s", self.sock, *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        r = self.ctl("--json", "status", timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def all_ready(self):
        try:
            st = self.status()
        except (subprocess.TimeoutExpired, ValueError):
            return False
        if not st:
            return False
        want = {"echo": ECHO_WORKERS, "web": WEB_WORKERS}
        for p in st["programs"]:
            ws = p["workers"]
            if len(ws) != want.get(p["name"], -1) or any(w["state"] != "ready" or w.get("retiring") for w in ws):
                return False
        return True

    def wait_all_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.all_ready():
                return True
            time.sleep(0.2)
        return False

    def restore(self):
        """Back to the configured counts after TTIN/TTOU: scale replies when done."""
        ok = True
        for prog, n in (("echo", ECHO_WORKERS), ("web", WEB_WORKERS)):
            try:
                r = self.ctl("scale", prog, str(n), timeout=60)
                ok = ok and r.returncode == 0
                if r.returncode != 0:
                    self.note(f"scale {prog} {n}: exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
            except subprocess.TimeoutExpired:
                ok = False
                self.note(f"scale {prog} {n}: no answer in 60 s")
        return ok

    def note(self, text):
        """Something worth knowing that fails nothing (a scale that a SIGKILL
        interrupted says so, and the worker is retried)."""
        with self.lock:
            if len(self.notes) < 20:
                self.notes.append(text[:300])

    def example(self, text):
        with self.lock:
            if len(self.failure_examples) < 20:
                self.failure_examples.append(text[:300])

    # ---- the disturbances ----
    def killer(self):
        """A SIGKILL to a random worker every 50 ms while in chaos. A gunicorn
        (seconds of CPU to boot on a small machine) is the victim with
        probability --gunicorn-share; preforkd-echo otherwise."""
        me = self.pf.pid
        nxt = time.monotonic()
        while not self.stop.is_set():
            nxt += 0.05
            time.sleep(max(0.0, nxt - time.monotonic()))
            if not self.chaos.is_set():
                continue
            kids = [(c, cmdline(c)) for c in children(me)]
            kids = [(c, cmd) for c, cmd in kids if proc_state(c) not in (None, "Z") and "--upgrade-check" not in cmd]
            web = [c for c, cmd in kids if "gunicorn" in cmd]
            echo = [c for c, cmd in kids if "preforkd-echo" in cmd]
            pool = web if (web and (random.random() < self.args.gunicorn_share or not echo)) else echo
            if not pool:
                continue
            victim = random.choice(pool)
            try:
                os.kill(victim, signal.SIGKILL)
                with self.lock:
                    self.counts["killed"] += 1
                    if pool is web:
                        self.counts["killed_gunicorn"] += 1
            except ProcessLookupError:
                pass

    def every(self, period, first, action):
        t = time.monotonic() + first
        while not self.stop.wait(max(0.0, t - time.monotonic())):
            action()
            t += period

    def hup(self):
        self.variant += 1
        self.write_config(self.variant)
        os.kill(self.pf.pid, signal.SIGHUP)
        with self.lock:
            self.counts["hup"] += 1

    def usr2(self):
        os.kill(self.pf.pid, signal.SIGUSR2)
        with self.lock:
            self.counts["usr2"] += 1

    def storm(self):
        """Five TTIN/TTOU pairs back to back, then back to the configured counts."""
        for _ in range(5):
            os.kill(self.pf.pid, signal.SIGTTIN)
            os.kill(self.pf.pid, signal.SIGTTOU)
        with self.lock:
            self.counts["ttin"] += 5
            self.counts["ttou"] += 5
            self.counts["storms"] += 1
        if self.stop.wait(1.0):
            return
        ok = self.restore()
        with self.lock:
            self.counts["restores"] += 1
            self.counts["restore_failures"] += 0 if ok else 1

    def status_hammer(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = self.ctl("status", timeout=30)
                ok = r.returncode == 0
                why = f"exit {r.returncode}: {r.stderr.strip()}"
            except subprocess.TimeoutExpired:
                ok, why = False, "no answer in 30 s"
            dt = time.monotonic() - t0
            with self.lock:
                self.counts["status_calls"] += 1
                self.status_latencies.append(dt)
                if not ok:
                    self.failed_calls.append(("status", time.time() - dt, time.time(), why))

    def metrics_hammer(self):
        req = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        while not self.stop.is_set():
            t0 = time.monotonic()
            got = b""
            try:
                with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=30) as s:
                    s.sendall(req)
                    while True:
                        b = s.recv(65536)
                        if not b:
                            break
                        got += b
                ok = got.startswith(b"HTTP/1.1 200") and b"\npreforkd_up 1\n" in got
                why = got[:80]
            except OSError as e:
                ok, why = False, str(e)
            dt = time.monotonic() - t0
            with self.lock:
                self.counts["metrics_calls"] += 1
                self.metrics_latencies.append(dt)
                if not ok:
                    self.failed_calls.append(("metrics", time.time() - dt, time.time(), str(why)))
            time.sleep(0.01)

    def sampler(self):
        """Zombies among preforkd's children, its fds and RSS, every 250 ms.
        A child is a zombie from its death to preforkd's next loop iteration
        (it reaps every iteration, T2): with 20 deaths a second, samples see
        some. One still a zombie ZOMBIE_AFTER seconds after it was first seen
        (on a loaded machine preforkd may wait that long for a CPU) is
        counted as a zombie; the longest-lived one is reported either way."""
        me = self.pf.pid
        while not self.stop.wait(0.25):
            now = time.monotonic()
            zs = {c for c in children(me) if proc_state(c) == "Z"}
            with self.lock:
                for z in zs:
                    if z not in self.zombie_seen:
                        self.zombie_seen[z] = now
                        self.zombies_transient += 1
                    else:
                        self.zombie_age_max = max(self.zombie_age_max, now - self.zombie_seen[z])
                        if now - self.zombie_seen[z] >= ZOMBIE_AFTER and z not in self.zombies_persistent:
                            self.zombies_persistent.add(z)
                            self.zombie_times.append((z, time.strftime("%H:%M:%S")))
                for z in list(self.zombie_seen):
                    if z not in zs:
                        del self.zombie_seen[z]
                self.fd_max = max(self.fd_max, fd_count(me))
                self.rss_max = max(self.rss_max, rss_kib(me))

    def fetch_metrics(self):
        text = ""
        try:
            with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    text += b.decode()
        except OSError:
            pass
        return text

    def final_zombies(self):
        me = self.pf.pid
        first = {c for c in children(me) if proc_state(c) == "Z"}
        time.sleep(1.0)
        return sorted(c for c in first if proc_state(c) == "Z" and c in children(me))

    # ---- the run ----
    def run(self):
        a = self.args
        with open(os.path.join(self.tmp, "app.py"), "w") as f:
            f.write(GUNICORN_APP)
        self.write_config(0)
        log(f"preforkd: echo (preforkd-echo --http) x{ECHO_WORKERS} on 127.0.0.1:{self.echo_port}, "
            f"web (gunicorn) x{WEB_WORKERS} on 127.0.0.1:{self.web_port}, metrics on 127.0.0.1:{self.metrics_port}")
        logf = open(self.logfile, "w")
        self.pf = subprocess.Popen([f"{self.build}/bin/preforkd", "-c", self.conf], stdout=logf, stderr=subprocess.STDOUT)
        if not self.wait_all_ready(60):
            log("set-up failed: not every worker became ready in 60 s; the log ends with:")
            print(read(self.logfile)[-3000:])
            self.pf.kill()
            return 2
        pid = self.pf.pid
        fd_start, rss_start = fd_count(pid), rss_kib(pid)
        log(f"ready: preforkd pid {pid}, {fd_start} fds, RSS {rss_start} KiB")

        clients = []
        for name, port, body, threads, keepalive in (("echo", self.echo_port, "ok\\n", 4, 20),
                                                     ("web", self.web_port, "hello from gunicorn\\n", 2, 1)):
            clients.append(subprocess.Popen(
                [a.client, "--port", str(port), "--expect", body, "--threads", str(threads),
                 "--keepalive", str(keepalive), "--timeout-ms", "10000", "--pause-us", str(a.pause_us),
                 "--name", name], stdout=subprocess.PIPE, text=True))

        duration = a.minutes * 60.0
        calm_at = duration * (1.0 - a.calm)
        self.chaos.set()
        threads = [threading.Thread(target=self.killer, daemon=True),
                   threading.Thread(target=self.sampler, daemon=True),
                   threading.Thread(target=self.every, args=(10, 10, self.hup), daemon=True),
                   threading.Thread(target=self.every, args=(60, 30, self.usr2), daemon=True),
                   threading.Thread(target=self.every, args=(15, 5, self.storm), daemon=True)]
        threads += [threading.Thread(target=self.status_hammer, daemon=True) for _ in range(2)]
        threads += [threading.Thread(target=self.metrics_hammer, daemon=True) for _ in range(2)]
        start = time.monotonic()
        for t in threads:
            t.start()
        log(f"chaos for {calm_at:.0f} s (SIGKILL every 50 ms, HUP every 10 s, USR2 every 60 s from 30 s, "
            f"TTIN/TTOU storms every 15 s, status and /metrics clients), then calm to {duration:.0f} s")

        time.sleep(max(0.0, start + calm_at - time.monotonic()))
        self.chaos.clear()
        log("calm: no more SIGKILLs; waiting until every worker is back and ready")
        back = self.wait_all_ready(60)
        for c in clients:
            c.send_signal(signal.SIGUSR1)  # from here on, client failures count in phase 1
        calm_started = time.monotonic()
        self.calm_metrics = self.fetch_metrics()
        if not back:
            self.note("calm: not every worker was ready 60 s after the last SIGKILL")
        time.sleep(max(0.0, start + duration - time.monotonic()))
        calm_seconds = time.monotonic() - calm_started

        log("end: stopping the load and the disturbances")
        for c in clients:
            c.send_signal(signal.SIGTERM)
        results = []
        for c in clients:
            out, _ = c.communicate(timeout=60)
            results.append(json.loads(out))
        self.stop.set()
        for t in threads:
            t.join(timeout=90)
        # A storm may have left other counts, a last HUP a rollout under way.
        self.restore()
        settled = self.wait_all_ready(120)
        time.sleep(1.0)  # control and metrics clients closed on preforkd's side
        fd_end, rss_end = fd_count(pid), rss_kib(pid)
        zombies_end = self.final_zombies()
        metrics = self.fetch_metrics()
        same_pid = self.pf.poll() is None
        self.pf.send_signal(signal.SIGTERM)
        try:
            exit_code = self.pf.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.pf.kill()
            exit_code = -9
        logf.close()
        plog = read(self.logfile)
        return self.report(results, {
            "fd_start": fd_start, "fd_end": fd_end, "rss_start": rss_start, "rss_end": rss_end,
            "zombies_end": zombies_end, "metrics": metrics, "exit_code": exit_code, "same_pid": same_pid,
            "settled": settled, "calm_seconds": calm_seconds, "plog": plog, "duration": duration,
            "chaos_seconds": calm_at})

    def report(self, clients, end):
        a = self.args

        def metric(name, text=None):
            total = 0.0
            for line in (end["metrics"] if text is None else text).splitlines():
                if line.startswith(name):
                    try:
                        total += float(line.rsplit(" ", 1)[1])
                    except ValueError:
                        pass
            return int(total)

        def phase(n):
            out = {}
            for c in clients:
                for k, v in c[f"phase{n}"].items():
                    out[k] = out.get(k, 0) + v
            return out

        # preforkd(8): control (and metrics) clients connected at the moment
        # of an upgrade's exec see their connection close. A failed call
        # whose time span holds a "handing over" of the log is that.
        handovers = []
        for line in end["plog"].splitlines():
            if "handing over to" in line:
                try:
                    handovers.append(time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + float(line[19:23]))
                except ValueError:
                    pass
        for kind in ("status", "metrics"):
            self.counts[f"{kind}_failures"] = 0
            self.counts[f"{kind}_closed_by_upgrade"] = 0
        for kind, t0, t1, why in self.failed_calls:
            if any(t0 - 0.5 <= h <= t1 + 0.5 for h in handovers):
                self.counts[f"{kind}_closed_by_upgrade"] += 1
            else:
                self.counts[f"{kind}_failures"] += 1
                self.example(f"{'preforkctl status' if kind == 'status' else 'GET /metrics'}: {why}")
        lat = sorted(self.status_latencies)
        mlat = sorted(self.metrics_latencies)
        pct = lambda xs, q: round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None
        chaos, calm = phase(0), phase(1)
        zombies = len(self.zombies_persistent) + len(end["zombies_end"])
        upgrades_done = end["plog"].count("took over")
        summary = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "minutes": a.minutes,
            "chaos_seconds": round(end["chaos_seconds"]), "calm_seconds": round(end["calm_seconds"]),
            "programs": {"echo": f"preforkd-echo --http x{ECHO_WORKERS}", "web": f"gunicorn x{WEB_WORKERS}"},
            "connections": chaos.get("connections", 0) + calm.get("connections", 0),
            "requests_ok": chaos.get("ok", 0) + calm.get("ok", 0),
            "failed": {
                "chaos": {k: chaos.get(k, 0) for k in ("refused", "reset", "timeout", "bad", "idle_close", "client_error")},
                "calm": {k: calm.get(k, 0) for k in ("refused", "reset", "timeout", "bad", "idle_close", "client_error")},
            },
            "clients": clients,
            "workers_killed": self.counts["killed"], "gunicorn_killed": self.counts["killed_gunicorn"],
            "reloads": {"hup_sent": self.counts["hup"], "ok": metric('preforkd_reloads_total{result="ok"}'),
                        "failed": metric('preforkd_reloads_total{result="failed"}'),
                        "calm_ok": metric('preforkd_reloads_total{result="ok"}') -
                        metric('preforkd_reloads_total{result="ok"}', self.calm_metrics),
                        "calm_failed": metric('preforkd_reloads_total{result="failed"}') -
                        metric('preforkd_reloads_total{result="failed"}', self.calm_metrics)},
            "upgrades": {"usr2_sent": self.counts["usr2"], "took_over": upgrades_done,
                         "same_pid": end["same_pid"]},
            "storms": {"storms": self.counts["storms"], "ttin": self.counts["ttin"], "ttou": self.counts["ttou"],
                       "restore_failures": self.counts["restore_failures"]},
            "zombies": zombies,
            "zombies_detail": {"persistent_during_run": self.zombie_times,
                               "at_end": end["zombies_end"], "transient_seen": self.zombies_transient,
                               "longest_seen_s": round(self.zombie_age_max, 2)},
            "preforkd": {"fd_start": end["fd_start"], "fd_end": end["fd_end"], "fd_max": self.fd_max,
                         "rss_kib_start": end["rss_start"], "rss_kib_end": end["rss_end"], "rss_kib_max": self.rss_max,
                         "exit_code": end["exit_code"]},
            "status": {"calls": self.counts["status_calls"], "failures": self.counts["status_failures"],
                       "closed_by_upgrade": self.counts["status_closed_by_upgrade"],
                       "max_s": pct(lat, 1.0), "p99_s": pct(lat, 0.99), "p50_s": pct(lat, 0.5)},
            "metrics_clients": {"calls": self.counts["metrics_calls"], "failures": self.counts["metrics_failures"],
                                "closed_by_upgrade": self.counts["metrics_closed_by_upgrade"],
                                "max_s": pct(mlat, 1.0), "p99_s": pct(mlat, 0.99)},
            "worker_exits": {r: metric(f'preforkd_worker_exits_total{{program="echo",reason="{r}"}}') +
                             metric(f'preforkd_worker_exits_total{{program="web",reason="{r}"}}')
                             for r in ("exit", "signal", "watchdog", "start_timeout", "recycled")},
            "orphans": metric("preforkd_orphans_total"),
            "examples": self.failure_examples,
            "notes": self.notes,
        }
        # The verdict.
        problems = []
        for ph in ("chaos", "calm"):
            for k in ("refused", "bad"):
                if summary["failed"][ph][k]:
                    problems.append(f"{ph}: {summary['failed'][ph][k]} {k}")
        for k in ("reset", "timeout"):
            if summary["failed"]["calm"][k]:
                problems.append(f"calm: {summary['failed']['calm'][k]} {k} with no worker killed")
        if zombies:
            problems.append(f"{zombies} zombie(s)")
        if end["fd_end"] - end["fd_start"] > FD_BOUND:
            problems.append(f"fds grew {end['fd_start']} -> {end['fd_end']} (bound +{FD_BOUND})")
        if end["rss_end"] - end["rss_start"] > RSS_BOUND_KIB:
            problems.append(f"RSS grew {end['rss_start']} -> {end['rss_end']} KiB (bound +{RSS_BOUND_KIB})")
        if self.counts["status_failures"]:
            problems.append(f"{self.counts['status_failures']} preforkctl status call(s) failed")
        if self.counts["metrics_failures"]:
            problems.append(f"{self.counts['metrics_failures']} GET /metrics call(s) failed")
        if summary["reloads"]["calm_failed"]:
            problems.append(f"calm: {summary['reloads']['calm_failed']} reload(s) failed with no worker killed")
        if self.counts["usr2"] and upgrades_done != self.counts["usr2"]:
            problems.append(f"{self.counts['usr2']} USR2 sent, {upgrades_done} upgrade(s) done")
        if not end["same_pid"] or end["exit_code"] != 0:
            problems.append(f"preforkd did not stay up and exit 0 (exit {end['exit_code']})")
        if not end["settled"]:
            problems.append("not every worker ready again at the end")
        if summary["connections"] == 0 or summary["requests_ok"] == 0:
            problems.append("no load went through")
        summary["verdict"] = "pass" if not problems else "fail"
        summary["problems"] = problems

        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        self.print_summary(summary)
        log(f"written to {a.out}")
        return 0 if not problems else 1

    def print_summary(self, s):
        f, p = s["failed"], s["preforkd"]
        lines = [
            f"== soak: {s['minutes']} min ({s['chaos_seconds']} s chaos, {s['calm_seconds']} s calm), "
            f"{s['programs']['echo']} + {s['programs']['web']}",
            f"connections made        {s['connections']}",
            f"requests answered right {s['requests_ok']}",
            "failed, by kind          chaos (SIGKILLs)  calm (none)   must be 0",
        ]
        for k, must in (("refused", "both phases"), ("bad", "both phases"), ("reset", "calm"),
                        ("timeout", "calm"), ("idle_close", "never (retried)"), ("client_error", "never (ours)")):
            name = "bad response" if k == "bad" else k
            lines.append(f"  {name:<22} {f['chaos'][k]:>16}  {f['calm'][k]:>11}   {must}")
        lines += [
            f"workers killed          {s['workers_killed']} (gunicorn {s['gunicorn_killed']})",
            f"reloads (HUP)           {s['reloads']['hup_sent']} sent: {s['reloads']['ok']} ok, "
            f"{s['reloads']['failed']} failed (a canary SIGKILLed aborts its rollout); in the calm phase "
            f"{s['reloads']['calm_ok']} ok, {s['reloads']['calm_failed']} failed",
            f"upgrades (USR2)         {s['upgrades']['usr2_sent']} sent, {s['upgrades']['took_over']} took over, "
            f"same pid: {s['upgrades']['same_pid']}",
            f"TTIN/TTOU storms        {s['storms']['storms']} ({s['storms']['ttin']} TTIN, {s['storms']['ttou']} TTOU)",
            f"zombies                 {s['zombies']} (children of preforkd in state Z for {ZOMBIE_AFTER:g} s, sampled "
            f"every 250 ms, or at the end; {s['zombies_detail']['transient_seen']} seen between a death and its reap, "
            f"the longest for {s['zombies_detail']['longest_seen_s']} s)",
            f"preforkd fds            {p['fd_start']} -> {p['fd_end']} (max {p['fd_max']})",
            f"preforkd RSS            {p['rss_kib_start']} -> {p['rss_kib_end']} KiB (max {p['rss_kib_max']})",
            f"preforkctl status       {s['status']['calls']} calls, {s['status']['failures']} failed "
            f"(+{s['status']['closed_by_upgrade']} closed by an upgrade's exec), "
            f"longest {s['status']['max_s']} s (p99 {s['status']['p99_s']} s)",
            f"GET /metrics            {s['metrics_clients']['calls']} calls, {s['metrics_clients']['failures']} failed "
            f"(+{s['metrics_clients']['closed_by_upgrade']} closed by an upgrade's exec), "
            f"longest {s['metrics_clients']['max_s']} s",
            f"worker exits (metrics)  {s['worker_exits']}, orphans stopped {s['orphans']}",
            "In the chaos phase a reset (RST, or EOF before a whole response) is a worker killed with the",
            "connection in hand, and a timeout a program with every worker killed or backing off: the",
            "workers' lot, not preforkd's. preforkd holds the listening sockets, so a refused connection is",
            "its failure in any phase, as is a bad response; and in the calm phase, with no worker killed,",
            "every failure is. idle_close: an idle keep-alive connection closed by a stopping worker, retried.",
            "A status or /metrics call connected at the moment of an upgrade's exec sees its connection",
            "close (preforkd(8), IN-PLACE UPGRADE): counted apart; any other failed call fails the run.",
            f"verdict: {s['verdict'].upper()}" + ("" if not s["problems"] else ": " + "; ".join(s["problems"])),
        ]
        if s["examples"]:
            lines.append("failures, e.g.: " + " | ".join(s["examples"][:5]))
        print("\n".join(lines), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calm", type=float, default=0.25, help="the calm share of the run")
    ap.add_argument("--gunicorn-share", type=float, default=0.05, help="share of the SIGKILLs that hit gunicorn")
    ap.add_argument("--pause-us", type=int, default=1000, help="each client thread's pause between requests")
    args = ap.parse_args()
    soak = Soak(args)
    try:
        sys.exit(soak.run())
    finally:
        if soak.pf and soak.pf.poll() is None:
            soak.pf.kill()
            soak.pf.wait()


if __name__ == "__main__":
    main()
