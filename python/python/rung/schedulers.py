"""Schedulers: which trials keep training.

Pass one to ``rung.Tuner(scheduler=...)``, or use it on its own with your training loop::

    asha = rung.schedulers.ASHA(metric="loss", mode="min", max_t=81, grace_period=1, reduction_factor=3)
    asha.on_result("t1", {"step": 3, "loss": 0.2})   # -> "CONTINUE" | "STOP" | "PAUSE"

Schedulers that pause trials (ASHA with ``type="promote"``, Hyperband, PBT) need trainables
that checkpoint: ``rung.report(metrics, checkpoint=folder)``.
"""

from __future__ import annotations

import json
from typing import Any, List, Mapping, Optional, Sequence

from . import _rung
from ._base import _Component
from ._session import _metrics

__all__ = ["Scheduler", "FIFO", "ASHA", "Hyperband", "MedianStopping", "PBT"]


class Scheduler(_Component):
    """The base of every scheduler (not used directly)."""

    _needs_space = False

    def __init__(
        self,
        *,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        seed: Optional[int] = None,
        space: Optional[Mapping[str, Any]] = None,
        _settings: Optional["dict[str, Any]"] = None,
    ) -> None:
        super().__init__(_settings or {}, metric=metric, mode=mode, seed=seed, space=space)
        self._steps: "dict[str, int]" = {}

    def _native(self) -> Any:
        if self._native_obj is None:
            _, mode, seed = self._standalone()
            self._native_obj = _rung.NativeScheduler(
                json.dumps(self.to_spec()), mode, seed, self._space_json(required=self._needs_space)
            )
        return self._native_obj

    def on_trial_add(self, trial_id: str, config: Optional[Mapping[str, Any]] = None) -> None:
        """Declares a trial and its config (optional except for PBT, which mutates configs)."""
        self._native().add(str(trial_id), json.dumps(dict(config)) if config is not None else None)

    def on_result(self, trial_id: str, result: Mapping[str, Any], checkpoint: bool = False) -> str:
        """One result of ``trial_id`` (a dict with the metric, and ``step`` unless steps count
        1, 2, ...); ``checkpoint=True`` when the trial saved a checkpoint at this step.
        Returns ``"CONTINUE"``, ``"STOP"`` or ``"PAUSE"``."""
        native = self._native()
        trial_id = str(trial_id)
        step, metrics = _metrics(result, self._steps.get(trial_id, 0))
        self._steps[trial_id] = step
        if self.metric not in metrics:
            raise KeyError(f"the result of trial {trial_id} has no {self.metric!r} (it has: {', '.join(metrics)})")
        return native.on_result(trial_id, step, metrics[self.metric], metrics, bool(checkpoint))

    def on_trial_complete(self, trial_id: str) -> None:
        """``trial_id`` ended for good."""
        self._native().remove(str(trial_id))

    def choose_trial_to_resume(self, paused: Sequence[str]) -> Optional[str]:
        """Of the ``paused`` trials, the one to resume in a free slot, if any."""
        return self._native().choose_trial_to_resume([str(t) for t in paused])

    def trials_to_stop(self) -> List[str]:
        """Paused trials the scheduler has given up on (Hyperband's losers)."""
        return self._native().take_trials_to_stop()


class FIFO(Scheduler):
    """No early stopping: every trial runs to its end."""

    kind = "fifo"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)


class ASHA(Scheduler):
    """Asynchronous successive halving (Li et al. 2020), Ray Tune's decisions.

    Args:
        time_attr: what measures progress: ``"step"`` (default) or a reported metric.
        max_t: the most a trial trains (100).
        grace_period: the first rung (1).
        reduction_factor: keep the top 1/rf at each rung (4).
        brackets: number of brackets (1).
        stop_last_trials: stop trials that reach ``max_t`` (True).
        type: ``"stop"`` (default: stop trials below a rung's cutoff) or ``"promote"``
            (pause at each rung and promote the best, as in the paper; needs checkpoints).
    """

    kind = "asha"

    def __init__(
        self,
        *,
        time_attr: Optional[str] = None,
        max_t: Optional[float] = None,
        grace_period: Optional[float] = None,
        reduction_factor: Optional[float] = None,
        brackets: Optional[int] = None,
        stop_last_trials: Optional[bool] = None,
        type: Optional[str] = None,  # noqa: A002 - the spec file's name
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(
                time_attr=time_attr,
                max_t=max_t,
                grace_period=grace_period,
                reduction_factor=reduction_factor,
                brackets=brackets,
                stop_last_trials=stop_last_trials,
                type=type,
            ),
            **common,
        )


class Hyperband(Scheduler):
    """Synchronous Hyperband (Li et al. 2018): trials pause at each rung until the rung is
    full, then the top 1/η resume from their checkpoints.

    Args:
        time_attr: ``"step"`` (default) or a reported metric.
        max_t: R, the most a trial trains (100).
        reduction_factor: η (3).
        stop_last_trials: stop trials that reach ``max_t`` (True).
    """

    kind = "hyperband"

    def __init__(
        self,
        *,
        time_attr: Optional[str] = None,
        max_t: Optional[float] = None,
        reduction_factor: Optional[float] = None,
        stop_last_trials: Optional[bool] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(
                time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor, stop_last_trials=stop_last_trials
            ),
            **common,
        )


class MedianStopping(Scheduler):
    """The median stopping rule (Golovin et al. 2017): stop a trial whose best result is worse
    than the median of the other trials' running averages at the same time.

    Args:
        time_attr: ``"step"`` (default) or a reported metric.
        grace_period: no stopping before this time (1).
        min_samples_required: other trials needed to compare with (3).
    """

    kind = "median"

    def __init__(
        self,
        *,
        time_attr: Optional[str] = None,
        grace_period: Optional[float] = None,
        min_samples_required: Optional[int] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(time_attr=time_attr, grace_period=grace_period, min_samples_required=min_samples_required),
            **common,
        )


class PBT(Scheduler):
    """Population-based training (Jaderberg et al. 2017): every ``perturbation_interval``, a
    trial in the bottom quantile continues from a top trial's checkpoint with a mutated config.

    Args:
        perturbation_interval: how often trials are compared (required).
        time_attr: ``"step"`` (default) or a reported metric.
        quantile_fraction: the top and bottom fractions (0.25).
        resample_probability: chance a parameter is redrawn rather than scaled (0.25).
        mutate: the parameters to mutate (default all).
    """

    kind = "pbt"
    _needs_space = True

    def __init__(
        self,
        *,
        perturbation_interval: Optional[float] = None,
        time_attr: Optional[str] = None,
        quantile_fraction: Optional[float] = None,
        resample_probability: Optional[float] = None,
        mutate: Optional[Sequence[str]] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(
                perturbation_interval=perturbation_interval,
                time_attr=time_attr,
                quantile_fraction=quantile_fraction,
                resample_probability=resample_probability,
                mutate=list(mutate) if mutate is not None else None,
            ),
            **common,
        )

    def exploit(self, trial_id: str) -> Optional["tuple[str, dict]"]:
        """Right after ``on_result`` answered PAUSE: ``(donor trial, new config)`` — continue
        ``trial_id`` from the donor's newest checkpoint with the new config — or None."""
        return self._native().take_exploit(str(trial_id))
