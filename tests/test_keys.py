"""Canonical config keys: one normalised form, whatever the backend stored."""

from __future__ import annotations

import array
import datetime
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digital_experiments._model import keys
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
        (True, False),
        ({1, 2}, {1, 3}),
        (frozenset({"a"}), frozenset({"b"})),
        ("\ud800", "\ud801"),  # lone surrogates (a path's undecodable bytes) are text too
        (array.array("i", [1, 2]), [1, 2]),  # has tolist(), but is not numpy: its pickle
        ({"f": np.add}, {"f": np.multiply}),  # numpy, but not an array: its pickle
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
        "from digital_experiments._model import keys as keys\n"
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


GOLDEN_CONFIG = {
    "none": None,
    "yes": True,
    "no": False,
    "int": -7,
    "float": 0.5,
    "text": "\u00e9",
    "list": [1, "a"],
    "tuple": (2.0,),
    "dict": {"b": 1, 2: None},
    "items": {(1, 2): "x", 3: b"raw"},
    "set": {1, "a"},
    "frozen": frozenset({"z"}),
    "date": datetime.date(2026, 1, 31),
    "datetime": datetime.datetime(2026, 1, 31, 12, 0),
    "time": datetime.time(12, 30),
    "bytes": b"\x00\xff",
}


def test_keys_do_not_change_between_versions() -> None:
    """Keys are kept on disk (claims under ``.de/claims/<key>/``, the cache index, a
    record's ``code_hash``): an encoding that changed would miss every earlier run."""
    assert keys.canonical(GOLDEN_CONFIG) == (
        b"d16{s5:bytesb2:\x00\xffs4:datetdate10:2026-01-31"
        b"s8:datetimetdatetime19:2026-01-31T12:00:00s4:dictd2{s1:2Ns1:bi1;}s5:floatf0.5;"
        b"s6:frozenS1[s1:z]s3:inti-7;s5:itemsD2{i3;b3:rawl2[i1;i2;]s1:x}s4:listl2[i1;s1:a]"
        b"s2:noFs4:noneNs3:setS2[i1;s1:a]s4:texts2:\xc3\xa9s4:timettime8:12:30:00"
        b"s5:tuplel1[f2.0;]s3:yesT}"
    )
    assert keys.config_key({"code": "def f(): ..."}, GOLDEN_CONFIG) == (
        "5b5d2dd1b0c30fe5036e5c78c62465a55152e54086983035a7677ca7e08c31d3"
    )


def test_an_object_is_keyed_by_its_protocol_4_pickle() -> None:
    """Protocol 4 whatever Python's default (5 from Python 3.14)."""
    data = pickle.dumps(complex(1, 2), protocol=4)
    assert keys.canonical(complex(1, 2)) == b"p%d:" % len(data) + data


def test_a_value_held_twice_is_no_cycle() -> None:
    """Only a container inside itself is keyed by identity, not one met twice."""
    shared: list[Any] = [1]
    inner = {"a": shared}
    assert keys.same_config([shared, shared], [[1], [1]])
    assert keys.same_config({"p": inner, "q": inner}, {"p": {"a": [1]}, "q": {"a": [1]}})


def test_a_numpy_value_that_is_its_own_plain_value_is_keyed_as_an_object() -> None:
    """A numpy type whose ``tolist()`` gives the value back is keyed as itself, not
    converted forever: unpicklable (a local class), it only matches itself."""
    odd = type("odd", (), {"__module__": "numpy", "tolist": lambda self: self})
    first, second = odd(), odd()
    assert keys.is_numpy(first)
    assert keys.same_config([first], [first])
    assert not keys.same_config([first], [second])


def test_plain_values_come_back_as_they_are() -> None:
    """``plain`` copies only what it converts: a plain value is returned itself."""
    for value in ({"a": 1}, [1], (1,), "s", 10**30, 0.5, None, True, b"x"):
        assert keys.plain(value) is value


def test_same_code_with_a_plain_string_or_none() -> None:
    """A string (or ``None``) is compared with ``metadata["code"]``, which must be there."""
    assert keys.same_code({"code": "def f(): ..."}, "def f(): ...")
    assert not keys.same_code({"code": "def g(): ..."}, "def f(): ...")
    assert keys.same_code({"code": None}, None)
    assert not keys.same_code({}, None)  # no code recorded is not "no source"
    assert not keys.same_code({"code_hash": "abc"}, {"code": None, "code_hash": "abc"})


def test_same_code_wants_the_same_types() -> None:
    """Equal values of other types (``1`` and ``True``, ``1`` and ``1.0``) are other code."""
    assert not keys.same_code({"code_hash": True}, {"code_hash": 1})
    assert not keys.same_code({"code": 1.0}, {"code": 1})
    assert keys.same_code({"code": 1}, {"code": 1})
