"""What searchers and schedulers share: settings that become a spec table, and the optional
``metric``/``mode``/``seed``/``space`` of standalone (ask/tell) use."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional

from ._space import space_to_spec


class _Component:
    kind: str = ""

    def __init__(
        self,
        settings: "dict[str, Any]",
        *,
        metric: Optional[str],
        mode: Optional[str],
        seed: Optional[int],
        space: Optional[Mapping[str, Any]],
    ) -> None:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f'setting "mode": must be "min" or "max", got {mode!r}')
        self._settings = {k: v for k, v in settings.items() if v is not None}
        for key, value in self._settings.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f'setting "{key}" of {type(self).__name__}: must be finite, got {value!r}')
        self.metric = metric
        self.mode = mode
        self.seed = seed
        self.space = space
        self._native_obj: Any = None

    def to_spec(self) -> dict:
        """The settings as a spec file's table: ``{"kind": "asha", "max_t": 81, ...}``."""
        return {"kind": self.kind, **self._settings}

    def _standalone(self, need_metric: bool = True) -> "tuple[str, str, int]":
        name = type(self).__name__
        if need_metric and self.metric is None:
            raise ValueError(f'{name} used on its own needs metric=..., e.g. {name}(metric="loss", mode="min")')
        return self.metric or "", self.mode or "min", int(self.seed or 0)

    def _space_json(self, required: bool) -> Optional[str]:
        if self.space is None:
            if required:
                name = type(self).__name__
                raise ValueError(f"{name} used on its own needs space=... (the param_space it searches)")
            return None
        return json.dumps(space_to_spec(self.space), allow_nan=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings.items())
        return f"{type(self).__module__}.{type(self).__name__}({args})"
