"""The `learning-curve` workload of shared/workloads/README.md, as a rung trainable.

A synthetic training run: for step t = 1..81 a configuration's loss follows

    loss(c, t) = base + a * t**(-b) + noise

where deep, well-regularised configurations reach the lowest loss but start slowly and high
learning rates drop fast and plateau high, so the curves cross. The noise is a deterministic
hash (splitmix64) of the configuration's IEEE-754 bits and the step, so every run of the same
configuration reports the same numbers — bit for bit the numbers of the Rust engine's
``rung::workloads::LearningCurve`` and of ``examples/trials/learning_curve.py``.

Import it from an example or a notebook::

    from learning_curve import SPACE, MAX_T, loss, train

or run it to print a few values of the loss::

    python examples/python/learning_curve.py
"""

from __future__ import annotations

import math
import struct
from typing import Any, Mapping

import rung

__all__ = ["SPACE", "MAX_T", "loss", "splitmix64", "train"]

MAX_T = 81
"""The last step of a trial (ASHA rungs at 1, 3, 9, 27, 81 with reduction factor 3)."""

SPACE = {
    "lr": rung.loguniform(1e-5, 1e-1),
    "batch": rung.choice([16, 32, 64, 128, 256]),
    "layers": rung.randint(1, 8),  # 1..7, high exclusive
    "dropout": rung.uniform(0.0, 0.5),
}
"""The workload's search space."""

_MASK64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    """The splitmix64 mixing function on an unsigned 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _bits(x: float) -> int:
    """The IEEE-754 bit pattern of ``x`` as an unsigned 64-bit integer."""
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK64


def loss(config: Mapping[str, Any], t: int) -> float:
    """The loss that ``config`` (with ``lr``, ``batch``, ``layers``, ``dropout``) reports at
    step ``t`` (from 1).

    Squares are written ``x * x``, as the Rust code's ``powi(2)`` computes them (``x ** 2``
    goes through the C library's ``pow``, which is not guaranteed to round the same way).
    """
    lr, dropout = float(config["lr"]), float(config["dropout"])
    batch, layers = int(config["batch"]), int(config["layers"])
    z = math.log10(lr)
    g = math.log2(batch)
    d = dropout
    zs = (z + 3.5) / 1.5
    base = 0.05 + 0.30 * (zs * zs) + 0.03 * ((g - 5.0) * (g - 5.0)) + 0.20 / layers + 0.40 * ((d - 0.3) * (d - 0.3))
    a = 0.3 + 0.2 * layers + 1.5 * d
    b = 0.8 + 1.0 / (1.0 + math.exp(-2.0 * (z + 3.0))) - 0.06 * layers
    seed = _bits(lr) ^ _rotl(_bits(dropout), 17) ^ (batch << 32) ^ (layers << 48) ^ t
    u = splitmix64(seed & _MASK64) / 2.0**64
    return base + a * float(t) ** (-b) + 0.004 * (u - 0.5)


def train(config: dict) -> None:
    """A rung trainable: reports ``{"loss": ...}`` for steps 1..81, with no compute in between.
    The scheduler ends it early by raising from ``rung.report``."""
    for t in range(1, MAX_T + 1):
        rung.report({"loss": loss(config, t)})


if __name__ == "__main__":
    for example in (
        {"lr": 1e-3, "batch": 32, "layers": 7, "dropout": 0.3},
        {"lr": 0.05, "batch": 256, "layers": 1, "dropout": 0.0},
    ):
        curve = ", ".join(f"t={t}: {loss(example, t):.4f}" for t in (1, 3, 9, 27, 81))
        print(f"{example}\n  {curve}")
