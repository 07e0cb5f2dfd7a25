"""Each scheduler's decisions through Tuner.fit, and schedulers and searchers used on their own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

import pytest

import rung
import trainables

SPACE = {"lr": rung.loguniform(1e-5, 1e-1), "layers": rung.randint(1, 4)}


def sweep(storage: str, scheduler, trainable=trainables.curve, num_samples: int = 18, **kwargs):
    return rung.Tuner(
        trainable,
        param_space=kwargs.pop("space", SPACE),
        metric="loss",
        num_samples=num_samples,
        max_concurrent_trials=kwargs.pop("max_concurrent_trials", 3),
        seed=4,
        scheduler=scheduler,
        storage_path=storage,
        verbose=0,
        **kwargs,
    ).fit()


def test_fifo_lets_every_trial_finish(storage: str) -> None:
    results = sweep(storage, rung.schedulers.FIFO())
    assert results.counts() == {"completed": 18}
    assert all(r.metrics["step"] == 27 for r in results)


def test_asha_stops_trials_at_its_rungs(storage: str) -> None:
    results = sweep(storage, rung.schedulers.ASHA(max_t=27, grace_period=1, reduction_factor=3))
    steps = [r.metrics["step"] for r in results]
    stopped_early = [s for s in steps if s < 27]
    assert stopped_early, "ASHA should stop some trials before max_t"
    assert set(stopped_early) <= {1, 3, 9}
    # The winner ran to the end.
    assert results.best_result.metrics["step"] == 27


def test_median_stopping_stops_trials_worse_than_the_median(storage: str) -> None:
    results = sweep(storage, rung.schedulers.MedianStopping(grace_period=3, min_samples_required=3))
    counts = results.counts()
    assert counts.get("stopped", 0) > 0
    assert all(r.metrics["step"] >= 3 for r in results)
    assert results.best_result.metrics["step"] == 27


def test_hyperband_pauses_and_resumes_from_checkpoints(storage: str) -> None:
    results = sweep(
        storage,
        rung.schedulers.Hyperband(max_t=9, reduction_factor=3),
        trainable=trainables.checkpointing,
        space={"x": rung.uniform(1, 10)},
        num_samples=9,
        max_concurrent_trials=9,
    )
    steps = sorted(r.metrics["step"] for r in results)
    assert steps[0] < 9 and steps[-1] >= 9
    resumed = [r for r in results if r.launches > 1]
    assert resumed, "Hyperband should resume paused trials"
    for r in resumed:
        history = [h["step"] for h in r.history()]
        assert history == list(range(1, history[-1] + 1))


def test_pbt_moves_configs_to_better_trials(storage: str, tmp_path: Path) -> None:
    log = tmp_path / "launches.jsonl"
    results = sweep(
        storage,
        # No resampling: every explored x is the donor's times 0.8 or 1.2, which can be checked.
        rung.schedulers.PBT(perturbation_interval=3, quantile_fraction=0.25, resample_probability=0.0),
        trainable=trainables.pbt_member,
        space={"x": rung.uniform(1, 10), "log": str(log)},
        num_samples=8,
        max_concurrent_trials=8,
    )
    exploited = [r for r in results if r.launches > 1]
    assert exploited, "PBT should exploit: relaunch bottom trials from top trials' checkpoints"
    assert results.counts().get("errored", 0) == 0
    assert results.counts() == {"completed": 8}

    launches: Dict[str, List[dict]] = {}
    for line in log.read_text().splitlines():
        launch = json.loads(line)
        launches.setdefault(launch["trial"], []).append(launch)
    # The engine's launch counts are the launches the trainable saw.
    assert {r.trial_id: r.launches for r in results} == {t: len(runs) for t, runs in launches.items()}
    highest_x = math.nextafter(10.0, 0.0)  # uniform(1, 10) is clamped below its exclusive high
    explored_reports = 0
    for result in results:
        runs = launches[result.trial_id]
        assert runs[0]["restored"] is None and runs[0]["origin"] is None
        for launch in runs[1:]:
            # Exploitation: restarted from another trial's checkpoint, the donor's, as it wrote it...
            origin = launch["origin"]
            donor = origin["trial"]
            assert donor != result.trial_id, launch
            restored = Path(launch["restored"])
            assert restored.name == f"step_{origin['step']:08d}" and Path(results[donor].path) in restored.parents
            donor_xs = {run["x"] for run in launches[donor]}
            assert origin["x"] in donor_xs, (launch, donor_xs)
            # ...with the donor's config perturbed (explore).
            perturbed = {min(max(x * factor, 1.0), highest_x) for x in donor_xs for factor in (0.8, 1.2)}
            assert launch["x"] in perturbed, (launch, donor_xs)
        # The store has the config the trial ran with last...
        assert result.config == {"x": runs[-1]["x"], "log": str(log)}
        # ...and every report is explained by its launches in order: under the first config from
        # step 1 on, under an explored one from the step after the donor's checkpoint (a step
        # already reported stays as it was).
        history = result.history()
        assert result.metrics["step"] == history[-1]["step"]
        # Each launch counts to 12, unless it restored a checkpoint of step 12 (a finished donor's).
        assert history[-1]["step"] == 12 or runs[-1]["origin"]["step"] == 12, (history, runs)
        index, previous = 0, 0
        for h in history:
            made_by = [
                i
                for i in range(index, len(runs))
                if h["loss"] == runs[i]["x"] / h["step"]
                and h["step"] == (previous if i == index else max(previous, runs[i]["origin"]["step"])) + 1
            ]
            assert made_by, (result.trial_id, h, history, runs)
            index, previous = made_by[0], h["step"]
            explored_reports += index > 0
    # The exploits that happened before a trial's last step left reports under explored configs.
    assert explored_reports > 0, launches


def test_standalone_asha_gives_ray_tunes_decisions() -> None:
    asha = rung.schedulers.ASHA(metric="loss", mode="min", max_t=81, grace_period=1, reduction_factor=3)
    # Rung 1: cutoff is the 2/3 quantile of the rewards seen before (losses negated).
    assert asha.on_result("t1", {"step": 1, "loss": 1.0}) == "CONTINUE"
    assert asha.on_result("t2", {"step": 1, "loss": 0.5}) == "CONTINUE"
    assert asha.on_result("t3", {"step": 1, "loss": 2.0}) == "STOP"
    assert asha.on_result("t4", {"step": 1, "loss": 0.1}) == "CONTINUE"
    # Between rungs nothing is decided; step counts on from the last one when not given.
    assert asha.on_result("t4", {"loss": 0.09}) == "CONTINUE"
    # The last rung stops trials that reach max_t.
    assert asha.on_result("t4", {"step": 81, "loss": 0.01}) == "STOP"
    with pytest.raises(KeyError, match="no 'loss'"):
        asha.on_result("t5", {"step": 1, "acc": 0.3})


def test_standalone_max_mode_and_time_attr() -> None:
    asha = rung.schedulers.ASHA(metric="acc", mode="max", time_attr="epoch", max_t=9, reduction_factor=3)
    assert asha.on_result("a", {"epoch": 1, "acc": 0.9}) == "CONTINUE"
    assert asha.on_result("b", {"epoch": 1, "acc": 0.95}) == "CONTINUE"
    assert asha.on_result("c", {"epoch": 1, "acc": 0.1}) == "STOP"


def test_standalone_needs_a_metric() -> None:
    with pytest.raises(ValueError, match="needs metric"):
        rung.schedulers.ASHA(max_t=9).on_result("t1", {"loss": 1.0})
    with pytest.raises(ValueError, match="needs space"):
        rung.schedulers.PBT(metric="loss", perturbation_interval=2).on_result("t1", {"loss": 1.0})


def test_standalone_searchers_suggest_configs_in_the_space() -> None:
    space = {"x": rung.uniform(-5, 10), "y": rung.uniform(0, 15)}
    for searcher in (
        rung.search.Random(),
        rung.search.Sobol(),
        rung.search.TPE(n_startup_trials=3),
        rung.search.GP(n_startup_trials=3),
    ):
        searcher.space, searcher.metric, searcher.mode, searcher.seed = space, "f", "min", 1
        for i in range(6):
            config = searcher.suggest(f"t{i}")
            assert config is not None and -5 <= config["x"] <= 10 and 0 <= config["y"] <= 15
            searcher.on_complete(f"t{i}", {"f": (config["x"] - 1) ** 2 + config["y"]})
        with pytest.raises(ValueError, match="already has a config"):
            searcher.suggest("t0")
        with pytest.raises(KeyError, match="unknown trial"):
            searcher.on_complete("nope", {"f": 1.0})


def test_standalone_tpe_is_deterministic_given_its_seed() -> None:
    def run() -> list:
        tpe = rung.search.TPE(space={"x": rung.uniform(0, 1)}, metric="f", mode="min", seed=9, n_startup_trials=2)
        configs = []
        for i in range(8):
            c = tpe.suggest(str(i))
            configs.append(c)
            tpe.on_complete(str(i), {"f": abs(c["x"] - 0.3)})
        return configs

    assert run() == run()


def test_standalone_grid_cycles_through_its_points() -> None:
    grid = rung.search.Grid(space={"a": rung.grid([1, 2]), "b": rung.choice(["x", "y"])})
    configs = [grid.suggest(f"t{i}") for i in range(6)]
    assert configs[:4] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert configs[4:] == configs[:2] and not grid.exhausted


def test_standalone_tpe_never_repeats_and_ends_with_its_space() -> None:
    space = {"c": rung.choice(["a", "b", "c"]), "n": rung.randint(0, 3)}
    tpe = rung.search.TPE(space=space, metric="f", mode="min", seed=1, n_startup_trials=2)
    seen = []
    for i in range(10):
        config = tpe.suggest(f"t{i}")
        if config is None:
            break
        assert config not in seen
        seen.append(config)
        tpe.on_complete(f"t{i}", {"f": float(config["n"])})
    assert len(seen) == 9 and tpe.exhausted


def test_points_to_evaluate_come_first_and_a_warm_start_learns_from_an_earlier_sweep(storage: str) -> None:
    space = {"c": rung.choice(["a", "b", "c"]), "layers": rung.randint(1, 4)}

    def train(config: dict) -> None:
        rung.report({"loss": "abc".index(config["c"]) + config["layers"]})

    def fit(name: str, num_samples: int, searcher: rung.search.Searcher) -> rung.ResultGrid:
        return rung.Tuner(
            train,
            param_space=space,
            metric="loss",
            num_samples=num_samples,
            name=name,
            searcher=searcher,
            storage_path=storage,
            max_concurrent_trials=1,
            verbose=0,
        ).fit()

    first = fit("first", 4, rung.search.TPE(points_to_evaluate=[{"c": "b", "layers": 3}, {"c": "a"}]))
    assert first[0].config == {"c": "b", "layers": 3} and first[1].config["c"] == "a"
    second = fit("second", 50, rung.search.TPE(warm_start="first"))
    earlier = [r.config for r in first]
    # The 9 configurations less the 4 run before; then the space is exhausted.
    assert len(second) == 5 and not any(r.config in earlier for r in second)
    with pytest.raises(ValueError, match='points_to_evaluate\\[0\\]": parameter "c"'):
        fit("third", 1, rung.search.TPE(points_to_evaluate=[{"c": "z"}]))
