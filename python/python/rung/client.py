"""The server-mode client (``rung serve``): not available yet."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["Client"]


class Client:
    """A client of a ``rung serve`` controller (``ask``, ``report``, ``finish``).

    Server mode is not part of this release: constructing a Client raises
    ``NotImplementedError`` rather than pretending to connect.
    """

    def __init__(self, url: str, token: Optional[str] = None, **_: Any) -> None:
        raise NotImplementedError(
            f"rung.Client({url!r}): server mode (rung serve / rung agent, gRPC) is not built yet; "
            "run sweeps in-process with rung.Tuner, or as processes with `rung run`"
        )
