"""rung: hyperparameter tuning with early stopping and exact resume, powered by Rust.

::

    import rung

    def train(config):
        for step in range(1, 82):
            loss = ...
            rung.report({"loss": loss})

    tuner = rung.Tuner(train, param_space={"lr": rung.loguniform(1e-5, 1e-1)},
                       metric="loss", mode="min", num_samples=50,
                       scheduler=rung.schedulers.ASHA(max_t=81))
    results = tuner.fit()
    results.best_result.config
"""

from . import schedulers, search
from ._results import Result, ResultGrid
from ._rung import __version__
from ._session import checkpoint_dir, get_checkpoint, get_trial_id, report
from ._space import (
    Domain,
    choice,
    fixed,
    grid,
    grid_search,
    loguniform,
    lograndint,
    normal,
    qloguniform,
    qrandint,
    quniform,
    randint,
    randn,
    uniform,
)
from ._tuner import Tuner
from .client import AssignedTrial, Client

__all__ = [
    "__version__",
    "AssignedTrial",
    "Client",
    "Domain",
    "Result",
    "ResultGrid",
    "Tuner",
    "checkpoint_dir",
    "choice",
    "fixed",
    "get_checkpoint",
    "get_trial_id",
    "grid",
    "grid_search",
    "loguniform",
    "lograndint",
    "normal",
    "qloguniform",
    "qrandint",
    "quniform",
    "randint",
    "randn",
    "report",
    "schedulers",
    "search",
    "uniform",
]
