#!/usr/bin/env bash
# Search quality of rung's searchers beside Optuna's: makes the benchmark's virtual environment
# (target/bench-venv, with the peers and helpers pinned below), builds rung into it with the
# release profile, and runs benches/python/search_quality.py with this script's arguments:
#
#   bash benches/python/search_quality.sh                                  # everything
#   bash benches/python/search_quality.sh --problems synthetic,tables --out /tmp/q.md
#   bash benches/python/search_quality.sh --problems branin --seeds 3 --evaluations 30 --jobs 1
#
# The environment is made once: target/bench-venv/.bench-requirements holds the pinned list it
# was made from, and a change of the list (or of the interpreter) makes it afresh.
# SKIP_BUILD=1 runs with the rung already built into it (no cargo); SKIP_RUN=1 only makes the
# environment and builds (benches/python/sweep_overhead.sh uses it).
#
# torch is there for Optuna's GPSampler (with scipy; greenlet lets it run its L-BFGS-B starts
# batched, without which it warns and is slower). PyPI has no CPU-only torch wheel for
# Linux (those are on PyTorch's own index), so this is the default wheel, CUDA libraries and
# all: a large download the first time, but only its CPU side is used.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/bench-venv
requirements=(
    optuna==5.1.0
    coco-experiment==2.8.2
    scikit-learn==1.9.1
    numpy==2.4.6
    scipy==1.17.1
    torch==2.15.0
    greenlet==3.5.6
    maturin==1.16.0
)
marker="$venv/.bench-requirements"
wanted="$(python3 --version 2>&1)
$(printf '%s\n' "${requirements[@]}")"

if [[ ! -f "$marker" || "$(cat "$marker")" != "$wanted" ]]; then
    echo "search_quality.sh: making $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "${requirements[@]}"
    printf '%s\n' "$wanted" >"$marker"
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop --quiet --release --manifest-path python/Cargo.toml
fi

if [[ "${SKIP_RUN:-0}" == 1 ]]; then
    exit 0
fi
exec "$venv/bin/python" benches/python/search_quality.py "$@"
