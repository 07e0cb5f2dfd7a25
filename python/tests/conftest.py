"""Shared helpers of the rung pytest suite."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Sequence, TypeVar

import pytest

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Trainables used with executor="process" or by child processes live in this folder.
sys.path.insert(0, str(HERE))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        help="a skipped test fails the run: where every dependency is installed (scripts/test.sh), nothing skips",
    )


_skipped: List[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and session.config.getoption("--fail-on-skip") and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _skipped and config.getoption("--fail-on-skip"):
        terminalreporter.write_line(f"--fail-on-skip: {len(_skipped)} skipped, which fails this run", red=True)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return str(tmp_path / "sweep")


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def rung_binary() -> Path:
    """The `rung` binary under test: the file RUNG_BIN names (scripts/test.sh builds it and sets
    it). Never a guess such as target/debug/rung, which may be stale or of another target dir."""
    value = os.environ.get("RUNG_BIN")
    if not value:
        pytest.fail(
            "RUNG_BIN is not set: it names the rung binary under test; scripts/test.sh builds it and sets it"
            " (by hand: cargo build -p rung --bin rung, then RUNG_BIN=<target dir>/debug/rung)"
        )
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"RUNG_BIN={value}: no executable file there (cargo build -p rung --bin rung)")
    return path


class Served:
    """A `rung serve` process on 127.0.0.1:0, and the URL it printed once it was listening.

    A thread reads its stderr from the start (so a full pipe never blocks it) and keeps every line
    for the failure messages."""

    def __init__(self, args: Sequence[str], cwd: Path, deadline_s: float = 60) -> None:
        self.lines: List[str] = []
        self._lines: "queue.Queue[str]" = queue.Queue()
        self.process = subprocess.Popen(
            [str(rung_binary()), "serve", "--listen", "127.0.0.1:0", *args],
            cwd=cwd,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url(deadline_s)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put("")  # end of output

    def _wait_for_url(self, deadline_s: float) -> str:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"rung serve printed no address in {deadline_s:.0f} s:\n{self.stderr()}")
            if not line:
                self.stop()
                pytest.fail(f"rung serve exited with {self.process.wait()} before serving:\n{self.stderr()}")
            if "serving" in line:
                return next(word for word in line.split() if word.startswith("http"))

    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


def wait_until(what: str, check: Callable[[], T], deadline_s: float = 60, every_s: float = 0.05) -> T:
    """Polls `check()` until it returns something truthy, and returns that; fails the test, naming
    `what`, when `deadline_s` passes first."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every_s)
