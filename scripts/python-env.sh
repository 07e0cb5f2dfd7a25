#!/usr/bin/env bash
# Makes target/venv exactly python/requirements-test.lock: every package pinned and checked
# against its hash (pip install --require-hashes). The venv records the hash of the lock and of
# the interpreter it was made with (target/venv/rung-lock.sha256); when either changes, or the
# install was cut short, the venv is deleted and made afresh, never patched in place. Up to date,
# it costs nothing. Used by scripts/test.sh and scripts/validate-deploy.sh; needs python3 (with
# venv) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/venv
lock=python/requirements-test.lock
key=$( (
    sha256sum "$lock"
    python3 -c 'import sys; print(sys.version, sys.executable)'
) | sha256sum | cut -d' ' -f1)
stamp=$venv/rung-lock.sha256

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
echo "python-env: making $venv from $lock (key ${key:0:12})" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    -r "$lock"
# Written last: a venv without it (an install that failed or was interrupted) is made again.
echo "$key" > "$stamp"
