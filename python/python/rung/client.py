"""A Python client of server mode (``rung serve``): not available in this release."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["Client"]


class Client:
    """A client of a ``rung serve`` controller (``ask``, ``report``, ``finish``).

    Not part of this release: constructing a Client raises ``NotImplementedError`` rather
    than pretending to connect. Python trials launched by ``rung agent`` need no client
    (``rung.report`` reaches the controller through the agent); other programs can call the
    ``Trials`` service of ``proto/rung/v1/rung.proto`` with any gRPC library.
    """

    def __init__(self, url: str, token: Optional[str] = None, **_: Any) -> None:
        raise NotImplementedError(
            f"rung.Client({url!r}) is not available in this release: run Python trials under "
            "`rung agent` (rung.report reaches the controller through the agent), or call the "
            "Trials service of proto/rung/v1/rung.proto with a gRPC library"
        )
