#!/usr/bin/python3
"""Validate Prometheus text exposition (format 0.0.4) read from stdin.

Parses with prometheus_client's text parser (the real one, python3-prometheus-client)
and adds the checks that parser is too lax for:
  - every family has # HELP and # TYPE, and appears once (by exposition name, and
    by the family name prometheus_client gives it: a counter "x_total" is "x");
  - no sample outside its declared family, no duplicate label set in a family;
  - every sample line is well-formed as the Go parser wants it (label value escapes
    limited to \\\\, \\" and \\n);
  - metric and label names are valid, the text ends with a newline;
  - the families SPEC requires are present (--no-require to skip that).
Exits 1 with a message on the first problem; prints a summary otherwise.

Usage: some-command | python3 metrics_parse.py [--no-require]
"""
import re
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # pragma: no cover
    sys.exit(f"metrics_parse: prometheus_client is missing (apt-get install python3-prometheus-client): {e}")

REQUIRED = [
    "preforkd_up",
    "preforkd_build_info",
    "preforkd_workers",
    "preforkd_worker_starts_total",
    "preforkd_worker_exits_total",
    "preforkd_reloads_total",
    "preforkd_notify_errors_total",
    "preforkd_orphans_total",
    "preforkd_listen_queue",
    "preforkd_listen_queue_max",
    "preforkd_workers_busy",
    "preforkd_worker_busy_seconds_total",
    "preforkd_autoscale_total",
    "preforkd_rollbacks_total",
    "preforkd_generation",
]
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
# One sample line as the Go parser (expfmt) takes it: name, optional labels whose
# values use only the escapes \\, \" and \n, a value, an optional timestamp.
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_LINE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*"
    r"(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*=" + LABEL_VALUE +
    r"(?:,[a-zA-Z_][a-zA-Z0-9_]*=" + LABEL_VALUE + r")*,?)?\})?"
    r" (?:[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+|Inf|NaN))(?: -?[0-9]+)?$")


def fail(msg):
    sys.exit(f"metrics_parse: FAIL: {msg}")


def check_comments(text):
    """Exposition-level checks on the # HELP / # TYPE lines. Returns {name: type}."""
    helps, types, order = {}, {}, []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.startswith("#"):
            if line and not SAMPLE_LINE.match(line):
                fail(f"line {lineno}: malformed sample line {line!r}")
            continue
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
            continue
        kind, name = parts[1], parts[2]
        if not METRIC_NAME.match(name):
            fail(f"line {lineno}: invalid metric name {name!r}")
        seen = helps if kind == "HELP" else types
        if name in seen:
            fail(f"line {lineno}: second # {kind} for {name} (a family must appear once)")
        if kind == "TYPE":
            if len(parts) < 4 or parts[3] not in TYPES:
                fail(f"line {lineno}: bad # TYPE line {line!r}")
            types[name] = parts[3]
            order.append(name)
        else:
            seen[name] = True
    for name in types:
        if name not in helps:
            fail(f"{name}: # TYPE without # HELP")
    for name in helps:
        if name not in types:
            fail(f"{name}: # HELP without # TYPE")
    return types


def main():
    require = "--no-require" not in sys.argv[1:]
    text = sys.stdin.read()
    if not text:
        fail("empty input")
    if not text.endswith("\n"):
        fail("the exposition does not end with a newline")
    types = check_comments(text)

    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        fail(f"prometheus_client could not parse the text: {type(e).__name__}: {e}")

    seen = {}
    samples = 0
    for fam in families:
        if fam.type in ("untyped", "unknown") and fam.name not in types:
            names = sorted({s.name for s in fam.samples})
            fail(f"sample(s) {names} outside any declared family (or out of order)")
        if fam.name in seen:
            fail(f"family {fam.name} appears twice (as {seen[fam.name]} and {fam.type})")
        seen[fam.name] = fam.type
        label_sets = set()
        for s in fam.samples:
            for label in s.labels:
                if not LABEL_NAME.match(label) or label.startswith("__"):
                    fail(f"{s.name}: invalid label name {label!r}")
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in label_sets:
                fail(f"{s.name}{s.labels}: duplicate sample")
            label_sets.add(key)
            samples += 1

    if require:
        missing = [n for n in REQUIRED if n not in types]
        if missing:
            fail(f"missing families: {', '.join(missing)}")

    counters = sum(1 for t in types.values() if t == "counter")
    gauges = sum(1 for t in types.values() if t == "gauge")
    print(f"metrics_parse: OK: {len(families)} families ({counters} counters, {gauges} gauges), "
          f"{samples} samples")
    for fam in families:
        print(f"  {fam.type:8} {fam.name} ({len(fam.samples)} samples)")


if __name__ == "__main__":
    main()
