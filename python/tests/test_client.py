"""rung.Client against a real `rung serve` (the binary cargo built), on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import rung
from conftest import HERE, REPO

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


def rung_binary() -> Path:
    path = Path(os.environ.get("RUNG_BIN", REPO / "target" / "debug" / "rung"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it with `cargo build` (scripts/test.sh does)")
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    (tmp_path / "ask.toml").write_text(SPEC)
    (tmp_path / "token").write_text("py-token\n")
    process = subprocess.Popen(
        [
            str(rung_binary()),
            "serve",
            "--db",
            "server.db",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "token",
            "ask.toml",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: List[str] = []
    url = None
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if "serving" in line:
            url = next(word for word in line.split() if word.startswith("http"))
    assert url, "".join(lines)
    drain = threading.Thread(target=process.stderr.read, daemon=True)
    drain.start()
    try:
        yield url, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_worker_asks_reports_and_finishes_every_trial(server: Tuple[str, Path]) -> None:
    url, folder = server
    client = rung.Client(url, token_file=folder / "token")
    seen = []
    for trial in client.trials("ask", worker="pytest", wait=5):
        with trial:
            assert 0.0 <= trial.config["lr"] <= 1.0
            assert trial.id == f"t{trial.number}" and trial.attempt == 0
            for step in range(1, 4):
                assert trial.report(step, loss=(trial.config["lr"] - 0.3) ** 2 + 1 / step) == "continue"
            # A retried report is acknowledged, not counted again.
            assert trial.report(3, loss=123.0) == "continue"
        seen.append(trial.id)
    assert seen == ["t1", "t2", "t3"]
    status = subprocess.run(
        [str(rung_binary()), "status", "--server", url, "--token-file", str(folder / "token"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(status.stdout)
    assert shown["state"] == "finished"
    assert shown["counts"]["completed"] == 3
    assert shown["best"]["value"] < 123.0


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
    with pytest.raises(ConnectionError):
        rung.Client("http://127.0.0.1:9")


def test_a_trial_launched_by_an_agent_reports_over_grpc(tmp_path: Path) -> None:
    import sys

    spec = SPEC.replace('name = "ask"', 'name = "direct"') + (
        f'\n[trial]\ncommand = ["{sys.executable}", "{HERE / "direct_trial.py"}"]\n'
    )
    (tmp_path / "direct.toml").write_text(spec)
    (tmp_path / "token").write_text("py-token\n")
    binary = str(rung_binary())
    server = subprocess.Popen(
        [binary, "serve", "--db", "server.db", "--listen", "127.0.0.1:0", "--token-file", "token", "direct.toml"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = None
    try:
        assert server.stderr is not None
        url = None
        while url is None:
            line = server.stderr.readline()
            assert line, "the server exited"
            if "serving" in line:
                url = next(word for word in line.split() if word.startswith("http"))
        threading.Thread(target=server.stderr.read, daemon=True).start()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        agent = subprocess.Popen(
            [binary, "agent", "--controller", url, "--token-file", "token", "--gpus", "none", "--work-dir", "work"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            shown = subprocess.run(
                [binary, "status", "--server", url, "--token-file", "token", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=True,
            )
            status = json.loads(shown.stdout)
            if status["state"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["state"] == "finished", status
        assert status["counts"]["completed"] == 3, status
        # Nothing went through stdout: the trials' logs hold no report lines.
        logs = "".join(p.read_text() for p in (tmp_path / "work" / "direct").glob("t*/trial.log"))
        assert "rung:report" not in logs
        exported = subprocess.run(
            [binary, "export", "--server", url, "--token-file", "token", "--format", "json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        rows = json.loads(exported.stdout)
        assert [row["steps"] for row in rows] == [3, 3, 3]
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
