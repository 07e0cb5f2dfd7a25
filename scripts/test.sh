#!/usr/bin/env bash
# The whole test suite, from a fresh clone: Rust formatting, lints and tests, then the Python
# package built into a virtual environment with its lint, type check and pytest suite, then
# deploy/. Needs cargo and python3 (with venv); everything else is installed by this script.
#
# The Python side:
#   - target/venv is exactly python/requirements-test.lock, hash-checked (scripts/python-env.sh
#     makes it afresh whenever the lock or the interpreter changes);
#   - the binary under test is built here and passed as RUNG_BIN (scripts/rung-bin.sh: the
#     target directory cargo uses, CARGO_TARGET_DIR included); the tests use no other;
#   - pytest --fail-on-skip: everything is installed, so a skipped test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

RUNG_BIN=$(bash scripts/rung-bin.sh)
export RUNG_BIN
echo "test.sh: RUNG_BIN=$RUNG_BIN"

bash scripts/python-env.sh
venv=target/venv
# The native module, built with the debug profile that cargo test already compiled.
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop --quiet --manifest-path python/Cargo.toml
python_code=(python/python python/tests examples/python benches/python)
"$venv/bin/ruff" format --check --config python/pyproject.toml "${python_code[@]}"
"$venv/bin/ruff" check --config python/pyproject.toml "${python_code[@]}"
"$venv/bin/mypy" --config-file python/pyproject.toml python/python/rung
"$venv/bin/pytest" python/tests -q --fail-on-skip
# deploy/: the Helm chart and manifests against the Kubernetes API schemas (no cluster needed),
# and the pods' flags against RUNG_BIN.
bash scripts/validate-deploy.sh
