#!/usr/bin/python3
"""bench/report.py RESULTS.jsonl: the benchmark suite's report (run by bench/run.sh).

Reads the JSON lines the benches wrote, writes beside them DATE.json (every
sample, one document), DATE.md (the tables, also printed) and the charts
DATE-respawn.png (latency CDF per manager), DATE-start.png (start time vs N)
and DATE-datapath.png (req/s relative to the bare workers, per mode), with
gnuplot. Percentiles are nearest-rank.
"""
import json
import math
import os
import subprocess
import sys


def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def med(values):
    return pct(values, 0.5)


def f(x, digits=1):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def main():
    src = sys.argv[1]
    base = src[: -len(".jsonl")]
    date = os.path.basename(base)
    rows = [json.loads(line) for line in open(src) if line.strip()]
    meta = next((r for r in rows if r["bench"] == "meta"), {})
    meta_end = next((r for r in rows if r["bench"] == "meta_end"), {})
    by = lambda kind: [r for r in rows if r["bench"] == kind]
    md = []
    out = md.append

    out(f"### Run {date}")
    out("")
    out(f"commit {meta.get('commit')}, {meta.get('nproc')} CPU(s) ({meta.get('cpu')}), "
        f"{meta.get('mem_gib')} GiB, {meta.get('os')}, kernel {meta.get('kernel')}; "
        f"load average {meta.get('load_start')} at the start, {meta_end.get('load_end')} at the end; "
        f"{meta_end.get('seconds')} s in all.")
    out("")

    resp = by("respawn")
    if resp:
        out("**Respawn**: SIGKILL of the only worker -> first response from its replacement, "
            "vs the floor (fork+exec of the same worker with the socket at fd 3 -> first response), "
            "measured in alternating blocks. Targets: median <= 1.3x floor, p99 <= 2x floor p99.")
        out("")
        out("| manager | worker | samples | median ms | p99 ms | floor median ms | floor p99 ms | median / floor | p99 / floor p99 |")
        out("|---|---|---|---|---|---|---|---|---|")
        for r in resp:
            s, fl = r["samples"], r["floor"]
            out(f"| {r['manager']} | {r['worker']} | {len(s)} | {f(med(s), 2)} | {f(pct(s, .99), 2)} | "
                f"{f(med(fl), 2)} | {f(pct(fl, .99), 2)} | {f(med(s) / med(fl), 2)} | "
                f"{f(pct(s, .99) / pct(fl, .99), 2)} |")
        out("")

    start = by("start")
    if start:
        floors = {r["n"]: r for r in start if r["manager"] == "floor"}
        out("**Start**: exec of the manager -> N workers accepting (each writes a byte to a FIFO once "
            "it accepts); floor: a tiny C launcher (`probe launch`) that fork+execs N copies. "
            "Targets: preforkd <= the floor's time (its per-spawn cost x N); 1000 in < 1 s, 100 in < 0.1 s; "
            "RSS with 1000 < 10 MiB.")
        out("")
        out("| N | manager | worker | runs | median ms | min ms | / floor | per spawn ms | manager RSS MiB |")
        out("|---|---|---|---|---|---|---|---|---|")
        for r in start:
            s = r["samples"]
            fl = floors.get(r["n"])
            ratio = med(s) / med(fl["samples"]) if fl else float("nan")
            out(f"| {r['n']} | {r['manager']} | {r['worker']} | {len(s)} | {f(med(s))} | {f(min(s))} | "
                f"{f(ratio, 2)} | {f(med(s) / r['n'], 3)} | {f(med(r['rss_kib']) / 1024, 2)} |")
        out("")

    for r in by("storm"):
        s = r["status_ms"]
        out(f"**Respawn storm**: SIGKILL of {r['workers']} workers at once -> all replaced in "
            f"{f(r['replaced_ms'])} ms; meanwhile {len(s)} control-socket `status` requests "
            f"(back to back): median {f(med(s), 2)} ms, p99 {f(pct(s, .99), 2)} ms, max {f(max(s), 2)} ms, "
            f"{r['status_failed']} without a reply (target: every answer within 100 ms).")
        out("")

    dp = by("datapath")
    if dp:
        fl = {r["mode"]: sum(r["rps"]) for r in dp if r["manager"] == "floor"}
        out(f"**Data path**: wrk -t2 on 127.0.0.1, {dp[0]['workers']} workers, 3 rounds of "
            f"{dp[0]['seconds']} s per manager and mode, the managers in turn in each round; "
            "keep-alive: -c64; close: -c16 with `Connection: close` (one request per connection). "
            "Ratio: req/s (sum of the rounds) / the bare workers' (floor: the same minimal worker "
            "started by hand on one shared socket).")
        out("")
        out("| manager | worker | mode | req/s per round | / bare workers | errors |")
        out("|---|---|---|---|---|---|")
        order = ["floor", "preforkd", "supervisord", "gunicorn", "node"]
        for r in sorted(dp, key=lambda r: (r["mode"], order.index(r["manager"]) if r["manager"] in order else 9)):
            out(f"| {r['manager']} | {r['worker']} | {r['mode']} | {' '.join(f(x, 0) for x in r['rps'])} | "
                f"{f(sum(r['rps']) / fl[r['mode']], 3) if r['mode'] in fl else '-'} | {sum(r['errors'])} |")
        out("")

    rl = by("reload")
    if rl:
        out(f"**Reload under load**: {rl[0]['workers']} workers, wrk -t2 -c16 with `Connection: close` "
            "from 1 s before until 1 s after each reload; errors = wrk's socket errors + non-2xx replies.")
        out("")
        out("| manager | worker | reloads | errors per reload | each reload: ms / errors / requests |")
        out("|---|---|---|---|---|")
        for r in rl:
            x = r["reloads"]
            errs = [a["errors"] + a["non2xx"] for a in x]
            out(f"| {r['manager']} | {r['worker']} | {len(x)} | {f(sum(errs) / len(x), 1)} | "
                + ", ".join(f"{a['ms']} / {a['errors'] + a['non2xx']} / {a['requests']}" for a in x) + " |")
        out("")

    for r in by("idle"):
        out(f"**Idle**: preforkd with {r['workers']} workers over {r['seconds']} s: {r['wakeups']} wake-ups "
            f"(context switches), {r['cpu_ticks']} CPU ticks, RSS {f(r['rss_kib'] / 1024, 2)} MiB.")
        out("")

    for r in by("text"):
        out(f"**{r['name']}** (as printed):")
        out("")
        out("```")
        out(r["text"].rstrip())
        out("```")
        out("")

    for r in by("autoscale_file"):
        try:
            a = json.load(open(r["path"]))
            summary = {k: a[k] for k in ("targets", "summary") if k in a} or {k: a[k] for k in list(a)[:6]}
            out(f"**Autoscaling** (`bench/autoscale.sh`, {os.path.basename(r['path'])}): "
                f"`{json.dumps(summary)[:600]}`")
        except (OSError, ValueError, KeyError) as e:
            out(f"**Autoscaling**: {r['path']} unreadable: {e}")
        out("")

    charts = plot(base, date, resp, start, dp)
    for c in charts:
        out(f"![{c}]({os.path.basename(base)}-{c}.png)")
    text = "\n".join(md) + "\n"
    open(base + ".md", "w").write(text)
    json.dump({"date": date, "meta": meta, "meta_end": meta_end, "results": rows},
              open(base + ".json", "w"), indent=1)
    print(text)
    print(f"written: {base}.json, {base}.md" + "".join(f", {base}-{c}.png" for c in charts))


def plot(base, date, resp, start, dp):
    charts = []
    gp = ["set terminal pngcairo size 900,540 font 'sans,10' noenhanced", "set grid", "set key left top"]
    # respawn CDF
    if resp:
        series = []
        floors = {}
        for r in resp:
            if r["worker"] == "minimal_worker" and "minimal" not in floors:
                floors["minimal"] = ("floor (bare fork+exec, minimal worker)", r["floor"])
            if r["worker"] == "preforkd-echo":
                floors["echo"] = ("floor (bare fork+exec, preforkd-echo)", r["floor"])
            series.append((f"{r['manager']} ({r['worker']})", r["samples"]))
        series = list(floors.values()) + series
        gp += [f"set output '{base}-respawn.png'",
               f"set title 'Respawn: SIGKILL -> first response from the replacement ({date})'",
               "set xlabel 'latency, ms (log scale)'", "set ylabel 'fraction of samples'",
               "set logscale x", "set yrange [0:1]", "set key right bottom"]
        plots = []
        for i, (name, s) in enumerate(series):
            dat = f"{base}-respawn-{i}.dat"
            v = sorted(s)
            with open(dat, "w") as fh:
                for k, x in enumerate(v):
                    fh.write(f"{x} {(k + 1) / len(v)}\n")
            plots.append(f"'{dat}' using 1:2 with steps lw 2 title '{name}'")
        gp.append("plot " + ", ".join(plots))
        gp += ["unset logscale x", "set autoscale y", "set key left top"]
        charts.append("respawn")
    if start:
        mans = []
        for r in start:
            if r["manager"] not in mans:
                mans.append(r["manager"])
        gp += [f"set output '{base}-start.png'",
               f"set title 'Start: exec of the manager -> N workers accepting, median ({date})'",
               "set xlabel 'workers (N)'", "set ylabel 'ms (log scale)'", "set logscale xy",
               "set xrange [70:1400]", "set xtics (100, 1000)"]
        plots = []
        for m in mans:
            dat = f"{base}-start-{m}.dat"
            with open(dat, "w") as fh:
                for r in sorted((r for r in start if r["manager"] == m), key=lambda r: r["n"]):
                    fh.write(f"{r['n']} {med(r['samples'])}\n")
            plots.append(f"'{dat}' using 1:2 with linespoints lw 2 pt 7 title '{m}'")
        gp.append("plot " + ", ".join(plots))
        gp += ["unset logscale xy", "set autoscale x", "unset xtics", "set xtics"]
        charts.append("start")
    if dp:
        fl = {r["mode"]: sum(r["rps"]) for r in dp if r["manager"] == "floor"}
        mans = [m for m in ["floor", "preforkd", "supervisord", "gunicorn", "node"]
                if any(r["manager"] == m for r in dp)]
        dat = f"{base}-datapath.dat"
        with open(dat, "w") as fh:
            fh.write("manager keepalive close\n")
            for m in mans:
                vals = []
                for mode in ("keepalive", "close"):
                    r = next((r for r in dp if r["manager"] == m and r["mode"] == mode), None)
                    vals.append(sum(r["rps"]) / fl[mode] if r and mode in fl else 0)
                fh.write(f"{m} {vals[0]} {vals[1]}\n")
        gp += [f"set output '{base}-datapath.png'",
               f"set title 'Data path: req/s / the bare workers on one shared socket ({date})'",
               "set style data histograms", "set style histogram cluster gap 1", "set style fill solid 0.8",
               "set boxwidth 0.9", "set yrange [0:*]", "set ylabel 'ratio to the bare workers'",
               "set xlabel ''", "set key right top",
               f"plot '{dat}' using 2:xtic(1) title 'keep-alive', '' using 3 title 'one request per connection'"]
        charts.append("datapath")
    if charts:
        try:
            subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"report: gnuplot failed ({e}); no charts", file=sys.stderr)
            return []
    return charts


if __name__ == "__main__":
    main()
