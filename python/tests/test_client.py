"""rung.Client against a real `rung serve` (the binary RUNG_BIN names), on loopback port 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

import rung
from conftest import HERE, Served, rung_binary, wait_until

SPEC = """
name = "ask"
metric = "loss"
mode = "min"
num_samples = 3
max_concurrent = 1
seed = 5

[space]
lr = { uniform = [0.0, 1.0] }
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    (tmp_path / "ask.toml").write_text(SPEC)
    (tmp_path / "token").write_text("py-token\n")
    served = Served(["--db", "server.db", "--token-file", "token", "ask.toml"], cwd=tmp_path)
    try:
        yield served.url, tmp_path
    finally:
        served.stop()


def test_a_worker_asks_reports_and_finishes_every_trial(server: Tuple[str, Path]) -> None:
    url, folder = server
    client = rung.Client(url, token_file=folder / "token")
    seen = []
    # What each trial reported at each step; its best is at step 3 (1/step falls).
    reported: Dict[str, Dict[int, float]] = {}
    configs = {}
    for trial in client.trials("ask", worker="pytest", wait=5):
        with trial:
            assert 0.0 <= trial.config["lr"] <= 1.0
            assert trial.id == f"t{trial.number}" and trial.attempt == 0
            configs[trial.id] = trial.config
            for step in range(1, 4):
                loss = (trial.config["lr"] - 0.3) ** 2 + 1 / step
                assert trial.report(step, loss=loss) == "continue"
                reported.setdefault(trial.id, {})[step] = loss
            # A retried report is acknowledged, not counted again.
            assert trial.report(3, loss=123.0) == "continue"
        seen.append(trial.id)
    assert seen == ["t1", "t2", "t3"]
    best_trial = min(reported, key=lambda trial_id: reported[trial_id][3])
    expected_best = {"trial": best_trial, "value": reported[best_trial][3], "step": 3}

    def cli(*args: str) -> Any:
        shown = subprocess.run(
            [str(rung_binary()), *args, "--server", url, "--token-file", str(folder / "token"), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(shown.stdout)

    shown = cli("status")
    assert shown["state"] == "finished"
    assert shown["counts"]["completed"] == 3
    assert shown["best"]["value"] < 123.0
    # Exactly the best of what was reported, at its step: the retried 123.0 counted nowhere.
    assert shown["best"] == expected_best
    best = cli("best")
    assert {key: best[key] for key in ("trial", "value", "step")} == expected_best
    assert best["config"] == configs[best_trial] and best["status"] == "completed"
    assert best["metrics"] == {"loss": reported[best_trial][3]}
    rows = {row["trial_id"]: row for row in cli_export(url, folder)}
    for trial_id, losses in reported.items():
        assert rows[trial_id]["best"] == losses[3] and rows[trial_id]["last"] == losses[3], rows[trial_id]
        assert rows[trial_id]["steps"] == 3 and rows[trial_id]["config"] == configs[trial_id]


def cli_export(url: str, folder: Path) -> Any:
    exported = subprocess.run(
        [str(rung_binary()), "export", "--server", url, "--token-file", str(folder / "token"), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(exported.stdout)


def test_refusals_are_python_exceptions_that_say_why(server: Tuple[str, Path]) -> None:
    url, folder = server
    with pytest.raises(PermissionError, match="requires a token"):
        rung.Client(url).ask("ask", wait=0)
    with pytest.raises(PermissionError):
        rung.Client(url, token="wrong").ask("ask", wait=0)
    client = rung.Client(url, token="py-token")
    with pytest.raises(ValueError, match='no experiment "nope"'):
        client.ask("nope", wait=0)
    trial = client.ask("ask", wait=5)
    assert trial is not None
    with pytest.raises(ValueError, match="must be finite"):
        trial.report(1, loss=float("inf"))
    with pytest.raises(ValueError, match="at least one metric"):
        trial.report(1)
    with pytest.raises(ValueError, match="was reported"):
        trial.checkpoint(7, folder)
    trial.finish(success=False, reason="out of memory")
    with pytest.raises(ValueError, match="not running"):
        trial.report(1, loss=0.5)
    # A port bound but never listened on, held meanwhile: connections to it are refused.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionError):
            rung.Client(f"http://127.0.0.1:{refusing.getsockname()[1]}")


@pytest.mark.timeout(180)
def test_a_trial_launched_by_an_agent_reports_over_grpc(tmp_path: Path) -> None:
    spec = SPEC.replace('name = "ask"', 'name = "direct"') + (
        f'\n[trial]\ncommand = ["{sys.executable}", "{HERE / "direct_trial.py"}"]\n'
    )
    (tmp_path / "direct.toml").write_text(spec)
    (tmp_path / "token").write_text("py-token\n")
    binary = str(rung_binary())
    server = Served(["--db", "server.db", "--token-file", "token", "direct.toml"], cwd=tmp_path)
    url = server.url
    agent = None
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        agent = subprocess.Popen(
            [binary, "agent", "--controller", url, "--token-file", "token", "--gpus", "none", "--work-dir", "work"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.DEVNULL,
        )

        def ended() -> Any:
            assert agent is not None and agent.poll() is None, f"the agent exited with {agent and agent.returncode}"
            shown = subprocess.run(
                [binary, "status", "--server", url, "--token-file", "token", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=True,
            )
            status = json.loads(shown.stdout)
            return status if status["state"] != "running" else None

        status = wait_until("the agent's sweep to end", ended, deadline_s=120, every_s=0.2)
        assert status["state"] == "finished", status
        assert status["counts"]["completed"] == 3, status
        # Nothing went through stdout: the trials' logs hold no report lines.
        logs = "".join(p.read_text() for p in (tmp_path / "work" / "direct").glob("t*/trial.log"))
        assert "rung:report" not in logs
        rows = cli_export(url, tmp_path)
        assert [row["steps"] for row in rows] == [3, 3, 3]
        # Each trial's reports (direct_trial.py) arrived, the best at step 3, as the server has it.
        for row in rows:
            assert row["best"] == (row["config"]["lr"] - 0.3) ** 2 + 1.0 / 3 and row["best_step"] == 3, row
        assert status["best"]["value"] == min(row["best"] for row in rows), status
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        server.stop()
