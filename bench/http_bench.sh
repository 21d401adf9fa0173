#!/bin/sh
# Data-path cost: the data-path part of the benchmark suite, kept under its
# old name. wrk on 127.0.0.1, keep-alive (-c64) and one request per
# connection (-c16, Connection: close), against 2 workers of the minimal C
# worker (bench/minimal_worker.c) under preforkd vs the same workers started
# by hand on one shared socket (bench/probe.c launch), 3 alternating rounds;
# with --anchors also under supervisord, gunicorn and Node cluster. See
# bench/compare.sh and docs/benchmarks.md.
# Usage: bench/http_bench.sh [--anchors]   (DP_SECONDS=3 per round)
set -eu
exec "$(dirname "$0")/run.sh" "$@" datapath
