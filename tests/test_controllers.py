"""Controllers: GridSearch, RandomSearch and custom Controller subclasses."""

from __future__ import annotations

import random
from typing import Any

import pytest

from digital_experiments import experiment
from digital_experiments.controllers import Controller, GridSearch, RandomSearch


class Uniform:
    """A tiny stand-in for a scipy.stats distribution: anything with ``rvs()``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high
        self.draws = 0

    def rvs(self) -> float:
        self.draws += 1
        return random.uniform(self.low, self.high)


# ---------------------------------------------------------------- GridSearch


def test_grid_search_runs_untried_points_in_order() -> None:
    """``control(exp, n)`` runs the next n grid points not yet run, in grid order."""

    @experiment
    def f(a: int, b: str) -> str:
        return f"{a}{b}"

    search = GridSearch(a=[1, 2], b=["x", "y"])
    assert search.control(f, n=3) is None
    assert [o.result for o in f.observations()] == ["1x", "1y", "2x"]
    search.control(f, n=10)
    assert [o.result for o in f.observations()] == ["1x", "1y", "2x", "2y"]
    search.control(f, n=10)
    assert len(f.observations()) == 4
    assert search.suggest(f.experiment) is None


def test_grid_search_skips_points_already_run_by_hand() -> None:
    """A point run outside the controller counts as done."""

    @experiment
    def f(a: int) -> int:
        return a

    f(2)
    GridSearch(a=[1, 2, 3]).control(f, n=5)
    assert [o.config["a"] for o in f.observations()] == [2, 1, 3]


def test_grid_search_ignores_parameters_outside_the_grid() -> None:
    """A point is done when its grid values ran, whatever the other parameters were."""

    @experiment
    def f(a: int, b: int, seed: int = 0) -> int:
        return a + b + seed

    search = GridSearch(a=[0, 1], b=[10, 20])
    search.control(f, n=4)
    assert len(f.observations()) == 4
    search.control(f, n=4)
    assert len(f.observations()) == 4
    assert [o.config for o in f.observations()] == [
        {"a": 0, "b": 10, "seed": 0},
        {"a": 0, "b": 20, "seed": 0},
        {"a": 1, "b": 10, "seed": 0},
        {"a": 1, "b": 20, "seed": 0},
    ]


def test_grid_search_passes_overloads() -> None:
    """Extra keyword arguments to ``control`` reach every call."""

    @experiment
    def f(a: int, seed: int = 0) -> int:
        return a + seed

    GridSearch(a=[1, 2]).control(f, n=2, seed=100)
    assert [o.result for o in f.observations()] == [101, 102]


def test_grid_search_only_counts_completed_runs_with_current_code() -> None:
    """A failed run of a point does not count: the point is tried again."""

    @experiment
    def f(a: int) -> int:
        if a == 1 and not f.observations(status="failed"):
            raise ValueError("first attempt fails")
        return a

    with pytest.raises(ValueError, match="first attempt fails"):
        GridSearch(a=[1, 2]).control(f, n=2)
    GridSearch(a=[1, 2]).control(f, n=2)
    assert [o.result for o in f.observations()] == [1, 2]


def test_grid_search_accepts_the_experiment_object() -> None:
    """``control`` takes the decorated function or its Experiment."""

    @experiment
    def f(a: int) -> int:
        return a

    GridSearch(a=[1, 2]).control(f.experiment, n=1)
    assert [o.result for o in f.observations()] == [1]


def test_grid_search_shape() -> None:
    """``grid()`` lists every point in order; ``size`` counts them; iterables are accepted."""
    search = GridSearch(a=range(2), b=(x for x in "pq"))
    assert search.size == 4
    assert list(search.grid()) == [
        {"a": 0, "b": "p"},
        {"a": 0, "b": "q"},
        {"a": 1, "b": "p"},
        {"a": 1, "b": "q"},
    ]


def test_grid_search_grid_iter_is_the_2_0_4_name_of_grid() -> None:
    """``_grid_iter()``, which 2.0.4's own tests call, yields every point like ``grid()``."""
    search = GridSearch(a=[1, 2, 3], b=range(2))
    assert list(search._grid_iter()) == list(search.grid())
    assert len(list(search._grid_iter())) == 6


@pytest.mark.parametrize("bad", [5, None, "abc"])
def test_grid_search_rejects_non_iterables(bad: Any) -> None:
    """A dimension that is not an iterable of values raises TypeError."""
    with pytest.raises(TypeError, match=r"GridSearch dimension 'a' is .*: give an iterable"):
        GridSearch(a=bad)


def test_control_needs_an_experiment() -> None:
    """Controlling a plain function raises TypeError saying to decorate it."""

    def plain(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="Expected a function decorated with @experiment"):
        GridSearch(a=[1]).control(plain)


# ---------------------------------------------------------------- RandomSearch


def test_random_search_samples_sequences_and_rvs() -> None:
    """RandomSearch draws from sequences and from anything with ``rvs()``."""
    random.seed(0)
    distribution = Uniform(-1.0, 1.0)

    @experiment
    def f(a: float, b: int, c: str) -> float:
        return a * b

    RandomSearch(a=distribution, b=[1, 2, 3], c=("x", "y")).control(f, n=20)
    observations = f.observations()
    assert len(observations) == 20
    assert distribution.draws == 20
    assert all(-1.0 <= o.config["a"] <= 1.0 for o in observations)
    assert {o.config["b"] for o in observations} <= {1, 2, 3}
    assert {o.config["c"] for o in observations} == {"x", "y"}
    assert len({o.config["a"] for o in observations}) == 20


def test_random_search_suggest_keys() -> None:
    """``suggest`` returns one value per dimension; a range is a sequence."""
    suggestion = RandomSearch(lr=[0.1, 0.01], layers=range(1, 4)).suggest(None)
    assert set(suggestion) == {"lr", "layers"}
    assert suggestion["layers"] in range(1, 4)


@pytest.mark.parametrize("bad", [5, "abc", {1, 2}, object()])
def test_random_search_rejects_bad_dimensions(bad: Any) -> None:
    """A dimension that is neither a sequence nor has ``rvs()`` raises TypeError."""
    with pytest.raises(TypeError, match=r"RandomSearch dimension 'a' is .*: give a sequence"):
        RandomSearch(a=bad)


# ---------------------------------------------------------------- custom controllers


def test_custom_controller_runs_its_suggestions() -> None:
    """A Controller subclass needs only ``suggest``; ``control`` stops when it returns None."""

    class Doubling(Controller):
        def suggest(self, experiment: Any) -> dict[str, Any] | None:
            done = experiment.observations()
            x = 1 if not done else done[-1].config["x"] * 2
            return {"x": x} if x <= 8 else None

    @experiment
    def f(x: int) -> int:
        return x

    Doubling().control(f, n=10)
    assert [o.result for o in f.observations()] == [1, 2, 4, 8]
