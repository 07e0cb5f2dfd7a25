#!/usr/bin/env bash
# Builds the `rung` binary (cargo build -p rung --bin rung, debug profile) and prints its path,
# in the target directory cargo really uses (CARGO_TARGET_DIR, a config's build.target-dir, or
# target/), as `cargo metadata` reports it. The tests get it as RUNG_BIN and use nothing else:
#   export RUNG_BIN=$(bash scripts/rung-bin.sh)
# Cargo's own output goes to stderr; stdout is the path alone.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -p rung --bin rung >&2
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary=$target_dir/debug/rung
if [ ! -x "$binary" ]; then
    echo "rung-bin: cargo build left no executable at $binary" >&2
    exit 1
fi
echo "$binary"
