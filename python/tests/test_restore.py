"""A sweep killed (SIGKILL) or interrupted (Ctrl-C, SIGTERM) resumes with Tuner.restore: nothing that
finished runs again, running trials continue from their checkpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rung
import trainables
from conftest import child_env

SCRIPT = """
import sys, rung, trainables
rung.Tuner(
    trainables.checkpointing,
    param_space={{"x": rung.uniform(1, 10), "log": {log!r}, "sleep": 0.05}},
    metric="loss", num_samples=12, max_concurrent_trials=3, seed=1,
    storage_path={storage!r}, verbose=1,
).fit()
print("fit returned")
"""


def start_sweep(tmp_path: Path) -> "tuple[subprocess.Popen, str, str]":
    storage, log = str(tmp_path / "sweep"), str(tmp_path / "starts.log")
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(log=log, storage=storage)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, storage, log


def wait_for_completed(storage: str, child: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        try:
            if rung.ResultGrid.load(storage).counts().get("completed", 0) >= at_least:
                return
        except (FileNotFoundError, RuntimeError):
            pass
        time.sleep(0.05)
    raise AssertionError("the sweep made no progress")


def starts(log: str) -> "list[tuple[str, int]]":
    words = Path(log).read_text().split()
    return [(words[i], int(words[i + 2])) for i in range(0, len(words), 5)]


def check_resumed(storage: str, log: str, interrupted: rung.ResultGrid) -> None:
    done_before = {r.trial_id for r in interrupted if r.status == "completed"}
    before = len(starts(log))
    results = rung.Tuner.restore(storage, trainables.checkpointing, verbose=0).fit()
    assert results.status == "finished"
    assert results.counts() == {"completed": 12}
    relaunched = starts(log)[before:]
    assert not {t for t, _ in relaunched} & done_before, "a finished trial ran again"
    for trial_id, start in relaunched:
        # A trial cut short restarts from its newest checkpoint as the store had it.
        before_kill = interrupted[trial_id] if trial_id in {r.trial_id for r in interrupted} else None
        expected = 0
        if before_kill is not None and before_kill.checkpoint is not None:
            expected = int(before_kill.checkpoint.rsplit("_", 1)[1])
        assert start == expected, (trial_id, start, expected)
        history = [h["step"] for h in results[trial_id].history()]
        assert sorted(set(history)) == list(range(1, 13))
    for result in results:
        assert result.metrics["step"] == 12


@pytest.mark.timeout(180)
def test_restore_after_the_process_was_killed(tmp_path: Path) -> None:
    child, storage, log = start_sweep(tmp_path)
    wait_for_completed(storage, child, 3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    interrupted = rung.ResultGrid.load(storage)
    assert interrupted.status == "interrupted"
    assert rung.Tuner.can_restore(storage)
    check_resumed(storage, log, interrupted)
    assert not rung.Tuner.can_restore(storage)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "sent, said",
    [
        # Ctrl-C: KeyboardInterrupt is re-raised once the trials stopped.
        (signal.SIGINT, "KeyboardInterrupt"),
        # SIGTERM (systemd, Kubernetes, timeout): the same stop, then the process ends by SIGTERM,
        # as its supervisor expects.
        (signal.SIGTERM, "terminated (SIGTERM): stopping the running trials"),
    ],
)
def test_ctrl_c_and_sigterm_stop_cleanly_and_leave_a_resumable_store(tmp_path: Path, sent: int, said: str) -> None:
    child, storage, log = start_sweep(tmp_path)
    wait_for_completed(storage, child, 2)
    child.send_signal(sent)
    out, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "fit returned" not in out
    if sent == signal.SIGTERM:
        assert child.returncode == -signal.SIGTERM, (child.returncode, err)
    assert said in err
    assert "interrupted; carry on with rung.Tuner.restore(" in err
    interrupted = rung.ResultGrid.load(storage)
    assert interrupted.status == "interrupted"
    check_resumed(storage, log, interrupted)
