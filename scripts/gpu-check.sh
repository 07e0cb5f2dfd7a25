#!/usr/bin/env bash
# The GPU check of server mode, in one command, on a machine with an NVIDIA GPU, its driver,
# python3 and torch: `rung agent --gpus auto` must find the GPU, and a sweep of 8 PyTorch trials
# with gpu = 0.25 must run four at once on it. Evidence goes to $OUT (default /tmp/rung-gpu-check):
# the agent's inventory, nvidia-smi's process list sampled every second, logs, status and export.
# Usage: bash scripts/gpu-check.sh [path/to/rung]   (default target/release/rung)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/rung}
OUT=${OUT:-/tmp/rung-gpu-check}
PORT=${PORT:-7479}
URL=http://127.0.0.1:$PORT
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi-before.txt"
python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available())' > "$OUT/torch.txt"
"$BIN" agent --controller "$URL" --gpus auto --dry-run > "$OUT/agent-inventory.txt" 2>&1
"$BIN" -v serve --db "$OUT/gpu.db" --listen "127.0.0.1:$PORT" 2> "$OUT/server.log" &
SERVER=$!
sleep 1
"$BIN" -v agent --controller "$URL" --gpus auto --work-dir "$OUT/agent" 2> "$OUT/agent.log" &
AGENT=$!
trap 'kill $AGENT $SERVER 2>/dev/null || true' EXIT
sleep 1
"$BIN" submit examples/server/torch_gpu.toml --server "$URL" > "$OUT/submit.txt"
MOST=0
for _ in $(seq 1 600); do
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader >> "$OUT/nvidia-smi-apps.txt" || true
    NOW=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -c . || true)
    echo "$(date +%T) $NOW processes on the GPU" >> "$OUT/nvidia-smi-counts.txt"
    [ "$NOW" -gt "$MOST" ] && MOST=$NOW
    if "$BIN" status --server "$URL" --json | grep -q '"state": "finished"'; then
        break
    fi
    sleep 1
done
"$BIN" status --server "$URL" > "$OUT/status.txt"
"$BIN" export --server "$URL" --format csv -o "$OUT/trials.csv"
echo "most trial processes on the GPU at once: $MOST" | tee "$OUT/summary.txt"
grep -h ' on ' "$OUT"/agent/torch-gpu/*/trial.log >> "$OUT/summary.txt" || true
cat "$OUT/agent-inventory.txt" "$OUT/status.txt"
