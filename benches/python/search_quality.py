"""Benchmark: search quality of rung's searchers beside Optuna's, on the same problems and seeds.

Every run is sequential ask/tell: a searcher suggests one configuration, it is evaluated, the
result is reported, and so on for ``--evaluations`` (100) evaluations. The searchers:

- ``rung-tpe``: ``rung.search.TPE()``, ``rung-gp``: ``rung.search.GP()``, ``random``:
  ``rung.search.Random()``, all with default settings, standalone (``suggest`` /
  ``on_complete``), seeded with the run's seed;
- ``optuna-tpe``: ``optuna.samplers.TPESampler(seed=s)``, ``optuna-gp``:
  ``optuna.samplers.GPSampler(seed=s)``, through ``study.ask()`` / ``study.tell()`` with
  in-memory storage; parameters are suggested define-by-run, so a conditional parameter is
  suggested only under its branch.

The problems (``--problems`` takes names, group names or prefixes, and ``*`` globs):

- ``synthetic``: Branin, Hartmann6, Rosenbrock (d = 4) and Branin with a categorical ``shift``
  and an integer ``n`` (``mixed-branin``), as specified in shared/workloads/README.md section 2;
- ``bbob``: six noiseless BBOB functions of COCO (``cocoex``, instance 1) in 2, 5 and 10
  dimensions on [−5, 5]^d: f1 sphere (separable, unimodal: the baseline any model should
  solve), f3 separable Rastrigin (regular multimodality), f8 Rosenbrock (a curved valley),
  f10 rotated ellipsoid (ill-conditioned, non-separable), f15 rotated Rastrigin (multimodal and
  non-separable) and f21 Gallagher 101 peaks (weak global structure) — one or two from each of
  BBOB's five function groups. Regret is f − f_opt, f_opt being f at the optimum COCO reports;
- ``tables``: lookup tables of real 3-fold cross-validated error rates of scikit-learn models
  on data sets bundled with scikit-learn (``benches/data/*.csv.gz``, built by
  ``make_tables.py``): every parameter is a ``choice``; ``table-cond-breast_cancer`` is a
  conditional space (``model`` is tree, knn or linear, each with its own parameters). Regret is
  the error − the table's minimum.

For each problem and searcher the report gives the median and interquartile range over the
seeds (``--seeds``, 0..19) of the regret (best found − known minimum) after 25, 50 and 100
evaluations; for finite spaces (the tables) the repeated configurations of a run (evaluations
of a configuration that run had already evaluated); and the median time of a suggestion over
the last 20 suggestions of each run (wall time of ``suggest``, or of ``ask`` and the
``suggest_*`` calls: the searcher's own work). When rung reports a finite space exhausted the
run ends early and its regret stays that of its last evaluation (the ``exhausted`` count).

Run it through the script that makes its virtual environment (Optuna, cocoex, torch, ...) and
builds rung into it with ``--release``::

    bash benches/python/search_quality.sh                          # everything, every CPU
    bash benches/python/search_quality.sh --problems synthetic,tables --out /tmp/q.md
    bash benches/python/search_quality.sh --problems branin,bbob-f01 --seeds 3 --evaluations 30

This is a benchmark, not a test: suggestion times depend on the machine and on what else runs
on it (``--jobs`` runs share the CPUs). Optuna's GP is the slow part: about a minute per
100-evaluation run on one core of a small machine.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import functools
import gzip
import math
import multiprocessing
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import rung

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
SEARCHERS = ["rung-tpe", "rung-gp", "optuna-tpe", "optuna-gp", "random"]
LABELS = {
    "rung-tpe": "rung TPE",
    "rung-gp": "rung GP",
    "optuna-tpe": "Optuna TPE",
    "optuna-gp": "Optuna GP",
    "random": "random (rung)",
}
CHECKPOINTS = (25, 50, 100)
TIMED_LAST = 20
BBOB_FUNCTIONS = {
    1: "sphere",
    3: "Rastrigin",
    8: "Rosenbrock",
    10: "ellipsoid",
    15: "rotated Rastrigin",
    21: "Gallagher",
}
BBOB_DIMENSIONS = (2, 5, 10)
GROUPS = ("synthetic", "bbob", "tables")


# --- search spaces ------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter: ``float`` in [low, high] (log-scaled when ``log``), ``int`` in
    [low, high] (both inclusive), or ``choice`` among ``options``."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    options: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class Branches:
    """A conditional parameter: ``name`` picks a branch, and only that branch's parameters
    exist."""

    name: str
    branches: Tuple[Tuple[str, Tuple[Param, ...]], ...]


Space = Tuple[Any, ...]  # of Param and Branches


def rung_domain(param: Param) -> Any:
    if param.kind == "float":
        return (rung.loguniform if param.log else rung.uniform)(param.low, param.high)
    if param.kind == "int":
        return rung.randint(int(param.low), int(param.high) + 1)  # rung's high is exclusive
    if param.kind == "choice":
        return rung.choice(list(param.options))
    raise ValueError(f"unknown parameter kind {param.kind!r}")


def rung_space(space: Space) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in space:
        if isinstance(item, Branches):
            options = [{"name": branch, **{p.name: rung_domain(p) for p in params}} for branch, params in item.branches]
            out[item.name] = rung.choice(options)
        else:
            out[item.name] = rung_domain(item)
    return out


def flat_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """rung's config as flat parameter names: the branch of a conditional parameter under its
    own name, the branch's parameters beside it (nested dicts or dotted names both work)."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            for sub, sub_value in value.items():
                out[key if sub == "name" else sub] = sub_value
        elif "." in key:
            parent, sub = key.split(".", 1)
            out[parent if sub == "name" else sub] = value
        else:
            out[key] = value
    return out


def optuna_suggest(trial: Any, space: Space) -> Dict[str, Any]:
    """Suggest the space define-by-run: a branch's parameters only under that branch."""

    def one(param: Param) -> Any:
        if param.kind == "float":
            return trial.suggest_float(param.name, param.low, param.high, log=param.log)
        if param.kind == "int":
            return trial.suggest_int(param.name, int(param.low), int(param.high))
        if param.kind == "choice":
            return trial.suggest_categorical(param.name, list(param.options))
        raise ValueError(f"unknown parameter kind {param.kind!r}")

    out: Dict[str, Any] = {}
    for item in space:
        if isinstance(item, Branches):
            branch = trial.suggest_categorical(item.name, [b for b, _ in item.branches])
            out[item.name] = branch
            for param in dict(item.branches)[branch]:
                out[param.name] = one(param)
        else:
            out[item.name] = one(item)
    return out


# --- problems -----------------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    group: str
    description: str
    space: Space
    minimum: float
    objective: Callable[[Dict[str, Any]], float]
    finite: bool


BRANIN_MIN = 0.39788735772973816
HARTMANN6_MIN = -3.322368011415511
HARTMANN6_ALPHA = (1.0, 1.2, 3.0, 3.2)
HARTMANN6_A = (
    (10, 3, 17, 3.5, 1.7, 8),
    (0.05, 10, 17, 0.1, 8, 14),
    (3, 3.5, 1.7, 10, 17, 8),
    (17, 8, 0.05, 10, 0.1, 14),
)
HARTMANN6_P = (
    (1312, 1696, 5569, 124, 8283, 5886),
    (2329, 4135, 8307, 3736, 1004, 9991),
    (2348, 1451, 3522, 2883, 3047, 6650),
    (4047, 8828, 8732, 5743, 1091, 381),
)


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin_objective(config: Dict[str, Any]) -> float:
    return branin(config["x1"], config["x2"])


def hartmann6_objective(config: Dict[str, Any]) -> float:
    x = [config[f"x{j + 1}"] for j in range(6)]
    total = 0.0
    for alpha, a_row, p_row in zip(HARTMANN6_ALPHA, HARTMANN6_A, HARTMANN6_P):
        total -= alpha * math.exp(-sum(a * (xj - p * 1e-4) ** 2 for a, xj, p in zip(a_row, x, p_row)))
    return total


def rosenbrock_objective(config: Dict[str, Any], d: int) -> float:
    x = [config[f"x{j + 1}"] for j in range(d)]
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(d - 1))


def mixed_branin_objective(config: Dict[str, Any]) -> float:
    shift = {"none": 0.0, "left": 2.0, "right": 5.0}[config["shift"]]
    return branin(config["x1"], config["x2"]) + shift + 0.1 * (config["n"] - 1)


def floats(names: Iterable[str], low: float, high: float) -> Tuple[Param, ...]:
    return tuple(Param(name, "float", low, high) for name in names)


def synthetic_problems() -> List[Problem]:
    branin_space = (Param("x1", "float", -5.0, 10.0), Param("x2", "float", 0.0, 15.0))
    return [
        Problem("branin", "synthetic", "Branin, 2 floats", branin_space, BRANIN_MIN, branin_objective, False),
        Problem(
            "hartmann6",
            "synthetic",
            "Hartmann6, 6 floats in [0, 1]",
            floats((f"x{j + 1}" for j in range(6)), 0.0, 1.0),
            HARTMANN6_MIN,
            hartmann6_objective,
            False,
        ),
        Problem(
            "rosenbrock4",
            "synthetic",
            "Rosenbrock, 4 floats in [-2.048, 2.048]",
            floats((f"x{j + 1}" for j in range(4)), -2.048, 2.048),
            0.0,
            functools.partial(rosenbrock_objective, d=4),
            False,
        ),
        Problem(
            "mixed-branin",
            "synthetic",
            "Branin + shift choice(none, left, right) + n randint(1, 5)",
            branin_space + (Param("shift", "choice", options=("none", "left", "right")), Param("n", "int", 1, 4)),
            BRANIN_MIN,
            mixed_branin_objective,
            False,
        ),
    ]


class BbobFunction:
    """A COCO BBOB problem, created in the process that evaluates it (cocoex objects do not
    pickle)."""

    def __init__(self, function: int, dimension: int) -> None:
        import cocoex

        cocoex.log_level("error")
        self._suite = cocoex.Suite("bbob", "", f"function_indices:{function} dimensions:{dimension} instance_indices:1")
        self._problem = self._suite[0]
        self.dimension = dimension
        self.id = self._problem.id
        self.f_opt = self._optimum()

    def _optimum(self) -> float:
        # cocoex 2.8 hands out problems without `final_target_fvalue1`; `_best_parameter("print")`
        # writes x_opt to ./._bbob_problem_best_parameter.txt, and f(x_opt) is f_opt.
        here = os.getcwd()
        with tempfile.TemporaryDirectory(prefix="rung-bbob-") as folder:
            os.chdir(folder)
            try:
                self._problem._best_parameter("print")
                x_opt = np.loadtxt(os.path.join(folder, "._bbob_problem_best_parameter.txt"), ndmin=1)
            finally:
                os.chdir(here)
        if x_opt.shape != (self.dimension,):
            raise RuntimeError(f"{self.id}: x_opt has shape {x_opt.shape}")
        return float(self._problem(x_opt))

    def __call__(self, config: Dict[str, Any]) -> float:
        x = np.array([config[f"x{j}"] for j in range(self.dimension)], dtype=np.float64)
        return float(self._problem(x))


def bbob_problem(function: int, dimension: int) -> Problem:
    f = BbobFunction(function, dimension)
    return Problem(
        f"bbob-f{function:02d}-d{dimension:02d}",
        "bbob",
        f"{f.id}: {BBOB_FUNCTIONS[function]}, {dimension} floats in [-5, 5], f_opt {f.f_opt:g}",
        floats((f"x{j}" for j in range(dimension)), -5.0, 5.0),
        f.f_opt,
        f,
        False,
    )


def parse_cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Table:
    """A lookup table of make_tables.py: its space and its error per configuration. Each column
    but the last is a ``choice`` of the values it holds; a first column named ``model`` makes a
    conditional space, each model's parameters being the columns its rows fill."""

    def __init__(self, path: str) -> None:
        with gzip.open(path, "rt", newline="") as f:
            rows = list(csv.reader(f))
        header, rows = rows[0], rows[1:]
        if header[-1] != "error":
            raise ValueError(f"{path}: the last column is {header[-1]!r}, not 'error'")
        self.columns = header[:-1]
        self.errors: Dict[Tuple[Any, ...], float] = {}
        values: Dict[str, Dict[Any, None]] = {c: {} for c in self.columns}  # ordered sets
        branch_columns: Dict[Any, Dict[str, None]] = {}
        conditional = self.columns[0] == "model"
        for row in rows:
            cells = tuple(parse_cell(v) for v in row[:-1])
            if cells in self.errors:
                raise ValueError(f"{path}: configuration {cells} appears twice")
            self.errors[cells] = float(row[-1])
            for column, value in zip(self.columns, cells):
                if value != "":
                    values[column][value] = None
            if conditional:
                present = branch_columns.setdefault(cells[0], {})
                present.update((c, None) for c, v in zip(self.columns[1:], cells[1:]) if v != "")
        self.minimum = min(self.errors.values())

        def param(column: str) -> Param:
            options = list(values[column])
            if all(isinstance(v, (int, float)) for v in options):
                options.sort()
            return Param(column, "choice", options=tuple(options))

        if conditional:
            branches = tuple((branch, tuple(param(c) for c in present)) for branch, present in branch_columns.items())
            self.space: Space = (Branches("model", branches),)
        else:
            self.space = tuple(param(c) for c in self.columns)

    def __call__(self, config: Dict[str, Any]) -> float:
        key = tuple(config.get(c, "") for c in self.columns)
        try:
            return self.errors[key]
        except KeyError:
            raise KeyError(f"configuration {config} is not in the table") from None


def table_problem(name: str) -> Problem:
    path = os.path.join(DATA_DIR, f"{name[len('table-') :]}.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run benches/python/make_tables.py")
    table = Table(path)
    return Problem(
        name,
        "tables",
        f"{len(table.errors)} cells, {len(table.columns)} columns, error min {table.minimum:.4f}",
        table.space,
        table.minimum,
        table,
        True,
    )


def problem_names() -> List[str]:
    names = [p.name for p in synthetic_problems()]
    names += [f"bbob-f{f:02d}-d{d:02d}" for d in BBOB_DIMENSIONS for f in BBOB_FUNCTIONS]
    if os.path.isdir(DATA_DIR):
        names += sorted(f"table-{f[: -len('.csv.gz')]}" for f in os.listdir(DATA_DIR) if f.endswith(".csv.gz"))
    return names


@functools.lru_cache(maxsize=None)
def get_problem(name: str) -> Problem:
    """The problem called ``name``, built once per process."""
    if name.startswith("bbob-"):
        function, dimension = name[len("bbob-f") :].split("-d")
        return bbob_problem(int(function), int(dimension))
    if name.startswith("table-"):
        return table_problem(name)
    for problem in synthetic_problems():
        if problem.name == name:
            return problem
    raise KeyError(f"unknown problem {name!r}")


def select(patterns: str, names: Sequence[str], what: str, groups: Optional[Mapping[str, str]] = None) -> List[str]:
    """The names matching a comma list of names, group names, prefixes or ``*`` globs, in the
    order of ``names``."""
    chosen = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        matched = [
            n
            for n in names
            if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern) or (groups or {}).get(n) == pattern
        ]
        if not matched:
            raise SystemExit(f"--{what}: {pattern!r} matches none of {', '.join(names)}")
        chosen.update(matched)
    return [n for n in names if n in chosen]


def group_of(name: str) -> str:
    if name.startswith("bbob-"):
        return "bbob"
    if name.startswith("table-"):
        return "tables"
    return "synthetic"


# --- runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    problem: str
    searcher: str
    seed: int
    values: List[float]  # objective value of each evaluation, in order
    repeats: int  # evaluations of a configuration already evaluated in this run
    exhausted: bool  # rung said the space was exhausted before the last evaluation
    suggest_s: List[float]  # wall time of each suggestion


def config_key(config: Mapping[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted(config.items()))


def run_rung(problem: Problem, searcher: str, seed: int, evaluations: int) -> Run:
    cls = {"rung-tpe": rung.search.TPE, "rung-gp": rung.search.GP, "random": rung.search.Random}[searcher]
    # RUNG_TPE_SETTINGS='{"gamma": 0.2}' tries other settings of rung's TPE (for tuning its defaults).
    settings = json.loads(os.environ.get("RUNG_TPE_SETTINGS", "{}")) if searcher == "rung-tpe" else {}
    s = cls(space=rung_space(problem.space), metric="loss", mode="min", seed=seed, **settings)
    values: List[float] = []
    times: List[float] = []
    seen = set()
    repeats = 0
    exhausted = False
    for i in range(evaluations):
        trial_id = f"t{i + 1}"
        started = time.perf_counter()
        config = s.suggest(trial_id)
        times.append(time.perf_counter() - started)
        if config is None:
            if s.exhausted:
                exhausted = True
                break
            raise RuntimeError(f"{searcher} on {problem.name}, seed {seed}: suggest returned None, not exhausted")
        flat = flat_config(config)
        key = config_key(flat)
        repeats += key in seen
        seen.add(key)
        value = problem.objective(flat)
        values.append(value)
        s.on_complete(trial_id, {"loss": value})
    return Run(problem.name, searcher, seed, values, repeats, exhausted, times)


def run_optuna(problem: Problem, searcher: str, seed: int, evaluations: int) -> Run:
    import optuna

    sampler = {"optuna-tpe": optuna.samplers.TPESampler, "optuna-gp": optuna.samplers.GPSampler}[searcher](seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    values: List[float] = []
    times: List[float] = []
    seen = set()
    repeats = 0
    for _ in range(evaluations):
        started = time.perf_counter()
        trial = study.ask()
        config = optuna_suggest(trial, problem.space)
        times.append(time.perf_counter() - started)
        key = config_key(config)
        repeats += key in seen
        seen.add(key)
        value = problem.objective(config)
        values.append(value)
        study.tell(trial, value)
    return Run(problem.name, searcher, seed, values, repeats, False, times)


def quiet_optuna() -> None:
    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def init_worker(threads: Optional[int]) -> None:
    quiet_optuna()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_task(task: Tuple[str, str, int, int]) -> Run:
    name, searcher, seed, evaluations = task
    try:
        problem = get_problem(name)
        if searcher.startswith("optuna-"):
            run = run_optuna(problem, searcher, seed, evaluations)
        else:
            run = run_rung(problem, searcher, seed, evaluations)
        regrets = [v - problem.minimum for v in run.values]
        if not regrets or min(regrets) < -1e-9 * max(1.0, abs(problem.minimum)):
            raise RuntimeError(f"regret {min(regrets, default=math.nan)} below 0: the known minimum is wrong")
        return run
    except Exception as e:
        raise RuntimeError(f"{searcher} on {name}, seed {seed} failed: {type(e).__name__}: {e}") from e


# --- report -------------------------------------------------------------------------------


def best_after(run: Run, n: int) -> float:
    """Best value within the first ``n`` evaluations (all of them when the run ended earlier)."""
    return min(run.values[:n])


def quartiles(xs: Sequence[float]) -> Tuple[float, float, float]:
    q25, q50, q75 = np.percentile(np.asarray(xs, dtype=np.float64), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def cell(xs: Sequence[float]) -> str:
    q25, q50, q75 = quartiles(xs)
    return f"{fmt(q50)} [{fmt(q25)}–{fmt(q75)}]"


def report(
    runs: Dict[Tuple[str, str], List[Run]],
    problems: List[str],
    searchers: List[str],
    checkpoints: List[int],
    minima: Dict[str, float],
    descriptions: Dict[str, str],
    seeds: int,
) -> List[str]:
    """The markdown report. A cell with fewer than ``seeds`` runs (a report written while the
    runs go on) shows the runs it has, and is left out of the comparisons."""
    lines: List[str] = []

    def median_regret(name: str, searcher: str, n: int) -> Optional[float]:
        rs = runs.get((name, searcher))
        if not rs or len(rs) < seeds:
            return None
        return quartiles([best_after(r, n) - minima[name] for r in rs])[1]

    for group in GROUPS:
        names = [p for p in problems if group_of(p) == group]
        if not names:
            continue
        finite = group == "tables"
        lines.append(f"### {group}")
        lines.append("")
        for name in names:
            lines.append(f"- `{name}`: {descriptions[name]}")
        lines.append("")
        head = ["problem", "searcher", "runs"] + [f"regret @{n}" for n in checkpoints]
        if finite:
            head += ["repeats", "exhausted"]
        head += [f"ms/suggest (last {TIMED_LAST})"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * 2 + "---:|" * (len(head) - 2))
        for name in names:
            for searcher in searchers:
                rs = runs.get((name, searcher), [])
                row = [name, LABELS[searcher], str(len(rs))]
                if not rs:
                    lines.append("| " + " | ".join(row + ["…"] * (len(head) - 3)) + " |")
                    continue
                row += [cell([best_after(r, n) - minima[name] for r in rs]) for n in checkpoints]
                if finite:
                    row.append(cell([float(r.repeats) for r in rs]))
                    row.append(f"{sum(r.exhausted for r in rs)}/{len(rs)}")
                last = [float(np.median(r.suggest_s[-TIMED_LAST:])) * 1e3 for r in rs]
                row.append(f"{np.median(last):.2f}")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        compare = [n for n in checkpoints if n >= 50] or checkpoints[-1:]
        for name in names:
            parts = []
            if "rung-tpe" in searchers and "optuna-tpe" in searchers:
                for n in compare:
                    a, b = median_regret(name, "rung-tpe", n), median_regret(name, "optuna-tpe", n)
                    if a is None or b is None:
                        continue
                    parts.append(f"rung TPE ≤ Optuna TPE @{n}: {'yes' if a <= b else 'NO'} ({fmt(a)} vs {fmt(b)})")
            if not finite and "rung-gp" in searchers and "optuna-gp" in searchers:
                n = compare[0]
                a, b = median_regret(name, "rung-gp", n), median_regret(name, "optuna-gp", n)
                if a is not None and b is not None:
                    parts.append(f"rung GP ≤ Optuna GP @{n}: {'yes' if a <= b else 'NO'} ({fmt(a)} vs {fmt(b)})")
            if parts:
                lines.append(f"- `{name}`: " + "; ".join(parts))
        lines.append("")
    last = [float(np.median(r.suggest_s[-TIMED_LAST:])) for (_, s), rs in runs.items() if s == "rung-gp" for r in rs]
    if last:
        evaluations = max(len(r.suggest_s) for rs in runs.values() for r in rs)
        lines.append(
            f"rung GP suggestion time: median {np.median(last) * 1e3:.1f} ms over the last {TIMED_LAST} "
            f"suggestions of each {evaluations}-evaluation run (all problems; per problem in the tables above)."
        )
    return lines


def versions() -> List[str]:
    lines = [f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}"]
    native = rung._rung.__file__
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(native)))
    parts = [f"rung {rung.__version__} ({os.path.basename(native)} built {built})"]
    for module in ("optuna", "numpy", "torch", "cocoex", "sklearn"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            parts.append(f"{module} not installed")
    cpus = os.cpu_count()
    lines.append(", ".join(parts))
    lines.append(f"{cpus} CPUs ({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.2f}")
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 per problem and searcher (20)")
    parser.add_argument("--evaluations", type=int, default=100, help="evaluations per run (100)")
    parser.add_argument("--problems", default="synthetic,bbob,tables", help="names, groups, prefixes or globs")
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help=f"comma list of {', '.join(SEARCHERS)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (CPU count)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.evaluations < 1 or args.jobs < 1:
        parser.error("--seeds, --evaluations and --jobs must be at least 1")

    all_problems = problem_names()
    problems = select(args.problems, all_problems, "problems", {n: group_of(n) for n in all_problems})
    searchers = select(args.searchers, SEARCHERS, "searchers")
    checkpoints = sorted({n for n in CHECKPOINTS if n < args.evaluations} | {args.evaluations})

    header = versions()
    header.append(
        f"{len(problems)} problems × {len(searchers)} searchers × {args.seeds} seeds (0..{args.seeds - 1}), "
        f"{args.evaluations} sequential evaluations per run, {args.jobs} worker process(es)"
        + (", torch limited to 1 thread per worker" if args.jobs > 1 else "")
    )
    for line in header:
        print(line, flush=True)
    print()

    quiet_optuna()
    minima, descriptions = {}, {}
    for name in problems:
        problem = get_problem(name)
        minima[name], descriptions[name] = problem.minimum, problem.description

    # Group by group, problem by problem (so a partial report has whole problems), the slow
    # searchers first within a problem.
    cost = {"optuna-gp": 0, "rung-gp": 1, "optuna-tpe": 2, "rung-tpe": 3, "random": 4}
    tasks = [(p, s, seed, args.evaluations) for p in problems for s in searchers for seed in range(args.seeds)]
    tasks.sort(key=lambda t: (GROUPS.index(group_of(t[0])), problems.index(t[0]), cost[t[1]]))
    runs: Dict[Tuple[str, str], List[Run]] = {}
    started = time.perf_counter()

    def write(lines: List[str]) -> None:
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(header + [""] + lines) + "\n")

    def collect(results: Iterable[Run]) -> None:
        written = time.perf_counter()
        for done, run in enumerate(results, 1):
            runs.setdefault((run.problem, run.searcher), []).append(run)
            now = time.perf_counter()
            if done % max(1, len(tasks) // 20) == 0 or done == len(tasks):
                print(f"  {done}/{len(tasks)} runs, {now - started:.0f} s", file=sys.stderr, flush=True)
            if args.out and now - written > 60 and done < len(tasks):
                # A long run leaves a readable report behind as it goes.
                partial = report(runs, problems, searchers, checkpoints, minima, descriptions, args.seeds)
                write(partial + [f"Partial: {done}/{len(tasks)} runs done after {now - started:.0f} s."])
                written = now

    if args.jobs == 1:
        collect(run_task(t) for t in tasks)
    else:
        # spawn: rung's engine threads make fork unsafe.
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.jobs, initializer=init_worker, initargs=(1,)) as pool:
            collect(pool.imap_unordered(run_task, tasks, chunksize=1))
    for rs in runs.values():
        rs.sort(key=lambda r: r.seed)
    wall = time.perf_counter() - started

    lines = report(runs, problems, searchers, checkpoints, minima, descriptions, args.seeds)
    lines.append(f"Wall time of the runs: {wall:.0f} s.")
    print("\n".join(lines))
    write(lines)


if __name__ == "__main__":
    main()
