#!/bin/sh
# Harness overhead per experiment of `autoqat run` with 1,000 experiments of history
# (see docs/benchmarks.md). Usage: benches/loop_overhead.sh [history] [measured]
set -e
cd "$(dirname "$0")/.."
AQ_BENCH_HISTORY="${1:-1000}" AQ_BENCH_MEASURE="${2:-50}" \
  cargo bench -p autoqat-research --bench loop_overhead
