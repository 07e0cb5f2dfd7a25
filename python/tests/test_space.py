"""Every domain, through a real sweep, and the errors of bad spaces."""

from __future__ import annotations

import math
import threading

import pytest

import rung


def collect(space: dict, storage: str, num_samples: int = 60, **kwargs) -> list:
    seen = []
    lock = threading.Lock()

    def train(config: dict) -> None:
        with lock:
            seen.append(config)
        rung.report({"loss": 0.0})

    rung.Tuner(
        train,
        param_space=space,
        metric="loss",
        num_samples=num_samples,
        seed=7,
        storage_path=storage,
        verbose=0,
        **kwargs,
    ).fit()
    return seen


def test_every_domain_samples_inside_its_range(storage: str) -> None:
    space = {
        "u": rung.uniform(-1, 2),
        "qu": rung.quniform(0, 1, 0.25),
        "lu": rung.loguniform(1e-5, 1e-1),
        "qlu": rung.qloguniform(1, 1000, 5),
        "ri": rung.randint(1, 8),
        "qri": rung.qrandint(0, 100, 10),
        "lri": rung.lograndint(1, 1024),
        "n": rung.normal(10, 2),
        "c": rung.choice(["relu", "tanh", 3]),
        "fixed": 42,
        "nested": {"width": rung.randint(16, 17), "act": "gelu"},
        "raw": rung.fixed({"uniform": "not a domain"}),
    }
    configs = collect(space, storage)
    assert len(configs) == 60
    for c in configs:
        assert -1 <= c["u"] <= 2
        assert c["qu"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert 1e-5 <= c["lu"] <= 1e-1
        assert 1 <= c["qlu"] <= 1000 and math.isclose(c["qlu"] / 5, round(c["qlu"] / 5))
        assert isinstance(c["ri"], int) and 1 <= c["ri"] < 8
        assert c["qri"] % 10 == 0 and 0 <= c["qri"] <= 100
        assert isinstance(c["lri"], int) and 1 <= c["lri"] < 1024
        assert isinstance(c["n"], float)
        assert c["c"] in ("relu", "tanh", 3)
        assert c["fixed"] == 42
        assert c["nested"] == {"width": 16, "act": "gelu"}
        assert c["raw"] == {"uniform": "not a domain"}
    # Not constant: the draws differ from trial to trial.
    assert len({c["u"] for c in configs}) == 60
    assert {c["c"] for c in configs} == {"relu", "tanh", 3}
    assert 8 < sum(c["n"] for c in configs) / 60 < 12


def test_conditional_choice_samples_only_the_chosen_branch(storage: str) -> None:
    space = {"optimizer": rung.choice([{"name": "sgd", "momentum": rung.uniform(0, 0.99)}, {"name": "adam"}])}
    configs = collect(space, storage, num_samples=40)
    names = {c["optimizer"]["name"] for c in configs}
    assert names == {"sgd", "adam"}
    for c in configs:
        if c["optimizer"]["name"] == "sgd":
            assert 0 <= c["optimizer"]["momentum"] <= 0.99
        else:
            assert c["optimizer"] == {"name": "adam"}


def test_grid_runs_every_point_num_samples_times(storage: str) -> None:
    space = {"a": rung.grid([1, 2, 3]), "b": rung.grid_search(["x", "y"]), "c": rung.uniform(0, 1)}
    configs = collect(space, storage, num_samples=2)
    points = sorted((c["a"], c["b"]) for c in configs)
    assert points == sorted([(a, b) for a in (1, 2, 3) for b in ("x", "y")] * 2)


def test_grid_searcher_exhausts_the_space(storage: str) -> None:
    configs = collect(
        {"a": rung.choice([1, 2]), "b": rung.randint(0, 3)}, storage, num_samples=1, searcher=rung.search.Grid()
    )
    assert sorted((c["a"], c["b"]) for c in configs) == [(a, b) for a in (1, 2) for b in (0, 1, 2)]


def train_nothing(config: dict) -> None:
    rung.report({"loss": 0.0})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": rung.loguniform(0, 0.1)}, 'parameter "lr": loguniform needs 0 < low < high'),
        ({"n": {"layers": rung.randint(5, 5)}}, 'parameter "n.layers"'),
        ({"c": rung.choice([])}, 'parameter "c"'),
        ({"s": rung.normal(0, -1)}, 'parameter "s"'),
        ({"q": rung.quniform(0, 1, 0)}, 'parameter "q"'),
    ],
)
def test_bad_domains_are_value_errors_naming_the_parameter(space: dict, message: str, storage: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        rung.Tuner(train_nothing, param_space=space, metric="loss", storage_path=storage)


def test_bad_values_are_caught_where_the_domain_is_written() -> None:
    with pytest.raises(ValueError, match="finite"):
        rung.uniform(0, float("nan"))
    with pytest.raises(TypeError, match="must be a number"):
        rung.loguniform("a", 1)
    with pytest.raises(ValueError, match="integer"):
        rung.randint(1.5, 3)
    with pytest.raises(TypeError, match="must be a list"):
        rung.choice("abc")
    with pytest.raises(TypeError, match="parameter names must be strings"):
        rung.Tuner(train_nothing, param_space={1: rung.uniform(0, 1)}, metric="loss")
    with pytest.raises(TypeError, match="cannot be part of a search space"):
        rung.Tuner(train_nothing, param_space={"f": object()}, metric="loss")


def test_settings_are_checked_when_the_tuner_is_built(storage: str) -> None:
    space = {"x": rung.uniform(0, 1)}
    with pytest.raises(ValueError, match="metric"):
        rung.Tuner(train_nothing, param_space=space)
    with pytest.raises(ValueError, match='"mode"'):
        rung.Tuner(train_nothing, param_space=space, metric="loss", mode="down")
    with pytest.raises(ValueError, match="reduction_factor"):
        rung.Tuner(train_nothing, param_space=space, metric="loss", scheduler=rung.schedulers.ASHA(reduction_factor=1))
    with pytest.raises(ValueError, match="grid search cannot enumerate"):
        rung.Tuner(train_nothing, param_space=space, metric="loss", searcher=rung.search.Grid())
    with pytest.raises(ValueError, match="executor"):
        rung.Tuner(train_nothing, param_space=space, metric="loss", executor="gpu")
    with pytest.raises(ValueError, match="different values"):
        rung.Tuner(train_nothing, param_space=space, metric="loss", scheduler=rung.schedulers.ASHA(metric="acc"))
    with pytest.raises(TypeError, match="rung.schedulers"):
        rung.Tuner(train_nothing, param_space=space, metric="loss", scheduler="asha")
