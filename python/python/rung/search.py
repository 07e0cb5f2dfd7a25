"""Searchers: where new configurations come from.

Pass one to ``rung.Tuner(searcher=...)``, or use it on its own (ask/tell) with ``space``,
``metric`` and ``mode``::

    tpe = rung.search.TPE(space=space, metric="loss", mode="min", seed=0)
    config = tpe.suggest("t1")
    tpe.on_complete("t1", {"loss": 0.3})

Every searcher is deterministic given its seed and the results it is told, which is what lets
a restored sweep continue exactly. None proposes a configuration twice; on a finite space it
reports itself ``exhausted`` once every configuration was proposed.

Every searcher also takes ``points_to_evaluate=[{...}, ...]``, configurations to run first (as
Ray Tune's searchers and Optuna's ``enqueue_trial``; parameters a point leaves out are drawn),
and, in a sweep, ``warm_start="experiment-name"``: an earlier experiment of the same store whose
finished trials the searcher learns from before its first suggestion::

    rung.Tuner(train, param_space=space, searcher=rung.search.TPE(
        points_to_evaluate=[{"lr": 1e-3, "batch": 64}], warm_start="yesterday"), ...)
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

from . import _rung
from ._base import _Component
from ._session import _metrics

__all__ = ["Searcher", "Random", "Grid", "Sobol", "TPE", "GP", "BOHB"]


class Searcher(_Component):
    """The base of every searcher (not used directly)."""

    _needs_metric = True

    def __init__(
        self,
        *,
        space: Optional[Mapping[str, Any]] = None,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        seed: Optional[int] = None,
        points_to_evaluate: Optional[Sequence[Mapping[str, Any]]] = None,
        warm_start: Optional[str] = None,
        _settings: Optional["dict[str, Any]"] = None,
    ) -> None:
        settings = dict(_settings or {})
        if points_to_evaluate is not None:
            # Configurations to run first, in order (Ray Tune's ``points_to_evaluate``, Optuna's
            # ``enqueue_trial``); top-level parameters a point leaves out are drawn.
            settings["points_to_evaluate"] = [dict(point) for point in points_to_evaluate]
        # An earlier experiment of the same store to learn from before the first suggestion.
        settings["warm_start"] = warm_start
        super().__init__(settings, metric=metric, mode=mode, seed=seed, space=space)

    def _native(self) -> Any:
        if self._native_obj is None:
            metric, mode, seed = self._standalone(self._needs_metric)
            space_json = self._space_json(required=True)
            assert space_json is not None
            self._native_obj = _rung.NativeSearcher(json.dumps(self.to_spec()), space_json, metric, mode, seed)
        return self._native_obj

    def suggest(self, trial_id: str) -> Optional[dict]:
        """A configuration for the new trial ``trial_id``, or None when the searcher has nothing
        to propose now (it waits for results) or nothing more (``exhausted``)."""
        return self._native().suggest(str(trial_id))

    @property
    def exhausted(self) -> bool:
        """Whether the searcher has nothing more to propose (a finished grid)."""
        return self._native().exhausted

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """An intermediate result of ``trial_id`` (BOHB learns from these)."""
        step, metrics = _metrics(result, 0)
        self._native().on_result(str(trial_id), step, metrics)

    def on_complete(self, trial_id: str, result: Optional[Mapping[str, Any]] = None, error: bool = False) -> None:
        """``trial_id`` ended with its last ``result`` (None, or ``error=True``, when it failed)."""
        if result is None:
            self._native().on_complete(str(trial_id), None, None, True)
            return
        step, metrics = _metrics(result, 0)
        self._native().on_complete(str(trial_id), step, metrics, bool(error))


class Random(Searcher):
    """Independent random draws, each trial from its own seeded stream; ``grid`` parameters are
    enumerated (``num_samples`` × grid size trials)."""

    kind = "random"
    _needs_metric = False

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)


class Grid(Searcher):
    """Every point of the space's cartesian product: ``grid`` values, ``choice`` over plain
    values, integer ranges. Continuous domains are rejected. A sweep runs ``num_samples``
    passes; on its own, ``suggest`` cycles through the points."""

    kind = "grid"
    _needs_metric = False

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)


class Sobol(Searcher):
    """Scrambled (Owen) Sobol quasi-random points: even coverage for the same budget.

    Args:
        scramble: scramble with the seed (default True).
    """

    kind = "sobol"
    _needs_metric = False

    def __init__(self, *, scramble: Optional[bool] = None, **common: Any) -> None:
        super().__init__(_settings=dict(scramble=scramble), **common)


class TPE(Searcher):
    """Tree-structured Parzen Estimator (as in Optuna and Hyperopt).

    Args:
        n_startup_trials: random configurations before the model is used (10).
        n_ei_candidates: candidates drawn per suggestion (48).
        gamma: fixed fraction of results counted as good (default min(ceil(0.15 n), 25)/n).
        multivariate: joint kernels instead of one density per parameter (True).
        constant_liar: count running trials as bad results, so parallel workers spread out.
        prior_weight: weight of the prior in each estimator (1.0).
    """

    kind = "tpe"

    def __init__(
        self,
        *,
        n_startup_trials: Optional[int] = None,
        n_ei_candidates: Optional[int] = None,
        gamma: Optional[float] = None,
        multivariate: Optional[bool] = None,
        constant_liar: Optional[bool] = None,
        prior_weight: Optional[float] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(
                n_startup_trials=n_startup_trials,
                n_ei_candidates=n_ei_candidates,
                gamma=gamma,
                multivariate=multivariate,
                constant_liar=constant_liar,
                prior_weight=prior_weight,
            ),
            **common,
        )


class GP(Searcher):
    """Bayesian optimisation with a Gaussian process (Matérn-5/2, log expected improvement).

    Args:
        n_startup_trials: quasi-random configurations before the model is used (10).
        restarts: restarts of the kernel fit (5).
        acquisition_starts: starting points of the acquisition optimisation (16).
    """

    kind = "gp"

    def __init__(
        self,
        *,
        n_startup_trials: Optional[int] = None,
        restarts: Optional[int] = None,
        acquisition_starts: Optional[int] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(n_startup_trials=n_startup_trials, restarts=restarts, acquisition_starts=acquisition_starts),
            **common,
        )


class BOHB(Searcher):
    """Model-based Hyperband (Falkner et al. 2018); use it with ``schedulers.Hyperband`` or
    ``schedulers.ASHA``.

    Args:
        min_points_in_model: results a budget needs before its model is used (dimensions + 1).
        top_n_percent: percentage of results counted as good (15).
        random_fraction: fraction of configurations drawn at random (1/3).
        bandwidth_factor: widening of the good model's bandwidths (3).
        num_samples: candidates drawn per suggestion (64).
    """

    kind = "bohb"

    def __init__(
        self,
        *,
        min_points_in_model: Optional[int] = None,
        top_n_percent: Optional[float] = None,
        random_fraction: Optional[float] = None,
        bandwidth_factor: Optional[float] = None,
        num_samples: Optional[int] = None,
        **common: Any,
    ) -> None:
        super().__init__(
            _settings=dict(
                min_points_in_model=min_points_in_model,
                top_n_percent=top_n_percent,
                random_fraction=random_fraction,
                bandwidth_factor=bandwidth_factor,
                num_samples=num_samples,
            ),
            **common,
        )
