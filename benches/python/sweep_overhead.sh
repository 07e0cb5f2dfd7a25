#!/usr/bin/env bash
# Engine overhead of rung beside Optuna: builds rung into the benchmark's virtual environment
# (target/bench-venv, made by search_quality.sh with Optuna 5.1.0 pinned) and runs
# benches/python/sweep_overhead.py with this script's arguments:
#
#   bash benches/python/sweep_overhead.sh                      # 200 to 100,000 trials, 1 and 8 at once
#   bash benches/python/sweep_overhead.sh --trials 200 1000 --repeats 5
#
# SKIP_BUILD=1 runs with the rung already built into it (no cargo).
set -euo pipefail
cd "$(dirname "$0")/../.."
SKIP_RUN=1 bash benches/python/search_quality.sh
exec target/bench-venv/bin/python benches/python/sweep_overhead.py "$@"
