"""Trainables shared by the tests (importable, so that executor="process" can pickle them)."""

from __future__ import annotations

import json
import math
import os
import time

import rung


def curve(config: dict) -> None:
    """A learning curve: lower lr-distance from 1e-3 and deeper is better; 27 steps."""
    for step in range(1, 28):
        loss = abs(math.log10(config["lr"]) + 3.0) + 1.0 / (step * config.get("layers", 1))
        rung.report({"loss": loss, "acc": 1.0 - loss / 10})


def checkpointing(config: dict) -> None:
    """Counts to 12, checkpointing its counter every step; resumes from the checkpoint."""
    start = 0
    restored = rung.get_checkpoint()
    if restored:
        with open(os.path.join(restored, "state.json")) as f:
            start = json.load(f)["step"]
    log = config.get("log")
    if log:
        with open(log, "a") as f:
            f.write(f"{rung.get_trial_id()} start {start} pid {os.getpid()}\n")
    for step in range(start + 1, 13):
        time.sleep(config.get("sleep", 0.0))
        folder = rung.checkpoint_dir()
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump({"step": step}, f)
        rung.report({"step": step, "loss": config["x"] / step}, checkpoint=folder)


def failing(config: dict) -> None:
    """Fails at step 3 the first time; with a checkpoint to resume from."""
    restored = rung.get_checkpoint()
    start = 0
    if restored:
        with open(os.path.join(restored, "n")) as f:
            start = int(f.read())
    for step in range(start + 1, 6):
        folder = rung.checkpoint_dir()
        with open(os.path.join(folder, "n"), "w") as f:
            f.write(str(step))
        rung.report({"loss": float(step)}, checkpoint=folder)
        if step == 3 and not restored:
            raise ValueError("boom at step 3")


def pid_reporter(config: dict) -> None:
    """Reports its process id (executor="process" runs it elsewhere)."""
    for _ in range(3):
        rung.report({"loss": config["x"], "pid": os.getpid()})


def pbt_member(config: dict) -> None:
    """`checkpointing` for PBT: each checkpoint says which trial wrote it with which x, and each
    launch appends a JSON line to config["log"]: the trial, its x, the checkpoint it was given and
    what that holds."""
    start, origin = 0, None
    restored = rung.get_checkpoint()
    if restored:
        with open(os.path.join(restored, "state.json")) as f:
            origin = json.load(f)
        start = origin["step"]
    launch = {"trial": rung.get_trial_id(), "x": config["x"], "restored": restored, "origin": origin}
    with open(config["log"], "a") as f:
        f.write(json.dumps(launch) + "\n")
    for step in range(start + 1, 13):
        folder = rung.checkpoint_dir()
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump({"step": step, "trial": rung.get_trial_id(), "x": config["x"]}, f)
        rung.report({"step": step, "loss": config["x"] / step}, checkpoint=folder)
