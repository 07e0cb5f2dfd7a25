"""``rung.report`` and friends: how a trainable talks to the sweep it runs in.

A trainable runs in one of three places, and ``report`` finds out which by itself:

* a thread of ``Tuner.fit()`` (the default executor): reports go straight to the engine;
* a worker process of ``Tuner(executor="process")``: reports go through a pipe to the parent;
* a process launched by ``rung run`` (the ``RUNG_TRIAL_ID`` environment variable is set):
  reports are printed as ``rung:report {...}`` lines, the CLI's protocol.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from typing import Any, Mapping, Optional, Union

__all__ = ["report", "get_checkpoint", "checkpoint_dir", "get_trial_id"]

PathLike = Union[str, "os.PathLike[str]"]


class _TrialStopped(BaseException):
    """Raised by ``rung.report`` when the scheduler stops or pauses the trial. It derives from
    ``BaseException`` so that a trainable's ``except Exception`` does not swallow it; the Tuner
    catches it and ends the trial normally."""

    def __init__(self, decision: str) -> None:
        super().__init__(decision)
        self.decision = decision


# The largest step the store keeps (a signed 64-bit integer in SQLite).
_MAX_STEP = 2**63 - 1


def _metrics(metrics: Mapping[str, Any], last_step: int) -> "tuple[int, dict[str, float]]":
    if not isinstance(metrics, Mapping):
        raise TypeError(f"rung.report: metrics must be a dict, got {type(metrics).__name__}")
    step = None
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"rung.report: metric names must be strings, got {name!r}")
        if name == "step":
            if isinstance(value, bool) or not float(value).is_integer() or not 0 <= value <= _MAX_STEP:
                raise ValueError(f"rung.report: step must be an integer from 0 to {_MAX_STEP}, got {value!r}")
            step = int(value)
            continue
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"rung.report: metric {name!r} must be a number, got {type(value).__name__} {value!r}")
        out[name] = float(value)
    return (last_step + 1 if step is None else step), out


class _Session:
    """What every kind of trial shares: the step counter and the checkpoint hand-over."""

    trial_id: str
    staging: str
    restore: Optional["tuple[int, str]"]

    def __init__(self, trial_id: str, staging: str, restore: Optional["tuple[int, str]"]) -> None:
        self.trial_id = trial_id
        self.staging = staging
        self.restore = restore
        self.last_step = restore[0] if restore else 0
        self.stopped = False

    def report(self, metrics: Mapping[str, Any], checkpoint: Optional[PathLike]) -> None:
        if self.stopped:
            raise _TrialStopped("STOP")
        step, values = _metrics(metrics, self.last_step)
        has_checkpoint = False
        if checkpoint is not None:
            self._stage(os.fspath(checkpoint))
            has_checkpoint = True
        self.last_step = step
        decision = self._send(step, values, has_checkpoint)
        if decision != "CONTINUE":
            self.stopped = True
            raise _TrialStopped(decision)

    def _stage(self, path: str) -> None:
        if not os.path.isdir(path):
            raise ValueError(f"rung.report: checkpoint must be a directory, {path!r} is not one")
        os.makedirs(self.staging, exist_ok=True)
        if os.path.realpath(path) != os.path.realpath(self.staging):
            shutil.copytree(path, self.staging, dirs_exist_ok=True)
        if not os.listdir(self.staging):
            raise ValueError(f"rung.report: checkpoint directory {path!r} is empty")

    def _send(self, step: int, metrics: "dict[str, float]", checkpoint: bool) -> str:
        raise NotImplementedError


class _ThreadSession(_Session):
    """A trial running in a thread of this process: reports go to the engine directly."""

    def __init__(self, trial: Any) -> None:
        super().__init__(trial.id, trial.checkpoint_dir, trial.restore)
        self.trial = trial

    def _send(self, step: int, metrics: "dict[str, float]", checkpoint: bool) -> str:
        return self.trial.report(step, metrics, checkpoint)


class _PipeSession(_Session):
    """A trial running in a worker process: reports travel to the parent through a pipe."""

    def __init__(self, conn: Any, trial_id: str, staging: str, restore: Optional["tuple[int, str]"]) -> None:
        super().__init__(trial_id, staging, restore)
        self.conn = conn

    def _send(self, step: int, metrics: "dict[str, float]", checkpoint: bool) -> str:
        self.conn.send(("report", step, metrics, checkpoint))
        try:
            return self.conn.recv()
        except EOFError:
            return "STOP"


class _ProtocolSession(_Session):
    """A trial process launched by ``rung run``: reports are ``rung:report`` lines on stdout."""

    def __init__(self) -> None:
        restore_dir = os.environ.get("RUNG_RESTORE_DIR") or None
        restore = None
        if restore_dir:
            # The CLI's checkpoint folders are named step_00000012.
            tail = os.path.basename(os.path.normpath(restore_dir))
            step = int(tail[5:]) if tail.startswith("step_") and tail[5:].isdigit() else 0
            restore = (step, restore_dir)
        super().__init__(
            os.environ.get("RUNG_TRIAL_ID", ""),
            os.environ.get("RUNG_CHECKPOINT_DIR", os.path.join(os.getcwd(), "checkpoint")),
            restore,
        )

    def _send(self, step: int, metrics: "dict[str, float]", checkpoint: bool) -> str:
        line: dict[str, Any] = {"step": step}
        line.update(metrics)
        if checkpoint:
            line["checkpoint"] = True
        # json.dumps writes NaN and infinities as bare NaN / Infinity, which the protocol reads.
        sys.stdout.write(f"rung:report {json.dumps(line)}\n")
        sys.stdout.flush()
        if checkpoint:
            # rung takes the files by moving them out of the folder: wait for that before the
            # trainable writes the next checkpoint over files not yet taken.
            deadline = time.monotonic() + 60.0
            while os.listdir(self.staging):
                if time.monotonic() > deadline:
                    print(f"rung: the checkpoint of step {step} was not taken within 60 s", file=sys.stderr)
                    break
                time.sleep(0.001)
        # The CLI answers by signal: a stopped trial is terminated.
        return "CONTINUE"


_local = threading.local()
_process_session: Optional[_Session] = None
_protocol_session: Optional[_ProtocolSession] = None


def _current() -> _Session:
    global _protocol_session
    session = getattr(_local, "session", None) or _process_session
    if session is not None:
        return session
    if os.environ.get("RUNG_TRIAL_ID"):
        if _protocol_session is None:
            _protocol_session = _ProtocolSession()
        return _protocol_session
    raise RuntimeError(
        "rung.report() was called outside a trial: call it from the trainable that rung.Tuner runs "
        "(or from a script launched by `rung run`)"
    )


def report(metrics: Mapping[str, Any], checkpoint: Optional[PathLike] = None) -> None:
    """Reports ``metrics`` (a dict of numbers) for the next step of the current trial.

    ``step`` in ``metrics`` sets the step; otherwise steps count 1, 2, 3, ... (continuing from
    the restored checkpoint's step after a resume). ``checkpoint`` is a directory whose files
    become this step's checkpoint (they are copied; write into :func:`checkpoint_dir` to avoid
    the copy). The call returns once the report is stored. When the scheduler stops or pauses
    the trial, it raises an exception that the Tuner catches: the trainable ends there, with no
    code of yours.
    """
    _current().report(metrics, checkpoint)


def get_checkpoint() -> Optional[str]:
    """The directory of the checkpoint this trial resumes from (after a pause, a failure, a
    PBT exploitation or a restored sweep), or None when it starts from scratch."""
    restore = _current().restore
    return restore[1] if restore else None


def checkpoint_dir() -> str:
    """A directory to write the next checkpoint into; pass it to ``report(..., checkpoint=...)``
    and it is kept without a copy."""
    session = _current()
    os.makedirs(session.staging, exist_ok=True)
    return session.staging


def get_trial_id() -> str:
    """The current trial's id (``t1``, ``t2``, ...)."""
    return _current().trial_id
