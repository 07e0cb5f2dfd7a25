#!/usr/bin/env python3
"""A rung trial process: the `learning-curve` workload of shared/workloads/README.md.

It needs nothing but Python 3's standard library. For each step t = 1..--steps it computes the
workload's loss for its config, sleeps --sleep seconds (standing in for training), and reports:

    rung:report {"step": t, "loss": ...}

Every --checkpoint-every steps it writes its state into $RUNG_CHECKPOINT_DIR and adds
"checkpoint": true to that report; when $RUNG_RESTORE_DIR is set it resumes after the step saved
there. --fail-once-at N makes the first attempt exit with code 3 at step N (to exercise retries).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

MASK = (1 << 64) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & MASK


def loss(lr, batch, layers, dropout, t):
    z, g, big_l, d = math.log10(lr), math.log2(batch), layers, dropout
    # Squares as products: x ** 2 goes through pow(), which does not always round like Rust's powi.
    zz, gg, dd = (z + 3.5) / 1.5, g - 5, d - 0.3
    base = 0.05 + 0.30 * zz * zz + 0.03 * gg * gg + 0.20 / big_l + 0.40 * dd * dd
    a = 0.3 + 0.2 * big_l + 1.5 * d
    b = 0.8 + 1.0 / (1.0 + math.exp(-2.0 * (z + 3.0))) - 0.06 * big_l
    u = splitmix64(bits(lr) ^ rotl(bits(dropout), 17) ^ (batch << 32) ^ (layers << 48) ^ t) / 2.0**64
    return base + a * t ** (-b) + 0.004 * (u - 0.5)


def wait_until_taken(checkpoint_dir, timeout_s=30.0):
    """Waits until rung has moved the previous checkpoint out of the folder (it empties it
    before it reads our next line); writing into a folder that still holds the last checkpoint
    would overwrite files rung has not taken yet."""
    deadline = time.monotonic() + timeout_s
    while os.listdir(checkpoint_dir) and time.monotonic() < deadline:
        time.sleep(0.001)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--dropout", type=float, required=True)
    parser.add_argument("--steps", type=int, default=81)
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds per step")
    parser.add_argument("--checkpoint-every", type=int, default=9)
    parser.add_argument("--fail-once-at", type=int, default=0)
    args = parser.parse_args()

    start = 1
    restore = os.environ.get("RUNG_RESTORE_DIR")
    if restore:
        with open(os.path.join(restore, "state.json")) as f:
            start = json.load(f)["step"] + 1
        print(f"restored from {restore}, continuing at step {start}", file=sys.stderr)
    checkpoint_dir = os.environ.get("RUNG_CHECKPOINT_DIR")
    marker = os.path.join(os.environ.get("RUNG_TRIAL_DIR", "."), "failed-once")

    for t in range(start, args.steps + 1):
        time.sleep(args.sleep)
        if t == args.fail_once_at and not os.path.exists(marker):
            open(marker, "w").close()
            print(f"simulated failure at step {t}", file=sys.stderr)
            sys.exit(3)
        report = {"step": t, "loss": loss(args.lr, args.batch, args.layers, args.dropout, t)}
        if checkpoint_dir and args.checkpoint_every > 0 and t % args.checkpoint_every == 0:
            wait_until_taken(checkpoint_dir)
            with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
                json.dump({"step": t}, f)
            report["checkpoint"] = True
        print("rung:report " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
