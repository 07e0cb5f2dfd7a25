"""``rung.Tuner``: a sweep of a Python trainable, run by the Rust engine."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from . import _progress, _rung, _session
from ._results import ResultGrid
from ._space import space_to_spec
from .schedulers import Scheduler
from .search import Searcher

__all__ = ["Tuner"]

STORE_FILE = "rung.db"


def _store_path(storage_path: Union[str, "os.PathLike[str]"]) -> str:
    """The store of a storage path: ``<path>/rung.db``, or the path itself when it is a file."""
    path = os.fspath(storage_path)
    if path.endswith(".db") or os.path.isfile(path):
        return path
    return os.path.join(path, STORE_FILE)


def _optional_number(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'setting "{name}": must be a finite number, got {value!r}')
    return value


class Tuner:
    """Runs a hyperparameter sweep of ``trainable``, a function ``train(config)`` that calls
    :func:`rung.report` as it trains.

    Args:
        trainable: ``train(config: dict)``; it may return a dict of final metrics.
        param_space: the search space: a dict of domains (``rung.loguniform(...)``), plain
            values and nested dicts.
        metric: the metric to optimise; ``mode``: ``"min"`` or ``"max"``.
        num_samples: how many trials (``-1``: until ``time_budget_s`` or ``target`` ends the
            sweep). Grid parameters multiply it, as in Ray Tune.
        max_concurrent_trials: trials at once (default: the number of CPUs).
        seed: all randomness flows from it. The same seed gives the same sweep when the
            searcher does not learn (random, grid, Sobol) or trials run one at a time; a
            model-based searcher with concurrent trials also depends on the order results
            arrive in (a restored sweep still replays exactly).
        searcher: a ``rung.search`` searcher (default ``Random()``).
        scheduler: a ``rung.schedulers`` scheduler (default ``FIFO()``, no early stopping).
        storage_path: the folder of the sweep's store (``rung.db``) and trial folders
            (default ``rung_results``); several sweeps may share it.
        name: the experiment's name in the store (``name-2``, ... when taken).
        time_budget_s, target, max_failed_trials: end the sweep after this long, once a trial
            reaches ``target``, or once this many trials errored.
        max_failures: retries per trial after an exception, from its last checkpoint.
        checkpoint_keep: keep each trial's N best checkpoints (and its newest).
        checkpoint_storage: where checkpoints go: ``"s3://bucket/prefix"`` (S3, MinIO; endpoint
            and credentials from the ``AWS_*`` variables) or ``"file:///shared/path"``;
            default: each trial's folder under ``storage_path``.
        stop_grace_s: how long a trial told to stop gets before it is abandoned (default 10).
        durability: what the store survives before a report is answered: ``"process"``
            (default; the Python process dying at any instant loses no answered report) or
            ``"power"`` (also a power loss, at the cost of an fsync per commit).
        executor: ``"thread"`` (default; the GIL is released while the engine waits) or
            ``"process"``: each trial in a fresh worker process, for CPU-bound Python code.
            The trainable must then be importable (defined at module level), and a script
            must guard its entry point with ``if __name__ == "__main__":``.
        verbose: ``1`` (default) a progress line (a live table in Jupyter), ``0`` nothing.
    """

    def __init__(
        self,
        trainable: Callable[[dict], Any],
        *,
        param_space: Mapping[str, Any],
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        num_samples: int = 1,
        max_concurrent_trials: Optional[int] = None,
        seed: Optional[int] = None,
        searcher: Optional[Searcher] = None,
        scheduler: Optional[Scheduler] = None,
        storage_path: Union[str, "os.PathLike[str]"] = "rung_results",
        name: str = "experiment",
        time_budget_s: Optional[float] = None,
        target: Optional[float] = None,
        max_failures: int = 0,
        max_failed_trials: Optional[int] = None,
        checkpoint_keep: Optional[int] = None,
        checkpoint_storage: Optional[str] = None,
        stop_grace_s: Optional[float] = None,
        durability: str = "process",
        executor: str = "thread",
        verbose: int = 1,
    ) -> None:
        if not callable(trainable):
            raise TypeError(f"trainable must be a function train(config), got {type(trainable).__name__}")
        searcher = searcher if searcher is not None else _default_searcher()
        scheduler = scheduler if scheduler is not None else _default_scheduler()
        if not isinstance(searcher, Searcher):
            raise TypeError(f"searcher must be one of rung.search (e.g. rung.search.TPE()), got {searcher!r}")
        if not isinstance(scheduler, Scheduler):
            raise TypeError(
                f"scheduler must be one of rung.schedulers (e.g. rung.schedulers.ASHA()), got {scheduler!r}"
            )
        metric = _agree("metric", metric, searcher.metric, scheduler.metric)
        mode = _agree("mode", mode, searcher.mode, scheduler.mode) or "min"
        if metric is None:
            raise ValueError('setting "metric": the Tuner needs the name of the metric to optimise, e.g. metric="loss"')
        if mode not in ("min", "max"):
            raise ValueError(f'setting "mode": must be "min" or "max", got {mode!r}')
        if durability not in ("process", "power"):
            raise ValueError(f'setting "durability": must be "process" or "power", got {durability!r}')
        spec: dict[str, Any] = {
            "name": name,
            "metric": metric,
            "mode": mode,
            "num_samples": num_samples,
            "space": space_to_spec(param_space),
            "searcher": searcher.to_spec(),
            "scheduler": scheduler.to_spec(),
            "trial": {"max_failures": max_failures},
            "durability": durability,
        }
        for key, value in (
            ("max_concurrent", max_concurrent_trials),
            ("seed", seed),
            ("time_budget_s", _optional_number("time_budget_s", time_budget_s)),
            ("target", _optional_number("target", target)),
            ("max_failed_trials", max_failed_trials),
        ):
            if value is not None:
                spec[key] = value
        if checkpoint_keep is not None:
            spec["trial"]["checkpoint_keep"] = checkpoint_keep
        if checkpoint_storage is not None:
            spec["trial"]["checkpoint_storage"] = checkpoint_storage
        if stop_grace_s is not None:
            spec["trial"]["stop_grace_s"] = _optional_number("stop_grace_s", stop_grace_s)
        # The engine checks every setting and parameter now, not at fit().
        self._spec_json: Optional[str] = _rung.check_spec(json.dumps(spec, allow_nan=False))
        self._trainable = trainable
        self._store = _store_path(storage_path)
        self._experiment: Optional[str] = None
        self._max_concurrent = max_concurrent_trials
        self._executor = _executor(executor)
        self._verbose = verbose
        self._metric = metric
        self._mode = mode

    @classmethod
    def restore(
        cls,
        path: Union[str, "os.PathLike[str]"],
        trainable: Callable[[dict], Any],
        *,
        name: Optional[str] = None,
        max_concurrent_trials: Optional[int] = None,
        executor: str = "thread",
        verbose: int = 1,
    ) -> "Tuner":
        """A Tuner that carries on the sweep stored at ``path`` (the ``storage_path`` it ran
        with) — the experiment ``name``, or the newest. ``fit()`` then resumes it exactly:
        finished trials are not rerun, running ones restart from their last checkpoints, and
        the searcher and scheduler continue as if never stopped. ``trainable`` must be the same
        function (the store keeps the sweep's settings, not code)."""
        store = _store_path(path)
        if not os.path.exists(store):
            raise FileNotFoundError(f"no rung sweep at {os.fspath(path)!r} (expected the store {store!r})")
        experiments = _rung.experiments(store)
        if not experiments:
            raise ValueError(f"the store {store!r} holds no experiment")
        if name is not None and name not in {e["name"] for e in experiments}:
            known = ", ".join(e["name"] for e in experiments)
            raise ValueError(f"no experiment {name!r} in {store!r} (it holds: {known})")
        experiment = name or experiments[-1]["name"]
        stored = json.loads(_rung.load_results(store, experiment)["spec"])
        tuner = cls.__new__(cls)
        tuner._spec_json = None
        tuner._trainable = trainable
        tuner._store = store
        tuner._experiment = experiment
        tuner._max_concurrent = max_concurrent_trials
        tuner._executor = _executor(executor)
        tuner._verbose = verbose
        tuner._metric = stored["metric"]
        tuner._mode = stored["mode"]
        return tuner

    @staticmethod
    def can_restore(path: Union[str, "os.PathLike[str]"]) -> bool:
        """Whether ``path`` holds a sweep that ``Tuner.restore`` can carry on."""
        store = _store_path(path)
        try:
            return any(e["status"] != "finished" for e in _rung.experiments(store)) if os.path.exists(store) else False
        except (RuntimeError, ValueError):
            return False

    def fit(self) -> ResultGrid:
        """Runs the sweep to its end and returns every trial's results.

        Ctrl-C (``KeyboardInterrupt``) stops the running trials, leaves the store resumable
        (``Tuner.restore(storage_path, trainable).fit()`` carries on) and re-raises. A restored
        Tuner resumes; a new one starts a new experiment in the store.
        """
        os.makedirs(os.path.dirname(os.path.abspath(self._store)), exist_ok=True)
        if self._spec_json is not None:
            sweep = _rung.Sweep(self._store, spec_json=self._spec_json, max_concurrent=self._max_concurrent)
        else:
            sweep = _rung.Sweep(self._store, experiment=self._experiment, max_concurrent=self._max_concurrent)
        display = _progress.make(self._verbose, self._metric, self._mode)
        runner = self._executor(self._trainable, display, sweep)
        runner.start()
        try:
            with _sigterm_stops_the_sweep():
                try:
                    while not sweep.wait(0.05):
                        display.update(sweep.progress())
                except KeyboardInterrupt as stop:
                    runner.closing = True
                    self._interrupt(
                        sweep, display, "terminated (SIGTERM)" if isinstance(stop, _Terminated) else "interrupted"
                    )
                    raise
        finally:
            runner.done = True
        result = sweep.result()
        sweep.close()
        display.close(sweep.progress(), result)
        # A resumed fit() of this Tuner carries on its experiment.
        self._experiment = result["experiment"]
        self._spec_json = None
        return ResultGrid(result)

    def _interrupt(self, sweep: Any, display: Any, why: str) -> None:
        display.message(f"{why}: stopping the running trials (Ctrl-C again to quit at once)")
        sweep.interrupt()
        while not sweep.wait(0.05):
            pass
        try:
            result = sweep.result()
            experiment, store = result["experiment"], result["store"]
            display.close(sweep.progress(), result)
            print(
                f"rung: sweep {experiment!r} interrupted; carry on with "
                f"rung.Tuner.restore({os.path.dirname(store) or '.'!r}, trainable).fit()",
                file=sys.stderr,
            )
        finally:
            sweep.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM during ``fit()``, handled as the first Ctrl-C is."""


@contextlib.contextmanager
def _sigterm_stops_the_sweep() -> Iterator[None]:
    """SIGTERM (systemd, Kubernetes, Slurm, ``timeout``) stops the sweep as Ctrl-C does: the
    running trials get their graceful stop and the store stays resumable. Then the process
    ends by SIGTERM, as its supervisor expects; a second SIGTERM ends it at once.

    Only on the main thread (where Python runs signal handlers), and only when nobody else
    installed a SIGTERM handler: a program that handles SIGTERM itself keeps its own."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _agree(setting: str, *values: Optional[str]) -> Optional[str]:
    given = {v for v in values if v is not None}
    if len(given) > 1:
        raise ValueError(
            f'setting "{setting}": the Tuner, searcher and scheduler name different values ({", ".join(sorted(given))})'
        )
    return next(iter(given), None)


def _default_searcher() -> Searcher:
    from .search import Random

    return Random()


def _default_scheduler() -> Scheduler:
    from .schedulers import FIFO

    return FIFO()


def _executor(kind: str) -> Callable[..., Any]:
    if kind == "thread":
        return _ThreadExecutor
    if kind == "process":
        return _ProcessExecutor
    raise ValueError(f'setting "executor": must be "thread" or "process", got {kind!r}')


def _finish(trial: Any, display: Any, error: Optional[str]) -> None:
    if error is not None:
        display.trial_error(trial.id, error)
    trial.finish(error)


class _ThreadExecutor:
    """Each trial in a daemon thread of this process, taken from a pool of workers that fetch
    launches from the engine themselves.

    A thread per trial, fed by the main thread, cost two thread starts and hand-offs per trial:
    most of the engine's time on a sweep of short trials. Workers are reused, and the pool
    grows so that one worker always waits for the next launch: the engine never waits for a
    thread, and a trial that ignores its stop keeps its worker without holding up the sweep.
    """

    def __init__(self, trainable: Callable[[dict], Any], display: Any, sweep: Any) -> None:
        self.trainable = trainable
        self.display = display
        self.sweep = sweep
        self.lock = threading.Lock()
        self.workers = 0
        self.busy = 0
        # Set by fit(): ``closing`` after Ctrl-C (launches handed out then never start; they
        # stay resumable), ``done`` once the sweep ended (the workers leave).
        self.closing = False
        self.done = False

    def start(self) -> None:
        self._add_worker()

    def _add_worker(self) -> None:
        with self.lock:
            self.workers += 1
            number = self.workers
        threading.Thread(target=self._work, name=f"rung-worker-{number}", daemon=True).start()

    def _work(self) -> None:
        while not self.done:
            trial = self.sweep.next_trial(0.05)
            if trial is None:
                continue
            if self.closing:
                trial.finish(None)
                continue
            with self.lock:
                self.busy += 1
                grow = self.busy == self.workers
            if grow:
                self._add_worker()
            try:
                self._run(trial)
            finally:
                with self.lock:
                    self.busy -= 1

    def _run(self, trial: Any) -> None:
        session = _session._ThreadSession(trial)
        _session._local.session = session
        error = None
        try:
            returned = self.trainable(trial.config)
            if isinstance(returned, Mapping) and returned:
                session.report(returned, None)
        except _session._TrialStopped:
            pass
        except BaseException:  # noqa: BLE001 - whatever the trainable raises fails the trial
            error = traceback.format_exc()
        finally:
            _session._local.session = None
        _finish(trial, self.display, error)


class _ProcessExecutor(_ThreadExecutor):
    """Each trial in a fresh worker process (spawned: the engine's threads make fork unsafe);
    its thread here relays its reports and decisions, and kills it when the sweep stops it."""

    def __init__(self, trainable: Callable[[dict], Any], display: Any, sweep: Any) -> None:
        super().__init__(trainable, display, sweep)
        import multiprocessing  # here, not at the top: most sweeps never need it, and it is slow to import

        self.context = multiprocessing.get_context("spawn")

    def _run(self, trial: Any) -> None:
        from . import _worker

        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=_worker.main,
            args=(child, self.trainable, trial.config, trial.id, trial.checkpoint_dir, trial.restore),
            name=f"rung-trial-{trial.id}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:  # noqa: BLE001 - e.g. a trainable that cannot be pickled
            _finish(
                trial,
                self.display,
                f'executor="process" could not start the trial: {exc!r} '
                "(the trainable must be a function defined at module level, and its config picklable)",
            )
            return
        finally:
            child.close()
        error = self._relay(trial, parent, process)
        parent.close()
        if process.is_alive():
            process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        _finish(trial, self.display, error)

    def _relay(self, trial: Any, parent: Any, process: Any) -> Optional[str]:
        while True:
            if parent.poll(0.05):
                try:
                    message = parent.recv()
                except EOFError:
                    return f"the worker process died (exit code {process.exitcode})"
                if message[0] == "report":
                    _, step, metrics, checkpoint = message
                    decision = trial.report(step, metrics, checkpoint)
                    parent.send(decision)
                elif message[0] == "done":
                    return None
                else:
                    return message[1]
            elif trial.should_stop():
                # Stopped by the sweep (or after a final decision): the process is ours to end.
                return None
            elif not process.is_alive() and not parent.poll(0):
                process.join()
                return f"the worker process died (exit code {process.exitcode})"
