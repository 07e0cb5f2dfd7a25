"""Tune a small scikit-learn MLP on the `digits` data set with rung and ASHA.

The real-training workload of shared/workloads/README.md (section 3). scikit-learn ships the
data set in its wheel (1797 8x8 images, 10 classes), so nothing is downloaded. Each trial
trains ``MLPClassifier`` one epoch per step with ``partial_fit``, for up to ``--max-epochs``
epochs, and reports the validation log-loss and accuracy after every epoch. Every 3 epochs (and
after the first) it writes a checkpoint, the pickled model and its epoch, and it resumes from
one when rung hands it back: a promotion by ``--asha-type promote``, or ``--resume``.

Run it (needs scikit-learn)::

    python examples/python/digits_mlp.py                       # 40 trials, up to 81 epochs
    python examples/python/digits_mlp.py --num-samples 6 --max-epochs 9 --executor thread

Ctrl-C stops the sweep and leaves it resumable; carry on with the same flags plus ``--resume``.
The sweep is stored under ``--storage`` (default ``rung_results/digits_mlp`` in the current
folder). Trials run in worker processes by default (``--executor process``), since training
is CPU-bound Python that would hold the GIL in threads.
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import sys
import time
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

import rung

# Worker processes import this module afresh, so both settings apply to them too. Trials run
# side by side, one core each: BLAS threads inside a trial would only oversubscribe the CPUs
# (and on matrices this small they cost more than they bring).
warnings.filterwarnings("ignore", category=ConvergenceWarning)
threadpool_limits(limits=1)

CLASSES = np.arange(10)
CHECKPOINT_EVERY = 3
CHECKPOINT_FILE = "model.pkl"


@functools.lru_cache(maxsize=1)
def load_split() -> "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]":
    """``(X_train, X_val, y_train, y_val)``: 75 % / 25 % of `digits`, stratified, always the
    same split; pixels scaled from 0..16 to 0..1."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)


def make_space(max_epochs: int) -> "dict[str, Any]":
    """The search space; ``max_epochs`` rides along as a fixed value, so that the trainable
    finds it in its config (in a worker process too)."""
    return {
        "lr": rung.loguniform(1e-4, 1e-1),
        "batch_size": rung.choice([16, 32, 64, 128]),
        "layers": rung.randint(1, 4),  # 1..3 hidden layers
        "width": rung.choice([32, 64, 128, 256]),
        "alpha": rung.loguniform(1e-6, 1e-2),
        "max_epochs": max_epochs,
    }


def train(config: "dict[str, Any]") -> None:
    """A rung trainable: one epoch of ``partial_fit`` per step, a checkpoint every 3 epochs
    (and after the first), resuming from the checkpoint rung hands back, if any."""
    X_train, X_val, y_train, y_val = load_split()
    checkpoint = rung.get_checkpoint()
    if checkpoint is not None:
        with open(os.path.join(checkpoint, CHECKPOINT_FILE), "rb") as f:
            state = pickle.load(f)
        model, done = state["model"], state["epoch"]
    else:
        model = MLPClassifier(
            hidden_layer_sizes=(config["width"],) * config["layers"],
            alpha=config["alpha"],
            learning_rate_init=config["lr"],
            batch_size=config["batch_size"],
            random_state=0,
        )
        done = 0
    for epoch in range(done + 1, config["max_epochs"] + 1):
        model.partial_fit(X_train, y_train, classes=CLASSES)
        proba = model.predict_proba(X_val)
        metrics = {
            "step": epoch,
            "val_loss": log_loss(y_val, proba, labels=CLASSES),
            "val_accuracy": float(np.mean(CLASSES[proba.argmax(axis=1)] == y_val)),
        }
        # Also at epoch 1, ASHA's first rung: a trial pauses there only with a checkpoint.
        if epoch % CHECKPOINT_EVERY == 0 or epoch == 1:
            folder = rung.checkpoint_dir()
            with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
                pickle.dump({"model": model, "epoch": epoch}, f)
            rung.report(metrics, checkpoint=folder)
        else:
            rung.report(metrics)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=40, help="trials (default 40)")
    parser.add_argument("--max-epochs", type=int, default=81, help="epochs of the longest trial, ASHA's max_t (81)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count(), help="trials at once (default: CPUs)")
    parser.add_argument("--executor", choices=("thread", "process"), default="process", help="default process")
    parser.add_argument(
        "--asha-type",
        choices=("stop", "promote"),
        default="stop",
        help="stop trials below a rung's cutoff, or pause them and promote the best from checkpoints",
    )
    parser.add_argument("--storage", default="rung_results/digits_mlp", help="the sweep's folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume", action="store_true", help="carry on the interrupted sweep in --storage, with its stored settings"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    if args.resume:
        tuner = rung.Tuner.restore(args.storage, train, max_concurrent_trials=args.concurrency, executor=args.executor)
    else:
        tuner = rung.Tuner(
            train,
            param_space=make_space(args.max_epochs),
            metric="val_loss",
            mode="min",
            num_samples=args.num_samples,
            max_concurrent_trials=args.concurrency,
            seed=args.seed,
            searcher=rung.search.TPE(),
            scheduler=rung.schedulers.ASHA(
                max_t=args.max_epochs, grace_period=1, reduction_factor=3, type=args.asha_type
            ),
            storage_path=args.storage,
            name="digits-mlp",
            checkpoint_keep=2,
            executor=args.executor,
        )
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        sys.exit("interrupted: carry on with the same command and --resume")
    wall_s = time.perf_counter() - started

    best = results.best_result
    val_loss, step = best.best
    accuracy = next(h["val_accuracy"] for h in best.history() if h["step"] == step)
    config = {k: v for k, v in best.config.items() if k != "max_epochs"}
    print(f"best trial {best.trial_id}: val_loss {val_loss:.4f}, val_accuracy {accuracy:.4f} at epoch {step}")
    print("  config:", config)
    counts = ", ".join(f"{status} {n}" for status, n in sorted(results.counts().items()))
    epochs = sum(r.metrics.get("step", 0) for r in results)
    print(f"{len(results)} trials ({counts}), {epochs} epochs reached in all")
    print(f"elapsed: {wall_s:.1f} s in this run, {results.elapsed_s:.1f} s of sweep time over all sessions")
    print(f"store: {results.store} (experiment {results.experiment!r})")


if __name__ == "__main__":
    main()
