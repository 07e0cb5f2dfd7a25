"""Shared helpers of the rung pytest suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Trainables used with executor="process" or by child processes live in this folder.
sys.path.insert(0, str(HERE))


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return str(tmp_path / "sweep")


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env
