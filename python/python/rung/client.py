"""A Python client of server mode (``rung serve``) for workers that run trials themselves.

::

    client = rung.Client("http://127.0.0.1:7470", token_file="token")
    for trial in client.trials("my-sweep"):
        with trial:                      # finishes it: failed if the block raises
            for step in range(1, 100):
                loss = train_one_epoch(trial.config)
                if trial.report(step, loss=loss) != "continue":
                    break

The experiment's spec has no ``[trial] command``: the server hands its trials to whoever asks.
Trials launched by ``rung agent`` need no client: ``rung.report`` in them reaches the
controller through the agent.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Type, Union

from . import _rung

__all__ = ["AssignedTrial", "Client"]

_PathLike = Union[str, Path]


class AssignedTrial:
    """A trial the server handed to this worker: its config, and where its reports go."""

    def __init__(
        self,
        native: Any,
        experiment: str,
        number: int,
        attempt: int,
        config: Dict[str, Any],
        restore: Optional[Tuple[int, str]],
        checkpoint_root: Optional[str] = None,
    ) -> None:
        self._native = native
        self.experiment = experiment
        self.number = number
        self.attempt = attempt
        self.config = config
        self.restore = restore
        # Where this trial's checkpoints must lie (a folder, or an object-store URI): the server
        # refuses a checkpoint path outside it with ValueError.
        self.checkpoint_root = checkpoint_root
        self.finished = False
        # A trial launched by an agent ends when its process does: the agent says so.
        self._agent_ends_it = False

    @property
    def id(self) -> str:
        """The trial's id, e.g. ``"t3"``."""
        return f"t{self.number}"

    def report(
        self,
        step: int,
        metrics: Optional[Mapping[str, float]] = None,
        *,
        checkpoint: Optional[_PathLike] = None,
        **more: float,
    ) -> str:
        """Reports metrics at ``step``; returns ``"continue"``, ``"stop"`` or ``"pause"``.

        The answer comes once the report is committed. A repeated step is acknowledged and not
        counted again. Values must be finite numbers.
        """
        values: Dict[str, float] = dict(metrics or {})
        values.update(more)
        if not values:
            raise ValueError("report needs at least one metric, e.g. report(step, loss=0.3)")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step = {step!r}: must be an integer >= 0")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"metric {name!r} = {value!r}: must be a number")
            if not math.isfinite(float(value)):
                raise ValueError(f'metric "{name}" is {value}: reported values must be finite')
        path = None if checkpoint is None else str(Path(checkpoint).resolve())
        decision, _duplicate = self._native.report(
            self.experiment,
            self.number,
            self.attempt,
            step,
            {k: float(v) for k, v in values.items()},
            path,
        )
        return str(decision)

    def checkpoint(self, step: int, path: _PathLike) -> None:
        """Declares ``path`` the checkpoint of an already reported ``step``."""
        self._native.checkpoint(self.experiment, self.number, self.attempt, step, str(Path(path).resolve()))

    def finish(self, success: bool = True, reason: str = "") -> None:
        """Ends this trial's run (once; later calls do nothing). For a trial launched by
        ``rung agent`` (:meth:`Client.this_trial`) this does nothing: its exit ends it."""
        if self.finished or self._agent_ends_it:
            return
        self._native.finish(self.experiment, self.number, self.attempt, success, reason)
        self.finished = True

    def __enter__(self) -> "AssignedTrial":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        _traceback: Optional[TracebackType],
    ) -> None:
        if kind is None:
            self.finish(True)
        else:
            self.finish(False, f"{kind.__name__}: {error}")

    def __repr__(self) -> str:
        return f"AssignedTrial({self.experiment!r}, {self.id}, attempt={self.attempt}, config={self.config!r})"


class Client:
    """A client of a ``rung serve`` controller's ``Trials`` service (ask, report, finish).

    ``token`` (or the first line of ``token_file``) is sent as ``authorization: Bearer``;
    ``ca_cert`` is a PEM certificate to trust for an ``https://`` server. Errors: ``ValueError``
    for a request the server refuses (unknown experiment or trial, ended trial, bad value),
    ``PermissionError`` for a missing or wrong token, ``ConnectionError`` when the server
    cannot be reached.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        token_file: Optional[_PathLike] = None,
        ca_cert: Optional[_PathLike] = None,
    ) -> None:
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if token_file is not None:
            lines = Path(token_file).read_text().splitlines()
            token = lines[0].strip() if lines else ""
            if not token:
                raise ValueError(f"token_file {token_file}: is empty")
        self.url = url
        self._native = _rung.NativeClient(url, token, None if ca_cert is None else str(ca_cert))

    @classmethod
    def this_trial(cls) -> AssignedTrial:
        """The trial this process runs, when ``rung agent`` launched it: its reports go straight
        to the controller over gRPC (``RUNG_CONTROLLER``, with ``RUNG_TOKEN`` and
        ``RUNG_CA_CERT`` when the agent has them) instead of through ``rung:report`` lines.
        The agent still reports the process's exit, so there is nothing to finish."""
        missing = [name for name in ("RUNG_CONTROLLER", "RUNG_EXPERIMENT", "RUNG_TRIAL_ID") if not os.environ.get(name)]
        if missing:
            raise RuntimeError(f"this process was not launched by rung agent: {', '.join(missing)} not set")
        client = cls(
            os.environ["RUNG_CONTROLLER"],
            os.environ.get("RUNG_TOKEN") or None,
            ca_cert=os.environ.get("RUNG_CA_CERT") or None,
        )
        trial = AssignedTrial(
            client._native,
            os.environ["RUNG_EXPERIMENT"],
            int(os.environ["RUNG_TRIAL_ID"].lstrip("t")),
            int(os.environ.get("RUNG_ATTEMPT", "0")),
            json.loads(os.environ.get("RUNG_CONFIG", "{}")),
            None,
            os.path.join(os.environ["RUNG_TRIAL_DIR"], "checkpoints") if os.environ.get("RUNG_TRIAL_DIR") else None,
        )
        trial._agent_ends_it = True
        return trial

    def ask(self, experiment: str, *, worker: Optional[str] = None, wait: float = 30.0) -> Optional[AssignedTrial]:
        """The next trial of ``experiment`` to run, waiting up to ``wait`` seconds (at most 60);
        ``None`` when none came (see :meth:`trials` to loop until the experiment ends)."""
        _finished, assignment = self._native.ask(experiment, worker or socket.gethostname(), float(wait))
        if assignment is None:
            return None
        number, attempt, config_json, restore, checkpoint_root = assignment
        return AssignedTrial(
            self._native, experiment, number, attempt, json.loads(config_json), restore, checkpoint_root
        )

    def trials(self, experiment: str, *, worker: Optional[str] = None, wait: float = 30.0) -> Iterator[AssignedTrial]:
        """Yields trials of ``experiment`` until it has ended."""
        name = worker or socket.gethostname()
        while True:
            finished, assignment = self._native.ask(experiment, name, float(wait))
            if assignment is not None:
                number, attempt, config_json, restore, checkpoint_root = assignment
                yield AssignedTrial(
                    self._native, experiment, number, attempt, json.loads(config_json), restore, checkpoint_root
                )
            elif finished:
                return

    def __repr__(self) -> str:
        return f"Client({self.url!r})"
