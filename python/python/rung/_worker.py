"""The child side of ``Tuner(executor="process")``: runs one trial in a fresh interpreter."""

from __future__ import annotations

import signal
import traceback
from typing import Any, Callable, Optional

from . import _session


def main(
    conn: Any,
    trainable: Callable[[dict], Any],
    config: dict,
    trial_id: str,
    staging: str,
    restore: Optional["tuple[int, str]"],
) -> None:
    """Runs ``trainable(config)`` with ``rung.report`` wired to ``conn``; tells the parent how
    it ended: ``("done",)`` or ``("error", traceback)``."""
    # Ctrl-C is the parent's to handle: it stops the trials (and this process) itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    session = _session._PipeSession(conn, trial_id, staging, restore)
    _session._process_session = session
    try:
        returned = trainable(config)
        if isinstance(returned, dict) and returned:
            session.report(returned, None)
    except _session._TrialStopped:
        pass
    except BaseException:  # noqa: BLE001 - everything the trainable raises is the trial's failure
        conn.send(("error", traceback.format_exc()))
        return
    finally:
        _session._process_session = None
    conn.send(("done",))
