"""Benchmark: what a rung sweep costs, beside Optuna on the same workload, as whole processes.

The `learning-curve` workload of shared/workloads/README.md with no compute between reports:
each trial reports its loss for steps 1..81 and ASHA (grace period 1, reduction factor 3,
max_t 81) stops the weak ones, so the wall time is the engine's own cost — searcher, scheduler,
store and the Python bindings. When Optuna is installed, the same trials run through
``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)`` with a seeded
``RandomSampler``, in-memory storage and ``n_jobs=1``, in the same run.

Every cell is a fresh interpreter (``python sweep_overhead.py --child ...``), timed from the
outside: interpreter start and imports are included, as a user running a script sees them, and
the child reports its peak RSS. rung runs with its store on (SQLite in a fresh temporary
folder) at each ``--durability`` level; Optuna keeps nothing on disk.

Run it (``bash benches/python/sweep_overhead.sh`` makes the venv with the pinned Optuna)::

    python benches/python/sweep_overhead.py
    python benches/python/sweep_overhead.py --trials 1000 --repeats 5 --concurrency 1

It prints a markdown table of medians over ``--repeats`` runs, with Optuna's time divided by
rung's in the same run. This is a benchmark, not a test: the numbers depend on the machine and
what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Run:
    """One sweep as a process: its wall time, the reports the trials made, the trials that
    ended before step ``MAX_T`` and the child's peak resident memory."""

    wall_s: float
    reports: int
    stopped_early: int
    rss_mb: float


def child_rung(trials: int, concurrency: int, durability: str) -> dict:
    import rung

    sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))
    from learning_curve import MAX_T, SPACE, loss

    reports = 0

    def train(config: dict) -> None:
        nonlocal reports
        for t in range(1, MAX_T + 1):
            reports += 1  # one += under the GIL: exact with threads
            rung.report({"loss": loss(config, t)})

    with tempfile.TemporaryDirectory(prefix="rung-bench-") as storage:
        results = rung.Tuner(
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
            durability=durability,
            verbose=0,
        ).fit()
        last_steps = [r.metrics.get("step", 0) for r in results]
    if sum(last_steps) != reports:
        raise RuntimeError(f"rung stored {sum(last_steps)} reports, the trainable made {reports}")
    return {
        "reports": reports,
        "stopped_early": sum(step < MAX_T for step in last_steps),
    }


def child_optuna(trials: int) -> dict:
    import optuna

    sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))
    from learning_curve import MAX_T, loss

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reports = 0

    def objective(trial: "optuna.Trial") -> float:
        nonlocal reports
        config = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "batch": trial.suggest_categorical("batch", [16, 32, 64, 128, 256]),
            "layers": trial.suggest_int("layers", 1, 7),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }
        for t in range(1, MAX_T + 1):
            reports += 1
            value = loss(config, t)
            trial.report(value, t)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=SEED),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    study.optimize(objective, n_trials=trials, n_jobs=1)
    stopped_early = sum((t.last_step or 0) < MAX_T for t in study.get_trials(deepcopy=False))
    return {"reports": reports, "stopped_early": stopped_early}


def run_child(args: List[str]) -> Run:
    # Bytecode is cached, as it is for a package installed with pip (an editable install in an
    # environment with PYTHONDONTWRITEBYTECODE would compile rung's modules at every start).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(wall_s, out["reports"], out["stopped_early"], out["rss_mb"])


def median_run(args: List[str], repeats: int) -> Run:
    """Median wall time and peak RSS over ``repeats`` runs (each the median's own figure for
    the counts, which are the same in every run of a seeded sweep)."""
    runs = [run_child(args) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r.wall_s)[(len(runs) - 1) // 2]
    return Run(
        statistics.median(r.wall_s for r in runs),
        middle.reports,
        middle.stopped_early,
        statistics.median(r.rss_mb for r in runs),
    )


def row(engine: str, trials: int, run: Run, ratio: Optional[float]) -> str:
    cells = [
        engine,
        f"{trials:,}",
        f"{run.reports:,}",
        f"{run.wall_s:.2f}",
        f"{run.wall_s / run.reports * 1e6:.1f}",
        f"{run.rss_mb:.0f}",
        f"{ratio:.1f}×" if ratio is not None else "",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials",
        type=int,
        nargs="+",
        default=[200, 1000, 10000, 100000],
        help="sweep sizes",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8],
        help="rung's trials at once (1 8)",
    )
    parser.add_argument(
        "--durability",
        nargs="+",
        default=["process", "power"],
        help="rung's durability levels (process power)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per cell; the median is reported (3)",
    )
    parser.add_argument(
        "--optuna-max-trials",
        type=int,
        default=10000,
        help="skip Optuna above this size (10000): its pruner rescans every trial at each check, "
        "and 100,000 trials take it hours",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        engine, trials = args.child[0], int(args.child[1])
        if engine == "rung":
            out = child_rung(trials, int(args.child[2]), args.child[3])
        else:
            out = child_optuna(trials)
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return

    try:
        import optuna

        optuna_version = optuna.__version__
    except ImportError:
        optuna_version = None
    import rung

    print(f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}")
    load = os.getloadavg()[0]
    print(
        f"rung {rung.__version__}, optuna {optuna_version or 'not installed'}, {os.cpu_count()} CPUs, load {load:.2f}"
    )
    print(
        f"workload: learning-curve, no compute, max_t 81; ASHA / SuccessiveHalving with grace period 1 and "
        f"reduction factor 3; random search, seed {SEED}; each cell a fresh process; median of {args.repeats} runs"
    )
    print()
    print("| engine | trials | reports | wall s (median) | µs/report | peak RSS MB | Optuna ÷ rung |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    skipped = []
    for trials in args.trials:
        optuna_run = None
        if optuna_version is not None and trials <= args.optuna_max_trials:
            optuna_run = median_run(["optuna", str(trials)], args.repeats)
        elif optuna_version is not None:
            skipped.append(trials)
        for concurrency in args.concurrency:
            for durability in args.durability:
                run = median_run(["rung", str(trials), str(concurrency), durability], args.repeats)
                ratio = optuna_run.wall_s / run.wall_s if optuna_run else None
                engine = f"rung, {concurrency} at once, durability {durability}"
                print(row(engine, trials, run, ratio), flush=True)
        if optuna_run is not None:
            print(row("Optuna, in memory, n_jobs=1", trials, optuna_run, None), flush=True)
    print()
    print("wall s: the whole process, interpreter start and imports included.")
    if optuna_version is None:
        print("Optuna is not installed: only rung was measured.")
    elif skipped:
        sizes = ", ".join(f"{n:,}" for n in skipped)
        print(f"Optuna skipped for {sizes} trials: above --optuna-max-trials {args.optuna_max_trials:,}.")


if __name__ == "__main__":
    main()
