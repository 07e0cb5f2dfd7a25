"""Search-space domains: ``rung.loguniform(1e-5, 1e-1)``, ``rung.choice([...])``, ...

Each domain is written into the spec exactly as a spec file writes it
(``{"loguniform": [1e-5, 0.1]}``), so a space behaves the same from Python, TOML and the CLI.
The ranges are checked by the engine when the ``Tuner`` (or a standalone searcher) is built,
and its errors name the parameter: ``parameter "lr": loguniform needs 0 < low < high``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

__all__ = [
    "Domain",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "randint",
    "qrandint",
    "lograndint",
    "normal",
    "randn",
    "choice",
    "grid",
    "grid_search",
    "fixed",
]


class Domain:
    """A distribution (or set of values) for one parameter. Build one with the functions of
    this module; its ``repr`` is the spec form."""

    __slots__ = ("_kind", "_args")

    def __init__(self, kind: str, args: Any) -> None:
        self._kind = kind
        self._args = args

    @property
    def kind(self) -> str:
        """The domain's name in spec files (``loguniform``, ``choice``, ...)."""
        return self._kind

    def to_spec(self) -> dict:
        """The domain as a spec file writes it: ``{"loguniform": [1e-05, 0.1]}``."""
        if self._kind in ("choice", "grid"):
            return {self._kind: [_encode(option, f"{self._kind} option") for option in self._args]}
        if self._kind == "fixed":
            return {"fixed": _plain(self._args, "fixed value")}
        return {self._kind: list(self._args)}

    def __repr__(self) -> str:
        args = self._args if isinstance(self._args, list) and self._kind not in ("choice", "grid") else [self._args]
        return f"rung.{self._kind}({', '.join(repr(a) for a in args)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Domain) and self.to_spec() == other.to_spec()

    __hash__ = None  # type: ignore[assignment]


def _number(value: Any, what: str, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    if integer:
        if isinstance(value, numbers.Integral):
            return int(value)
        if float(value).is_integer():
            return int(float(value))
        raise ValueError(f"{what} must be an integer, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def uniform(low: float, high: float) -> Domain:
    """A float uniform in ``[low, high]``."""
    return Domain("uniform", [_number(low, "uniform: low"), _number(high, "uniform: high")])


def quniform(low: float, high: float, q: float) -> Domain:
    """A uniform float rounded to a multiple of ``q``, within ``[low, high]``."""
    return Domain(
        "quniform", [_number(low, "quniform: low"), _number(high, "quniform: high"), _number(q, "quniform: q")]
    )


def loguniform(low: float, high: float) -> Domain:
    """A float whose logarithm is uniform: ``0 < low < high`` (learning rates, weight decay)."""
    return Domain("loguniform", [_number(low, "loguniform: low"), _number(high, "loguniform: high")])


def qloguniform(low: float, high: float, q: float) -> Domain:
    """A log-uniform float rounded to a multiple of ``q``, within ``[low, high]``."""
    return Domain(
        "qloguniform",
        [_number(low, "qloguniform: low"), _number(high, "qloguniform: high"), _number(q, "qloguniform: q")],
    )


def randint(low: int, high: int) -> Domain:
    """An integer in ``[low, high)`` — **high exclusive**, like Python's ``range``."""
    return Domain("randint", [_number(low, "randint: low", True), _number(high, "randint: high", True)])


def qrandint(low: int, high: int, q: int = 1) -> Domain:
    """An integer multiple of ``q`` in ``[low, high]`` — **high inclusive**."""
    return Domain(
        "qrandint",
        [_number(low, "qrandint: low", True), _number(high, "qrandint: high", True), _number(q, "qrandint: q", True)],
    )


def lograndint(low: int, high: int) -> Domain:
    """An integer with a log-uniform distribution in ``[low, high)``, ``low >= 1``."""
    return Domain("lograndint", [_number(low, "lograndint: low", True), _number(high, "lograndint: high", True)])


def normal(mu: float = 0.0, sigma: float = 1.0) -> Domain:
    """A float from a normal distribution, ``sigma > 0``."""
    return Domain("normal", [_number(mu, "normal: mu"), _number(sigma, "normal: sigma")])


def randn(mean: float = 0.0, sd: float = 1.0) -> Domain:
    """Ray Tune's name for :func:`normal`."""
    return normal(mean, sd)


def choice(options: Sequence[Any]) -> Domain:
    """One of ``options``, each equally likely. An option may be a plain value, a domain, or a
    dict — a sub-space sampled only when it is chosen (conditional spaces)::

        rung.choice([{"name": "sgd", "momentum": rung.uniform(0, 0.99)}, {"name": "adam"}])
    """
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise TypeError(f"choice: options must be a list, got {type(options).__name__}")
    return Domain("choice", list(options))


def grid(values: Sequence[Any]) -> Domain:
    """Every value in turn: the searcher enumerates the cartesian product of all grid
    parameters (``num_samples`` times)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"grid: values must be a list, got {type(values).__name__}")
    return Domain("grid", list(values))


def grid_search(values: Sequence[Any]) -> Domain:
    """Ray Tune's name for :func:`grid`."""
    return grid(values)


def fixed(value: Any) -> Domain:
    """``value`` as it is — for a dict that is a value rather than a nested space."""
    return Domain("fixed", value)


def _plain(value: Any, where: str) -> Any:
    """A value as JSON can hold it (numpy scalars become Python numbers)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, Mapping):
        return {_key(k, where): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise TypeError(f"{where}: {type(value).__name__} {value!r} cannot be part of a search space")


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where}: parameter names must be strings, got {key!r}")
    return key


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, Domain):
        return value.to_spec()
    if isinstance(value, Mapping):
        return {_key(k, where): _encode(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    return _plain(value, where)


def space_to_spec(space: Mapping[str, Any]) -> dict:
    """A search space (a dict of domains, values and nested dicts) in spec form."""
    if not isinstance(space, Mapping):
        raise TypeError(f"param_space must be a dict of parameters, got {type(space).__name__}")
    return {_key(k, "param_space"): _encode(v, k) for k, v in space.items()}
