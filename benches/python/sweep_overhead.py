"""Benchmark: what a rung sweep costs per report, beside Optuna on the same workload.

The `learning-curve` workload of shared/workloads/README.md with no compute between reports:
each trial reports its loss for steps 1..81 and ASHA (grace period 1, reduction factor 3,
max_t 81) stops the weak ones, so the wall time is the engine's own cost — searcher, scheduler,
store and the Python bindings. When Optuna is installed, the same trials run through
``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)`` with a seeded
``RandomSampler`` and in-memory storage, in the same run.

Run it (about 5 minutes with the defaults on 2 CPUs, most of it Optuna's 10,000-trial sweeps)::

    python benches/python/sweep_overhead.py
    python benches/python/sweep_overhead.py --trials 1000 --repeats 5 --concurrency 1

It prints a markdown table: the median wall time over ``--repeats`` runs, the reports of that
run and the microseconds per report (wall / reports). This is a benchmark, not a test: the
numbers depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import rung

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python"))
from learning_curve import MAX_T, SPACE, loss  # noqa: E402 - found through the path above

try:
    import optuna
except ImportError:
    optuna = None

SEED = 0


@dataclass
class Run:
    """One sweep: its wall time, the reports the trials made, and the trials that ended
    before step ``MAX_T``."""

    wall_s: float
    reports: int
    stopped_early: int


class Counter:
    """A counter that trial threads increment together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> None:
        with self._lock:
            self.value += 1


def run_rung(trials: int, concurrency: int) -> Run:
    counter = Counter()

    def train(config: dict) -> None:
        for t in range(1, MAX_T + 1):
            counter.increment()
            rung.report({"loss": loss(config, t)})

    with tempfile.TemporaryDirectory(prefix="rung-bench-") as storage:
        started = time.perf_counter()
        tuner = rung.Tuner(
            train,
            param_space=SPACE,
            metric="loss",
            mode="min",
            num_samples=trials,
            max_concurrent_trials=concurrency,
            seed=SEED,
            searcher=rung.search.Random(),
            scheduler=rung.schedulers.ASHA(max_t=MAX_T, grace_period=1, reduction_factor=3),
            storage_path=storage,
            verbose=0,
        )
        results = tuner.fit()
        wall_s = time.perf_counter() - started
        last_steps = [r.metrics.get("step", 0) for r in results]
    if sum(last_steps) != counter.value:
        raise RuntimeError(f"rung stored {sum(last_steps)} reports, the trainable made {counter.value}")
    return Run(wall_s, counter.value, sum(step < MAX_T for step in last_steps))


def run_optuna(trials: int) -> Run:
    counter = Counter()

    def objective(trial: "optuna.Trial") -> float:
        config = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "batch": trial.suggest_categorical("batch", [16, 32, 64, 128, 256]),
            "layers": trial.suggest_int("layers", 1, 7),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
        for t in range(1, MAX_T + 1):
            counter.increment()
            value = loss(config, t)
            trial.report(value, t)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    started = time.perf_counter()
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=SEED),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    study.optimize(objective, n_trials=trials, n_jobs=1)
    wall_s = time.perf_counter() - started
    stopped_early = sum((t.last_step or 0) < MAX_T for t in study.get_trials(deepcopy=False))
    return Run(wall_s, counter.value, stopped_early)


def median_run(measure: Callable[[], Run], repeats: int) -> Run:
    """The run with the median wall time (the lower middle one for an even count)."""
    runs = sorted((measure() for _ in range(repeats)), key=lambda r: r.wall_s)
    return runs[(len(runs) - 1) // 2]


def row(engine: str, trials: int, run: Run) -> str:
    per_report_us = run.wall_s / run.reports * 1e6
    cells = [
        engine,
        f"{trials:,}",
        f"{run.reports:,}",
        f"{run.wall_s:.2f}",
        f"{per_report_us:.1f}",
        f"{run.stopped_early:,}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000], help="sweep sizes (1000 10000)")
    parser.add_argument("--concurrency", type=int, default=8, help="rung's trials at once (8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is reported (3)")
    parser.add_argument(
        "--optuna-max-trials",
        type=int,
        default=10000,
        help="skip Optuna for sweeps larger than this (10000): its pruner rescans every trial at each check",
    )
    args = parser.parse_args(argv)

    print(f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}")
    optuna_version = optuna.__version__ if optuna is not None else "not installed"
    load = os.getloadavg()[0]
    print(f"rung {rung.__version__}, optuna {optuna_version}, {os.cpu_count()} CPUs, load average {load:.2f}")
    print(
        f"workload: learning-curve, no compute, max_t {MAX_T}; ASHA / SuccessiveHalving with grace period 1 and "
        f"reduction factor 3; random search, seed {SEED}; median of {args.repeats} runs"
    )
    print(f"rung: thread executor, {args.concurrency} trials at once, store in a fresh temporary folder")
    if optuna is not None:
        print("optuna: n_jobs=1 (its threads share the GIL), in-memory storage")
    print()
    print("| engine | trials | reports | wall s (median) | µs/report | trials pruned/stopped |")
    print("|---|---:|---:|---:|---:|---:|")
    skipped = []
    for trials in args.trials:
        run = median_run(functools.partial(run_rung, trials, args.concurrency), args.repeats)
        print(row(f"rung (ASHA, {args.concurrency} threads)", trials, run), flush=True)
        if optuna is None:
            continue
        if trials > args.optuna_max_trials:
            skipped.append(trials)
            continue
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        run = median_run(functools.partial(run_optuna, trials), args.repeats)
        print(row("optuna (SuccessiveHalvingPruner, n_jobs=1)", trials, run), flush=True)
    print()
    print("trials pruned/stopped: trials that ended before step 81.")
    print(
        "rung answers a report once it is in its SQLite store (WAL, synchronous=FULL); "
        "Optuna's in-memory storage keeps nothing on disk."
    )
    if optuna is None:
        print("Optuna is not installed (pip install optuna): only rung was measured.")
    elif skipped:
        sizes = ", ".join(f"{n:,}" for n in skipped)
        print(f"Optuna skipped for {sizes} trials: above --optuna-max-trials {args.optuna_max_trials:,}.")


if __name__ == "__main__":
    main()
