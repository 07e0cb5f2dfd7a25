"""rung's Python quickstart: tune the synthetic `learning-curve` workload with TPE and ASHA.

Run it from any folder (it takes a few seconds)::

    python examples/python/quickstart.py

100 trials, 8 at a time, seed 0. TPE proposes the configurations and ASHA (rungs at steps 1, 3,
9, 27 and 81) stops the weak ones early. The sweep is stored in ``rung_results/quickstart/``
under the current folder: the store ``rung.db`` and one folder per trial. Running the script
again adds a second experiment (``quickstart-2``) to the same store.

The workload (``learning_curve.py`` beside this file) reports a loss for steps 1..81 without
training anything, so what you see is the engine itself: searcher, scheduler and store.
"""

from __future__ import annotations

import rung
from learning_curve import MAX_T, SPACE, train

STORAGE_PATH = "rung_results/quickstart"


def main() -> None:
    tuner = rung.Tuner(
        train,
        param_space=SPACE,
        metric="loss",
        mode="min",
        num_samples=100,
        max_concurrent_trials=8,
        seed=0,
        searcher=rung.search.TPE(),
        scheduler=rung.schedulers.ASHA(max_t=MAX_T, grace_period=1, reduction_factor=3),
        storage_path=STORAGE_PATH,
        name="quickstart",
    )
    results = tuner.fit()

    best = results.best_result
    value, step = best.best
    print(f"best trial {best.trial_id}: loss {value:.5f} at step {step}")
    print("  config:", best.config)
    counts = ", ".join(f"{status} {n}" for status, n in sorted(results.counts().items()))
    print(f"{len(results)} trials ({counts}) in {results.elapsed_s:.2f} s")
    print(f"store: {results.store} (experiment {results.experiment!r})")


if __name__ == "__main__":
    main()
