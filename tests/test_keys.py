"""Canonical config keys: one normalised form, whatever the backend stored."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digital_experiments import _keys as keys
from digital_experiments.backends import instantiate_backend
from digital_experiments.core import Observation


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((1, 2), [1, 2]),
        ({"shape": (2, (3, 4))}, {"shape": [2, [3, 4]]}),
        (np.arange(3), [0, 1, 2]),
        (np.array([[1.5, 2.0]]), [[1.5, 2.0]]),
        (np.float32(0.5), 0.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        ({1: "a", "b": 2}, {"1": "a", "b": 2}),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (float("nan"), float("nan")),
        ({1, 2, 3}, {3, 2, 1}),
        (OrderedDict(a=1), {"a": 1}),
    ],
)
def test_same_config_for_values_every_backend_stores_alike(a: Any, b: Any) -> None:
    """Tuples are lists, numpy values are Python values, int dict keys are their JSON string."""
    assert keys.same_config(a, b)
    assert keys.config_key(None, {"x": a}) == keys.config_key(None, {"x": b})


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (1, "1"),
        (0.0, -0.0),
        ("a", b"a"),
        ([1, 2], [2, 1]),
        ({1: "a", "1": "b"}, {"1": "b"}),
        ({(1, 2): "x"}, {(1, 3): "x"}),
        (datetime.date(2024, 1, 1), "2024-01-01"),
        (np.arange(2000.0), np.arange(2000.0) + np.eye(1, 2000, 1000)[0]),
        ([], {}),
    ],
)
def test_different_configs_get_different_keys(a: Any, b: Any) -> None:
    """Different types and contents stay apart, big arrays included (no repr elision)."""
    assert not keys.same_config(a, b)
    assert keys.config_key(None, {"x": a}) != keys.config_key(None, {"x": b})


def test_awkward_dict_keys_hash_without_error() -> None:
    """Tuple keys and mixed int/str keys are keyed, not a TypeError."""
    assert keys.same_config({(1, 2): "x", 3: "y"}, {3: "y", (1, 2): "x"})
    assert keys.config_key(None, {"d": {1: "a", "b": 2}}) == keys.config_key(
        None, {"d": {"b": 2, 1: "a"}}
    )


def test_code_identity_is_part_of_the_key() -> None:
    """The same config under another code identity is another key."""
    config = {"a": 1}
    assert keys.config_key({"code": "v1"}, config) != keys.config_key({"code": "v2"}, config)


def test_objects_only_pickle_stores_are_keyed_by_their_pickled_bytes() -> None:
    """Equal picklable objects share a key; an unpicklable one only matches itself."""
    assert keys.same_config(Path("a"), Path("a"))
    assert not keys.same_config(Path("a"), Path("b"))
    assert not keys.same_config(Path("a"), "a")
    f = lambda: 1  # noqa: E731 - an unpicklable local object
    g = lambda: 1  # noqa: E731
    assert keys.same_config({"f": f}, {"f": f})
    assert not keys.same_config({"f": f}, {"f": g})


@pytest.mark.parametrize("backend", ["pickle", "json", "yaml"])
def test_a_config_is_the_same_after_a_round_trip_through_every_backend(
    tmp_path: Path, backend: str
) -> None:
    """What a backend stores and reads back has the key of what was passed."""
    config = {
        "shape": (2, 3),
        "lr": np.float32(0.1),
        "n": np.int64(7),
        "xs": np.linspace(0, 1, 5),
        "names": {1: "a", "b": 2},
        "nan": float("nan"),
    }
    store = instantiate_backend(backend, tmp_path)
    store.record(Observation("2026-01-01_00-00-00_000000", config, None, {}))
    loaded = store.load("2026-01-01_00-00-00_000000").config
    assert keys.same_config(loaded, config)
    assert keys.config_key(None, loaded) == keys.config_key(None, config)


def test_keys_are_the_same_in_another_process() -> None:
    """A key does not depend on the process (string hashing is randomised per process)."""
    config = {"s": {"a", "b", "c", "d"}, "t": ("x", 1.5), "d": {2: None}}
    script = (
        "from digital_experiments import _keys as keys\n"
        f"print(keys.config_key({{'code': 'c'}}, {config!r}))\n"
    )
    keys_seen = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    assert keys_seen == {keys.config_key({"code": "c"}, config)}


def test_same_code_compares_every_recorded_field() -> None:
    """A record matches a code identity only with every field equal, code_hash included."""
    with_source = {"code": "def f(): ..."}
    without = {"code": None, "code_hash": "abc"}
    assert keys.same_code({"code": "def f(): ...", "status": "completed"}, with_source)
    assert not keys.same_code({"code": "def g(): ..."}, with_source)
    assert keys.same_code({"code": None, "code_hash": "abc"}, without)
    assert not keys.same_code({"code": None, "code_hash": "abd"}, without)
    assert not keys.same_code({"code": None}, without)  # 3.0.0 record: version unknown
    assert not keys.same_code(None, with_source)


def test_subclasses_of_plain_types_are_their_plain_values() -> None:
    """An IntEnum, a str enum, a named tuple and an OrderedDict key as JSON stores them."""
    import enum
    from collections import namedtuple

    class Level(enum.IntEnum):
        HIGH = 3

    class Mode(str, enum.Enum):
        FAST = "fast"

    Point = namedtuple("Point", "x y")
    assert keys.same_config(Level.HIGH, 3)
    assert keys.same_config(Mode.FAST, "fast")
    assert keys.same_config(Point(1, 2), [1, 2])
    assert keys.same_config({Level.HIGH: "x"}, {"3": "x"})
    assert keys.plain(Level.HIGH).__class__ is int


def test_self_containing_configs_are_keyed_without_error() -> None:
    """A list holding itself gets a key (it only matches itself)."""
    loop: list[Any] = []
    loop.append(loop)
    assert keys.same_config(loop, loop)
    assert keys.config_key(None, {"x": loop}) == keys.config_key(None, {"x": loop})
    deep: dict[Any, Any] = {(1, 2): []}
    deep[(1, 2)].append(deep)
    assert keys.canonical(deep) == keys.canonical(deep)


def test_code_hash_follows_bodies_defaults_and_nested_functions() -> None:
    """The code identity changes with the body, a default, or a nested function's body."""
    import functools

    from digital_experiments.util import code_hash, code_identity

    def define(source: str) -> Any:
        namespace: dict[str, Any] = {}
        exec(source, namespace)
        return namespace["f"]

    base = "def f(x, y={y}):\n    def inner():\n        return {inner}\n    return x + inner()\n"
    versions = [
        base.format(y=1, inner=1),
        base.format(y=2, inner=1),
        base.format(y=1, inner=2),
        base.format(y=1, inner=1).replace("x + inner()", "x - inner()"),
    ]
    hashes = [code_hash(define(v)) for v in versions]
    assert len(set(hashes)) == len(versions)
    assert code_hash(define(versions[0])) == hashes[0]  # the same body again
    assert code_identity(define(versions[0])) == {"code": None, "code_hash": hashes[0]}
    f = define(versions[0])
    assert code_hash(functools.partial(f, 1)) != code_hash(functools.partial(f, 2))
