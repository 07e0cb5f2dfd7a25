"""Tuner.fit end to end: results, checkpoints, failures, executors, progress."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas
import pytest

import rung
import trainables
from conftest import REPO, child_env, rung_binary

SPACE = {"lr": rung.loguniform(1e-5, 1e-1), "layers": rung.randint(1, 4)}


def test_fit_returns_every_trial_with_its_results(storage: str) -> None:
    results = rung.Tuner(
        trainables.curve, param_space=SPACE, metric="loss", num_samples=12, seed=3, storage_path=storage, verbose=0
    ).fit()
    assert len(results) == 12
    assert results.status == "finished" and results.end_cause == "all_trials_done"
    assert results.counts() == {"completed": 12}
    best = results.best_result
    assert best.metrics["loss"] == min(r.best[0] for r in results)
    assert best.metrics["step"] == 27
    assert set(best.config) == {"lr", "layers"}
    history = best.history()
    assert [h["step"] for h in history] == list(range(1, 28))
    assert history[-1]["loss"] == best.metrics["loss"]
    assert results["t1"].trial_id == "t1" and results[0].trial_id == "t1"
    with pytest.raises(KeyError, match="t99"):
        results["t99"]
    # max mode on another metric, last value
    assert results.get_best_result("acc", "max", scope="last").trial_id == best.trial_id


def test_power_durability_runs_the_same_sweep_and_bad_levels_are_refused(tmp_path) -> None:
    def best(durability: str) -> "tuple[dict, float]":
        results = rung.Tuner(
            trainables.curve,
            param_space=SPACE,
            metric="loss",
            num_samples=6,
            max_concurrent_trials=1,
            seed=5,
            storage_path=str(tmp_path / durability),
            durability=durability,
            verbose=0,
        ).fit()
        return results.best_result.config, results.best_result.metrics["loss"]

    assert best("power") == best("process")
    with pytest.raises(ValueError, match='setting "durability": must be "process" or "power", got \'disk\''):
        rung.Tuner(trainables.curve, param_space=SPACE, metric="loss", durability="disk")


def test_trials_reuse_worker_threads(storage: str) -> None:
    import threading

    threads = set()

    def train(config: dict) -> None:
        threads.add(threading.get_ident())
        rung.report({"loss": config["lr"]})

    results = rung.Tuner(
        train,
        param_space=SPACE,
        metric="loss",
        num_samples=20,
        max_concurrent_trials=2,
        storage_path=storage,
        verbose=0,
    ).fit()
    assert results.counts() == {"completed": 20}
    # Two trials at once and one worker waiting for the next launch: never a thread per trial.
    assert len(threads) <= 3, threads


def test_dataframe_columns(storage: str) -> None:
    results = rung.Tuner(
        trainables.curve, param_space=SPACE, metric="loss", num_samples=4, seed=1, storage_path=storage, verbose=0
    ).fit()
    frame = results.get_dataframe()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["trial_id"]) == ["t1", "t2", "t3", "t4"]
    for column in ("status", "step", "loss", "acc", "best_loss", "error", "config/lr", "config/layers"):
        assert column in frame.columns, column
    assert (frame["step"] == 27).all()
    history = results[0].metrics_dataframe
    assert list(history.columns) == ["step", "acc", "loss"] and len(history) == 27


def test_same_seed_same_sweep(tmp_path) -> None:
    configs = []
    for run in range(2):
        results = rung.Tuner(
            trainables.curve,
            param_space=SPACE,
            metric="loss",
            num_samples=5,
            seed=11,
            storage_path=str(tmp_path / f"s{run}"),
            verbose=0,
        ).fit()
        configs.append([r.config for r in results])
    assert configs[0] == configs[1]


def test_checkpoints_round_trip_through_asha_promotion(storage: str, tmp_path) -> None:
    log = str(tmp_path / "starts.log")
    results = rung.Tuner(
        trainables.checkpointing,
        param_space={"x": rung.uniform(1, 10), "log": log},
        metric="loss",
        num_samples=9,
        max_concurrent_trials=3,
        seed=5,
        scheduler=rung.schedulers.ASHA(type="promote", max_t=12, grace_period=1, reduction_factor=3),
        storage_path=storage,
        verbose=0,
    ).fit()
    assert results.status == "finished"
    lines = open(log).read().split()
    starts = [(lines[i], int(lines[i + 2])) for i in range(0, len(lines), 5)]
    resumed = [s for s in starts if s[1] > 0]
    # Promoted trials continue from the step of their checkpoint, not from scratch.
    assert resumed, "ASHA promote should have resumed paused trials"
    for _, step in resumed:
        assert step in (1, 3, 9)
    for trial_id, _ in resumed:
        # Each step reported once: the resumed run picked up right after its checkpoint.
        steps = [h["step"] for h in results[trial_id].history()]
        assert steps == list(range(1, steps[-1] + 1))
    winner = results.best_result
    assert winner.checkpoint is not None and winner.checkpoint.endswith(f"step_{winner.metrics['step']:08d}")
    with open(os.path.join(winner.checkpoint, "state.json")) as f:
        assert f.read() == f'{{"step": {winner.metrics["step"]}}}'


def test_checkpoints_in_object_storage_are_uploaded_restored_and_kept_n(storage: str, tmp_path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    log = str(tmp_path / "starts.log")
    results = rung.Tuner(
        trainables.checkpointing,
        param_space={"x": rung.uniform(1, 10), "log": log},
        metric="loss",
        num_samples=9,
        max_concurrent_trials=3,
        seed=5,
        scheduler=rung.schedulers.ASHA(type="promote", max_t=12, grace_period=1, reduction_factor=3),
        storage_path=storage,
        checkpoint_storage=f"file://{bucket}/sweeps",
        checkpoint_keep=1,
        name="objects",
        verbose=0,
    ).fit()
    assert results.status == "finished"
    lines = open(log).read().split()
    resumed = [int(lines[i + 2]) for i in range(0, len(lines), 5) if int(lines[i + 2]) > 0]
    # Promoted trials resumed from checkpoints downloaded out of the bucket.
    assert resumed and all(step in (1, 3, 9) for step in resumed)
    winner = results.best_result
    step = winner.metrics["step"]
    assert winner.checkpoint == f"file://{bucket}/sweeps/objects/{winner.trial_id}/{step}/"
    kept = bucket / "sweeps" / "objects" / winner.trial_id / str(step)
    assert (kept / "state.json").read_text() == f'{{"step": {step}}}'
    assert (kept / ".rung-complete").exists()
    # checkpoint_keep=1: one checkpoint per trial left in the bucket (its best, also its newest).
    for trial in (bucket / "sweeps" / "objects").iterdir():
        steps = [d for d in trial.iterdir() if any(d.iterdir())]
        assert len(steps) == 1, (trial, steps)


def test_a_bad_checkpoint_storage_is_refused_naming_the_setting(storage: str) -> None:
    with pytest.raises(ValueError, match='"trial.checkpoint_storage": "s3:///x": the URI names no bucket'):
        rung.Tuner(
            trainables.curve,
            param_space=SPACE,
            metric="loss",
            storage_path=storage,
            checkpoint_storage="s3:///x",
            verbose=0,
        )


def test_exceptions_are_recorded_with_their_traceback(storage: str) -> None:
    results = rung.Tuner(
        trainables.failing, param_space={"x": 1}, metric="loss", num_samples=2, storage_path=storage, verbose=0
    ).fit()
    assert results.num_errors == 2
    trial_id, error = results.errors[0]
    assert "Traceback (most recent call last)" in error
    assert "ValueError: boom at step 3" in error
    assert results[trial_id].metrics["step"] == 3


def test_max_failures_retries_from_the_last_checkpoint(storage: str) -> None:
    results = rung.Tuner(
        trainables.failing,
        param_space={"x": 1},
        metric="loss",
        num_samples=2,
        max_failures=1,
        storage_path=storage,
        verbose=0,
    ).fit()
    assert results.counts() == {"completed": 2}
    for result in results:
        assert result.launches == 2 and result.failures == 1
        # Resumed after step 3: steps 4 and 5 follow, nothing repeated.
        assert [h["step"] for h in result.history()] == [1, 2, 3, 4, 5]


def test_returned_dict_is_the_final_result(storage: str) -> None:
    def train(config):
        rung.report({"loss": 3.0})
        return {"loss": 1.0}

    results = rung.Tuner(train, param_space={}, metric="loss", storage_path=storage, verbose=0).fit()
    assert results[0].metrics == {"loss": 1.0, "step": 2}


def test_bad_reports_fail_the_trial_with_a_clear_message(storage: str) -> None:
    def train(config):
        rung.report({"loss": 1.0, "phase": "warmup"})

    results = rung.Tuner(train, param_space={}, metric="loss", storage_path=storage, verbose=0).fit()
    assert "metric 'phase' must be a number, got str" in results.errors[0][1]

    def beyond(config):
        rung.report({"loss": 1.0, "step": 2**63})

    results = rung.Tuner(beyond, param_space={}, metric="loss", storage_path=storage, verbose=0).fit()
    assert "step must be an integer from 0 to 9223372036854775807, got 9223372036854775808" in results.errors[0][1]


def test_report_outside_a_trial_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="outside a trial"):
        rung.report({"loss": 1.0})


def test_process_executor_runs_trials_in_other_processes(storage: str) -> None:
    results = rung.Tuner(
        trainables.pid_reporter,
        param_space={"x": rung.uniform(0, 1)},
        metric="loss",
        num_samples=3,
        max_concurrent_trials=3,
        executor="process",
        storage_path=storage,
        verbose=0,
    ).fit()
    assert results.counts() == {"completed": 3}
    pids = {int(r.metrics["pid"]) for r in results}
    assert os.getpid() not in pids and len(pids) == 3


def test_process_executor_applies_the_schedulers_decisions(storage: str) -> None:
    results = rung.Tuner(
        trainables.curve,
        param_space=SPACE,
        metric="loss",
        num_samples=9,
        max_concurrent_trials=3,
        seed=2,
        executor="process",
        scheduler=rung.schedulers.ASHA(max_t=27, grace_period=1, reduction_factor=3),
        storage_path=storage,
        verbose=0,
    ).fit()
    steps = sorted(r.metrics["step"] for r in results)
    assert steps[0] < 27 and steps[-1] == 27


def test_process_executor_records_failures(storage: str) -> None:
    results = rung.Tuner(
        trainables.failing, param_space={"x": 1}, metric="loss", executor="process", storage_path=storage, verbose=0
    ).fit()
    assert "ValueError: boom at step 3" in results.errors[0][1]


def test_progress_goes_to_stderr_unless_silenced(storage: str, capfd) -> None:
    rung.Tuner(trainables.curve, param_space=SPACE, metric="loss", num_samples=2, storage_path=storage).fit()
    err = capfd.readouterr().err
    assert "rung: 2/2 trials" in err and "best loss=" in err and "finished (all_trials_done)" in err
    rung.Tuner(trainables.curve, param_space=SPACE, metric="loss", num_samples=2, storage_path=storage, verbose=0).fit()
    assert capfd.readouterr().err == ""


def test_store_problems_are_runtime_errors(tmp_path) -> None:
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "rung.db").write_bytes(b"this is not a database" * 100)
    tuner = rung.Tuner(trainables.curve, param_space=SPACE, metric="loss", storage_path=str(bogus), verbose=0)
    with pytest.raises(RuntimeError, match="rung.db"):
        tuner.fit()
    assert (bogus / "rung.db").read_bytes() == b"this is not a database" * 100
    with pytest.raises(FileNotFoundError, match="no rung sweep"):
        rung.Tuner.restore(str(tmp_path / "nowhere"), trainables.curve)


def test_report_under_the_cli_prints_protocol_lines(tmp_path) -> None:
    code = "import rung; rung.report({'loss': 0.5}); rung.report({'loss': float('nan'), 'step': 7})"
    env = child_env()
    env.update(RUNG_TRIAL_ID="t4", RUNG_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ['rung:report {"step": 1, "loss": 0.5}', 'rung:report {"step": 7, "loss": NaN}']


def test_a_script_using_rung_report_runs_under_the_rung_cli(tmp_path) -> None:
    binary = rung_binary()
    script = tmp_path / "trial.py"
    script.write_text(
        "import os, sys, rung\n"
        "lr = float(sys.argv[1])\n"
        "start = 0\n"
        "for step in range(1, 6):\n"
        "    d = rung.checkpoint_dir()\n"
        "    open(os.path.join(d, 'w'), 'w').write(str(step))\n"
        "    rung.report({'loss': lr * 10 / step}, checkpoint=d)\n"
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "cli"\nmetric = "loss"\nmode = "min"\nnum_samples = 3\nseed = 1\n'
        "[space]\nlr = { loguniform = [1e-3, 1e-1] }\n"
        f'[trial]\ncommand = ["{sys.executable}", "trial.py", "{{lr}}"]\n'
    )
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python" / "python"), env["PYTHONPATH"]])
    run = subprocess.run(
        [str(binary), "run", str(spec), "--db", str(tmp_path / "cli.db")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    results = rung.ResultGrid.load(str(tmp_path / "cli.db"))
    assert results.counts() == {"completed": 3}
    for r in results:
        assert r.metrics["step"] == 5 and r.checkpoint and r.checkpoint.endswith("step_00000005")
