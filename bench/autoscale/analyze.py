#!/usr/bin/env python3
"""The figures of bench/autoscale.sh: a table on stdout, a JSON file, a PNG chart.

Usage: analyze.py --phases NAME:LEVEL:SECONDS,... --timeout-ms MS --json OUT
                  [--png OUT] [--title TEXT] [--meta KEY=VALUE]... LABEL=DIR...

Each DIR holds one run: load.txt (bench/autoscale/loadgen.c's records),
samples.txt (bench/autoscale/sample.py's scrapes). Latencies are counted from
the moment a request was due (open loop) or sent (closed loop) until its reply
ended; a request that failed or got no reply within the timeout counts as
slower than any reply (so a p99 that lands on one prints as ">TIMEOUT").
Phases are those of the schedule, by the time a request was due.
Worker-seconds: the program's worker processes (any state but stopped)
integrated over the schedule, each sample holding until the next one.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

INF = math.inf


def percentile(sorted_values, q):
    """Nearest rank; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_load(path):
    t0 = None
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith('#'):
                t0 = int(line.split()[2])
                continue
            phase, due, start, end, status = line.split()
            rows.append((int(phase), int(due) / 1e6, int(start) / 1e6, int(end) / 1e6, int(status)))
    return t0, rows


def read_samples(path, t0_ns):
    out = []
    with open(path) as f:
        for line in f:
            t, workers, ready, busy, queue, ups, downs = map(int, line.split())
            out.append(dict(t=(t - t0_ns) / 1e9, workers=workers, ready=ready, busy=busy, queue=queue,
                            ups=ups, downs=downs))
    return out


def integrate(samples, a, b):
    """Integral of the workers step function over [a, b] (worker-seconds)."""
    if not samples:
        return None
    total = 0.0
    for i, s in enumerate(samples):
        lo = max(a, s['t'] if i > 0 else -INF)
        hi = min(b, samples[i + 1]['t'] if i + 1 < len(samples) else INF)
        if hi > lo:
            total += s['workers'] * (hi - lo)
    return total


def ms(v):
    return None if v is None or v == INF else round(v * 1000.0, 1)


def fmt_ms(v, timeout_ms):
    if v is None:
        return '-'
    if v == INF:
        return '>%d' % timeout_ms
    return '%.1f' % (v * 1000.0)


def analyze_run(label, directory, phases, timeout_ms):
    t0, rows = read_load(os.path.join(directory, 'load.txt'))
    samples = read_samples(os.path.join(directory, 'samples.txt'), t0)
    total = sum(p['secs'] for p in phases)
    run = dict(label=label, phases=[], samples=len(samples))
    bounds = []
    acc = 0.0
    for p in phases:
        bounds.append((acc, acc + p['secs']))
        acc += p['secs']
    for i, p in enumerate(phases):
        lat = sorted((end - due) if status == 0 else INF for ph, due, start, end, status in rows if ph == i)
        fails = {}
        for ph, due, start, end, status in rows:
            if ph == i and status != 0:
                name = {1: 'http', 2: 'connect', 3: 'timeout', 4: 'io'}.get(status, str(status))
                fails[name] = fails.get(name, 0) + 1
        a, b = bounds[i]
        ws = integrate(samples, a, b)
        run['phases'].append(dict(
            name=p['name'], level=p['level'], start_s=a, end_s=b, requests=len(lat),
            failed=sum(fails.values()), failures=fails,
            achieved_rps=round(len(lat) / p['secs'], 1),
            p50_ms=ms(percentile(lat, 50)), p99_ms=ms(percentile(lat, 99)), max_ms=ms(lat[-1] if lat else None),
            p50=percentile(lat, 50), p99=percentile(lat, 99), max=lat[-1] if lat else None,
            worker_seconds=None if ws is None else round(ws, 1),
            workers_mean=None if ws is None else round(ws / p['secs'], 2),
            workers_max=max((s['workers'] for s in samples if a <= s['t'] < b), default=None)))
    ws = integrate(samples, 0.0, total)
    run['worker_seconds'] = None if ws is None else round(ws, 1)
    # How late the client itself sent (start - due): a stalled client shows here,
    # and its lateness is part of the latencies (open loop).
    late = sorted(start - due for ph, due, start, end, status in rows)
    run['client_late_p99_ms'] = ms(percentile(late, 99))
    run['client_late_max_ms'] = ms(late[-1] if late else None)
    inside = [s for s in samples if 0.0 <= s['t'] <= total]
    if inside:
        run['autoscale_ups'] = inside[-1]['ups'] - inside[0]['ups']
        run['autoscale_downs'] = inside[-1]['downs'] - inside[0]['downs']
        run['queue_max'] = max(s['queue'] for s in inside)
    # Time from the heaviest phase's start until the workers first reached that phase's peak.
    heavy = max(range(len(phases)), key=lambda i: phases[i]['level'])
    a, b = bounds[heavy]
    peak = run['phases'][heavy]['workers_max']
    first = next((s['t'] for s in samples if a <= s['t'] < b and s['workers'] == peak), None)
    run['heavy_peak_workers'] = peak
    run['heavy_peak_after_s'] = None if first is None else round(first - a, 1)
    # The curves for the chart (and the JSON).
    run['workers_curve'] = [[round(s['t'], 2), s['workers'], s['busy'], s['queue']] for s in samples
                            if -1.0 <= s['t'] <= total + 1.0]
    per_second = {}
    for ph, due, start, end, status in rows:
        per_second.setdefault(int(due), []).append((end - due) if status == 0 else INF)
    run['p99_per_second'] = [[sec, ms(percentile(sorted(v), 99)) if percentile(sorted(v), 99) != INF else None,
                              len(v)] for sec, v in sorted(per_second.items())]
    run['_bounds'] = bounds
    return run


def chart(runs, phases, png, title, timeout_ms):
    tmp = tempfile.mkdtemp()
    total = sum(p['secs'] for p in phases)
    files = []
    for i, r in enumerate(runs):
        w = os.path.join(tmp, 'w%d.dat' % i)
        with open(w, 'w') as f:
            for t, n, busy, queue in r['workers_curve']:
                f.write('%.2f %d\n' % (t, n))
        q = os.path.join(tmp, 'q%d.dat' % i)
        with open(q, 'w') as f:
            for sec, p99, n in r['p99_per_second']:
                f.write('%.1f %s\n' % (sec + 0.5, p99 if p99 is not None else timeout_ms))
        files.append((r['label'], w, q))
    colors = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e']
    marks = ''
    acc = 0.0
    for p in phases[:-1]:
        acc += p['secs']
        marks += 'set arrow from %g, graph 0 to %g, graph 1 nohead dt 2 lc rgb "#888888"\n' % (acc, acc)
    labels = ''
    acc = 0.0
    for p in phases:
        labels += 'set label "%s" at %g, graph 0.93 center tc rgb "#555555" front\n' % (p['name'], acc + p['secs'] / 2)
        acc += p['secs']
    top_workers = max([n for r in runs for t, n, b, q in r['workers_curve']] + [1])
    script = """set terminal pngcairo noenhanced size 900,620 font "sans,10"
set output '%(png)s'
set multiplot title '%(title)s'
set lmargin 10
set rmargin 3
set xrange [0:%(total)g]
set grid ytics
%(marks)s%(labels)s
set size 1, 0.47
set origin 0, 0.46
set key at screen 0.5, screen 0.935 center horizontal
set ylabel 'workers'
set yrange [0:%(wmax)d]
set format x ''
plot %(wplots)s
unset key
set size 1, 0.46
set origin 0, 0
set xlabel 'seconds since the load started'
set format x '%%g'
set ylabel 'p99 per second (ms)'
set label 'a p99 that is a failure or timeout: drawn at %(timeout)d' at graph 0.01, graph 0.06 left tc rgb '#555555' front
set logscale y
set yrange [10:%(ymax)g]
plot %(qplots)s
unset multiplot
""" % dict(png=png, title=title.replace("'", ''), total=total, marks=marks, labels=labels,
           ymax=timeout_ms * 1.5, timeout=timeout_ms, wmax=top_workers + 1,
           wplots=', '.join("'%s' using 1:2 with steps lw 2 lc rgb '%s' title '%s'" % (w, colors[i % 5], label)
                            for i, (label, w, q) in enumerate(files)),
           qplots=', '.join("'%s' using 1:2 with lines lw 1.5 lc rgb '%s' title '%s'" % (q, colors[i % 5], label)
                            for i, (label, w, q) in enumerate(files)))
    gp = os.path.join(tmp, 'chart.gp')
    with open(gp, 'w') as f:
        f.write(script)
    subprocess.run(['gnuplot', gp], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--phases', required=True)
    ap.add_argument('--timeout-ms', type=int, required=True)
    ap.add_argument('--json', required=True)
    ap.add_argument('--png')
    ap.add_argument('--title', default='')
    ap.add_argument('--unit', default='req/s')
    ap.add_argument('--meta', action='append', default=[])
    ap.add_argument('runs', nargs='+')
    a = ap.parse_args()
    phases = []
    for item in a.phases.split(','):
        name, level, secs = item.split(':')
        phases.append(dict(name=name, level=float(level), secs=float(secs)))
    runs = [analyze_run(spec.split('=', 1)[0], spec.split('=', 1)[1], phases, a.timeout_ms) for spec in a.runs]

    print('%-11s %-7s %9s %7s %6s %9s %9s %9s %8s %7s' % ('run', 'phase', 'load', 'reqs', 'fail', 'p50 ms', 'p99 ms',
                                                          'max ms', 'workers', 'w-max'))
    for r in runs:
        for p in r['phases']:
            print('%-11s %-7s %9s %7d %6d %9s %9s %9s %8s %7s' % (
                r['label'], p['name'], '%g %s' % (p['level'], a.unit), p['requests'], p['failed'],
                fmt_ms(p['p50'], a.timeout_ms), fmt_ms(p['p99'], a.timeout_ms),
                fmt_ms(p['max'], a.timeout_ms),
                '-' if p['workers_mean'] is None else '%.2f' % p['workers_mean'],
                '-' if p['workers_max'] is None else p['workers_max']))
    print('workers: mean over the phase (sampled every ~200 ms); w-max: the most seen')

    by = {r['label']: r for r in runs}
    ref = by.get('fixed-max')
    heavy = max(range(len(phases)), key=lambda i: phases[i]['level'])
    print()
    print('%-11s %13s %13s %15s %13s %10s %14s' % ('run', 'worker-s', 'vs fixed-max', 'heavy p99 ms', 'vs fixed-max',
                                                   'ups/downs', 'client late ms'))
    targets = {}
    for r in runs:
        ws_ratio = None
        p99_ratio = None
        if ref and ref['worker_seconds'] and r['worker_seconds'] is not None:
            ws_ratio = r['worker_seconds'] / ref['worker_seconds']
        hp, rp = r['phases'][heavy]['p99'], ref['phases'][heavy]['p99'] if ref else None
        if hp is not None and rp not in (None, INF) and rp > 0:
            p99_ratio = INF if hp == INF else hp / rp
        r['worker_seconds_vs_fixed_max'] = None if ws_ratio is None else round(ws_ratio, 3)
        r['heavy_p99_vs_fixed_max'] = None if p99_ratio in (None, INF) else round(p99_ratio, 3)
        print('%-11s %13s %13s %15s %13s %10s %14s' % (
            r['label'], '-' if r['worker_seconds'] is None else '%.1f' % r['worker_seconds'],
            '-' if ws_ratio is None else '%.0f%%' % (100 * ws_ratio),
            fmt_ms(hp, a.timeout_ms),
            '-' if p99_ratio is None else ('inf' if p99_ratio == INF else '%+.0f%%' % (100 * (p99_ratio - 1))),
            '%s/%s' % (r.get('autoscale_ups', '-'), r.get('autoscale_downs', '-')),
            '-' if r['client_late_max_ms'] is None else '%.1f' % r['client_late_max_ms']))
    print('client late: the most the load generator sent a request after it was due (a stalled client; '
          'counted in the latencies)')
    auto = by.get('autoscaled')
    if auto and ref:
        hp = auto['phases'][heavy]['p99']
        rp = ref['phases'][heavy]['p99']
        hp_ratio = None if hp is None or rp in (None, INF) or rp <= 0 else hp / rp
        ws_ratio = (auto['worker_seconds'] / ref['worker_seconds']
                    if auto['worker_seconds'] is not None and ref['worker_seconds'] else None)
        p99_ok = hp_ratio is not None and hp_ratio <= 1.2
        ws_ok = ws_ratio is not None and ws_ratio <= 0.6
        targets = dict(heavy_p99_within_20pct=p99_ok, worker_seconds_at_most_60pct=ws_ok)
        print()
        print('target: autoscaled heavy p99 within 20%% of fixed-max: %s (%s vs %s ms)' % (
            'met' if p99_ok else 'MISSED', fmt_ms(auto['phases'][heavy]['p99'], a.timeout_ms),
            fmt_ms(ref['phases'][heavy]['p99'], a.timeout_ms)))
        print('target: autoscaled worker-seconds at most 60%% of fixed-max: %s (%s)' % (
            'met' if ws_ok else 'MISSED', '-' if ws_ratio is None else '%.0f%%' % (100 * ws_ratio)))
        if auto.get('heavy_peak_after_s') is not None:
            print('autoscaled: reached %d workers %.1f s into the %s phase' % (
                auto['heavy_peak_workers'], auto['heavy_peak_after_s'], phases[heavy]['name']))

    for r in runs:
        del r['_bounds']
        for p in r['phases']:
            del p['p50'], p['p99'], p['max']
    meta = dict(kv.split('=', 1) for kv in a.meta)
    with open(a.json, 'w') as f:
        json.dump(dict(meta=meta, phases=phases, timeout_ms=a.timeout_ms, targets=targets, runs=runs), f, indent=1)
    print()
    print('json: %s' % a.json)
    if a.png:
        chart(runs, phases, a.png, a.title, a.timeout_ms)
        print('chart: %s' % a.png)


if __name__ == '__main__':
    main()
