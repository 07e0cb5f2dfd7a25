"""Progress while ``Tuner.fit()`` runs: a live table in Jupyter, a throttled line elsewhere."""

from __future__ import annotations

import html
import sys
import time
from typing import Optional, TextIO

STATUSES = ("running", "pending", "paused", "completed", "stopped", "sweep_ended", "errored")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def make(verbose: int, metric: str, mode: str) -> "Silent":
    if verbose <= 0:
        return Silent()
    if _in_notebook():
        return Notebook(metric, mode)
    return Terminal(metric, mode, sys.stderr)


def _done(p: dict) -> int:
    return p["completed"] + p["stopped"] + p["sweep_ended"] + p["errored"]


def _best(p: dict, metric: str) -> str:
    if p.get("best") is None:
        return f"best {metric}: -"
    trial, value, step = p["best"]
    return f"best {metric}={value:.6g} ({trial} @ step {step})"


class Silent:
    """``verbose=0``: nothing at all."""

    def update(self, progress: Optional[dict]) -> None:
        pass

    def close(self, progress: Optional[dict], result: dict) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def trial_error(self, trial_id: str, error: str) -> None:
        pass


class Terminal(Silent):
    """One line, redrawn in place on a terminal (twice a second at most), printed every 30 s
    when stderr is a file or a pipe."""

    def __init__(self, metric: str, mode: str, stream: TextIO) -> None:
        self.metric = metric
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = 0.5 if self.tty else 30.0
        self.start = time.monotonic()
        self.last = -1e9
        self.width = 0

    def _line(self, p: dict) -> str:
        total = p["max_trials"]
        counts = " ".join(f"{s} {p[s]}" for s in STATUSES if p[s])
        elapsed = time.monotonic() - self.start
        total_text = "?" if total is None else total
        return f"rung: {_done(p)}/{total_text} trials | {counts} | {_best(p, self.metric)} | {elapsed:.0f}s"

    def update(self, progress: Optional[dict], force: bool = False) -> None:
        now = time.monotonic()
        if progress is None or (not force and now - self.last < self.interval):
            return
        self.last = now
        line = self._line(progress)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.width = 0

    def close(self, progress: Optional[dict], result: dict) -> None:
        if progress is not None:
            self.last = -1e9
            self.update(progress, force=True)
        self._end_line()
        cause = result.get("end_cause") or result.get("status")
        self.stream.write(
            f"rung: sweep {result['experiment']!r} {result['status']} ({cause}), store {result['store']}\n"
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        self._end_line()
        self.stream.write(f"rung: {text}\n")
        self.stream.flush()

    def trial_error(self, trial_id: str, error: str) -> None:
        last = error.strip().splitlines()[-1] if error.strip() else "failed"
        self.message(f"trial {trial_id} failed: {last}")


class Notebook(Silent):
    """A table in the cell's output, updated in place once a second."""

    def __init__(self, metric: str, mode: str) -> None:
        from IPython.display import HTML, display  # noqa: PLC0415

        self.HTML = HTML
        self.metric = metric
        self.mode = mode
        self.start = time.monotonic()
        self.last = -1e9
        self.errors: list = []
        self.handle = display(HTML("<i>rung: starting the sweep…</i>"), display_id=True)

    def _table(self, p: dict, title: str) -> str:
        cells = "".join(f"<td style='text-align:right'>{p[s]}</td>" for s in STATUSES)
        heads = "".join(f"<th>{s}</th>" for s in STATUSES)
        errors = "".join(f"<li><code>{html.escape(e)}</code></li>" for e in self.errors[-5:])
        total = p["max_trials"] if p["max_trials"] is not None else "∞"
        return (
            f"<b>{html.escape(title)}</b> — {_done(p)}/{total} trials, "
            f"{time.monotonic() - self.start:.0f} s — {html.escape(_best(p, self.metric))} ({self.mode})"
            f"<table><tr>{heads}</tr><tr>{cells}</tr></table>"
            + (f"<details><summary>errors</summary><ul>{errors}</ul></details>" if errors else "")
        )

    def update(self, progress: Optional[dict], force: bool = False) -> None:
        now = time.monotonic()
        if progress is None or (not force and now - self.last < 1.0):
            return
        self.last = now
        self.handle.update(self.HTML(self._table(progress, "rung: running")))

    def close(self, progress: Optional[dict], result: dict) -> None:
        if progress is not None:
            title = f"rung: {result['experiment']} {result['status']} ({result.get('end_cause') or ''})"
            self.handle.update(self.HTML(self._table(progress, title)))

    def message(self, text: str) -> None:
        print(f"rung: {text}", file=sys.stderr)

    def trial_error(self, trial_id: str, error: str) -> None:
        last = error.strip().splitlines()[-1] if error.strip() else "failed"
        self.errors.append(f"{trial_id}: {last}")
