"""Properties over open-ended inputs (Hypothesis): canonical keys and the where= language.

Example counts come from the profile in ``tests/conftest.py`` (bounded, so the
suite stays quick; ``HYPOTHESIS_PROFILE=thorough`` explores more).
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from digital_experiments._model import keys, where
from digital_experiments.backends import instantiate_backend
from digital_experiments.core import Observation

from .conftest import examples

np = pytest.importorskip("numpy")
from hypothesis.extra import numpy as hnp  # noqa: E402 - only with numpy

# ---------------------------------------------------------------- canonical keys

# small alphabets, so that two independent draws are often the same config
# (collisions and non-collisions both get tested); the characters are those of
# the encoding itself, so a framing mistake would show
_TEXT = st.text(alphabet="ab1:;[]{}", max_size=4)
_FLOATS = st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e16, math.inf, -math.inf, math.nan])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([2**64, -(2**70)]), _FLOATS, _TEXT
)
_KEYS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), _FLOATS, _TEXT)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(_KEYS, children, max_size=3),
    )


_VALUES = st.recursive(_SCALARS, _containers, max_leaves=8)
# what the pickle backend alone stores (and what crosses processes): sets and bytes too
_PICKLED = st.recursive(
    st.one_of(_SCALARS, _TEXT.map(str.encode), st.frozensets(_TEXT, max_size=3)),
    lambda children: st.one_of(
        _containers(children),
        st.sets(st.one_of(_TEXT, st.integers(-2, 2)), max_size=4),
        st.dictionaries(st.tuples(_TEXT, st.integers(0, 1)), children, max_size=2),
    ),
    max_leaves=8,
)


def _json_key(key: Any) -> str:
    """What JSON writes a dict key as (the documented rule of canonical keys)."""
    if isinstance(key, str):
        return key
    if isinstance(key, float):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(key), repr(key))
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    return str(key)


def oracle(value: Any) -> Any:
    """A plain-Python model of "the same config", straight from ``_keys``' docstring."""
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, float):
        return ("float", repr(value))  # nan is nan, -0.0 is not 0.0
    if isinstance(value, (list, tuple)):
        return ("list", tuple(oracle(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(oracle(item) for item in value))
    assert isinstance(value, dict)
    if all(key is None or isinstance(key, (str, int, float)) for key in value):
        named = {_json_key(key): item for key, item in value.items()}
        if len(named) == len(value):
            return ("dict", frozenset((name, oracle(item)) for name, item in named.items()))
    return ("items", frozenset((oracle(key), oracle(item)) for key, item in value.items()))


@given(_PICKLED, _PICKLED)
def test_two_configs_share_a_key_exactly_when_the_documented_rules_say(a: Any, b: Any) -> None:
    """Tuples are lists and int dict keys their JSON text; 1, 1.0, True and "1" stay apart."""
    assert (keys.canonical(a) == keys.canonical(b)) == (oracle(a) == oracle(b))
    assert keys.same_config(a, b) == (oracle(a) == oracle(b))


def _restyled(value: Any, draw: Any) -> Any:
    """``value`` as another backend may hand it back: lists for tuples, dict keys
    reordered or written as JSON text (when that loses nothing), numpy arrays."""
    if isinstance(value, (list, tuple)):
        items = [_restyled(item, draw) for item in value]
        return draw(st.sampled_from([list, tuple]))(items)
    if isinstance(value, dict):
        pairs = [(key, _restyled(item, draw)) for key, item in value.items()]
        pairs = draw(st.permutations(pairs))
        named = {_json_key(key) for key, _ in pairs}
        as_text = len(named) == len(pairs) and all(
            key is None or isinstance(key, (str, int, float)) for key, _ in pairs
        )
        if as_text and draw(st.booleans()):
            return {_json_key(key): item for key, item in pairs}
        return dict(pairs)
    return value


@given(_VALUES, st.data())
def test_a_config_and_any_restyling_of_it_share_a_key(value: Any, data: st.DataObject) -> None:
    """Reordered dicts, tuples as lists and int keys as text are one config."""
    other = _restyled(value, data.draw)
    assert keys.canonical(other) == keys.canonical(value)
    assert keys.config_key(None, {"x": other}) == keys.config_key(None, {"x": value})


_NUMPY_ARRAYS = hnp.arrays(
    st.sampled_from([np.int8, np.int64, np.uint16, np.float32, np.float64, np.bool_]),
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=3),
)


@given(_NUMPY_ARRAYS)
def test_numpy_values_share_the_key_of_their_python_values(array: Any) -> None:
    """An array is its nested lists, a numpy scalar its Python number (dtype aside)."""
    assert keys.canonical(array) == keys.canonical(array.tolist())
    if array.ndim == 0:
        assert keys.canonical(array[()]) == keys.canonical(array.item())
    assert keys.same_config({"a": [array]}, {"a": (array.tolist(),)})


def look_alikes(leaf: Any) -> list[Any]:
    """Values that print, compare or hash like ``leaf`` but are other configs."""
    found: list[Any] = [1, 1.0, True, "1", b"1", None, 0, 0.0, -0.0, False, [], {}, ()]
    if isinstance(leaf, str):
        found += [leaf.encode(), [leaf], {leaf: None}, leaf + ";"]
    elif isinstance(leaf, (int, float)) and not isinstance(leaf, bool) and math.isfinite(leaf):
        found += [float(leaf), int(leaf), str(leaf), repr(leaf).encode(), bool(leaf), -leaf]
    return found


@given(_PICKLED, st.data())
def test_changing_one_leaf_to_a_look_alike_changes_the_key(value: Any, data: st.DataObject) -> None:
    """A leaf replaced by 1, 1.0, True, "1", b"1" or another look-alike is another config
    (unless the documented rules say it is the same)."""
    leaf = _first_leaf(value)
    replacement = data.draw(st.sampled_from(look_alikes(leaf)))
    changed = _replace_first_leaf(value, replacement)
    assume(changed is not _UNCHANGED)
    assert (keys.canonical(changed) == keys.canonical(value)) == (oracle(changed) == oracle(value))


def _first_leaf(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return next((_first_leaf(item) for item in value), None)
    if isinstance(value, dict):
        return next((_first_leaf(item) for item in value.values()), None)
    return value


_UNCHANGED = object()


def _replace_first_leaf(value: Any, new: Any) -> Any:
    if isinstance(value, (list, tuple)):
        for at, item in enumerate(value):
            replaced = _replace_first_leaf(item, new)
            if replaced is not _UNCHANGED:
                return type(value)([*value[:at], replaced, *value[at + 1 :]])
        return _UNCHANGED
    if isinstance(value, dict):
        for key, item in value.items():
            replaced = _replace_first_leaf(item, new)
            if replaced is not _UNCHANGED:
                return {**value, key: replaced}
        return _UNCHANGED
    return new


_COUNTER = itertools.count()


@given(_VALUES.map(lambda value: {"x": value}))
@settings(max_examples=examples(25))
def test_every_backend_gives_back_a_config_with_the_same_key(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """What pickle, JSON and YAML store and read back keys as the config passed."""
    assume(_json_storable(config))
    expected = keys.config_key({"code": "c"}, config)
    for name in ("pickle", "json", "yaml"):
        backend = instantiate_backend(name, tmp_path / name)
        id = f"2026-01-01_00-00-00_{next(_COUNTER):06d}"
        backend.record(Observation(id, config, None, {}))
        loaded = backend.load(id).config
        assert keys.config_key({"code": "c"}, loaded) == expected, name
        assert keys.same_config(loaded, config), name


def _json_storable(value: Any) -> bool:
    """Whether JSON keeps ``value`` whole: dicts whose keys collide once written as
    text (``{1: "a", "1": "b"}``) lose an item, so they are other configs once stored."""
    if isinstance(value, (list, tuple)):
        return all(_json_storable(item) for item in value)
    if isinstance(value, dict):
        return len({_json_key(key) for key in value}) == len(value) and all(
            _json_storable(item) for item in value.values()
        )
    return True


_CHILD = """
import pickle, sys
from digital_experiments._model import keys as keys
for config in pickle.load(sys.stdin.buffer):
    print(keys.config_key({"code": "c"}, {"x": config}))
"""


@given(st.lists(_PICKLED, min_size=5, max_size=15))
@settings(max_examples=examples(3))
def test_keys_are_the_same_in_a_fresh_process(configs: list[Any]) -> None:
    """Another process (another string hash seed, so other set orders) computes the same keys."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=pickle.dumps(configs),
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "1"},
    )
    theirs = child.stdout.decode().split()
    assert theirs == [keys.config_key({"code": "c"}, {"x": config}) for config in configs]


@given(_VALUES, st.integers(0, 3))
def test_a_config_holding_itself_gets_a_key_that_only_it_matches(value: Any, depth: int) -> None:
    """Cycles never recurse forever: a self-containing config is keyed by identity."""
    loop: list[Any] = [value]
    inner = loop
    for _ in range(depth):
        inner.append({"down": [inner[0]]})
        inner = inner[-1]["down"]
    inner.append(loop)
    twin: list[Any] = [value]
    twin.append(twin)
    assert keys.canonical(loop) == keys.canonical(loop)
    assert keys.same_config({"x": loop}, {"x": loop})
    assert not keys.same_config(loop, twin) or loop is twin
    assert not keys.same_config(loop, [value, [value]])


# ---------------------------------------------------------------- the where= language

_CARET = re.compile(r"^  ( *)(\^+)$", re.MULTILINE)


def _check_error(text: str, error: where.WhereError) -> None:
    """A WhereError repeats the query and points at a column inside it."""
    message = str(error)
    found = _CARET.search(message)
    assert found is not None, message
    column = len(found.group(1))
    assert 0 <= column <= len(text), message
    stated = re.search(r"at column (\d+)", message)
    if stated is not None:
        assert int(stated.group(1)) == column + 1, message


_QUERY_CHARS = st.sampled_from(
    [*"()[],.=!<>-+'\"\\ \n\t_0159eE", "and ", "or ", "not ", "in ", "true", "null", "config.x"]
)


@given(st.one_of(st.text(max_size=40), st.lists(_QUERY_CHARS, max_size=25).map("".join)))
@settings(max_examples=examples(300))
def test_any_text_parses_or_raises_a_where_error_with_a_position(text: str) -> None:
    """Nothing but WhereError escapes the parser, and its caret is inside the query."""
    try:
        parsed = where.compile_where(text)
    except where.WhereError as error:
        _check_error(text, error)
        return
    assert parsed.text == text
    parsed({})  # evaluating never raises either
    parsed({"config.x": [1], "x": None})
    again = where.compile_where(show(parsed.tree))  # and it prints back as itself
    assert shape(again.tree) == shape(parsed.tree)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000,
        "not " * 5000 + "a",
        "(" * 5000 + "a" + ")" * 5000,
        "a and " * 5000 + "a",
        "a in [" + "1, " * 5000,
        '"' + "\\" * 5001,
        "1" * 5000 + "x",
        "a." * 5000,
    ],
    ids=["parens", "nots", "balanced", "long-and", "long-list", "backslashes", "digits", "dots"],
)
def test_huge_queries_end_with_a_result_or_a_where_error(text: str) -> None:
    """Deep nesting hits the depth limit (no RecursionError), long input stays linear."""
    try:
        parsed = where.compile_where(text)
    except where.WhereError as error:
        _check_error(text, error)
    else:
        parsed({"a": 1})


def show(node: Any) -> str:
    """Print a parsed query back as text (a printer over ``_where``'s tree, kept
    here: the module has none, and nothing else needs one)."""
    if isinstance(node, where._Compare):
        if node.op == "truthy":
            return node.field
        if node.op in ("in", "not in"):
            return f"{node.field} {node.op} [{', '.join(map(show_value, node.value))}]"
        return f"{node.field} {node.op} {show_value(node.value)}"
    parts = [_show_part(node.op, part) for part in node.parts]
    return f"not {parts[0]}" if node.op == "not" else f" {node.op} ".join(parts)


def _show_part(op: str, part: Any) -> str:
    # parentheses exactly where precedence needs them: the parser builds no
    # node for a parenthesis, so a printed tree parses back to itself
    text = show(part)
    if isinstance(part, where._Logic) and part.op != "not" and (op != "or" or part.op == "or"):
        return f"({text})"
    return text


def show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def shape(node: Any) -> Any:
    """A tree without token positions, floats by repr (so -0.0 is not 0.0)."""
    if isinstance(node, where._Compare):
        value = node.value
        if isinstance(value, tuple):
            value = tuple(_typed(item) for item in value)
        return (node.field, node.op, _typed(value))
    return (node.op, tuple(shape(part) for part in node.parts))


def _typed(value: Any) -> Any:
    return (type(value).__name__, repr(value) if isinstance(value, float) else value)


_FIELD_NAMES = st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_-]{0,3}(\.[A-Za-z0-9_-]{1,3}){0,2}", fullmatch=True
)
_FIELDS = _FIELD_NAMES.filter(lambda name: name not in where._KEYWORDS)
_LITERALS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.text(alphabet="\\\"'\n\t a", max_size=6),  # what escapes are for
)


def _comparison() -> st.SearchStrategy[Any]:
    ordered = st.builds(
        where._Compare,
        _FIELDS,
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        _LITERALS,
        st.just(0),
    )
    listed = st.builds(
        where._Compare,
        _FIELDS,
        st.sampled_from(["in", "not in"]),
        st.lists(_LITERALS, max_size=3).map(tuple),
        st.just(0),
    )
    bare = st.builds(where._Compare, _FIELDS, st.just("truthy"), st.none(), st.just(0))
    return st.one_of(ordered, listed, bare)


def _logic(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(where._Logic, st.just("not"), st.tuples(children)),
        st.builds(
            where._Logic,
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=2, max_size=3).map(tuple),
        ),
    )


_TREES = st.recursive(_comparison(), _logic, max_leaves=6)


@given(_TREES)
@settings(max_examples=examples(200))
def test_a_printed_query_parses_back_to_the_same_query(tree: Any) -> None:
    """Every tree the grammar allows, printed, parses back to that tree."""
    text = show(tree)
    parsed = where.compile_where(text)
    assert shape(parsed.tree) == shape(tree), text
    assert parsed.fields == frozenset(node.field for node in where._comparisons(tree))
    assert show(parsed.tree) == text


def spelled(node: Any, draw: Any) -> str:
    """``node`` as a person may type it: any spacing, extra parentheses, single
    quotes, ``+1``, ``1.``, ``.5``, ``1E3`` and escapes (the same query as :func:`show`)."""
    if isinstance(node, where._Compare):
        if node.op == "truthy":
            text = node.field
        elif node.op in ("in", "not in"):
            items = [_spelled_value(value, draw) for value in node.value]
            comma = draw(st.sampled_from([",", " ,", ", "]))
            op = "not" + draw(_SPACE) + "in" if node.op == "not in" else "in"
            listed = draw(st.sampled_from(["[", "[ "])) + comma.join(items) + "]"
            text = f"{node.field}{draw(_SPACE)}{op}{draw(_SPACE)}{listed}"
        else:
            value = _spelled_value(node.value, draw)
            text = f"{node.field}{draw(_GAP)}{node.op}{draw(_GAP)}{value}"
    else:
        parts = [_spelled_part(node.op, part, draw) for part in node.parts]
        glue = draw(_SPACE) + node.op + draw(_SPACE)
        text = f"not{draw(_SPACE)}{parts[0]}" if node.op == "not" else glue.join(parts)
    if draw(st.integers(0, 5)) == 0:
        text = f"({draw(_GAP)}{text}{draw(_GAP)})"
    return text


_GAP = st.sampled_from(["", " ", "  ", "\n", "\t"])
_SPACE = _GAP.filter(bool)


def _spelled_part(op: str, part: Any, draw: Any) -> str:
    text = spelled(part, draw)
    if isinstance(part, where._Logic) and part.op != "not" and (op != "or" or part.op == "or"):
        return f"({text})"
    return text


def _spelled_value(value: Any, draw: Any) -> str:
    if isinstance(value, str):
        quote = draw(st.sampled_from(['"', "'"]))
        escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        return quote + escaped + quote
    if isinstance(value, bool) or value is None:
        return show_value(value)
    if isinstance(value, int):
        return draw(st.sampled_from([str(value), f"+{value}" if value >= 0 else str(value)]))
    text = show_value(value)
    if text.endswith(".0") and "e" not in text:
        text = draw(st.sampled_from([text, text[:-1]]))  # "1." is a float too
    if text.startswith("0.") and len(text) > 2 and draw(st.booleans()):
        text = text[1:]  # ".5"
    return text.replace("e", draw(st.sampled_from(["e", "E"])))


@given(_TREES, st.data())
@settings(max_examples=examples(200))
def test_every_spelling_of_a_query_parses_to_the_same_query(tree: Any, data: st.DataObject) -> None:
    """Spacing, parentheses, quotes and number forms change the text, not the query;
    printed and parsed again it is still that query."""
    text = spelled(tree, data.draw)
    parsed = where.compile_where(text)
    assert shape(parsed.tree) == shape(tree), text
    again = where.compile_where(show(parsed.tree))
    assert shape(again.tree) == shape(parsed.tree)


# --- evaluation against a plain-Python oracle over random rows

_ORDERS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ROW_FIELDS = ["config.a", "config.b", "result", "tags.t", "config.c.d"]
_QUERY_FIELDS = [*_ROW_FIELDS, "config.c", "config"]
_ROW_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, -1.5, math.nan, math.inf]),
    st.sampled_from(["", "a", "b", "1"]),
    st.lists(st.integers(0, 1), max_size=2),
)
_ROWS = st.dictionaries(st.sampled_from(_ROW_FIELDS), _ROW_VALUES)
_QUERY_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, -1.5, math.inf]),
    st.sampled_from(["", "a", "b", "1"]),
)


def _oracle_comparison() -> st.SearchStrategy[Any]:
    fields = st.sampled_from(_QUERY_FIELDS)
    return st.one_of(
        st.builds(
            where._Compare,
            fields,
            st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
            _QUERY_VALUES,
            st.just(0),
        ),
        st.builds(
            where._Compare,
            fields,
            st.sampled_from(["in", "not in"]),
            st.lists(_QUERY_VALUES, max_size=3).map(tuple),
            st.just(0),
        ),
        st.builds(where._Compare, fields, st.just("truthy"), st.none(), st.just(0)),
    )


_ORACLE_TREES = st.recursive(_oracle_comparison(), _logic, max_leaves=5)


def expected(node: Any, row: dict[str, Any]) -> bool:
    """``where``'s docstring, in plain Python."""
    if isinstance(node, where._Logic):
        results = [expected(part, row) for part in node.parts]
        if node.op == "not":
            return not results[0]
        return all(results) if node.op == "and" else any(results)
    has_below = any(name.startswith(node.field + ".") for name in row)
    if node.field not in row:
        # a prefix stands for everything under it: there when something is, and
        # comparable with nothing; a missing field fails every comparison
        return has_below and node.op == "truthy"
    value = row[node.field]
    if node.op == "truthy":
        return bool(value)
    if node.op in ("in", "not in"):
        found = any(_same(value, item) for item in node.value)
        return found if node.op == "in" else not found
    if node.op in ("==", "!="):
        return _same(value, node.value) == (node.op == "==")
    if isinstance(value, bool) != isinstance(node.value, bool):
        return False  # true > 0 means nothing
    try:
        return bool(_ORDERS[node.op](value, node.value))
    except TypeError:  # text with a number, null with anything: false
        return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)  # ints and floats as numbers; nan is nothing


@given(_ORACLE_TREES, st.lists(_ROWS, min_size=1, max_size=5))
@settings(max_examples=examples(300))
def test_evaluating_a_query_agrees_with_a_plain_python_oracle(tree: Any, rows: list[Any]) -> None:
    """Missing fields, None, bools, nan and text: the parsed query decides like the docs say."""
    parsed = where.compile_where(show(tree))
    for row in rows:
        assert parsed(row) == expected(tree, row), (show(tree), row)
