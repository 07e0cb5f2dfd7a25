"""Build the lookup tables of the tabular problems of ``search_quality.py``.

Each table holds every cell of a grid of categorical and ordinal hyperparameters of a
scikit-learn model, with the 3-fold cross-validated error rate (1 − accuracy) that the model
really got on a data set bundled with scikit-learn (nothing is downloaded). A searcher then
"trains" a configuration by looking its error up, so search quality can be measured over many
seeds on a real, rugged, finite landscape in seconds. Folds (``StratifiedKFold``, shuffled) and
models use ``random_state=0``, so a rebuild gives the same numbers on the same library versions.

Tables (written to ``benches/data/<name>.csv.gz``; one column per parameter, then ``error``):

- ``tree-digits``: ``DecisionTreeClassifier`` on digits, 7 parameters, 4,800 cells;
- ``knn-digits``: scaler → PCA → ``KNeighborsClassifier`` on digits, 6 parameters, 1,920 cells;
- ``sgd-wine``: scaler → ``SGDClassifier`` on wine, 6 parameters, 2,160 cells (the easy one:
  wine has 178 samples, so errors come in steps of 1/178 and 32 cells share the minimum);
- ``cond-breast_cancer``: a conditional space on breast cancer — ``model`` is ``tree``
  (``DecisionTreeClassifier``), ``knn`` (``KNeighborsClassifier``) or ``linear``
  (``LogisticRegression``), each with its own parameters (prefixed ``tree_``, ``knn_``,
  ``linear_``; a cell of another branch leaves them empty), 2,478 cells.

Run it once (about 5 minutes on 2 busy CPUs, 250 s of CPU time; the files are meant to be
committed, so only a change of the grids needs it again)::

    target/bench-venv/bin/python benches/python/make_tables.py   # made by search_quality.sh
    target/bench-venv/bin/python benches/python/make_tables.py --jobs 1 --only sgd-wine
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import itertools
import multiprocessing
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FOLDS = 3
SEED = 0

Cell = Dict[str, Any]

# Each grid: parameter name → values, every combination is a cell.
TREE_GRID: Dict[str, List[Any]] = {
    "criterion": ["gini", "entropy"],
    "max_depth": [1, 2, 3, 4, 6, 8, 12, 16],
    "min_samples_leaf": [1, 2, 4, 8, 16],
    "max_features": [0.1, 0.25, 0.5, 0.75, 1.0],
    "splitter": ["best", "random"],
    "class_weight": ["none", "balanced"],
    "ccp_alpha": [0.0, 0.002, 0.01],
}
KNN_GRID: Dict[str, List[Any]] = {
    "scaler": ["none", "standard", "minmax"],
    "pca_components": [4, 8, 12, 16, 24, 32, 48, 64],
    "whiten": ["no", "yes"],
    "n_neighbors": [1, 2, 3, 5, 7, 10, 15, 20, 30, 50],
    "weights": ["uniform", "distance"],
    "p": [1, 2],
}
SGD_GRID: Dict[str, List[Any]] = {
    "scaler": ["none", "standard"],
    "loss": ["hinge", "log_loss", "modified_huber", "perceptron", "squared_hinge"],
    "penalty": ["l2", "l1", "elasticnet"],
    "alpha": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
    "learning_rate": ["optimal", "constant", "invscaling", "adaptive"],
    "eta0": [0.001, 0.01, 0.1],
}
COND_GRIDS: Dict[str, Dict[str, List[Any]]] = {
    "tree": {
        "tree_criterion": ["gini", "entropy"],
        "tree_max_depth": [1, 2, 3, 4, 6, 8, 12, 16],
        "tree_min_samples_leaf": [1, 2, 4, 8, 16, 32],
        "tree_max_features": [0.1, 0.25, 0.5, 0.75, 1.0],
        "tree_splitter": ["best", "random"],
        "tree_class_weight": ["none", "balanced"],
    },
    "knn": {
        "knn_n_neighbors": [1, 2, 3, 4, 5, 7, 9, 11, 15, 20, 25, 30, 40, 50, 75],
        "knn_weights": ["uniform", "distance"],
        "knn_p": [1, 2, 3],
        "knn_scaler": ["none", "standard", "minmax"],
    },
    "linear": {
        "linear_C": [1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0],
        "linear_penalty": ["l1", "l2"],
        "linear_scaler": ["none", "standard", "minmax"],
        "linear_class_weight": ["none", "balanced"],
        "linear_fit_intercept": ["yes", "no"],
    },
}


def grid_cells(grid: Dict[str, List[Any]]) -> List[Cell]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def scaler(name: str) -> Any:
    if name == "standard":
        return StandardScaler()
    if name == "minmax":
        return MinMaxScaler()
    if name == "none":
        return None
    raise ValueError(f"unknown scaler {name!r}")


def none_if(value: str) -> Optional[str]:
    return None if value == "none" else value


class Folds:
    """The data set's stratified folds, with the scaled (and otherwise transformed) features of
    each fold cached by the transformation's key."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x
        self.y = y
        splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
        self.splits = list(splitter.split(x, y))
        self._cache: Dict[Any, List[Tuple[np.ndarray, np.ndarray]]] = {}

    def transformed(self, key: Any, make: Callable[[], List[Any]]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Train and test features of every fold after the transformers ``make()`` returns
        (fitted on the fold's training part)."""
        if key not in self._cache:
            out = []
            for train, test in self.splits:
                x_train, x_test = self.x[train], self.x[test]
                for step in make():
                    if step is None:
                        continue
                    x_train = step.fit_transform(x_train)
                    x_test = step.transform(x_test)
                out.append((x_train, x_test))
            self._cache[key] = out
        return self._cache[key]

    def error(self, key: Any, make: Callable[[], List[Any]], model: Callable[[], Any]) -> float:
        correct = 0
        for (x_train, x_test), (train, test) in zip(self.transformed(key, make), self.splits):
            fitted = model().fit(x_train, self.y[train])
            correct += int(np.sum(fitted.predict(x_test) == self.y[test]))
        return 1.0 - correct / len(self.y)


def tree_model(cell: Cell, prefix: str = "") -> Callable[[], Any]:
    def make() -> Any:
        return DecisionTreeClassifier(
            criterion=cell[prefix + "criterion"],
            max_depth=cell[prefix + "max_depth"],
            min_samples_leaf=cell[prefix + "min_samples_leaf"],
            max_features=cell[prefix + "max_features"],
            splitter=cell[prefix + "splitter"],
            class_weight=none_if(cell[prefix + "class_weight"]),
            ccp_alpha=cell.get(prefix + "ccp_alpha", 0.0),
            random_state=SEED,
        )

    return make


def eval_tree(folds: Folds, cell: Cell) -> float:
    return folds.error("raw", list, tree_model(cell))


def eval_knn(folds: Folds, cell: Cell) -> float:
    key = (cell["scaler"], cell["pca_components"], cell["whiten"])

    def steps() -> List[Any]:
        pca = PCA(n_components=cell["pca_components"], whiten=cell["whiten"] == "yes", random_state=SEED)
        return [scaler(cell["scaler"]), pca]

    def model() -> Any:
        return KNeighborsClassifier(n_neighbors=cell["n_neighbors"], weights=cell["weights"], p=cell["p"])

    return folds.error(key, steps, model)


def eval_sgd(folds: Folds, cell: Cell) -> float:
    def model() -> Any:
        return SGDClassifier(
            loss=cell["loss"],
            penalty=cell["penalty"],
            alpha=cell["alpha"],
            learning_rate=cell["learning_rate"],
            eta0=cell["eta0"],
            max_iter=50,
            tol=1e-3,
            random_state=SEED,
        )

    return folds.error(cell["scaler"], lambda: [scaler(cell["scaler"])], model)


def eval_cond(folds: Folds, cell: Cell) -> float:
    branch = cell["model"]
    if branch == "tree":
        return folds.error("none", list, tree_model(cell, "tree_"))
    if branch == "knn":

        def knn() -> Any:
            return KNeighborsClassifier(
                n_neighbors=cell["knn_n_neighbors"], weights=cell["knn_weights"], p=cell["knn_p"]
            )

        return folds.error(cell["knn_scaler"], lambda: [scaler(cell["knn_scaler"])], knn)
    if branch == "linear":

        def linear() -> Any:
            return LogisticRegression(
                C=cell["linear_C"],
                l1_ratio=1.0 if cell["linear_penalty"] == "l1" else 0.0,
                solver="liblinear",
                class_weight=none_if(cell["linear_class_weight"]),
                fit_intercept=cell["linear_fit_intercept"] == "yes",
                max_iter=200,
                random_state=SEED,
            )

        return folds.error(cell["linear_scaler"], lambda: [scaler(cell["linear_scaler"])], linear)
    raise ValueError(f"unknown model {branch!r}")


def cond_cells() -> List[Cell]:
    cells = []
    for branch, grid in COND_GRIDS.items():
        cells.extend({"model": branch, **cell} for cell in grid_cells(grid))
    return cells


# name → (data set loader, cells, evaluation, columns)
TABLES: Dict[str, Tuple[Callable[..., Any], Callable[[], List[Cell]], Callable[[Folds, Cell], float], List[str]]] = {
    "tree-digits": (load_digits, lambda: grid_cells(TREE_GRID), eval_tree, list(TREE_GRID)),
    "knn-digits": (load_digits, lambda: grid_cells(KNN_GRID), eval_knn, list(KNN_GRID)),
    "sgd-wine": (load_wine, lambda: grid_cells(SGD_GRID), eval_sgd, list(SGD_GRID)),
    "cond-breast_cancer": (
        load_breast_cancer,
        cond_cells,
        eval_cond,
        ["model"] + [name for grid in COND_GRIDS.values() for name in grid],
    ),
}

_folds: Dict[str, Folds] = {}


def evaluate_chunk(args: Tuple[str, Sequence[Cell]]) -> List[float]:
    """Errors of some cells of one table (runs in a worker process)."""
    name, cells = args
    # One thread per process: the pool is the parallelism (BLAS and OpenMP threads on top of it
    # only contend, and make small fits several times slower).
    threadpool_limits(1)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    loader, _, evaluate, _ = TABLES[name]
    if name not in _folds:
        data = loader()
        _folds[name] = Folds(data.data.astype(np.float64), data.target)
    return [evaluate(_folds[name], cell) for cell in cells]


def write_table(path: str, columns: List[str], cells: List[Cell], errors: List[float]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns + ["error"])
    for cell, error in zip(cells, errors):
        writer.writerow([cell.get(c, "") for c in columns] + [f"{error:.6f}"])
    # mtime=0: the same table gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
        out.write(text.getvalue().encode())


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (CPU count)")
    parser.add_argument("--only", default="", help="comma list of table names (all)")
    parser.add_argument("--out-dir", default=DATA_DIR, help="where the .csv.gz files go (benches/data)")
    args = parser.parse_args(argv)

    names = [n for n in args.only.split(",") if n] or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}")
    os.makedirs(args.out_dir, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs) as pool:
        for name in names:
            started = time.perf_counter()
            _, make_cells, _, columns = TABLES[name]
            cells = make_cells()
            # Chunks of cells that share transformations, so each worker caches them.
            size = max(1, len(cells) // (8 * args.jobs))
            chunks = [(name, cells[i : i + size]) for i in range(0, len(cells), size)]
            errors = [e for chunk in pool.map(evaluate_chunk, chunks, chunksize=1) for e in chunk]
            path = os.path.join(args.out_dir, f"{name}.csv.gz")
            write_table(path, columns, cells, errors)
            best = int(np.argmin(errors))
            print(
                f"{name}: {len(cells)} cells, {len(columns)} columns, error min {errors[best]:.4f} "
                f"median {np.median(errors):.4f} max {max(errors):.4f}, "
                f"best {cells[best]}, {os.path.getsize(path) / 1024:.0f} KiB, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
