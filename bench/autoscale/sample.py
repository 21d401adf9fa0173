#!/usr/bin/env python3
"""Samples preforkd's /metrics every INTERVAL seconds until killed (bench/autoscale.sh).

Usage: sample.py METRICS_PORT PROGRAM INTERVAL OUT

One line per scrape: monotonic_ns workers ready busy queue ups downs
(monotonic_ns: CLOCK_MONOTONIC at the middle of the scrape; workers: the
program's processes in any state but stopped; queue: its accept queues,
summed). Only 127.0.0.1 is contacted.
"""
import re
import sys
import time
import urllib.request

LINE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def scrape(url, program):
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    v = dict(workers=0, ready=0, busy=0, queue=0, ups=0, downs=0)
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))
        if labels.get('program') != program:
            continue
        if name == 'preforkd_workers' and labels.get('state') != 'stopped':
            v['workers'] += value
            if labels.get('state') == 'ready':
                v['ready'] += value
        elif name == 'preforkd_workers_busy':
            v['busy'] += value
        elif name == 'preforkd_listen_queue':
            v['queue'] += value
        elif name == 'preforkd_autoscale_total':
            v['ups' if labels.get('direction') == 'up' else 'downs'] += value
    return v


def main():
    port, program, interval, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    url = 'http://127.0.0.1:%s/metrics' % port
    with open(out, 'w', buffering=1) as f:  # a line at a time: the script ends us with SIGTERM
        next_t = time.monotonic()
        while True:
            t_a = time.monotonic_ns()
            try:
                v = scrape(url, program)
            except OSError as e:  # also while preforkd is starting
                print('sample.py: %s: %s' % (url, e), file=sys.stderr)
            else:
                t = (t_a + time.monotonic_ns()) // 2
                f.write('%d %d %d %d %d %d %d\n' % (t, v['workers'], v['ready'], v['busy'], v['queue'],
                                                     v['ups'], v['downs']))
            next_t += interval
            time.sleep(max(0.0, next_t - time.monotonic()))


if __name__ == '__main__':
    main()
