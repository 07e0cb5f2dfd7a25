#!/usr/bin/env bash
# The whole test suite, from a fresh clone: Rust formatting, lints and tests, then the Python
# package built into a virtual environment (target/venv, created here) with its type check and
# pytest suite. Needs cargo and python3 (with venv); everything else is installed by this script.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

venv=target/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt
# The native module, built with the debug profile that cargo test already compiled.
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop --quiet --manifest-path python/Cargo.toml
"$venv/bin/ruff" format --check --config python/pyproject.toml python/python python/tests examples/python benches/python
"$venv/bin/ruff" check --config python/pyproject.toml python/python python/tests examples/python benches/python
"$venv/bin/mypy" --config-file python/pyproject.toml python/python/rung
"$venv/bin/pytest" python/tests -q
# deploy/: the Helm chart and manifests against the Kubernetes API schemas (no cluster needed).
bash scripts/validate-deploy.sh
