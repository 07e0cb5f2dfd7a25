"""What a sweep leaves: ``ResultGrid`` (every trial) and ``Result`` (one trial)."""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, List, Optional, Union

from . import _rung

__all__ = ["Result", "ResultGrid"]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("this needs pandas: pip install pandas (or pip install 'rung[pandas]')") from None
    return pandas


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else key, inner, out)
    else:
        out[prefix] = value


class Result:
    """One trial of a sweep, as the store holds it.

    Attributes:
        trial_id: ``t1``, ``t2``, ...
        config: the configuration it ran (nested dicts for nested spaces).
        metrics: its last report, with ``step``.
        status: ``completed``, ``stopped`` (by the scheduler), ``sweep_ended``, ``errored``,
            ``paused``, ``running`` or ``pending`` (the last three in an interrupted sweep).
        error: the traceback of its last failure when it errored, else None.
        best: ``(value, step)`` of its best value of the sweep's metric, or None.
        checkpoint: the folder of its newest kept checkpoint, or None.
        best_checkpoints: ``[(folder, value)]`` of every kept checkpoint, oldest first.
        path: the trial's folder.
    """

    __slots__ = (
        "_grid",
        "trial_id",
        "config",
        "status",
        "error",
        "best",
        "launches",
        "failures",
        "metrics",
        "best_checkpoints",
        "checkpoint",
    )

    def __init__(self, row: tuple, grid: "ResultGrid") -> None:
        # The fields of rung._rung's results_dict, in order.
        (trial_id, status, config, step, metrics, best, error, launches, failures, checkpoints) = row
        self._grid = grid
        self.trial_id: str = trial_id
        self.config: dict = config
        self.status: str = status
        self.error: Optional[str] = error
        self.best: Optional["tuple[float, int]"] = best
        self.launches: int = launches
        self.failures: int = failures
        if step is not None:
            metrics["step"] = step
        self.metrics: dict = metrics
        self.best_checkpoints: List["tuple[str, Optional[float]]"] = [(path, value) for _, path, value in checkpoints]
        self.checkpoint: Optional[str] = checkpoints[-1][1] if checkpoints else None

    @property
    def path(self) -> str:
        """The trial's folder."""
        return os.path.join(self._grid._trials_root, self.trial_id)

    def history(self) -> List[dict]:
        """Every report of the trial, in order: ``[{"step": 1, "loss": ...}, ...]``."""
        return [
            {"step": step, **metrics}
            for _, step, metrics in _rung.load_reports(self._grid.store, self._grid.experiment, self.trial_id)
        ]

    @property
    def metrics_dataframe(self) -> Any:
        """:meth:`history` as a pandas DataFrame."""
        return _pandas().DataFrame(self.history())

    def __repr__(self) -> str:
        return f"Result({self.trial_id}, status={self.status!r}, metrics={self.metrics!r}, config={self.config!r})"


class ResultGrid:
    """Every trial of a sweep. Iterate it, index it (``grid[0]``, ``grid["t3"]``), or ask for
    ``best_result`` and ``get_dataframe()``.

    Attributes:
        experiment: the experiment's name in the store; ``store``: the store's path.
        metric, mode: what was optimised.
        status: ``finished``, or ``interrupted`` (``Tuner.restore`` carries on).
        end_cause: why it finished (``all_trials_done``, ``target_reached``, ...).
        elapsed_s: the sweep's run time over all its sessions.
    """

    def __init__(self, data: dict) -> None:
        self.experiment: str = data["experiment"]
        self.store: str = data["store"]
        self.metric: str = data["metric"]
        self.mode: str = data["mode"]
        self.seed: int = data["seed"]
        self.status: str = data["status"]
        self.end_cause: Optional[str] = data["end_cause"]
        self.elapsed_s: float = data["elapsed_s"]
        self._best_trial: Optional[str] = data["best_trial"]
        self._trials_root: str = data["trials_root"]
        self._results = [Result(row, self) for row in data["trials"]]
        self._by_id = {r.trial_id: r for r in self._results}

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], name: Optional[str] = None) -> "ResultGrid":
        """The results of the sweep stored at ``path`` (a ``storage_path`` or a store file), the
        experiment ``name`` or the newest — also while it runs elsewhere."""
        from ._tuner import _store_path

        store = _store_path(path)
        if not os.path.exists(store):
            raise FileNotFoundError(f"no rung store at {store!r}")
        return cls(_rung.load_results(store, name))

    @property
    def path(self) -> str:
        """The storage folder (what ``Tuner.restore`` takes)."""
        return os.path.dirname(self.store) or "."

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    def __getitem__(self, key: Union[int, str]) -> Result:
        if isinstance(key, str):
            try:
                return self._by_id[key]
            except KeyError:
                raise KeyError(f"no trial {key!r} in experiment {self.experiment!r}") from None
        return self._results[key]

    @property
    def best_result(self) -> Result:
        """The trial with the best value of the metric at any step (NaN ranks worst, ties go to
        the older trial). Raises ``RuntimeError`` when no trial reported the metric."""
        if self._best_trial is None:
            raise RuntimeError(f"no trial of {self.experiment!r} reported {self.metric!r}")
        return self._by_id[self._best_trial]

    def get_best_result(self, metric: Optional[str] = None, mode: Optional[str] = None, scope: str = "all") -> Result:
        """The best trial by ``metric`` (default: the sweep's) in ``mode``, comparing each trial's
        best value (``scope="all"``) or its last reported one (``scope="last"``)."""
        metric = metric or self.metric
        mode = mode or self.mode
        if mode not in ("min", "max"):
            raise ValueError(f'mode must be "min" or "max", got {mode!r}')
        if scope not in ("all", "last"):
            raise ValueError(f'scope must be "all" or "last", got {scope!r}')
        if metric == self.metric and mode == self.mode and scope == "all":
            return self.best_result
        sign = -1.0 if mode == "min" else 1.0
        best, best_score = None, -math.inf
        for result in self._results:
            if scope == "last":
                values = [result.metrics.get(metric)]
            else:
                values = [m.get(metric) for m in result.history()]
            for value in values:
                if value is None:
                    continue
                score = -math.inf if math.isnan(value) else sign * value
                if best is None or score > best_score:
                    best, best_score = result, score
        if best is None:
            raise RuntimeError(f"no trial of {self.experiment!r} reported {metric!r}")
        return best

    @property
    def errors(self) -> List["tuple[str, str]"]:
        """``(trial_id, error)`` of every errored trial."""
        return [(r.trial_id, r.error or "") for r in self._results if r.status == "errored"]

    @property
    def num_errors(self) -> int:
        """How many trials errored."""
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        """How many trials ended without an error."""
        return sum(r.status in ("completed", "stopped", "sweep_ended") for r in self._results)

    def counts(self) -> dict:
        """Trials by status."""
        out: dict = {}
        for r in self._results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def rows(self) -> List[dict]:
        """One dict per trial: ``trial_id``, ``status``, its last metrics (with ``step``),
        ``best_<metric>``, ``error`` and ``config/<param>`` for each parameter (nested names
        joined by ``/``) — what ``get_dataframe`` holds, without pandas."""
        rows = []
        for r in self._results:
            row: dict = {"trial_id": r.trial_id, "status": r.status}
            row.update(r.metrics)
            row[f"best_{self.metric}"] = r.best[0] if r.best else None
            row["error"] = r.error
            _flatten("config", r.config, row)
            rows.append(row)
        return rows

    def get_dataframe(self) -> Any:
        """:meth:`rows` as a pandas DataFrame, one row per trial."""
        return _pandas().DataFrame(self.rows())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts().items()))
        return f"ResultGrid({self.experiment!r}, {self.status}, {len(self)} trials: {counts})"
