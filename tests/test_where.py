"""The where= query language: parsing, evaluation, errors and safety."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._model.where import Where, WhereError, compile_where, suggestion
from digital_experiments.errors import DigitalExperimentsError

ROW = {
    "id": "2026-01-31_12-00-00_000000",
    "status": "completed",
    "config.lr": 0.01,
    "config.epochs": 10,
    "config.name": "resnet",
    "result.loss": 0.2,
    "tags.best": True,
    "tags.bad": False,
    "notes": "",
    "metadata.timing.duration": 1.5,
}


def matches(text: str, row: dict[str, Any] = ROW) -> bool:
    return compile_where(text)(row)


def error_of(text: str) -> list[str]:
    with pytest.raises(WhereError) as info:
        compile_where(text)
    return str(info.value).splitlines()


# ---------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("config.epochs == 10", True),
        ("config.epochs == 11", False),
        ("config.epochs != 11", True),
        ("config.epochs != 10", False),
        ("config.epochs < 11", True),
        ("config.epochs < 10", False),
        ("config.epochs <= 10", True),
        ("config.epochs <= 9", False),
        ("config.epochs > 9", True),
        ("config.epochs > 10", False),
        ("config.epochs >= 10", True),
        ("config.epochs >= 11", False),
        ('status == "completed"', True),
        ('status < "d"', True),  # text orders as text
        ('status >= "d"', False),
        ("config.epochs in [1, 10]", True),
        ("config.epochs in [1, 2]", False),
        ("config.epochs not in [1, 2]", True),
        ("config.epochs not in [1, 10]", False),
    ],
)
def test_every_operator(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_ints_and_floats_compare_as_numbers() -> None:
    assert matches("config.epochs == 10.0")
    assert matches("config.lr == 0.01 and config.lr < 1")
    assert matches("config.epochs in [10.0]")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("-1", -1),
        ("+2", 2),
        ("0.01", 0.01),
        ("1e-3", 0.001),
        ("2E3", 2000.0),
        ("-1.5e+2", -150.0),
        ("3.", 3.0),
        (".5", 0.5),
        ("007", 7),
    ],
)
def test_number_literals(literal: str, value: float) -> None:
    assert matches(f"x == {literal}", {"x": value})
    assert not matches(f"x == {literal}", {"x": value + 1})


def test_a_sign_binds_to_the_number_not_the_field() -> None:
    assert matches("x<-1", {"x": -2})
    assert matches("x>=-1e-3", {"x": 0})


# ---------------------------------------------------------------- logic


def test_not_binds_tighter_than_and_tighter_than_or() -> None:
    # a or b and c == a or (b and c)
    assert matches("a or b and c", {"a": 1, "b": 0, "c": 0})
    assert not matches("a or b and c", {"a": 0, "b": 1, "c": 0})
    assert matches("a or b and c", {"a": 0, "b": 1, "c": 1})
    # not a and b == (not a) and b
    assert matches("not a and b", {"a": 0, "b": 1})
    assert not matches("not a and b", {"a": 0, "b": 0})
    assert matches("not a or b", {"a": 1, "b": 1})
    assert matches("not not a", {"a": 1})


def test_parentheses_group() -> None:
    assert not matches("(a or b) and c", {"a": 1, "b": 0, "c": 0})
    assert matches("(a or b) and c", {"a": 0, "b": 1, "c": 1})
    assert matches("not (a and b)", {"a": 1, "b": 0})
    assert matches("((((a))))", {"a": 1})
    assert matches("(x == 1) and (y == 'a' or (z in [1]))", {"x": 1, "y": "b", "z": 1})


# ---------------------------------------------------------------- values


def test_lists_allow_a_trailing_comma_mixed_types_and_no_items() -> None:
    assert matches("x in [1, 'a', null, true,]", {"x": "a"})
    assert matches("x in [1, 'a', null, true,]", {"x": None})
    assert not matches("x in []", {"x": 1})
    assert matches("x not in []", {"x": 1})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('s == "double"', "double"),
        ("s == 'single'", "single"),
        (r's == "say \"hi\""', 'say "hi"'),
        (r"s == 'it\'s'", "it's"),
        ('s == "it\'s"', "it's"),
        ("s == 'say \"hi\"'", 'say "hi"'),
        (r's == "back\\slash"', "back\\slash"),
        (r's == "a\nb\tc"', "a\nb\tc"),
        (r's == "C:\data"', "C:\\data"),  # an unknown escape keeps its backslash
        ("s == 'a and (b) or not [c]'", "a and (b) or not [c]"),
        ("s == ''", ""),
    ],
)
def test_strings_in_both_quotes_with_escapes(text: str, value: str) -> None:
    assert matches(text, {"s": value})
    assert not matches(text, {"s": value + "x"})


def test_true_false_and_null() -> None:
    row = {"t": True, "f": False, "n": None}
    assert matches("t == true and f == false and n == null", row)
    assert not matches("t == false or f == true or t == null", row)
    assert matches("t != null and n != false", row)


# ---------------------------------------------------------------- semantics


def test_a_missing_field_fails_every_comparison_but_not_negates_the_whole() -> None:
    for text in ("x == 1", "x != 1", "x < 1", "x >= 1", "x in [1]", "x not in [1]", "x"):
        assert not matches(text, {"y": 1}), text
        assert matches(f"not ({text})", {"y": 1}), text
    assert matches("not x == 1", {})


def test_incomparable_values_compare_false_never_raise() -> None:
    row = {"s": "a", "n": None, "i": 1, "l": [1, 2], "d": {"k": 1}}
    for text in ("s < 1", "s >= 1", "n < 1", "n > 1", "i < 'a'", "l > 1", "d < 1", "i < null"):
        assert not matches(text, row), text
    assert not matches("s == 1 or i == '1' or n == 0", row)
    assert matches("s != 1 and i != '1'", row)  # unequal, and present


class _Broken:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


def test_a_value_whose_comparison_raises_does_not_match() -> None:
    assert not matches("x == 1", {"x": _Broken()})
    assert not matches("x < 1", {"x": _Broken()})


def test_bools_equal_only_bools() -> None:
    assert not matches("tags.best == 1")
    assert not matches("tags.bad == 0")
    assert not matches("x == true", {"x": 1})
    assert not matches("x in [true]", {"x": 1})
    assert not matches("tags.best in [1]")
    assert not matches("tags.best > 0")
    assert matches("tags.best != 1")
    assert matches("tags.best == true and tags.bad == false")


def test_numpy_bools_are_bools() -> None:
    np = pytest.importorskip("numpy")
    assert matches("x == true", {"x": np.bool_(True)})
    assert not matches("x == 1", {"x": np.bool_(True)})
    assert matches("x == 3", {"x": np.int64(3)})
    assert matches("x", {"x": np.array([0, 0])})  # ambiguous truth: present, so true


def test_numpy_1_bools_are_bools_too() -> None:
    """numpy 1 names its bool type ``numpy.bool_`` (numpy 2: ``numpy.bool``)."""
    legacy = type("bool_", (), {"__module__": "numpy", "__bool__": lambda self: True})()
    assert matches("x == true", {"x": legacy})
    assert not matches("x == 1", {"x": legacy})


def test_bools_order_among_bools_only() -> None:
    assert matches("x > false", {"x": True})
    assert matches("x <= true", {"x": False})
    assert not matches("x > false", {"x": 1})
    assert not matches("x < true", {"x": 0})


def test_a_bare_field_is_true_when_present_and_truthy() -> None:
    for truthy in (1, 0.5, "x", [0], True):
        assert matches("x", {"x": truthy}), truthy
    falsy: object
    for falsy in (0, 0.0, "", None, False, [], {}):
        assert not matches("x", {"x": falsy}), falsy
    assert not matches("x", {})
    assert matches("tags.best and not tags.bad and not notes")


def test_a_prefix_is_present_but_compares_to_nothing() -> None:
    assert matches("config")
    assert matches("metadata.timing")
    assert not matches("config == 1")
    assert not matches("config != 1")
    assert not matches("config not in [1]")
    assert not matches("confi")  # a prefix ends at a dot
    assert matches("result == 3", {"result": 3})  # a scalar result is its own field
    assert not matches("result.loss.x")


def test_dotted_names_are_looked_up_never_attributes() -> None:
    assert not matches("config.lr.__class__")
    assert not matches("status.upper")
    assert matches("tags.my-tag == 2", {"tags.my-tag": 2})


def test_fields_lists_every_field_named() -> None:
    where = compile_where("a == 1 or (b.c and not d in [1]) and a > 0")
    assert where.fields == frozenset({"a", "b.c", "d"})
    assert where.text == "a == 1 or (b.c and not d in [1]) and a > 0"


def test_a_compiled_query_pickles() -> None:
    where = compile_where("config.lr < 0.1 and status in ['completed', \"failed\"] or not x")
    again = pickle.loads(pickle.dumps(where))
    assert isinstance(again, Where)
    assert again == where
    assert again(ROW)
    assert not again({"config.lr": 1, "x": 1})
    assert again.fields == where.fields


# ---------------------------------------------------------------- errors


SYNTAX_ERRORS = [
    (
        "config.lr <",
        "           ^",
        "Expected a value after '<' at column 12",
    ),
    (
        "(config.lr < 1",
        "              ^",
        "Expected ')' at column 15",
    ),
    (
        "config.lr = 1",
        "          ^",
        "Unexpected '=' (comparisons use ==) at column 11",
    ),
    (
        "config.lr < 1 1",
        "              ^",
        "Unexpected '1' at column 15",
    ),
    (
        "status == 'done",
        "          ^",
        "Unclosed string at column 11",
    ),
    (
        "a < 1 and",
        "         ^",
        "Expected a field such as config.lr, not 'end of the query', at column 10",
    ),
    (
        "a in 1",
        "     ^",
        "Expected a list such as [1, 2] after 'in' at column 6",
    ),
    (
        "a in [1 2]",
        "        ^",
        "Expected ',' or ']' at column 9",
    ),
    (
        "a in [1,,]",
        "        ^",
        "Expected a value after ',' at column 9",
    ),
    (
        "a && b",
        "  ^",
        "Unexpected '&' (use and) at column 3",
    ),
    (
        "a) or b",
        " ^",
        "Unexpected ')' at column 2",
    ),
    (
        "a == 'x' or or",
        "            ^^",
        "Expected a field such as config.lr, not 'or', at column 13",
    ),
    (
        "x == [1]",
        "     ^",
        "Expected a value after '==' at column 6",
    ),
]


@pytest.mark.parametrize(("text", "caret", "message"), SYNTAX_ERRORS)
def test_syntax_errors_point_at_the_spot(text: str, caret: str, message: str) -> None:
    lines = error_of(text)
    assert lines[0] == f"{message} in where=:"
    assert lines[1] == f"  {text}"
    assert lines[2] == f"  {caret}"  # written right under the text above


def test_a_syntax_error_is_a_value_error_of_the_library() -> None:
    with pytest.raises(WhereError) as info:
        compile_where("x ==")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DigitalExperimentsError)


def test_the_caret_stays_aligned_across_tabs_and_newlines() -> None:
    lines = error_of("a == 1 and\n\tb ==")
    assert lines[1:] == ["  a == 1 and  b ==", "                  ^"]


def test_an_unquoted_string_gets_a_hint() -> None:
    lines = error_of("status == completed")
    assert lines == [
        "Expected a value after '==' at column 11 in where=:",
        "  status == completed",
        "            ^^^^^^^^^",
        'Strings are quoted: "completed", as in status == "completed"',
    ]
    assert error_of("status in [done, 'failed']")[3] == 'Strings are quoted: "done"'
    # an id lexes as numbers: the hint quotes the whole word
    lines = error_of("(id == 2026-01-31_12-00-00_000000)")
    assert lines[0] == "Expected ')' at column 12 in where=:"
    assert lines[3] == 'Strings are quoted: "2026-01-31_12-00-00_000000"'
    assert error_of("x == True")[3] == "Write true, not True."
    assert error_of("x == None")[3] == "Write null, not None."
    assert error_of("a == 1 b == 2")[3] == "Join conditions with and / or."
    assert error_of("(a == 1")[3] == "The '(' at column 1 is not closed."


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("a) or b", "This ')' closes no '('."),
        ("a == 1 ]", None),  # not a ')': no hint
        ("len(config.lr) > 1", "A query has fields, values and operators: no calls."),
        ("x == 3rd", 'Strings are quoted: "3rd"'),  # a number and a name, joined
        ("a == 1 2", "Join conditions with and / or."),
        ("a == 1 'b'", "Join conditions with and / or."),
        ("a b in [1]", "Join conditions with and / or."),  # no "not" before "in"
        ("x == or", None),  # a keyword is no value
        (
            "config.lr == config.lrr",
            'Strings are quoted: "config.lrr", as in config.lr == "config.lrr" '
            "(a field cannot be compared with a field)",
        ),
        ("x == y", 'Strings are quoted: "y", as in x == "y"'),
    ],
)
def test_errors_end_with_the_hint_that_fits(text: str, hint: str | None) -> None:
    lines = error_of(text)
    assert lines[3:] == ([] if hint is None else [hint])


def test_an_unexpected_character_without_a_hint_is_named_alone() -> None:
    assert error_of("a @ b")[0] == "Unexpected '@' at column 3 in where=:"


def test_nesting_stops_at_100_levels() -> None:
    """``_MAX_DEPTH``: 100 nested ``(`` or ``not`` parse, the 101st is an error."""
    assert matches("(" * 100 + "x" + ")" * 100, {"x": 1})
    assert error_of("(" * 101 + "x" + ")" * 101)[0].startswith("Too deeply nested at column 102")
    assert matches("not " * 100 + "x", {"x": 1})
    assert error_of("not " * 101 + "x")[0].startswith("Too deeply nested at column 405")
    mixed = "not (" * 50 + "x" + ")" * 50
    assert matches(mixed, {"x": 1})
    assert error_of("(" + mixed + ")")[0].startswith("Too deeply nested")


def test_deep_nesting_is_a_where_error_not_a_recursion_error() -> None:
    assert matches("(" * 50 + "x" + ")" * 50, {"x": 1})
    assert error_of("(" * 5000 + "x" + ")" * 5000)[0].startswith("Too deeply nested")
    assert error_of("not " * 5000 + "x")[0].startswith("Too deeply nested")


def test_a_query_is_a_string() -> None:
    with pytest.raises(TypeError, match="A where= query is a string"):
        compile_where(1)  # type: ignore[arg-type]
    assert error_of("")[0].startswith("Expected a field such as config.lr")


KNOWN = ["config.epochs", "config.lr", "id", "result.loss", "status"]


def test_an_unknown_field_shows_a_caret_and_the_known_fields() -> None:
    with pytest.raises(WhereError) as info:
        compile_where("config.lr > 0 and config.lrr < 0.1").check_fields(set(KNOWN))
    assert str(info.value).splitlines() == [
        "Unknown field 'config.lrr' in where=:",
        "  config.lr > 0 and config.lrr < 0.1",
        "                    ^^^^^^^^^^",
        "Known fields: config.epochs, config.lr, id, result.loss, status",
        "Did you mean 'config.lr'?",
    ]
    assert isinstance(info.value, ValueError)


def test_check_fields_names_the_first_unknown_field() -> None:
    with pytest.raises(WhereError, match="Unknown field 'b'") as info:
        compile_where("id and (b or c)").check_fields(KNOWN)
    assert str(info.value).splitlines()[2] == "          ^"
    with pytest.raises(WhereError, match="Known fields: \\(none\\)"):
        compile_where("x").check_fields([])


def test_check_fields_points_at_fields_of_in_and_not_in() -> None:
    for text in ("id and b in [1]", "id and b not in [1]"):
        with pytest.raises(WhereError) as info:
            compile_where(text).check_fields(KNOWN)
        assert str(info.value).splitlines()[:3] == [
            "Unknown field 'b' in where=:",
            f"  {text}",
            "         ^",
        ]


def test_check_fields_goes_on_past_a_known_prefix() -> None:
    with pytest.raises(WhereError, match="Unknown field 'nope'"):
        compile_where("config and nope").check_fields(KNOWN)


def test_check_fields_accepts_exact_fields_and_prefixes_only() -> None:
    compile_where("config.lr and config and result.loss and status and id").check_fields(KNOWN)
    compile_where("result").check_fields(KNOWN)  # a prefix of result.loss
    for text in ("result.loss.x", "conf", "config.l", "statuses"):
        with pytest.raises(WhereError, match=f"Unknown field '{text}'"):
            compile_where(text).check_fields(KNOWN)


def test_check_fields_shows_at_most_30_known_fields() -> None:
    known = [f"config.k{i:02}" for i in range(45)]
    with pytest.raises(WhereError) as info:
        compile_where("x").check_fields(known)
    listed = str(info.value).split("Known fields: ")[1].splitlines()[0]
    assert listed.startswith("config.k00, config.k01, ")
    assert listed.endswith("config.k29, ... (15 more)")
    assert "config.k30" not in listed
    with pytest.raises(WhereError) as info:
        compile_where("x").check_fields(known[:30])
    assert str(info.value).splitlines()[3].endswith("config.k28, config.k29")


def test_fields_below_an_open_namespace_are_taken_on_trust() -> None:
    """A field below ``anything_under`` passes the check, and a row without it matches nothing."""
    where = compile_where("tags.best == true or metrics.loss < 1")
    where.check_fields(KNOWN, anything_under=["tags", "metrics"])
    assert not where(ROW | {"tags.best": False})
    assert not where({"config.lr": 0.1})
    with pytest.raises(WhereError, match=r"Unknown field 'tags\.best'"):
        where.check_fields(KNOWN)


@pytest.mark.parametrize(
    ("name", "known", "suggested"),
    [
        ("lr", KNOWN, "config.lr"),  # a bare name: the config field of that name first
        ("loss", KNOWN, "result.loss"),
        ("lr", ["config.lr", "metrics.lr", "result.lr"], "config.lr"),
        ("lr", ["id", "status"], "config.lr"),  # no config to look in: config.<name> anyway
        ("config.lrr", KNOWN, "config.lr"),  # a typo: by spelling
        ("result.los", ["result.loss", "id"], "result.loss"),  # no config: a typo still
        ("loss", ["result.loss", "id"], "result.loss"),  # no config: the field below
        ("lr", ["metrics.lr", "metadata.timing.lr"], "metrics.lr"),  # then the shallowest
        ("lr", ["config.a.lr", "metrics.lr"], "config.a.lr"),  # config before shallow
        ("epoch", ["result.epochs", "config.epochs"], "config.epochs"),  # spelling: config
        ("epoch", ["a.epochs", "config.epochs"], "config.epochs"),  # ...whatever the order
        ("epoch", ["config.model.epochs", "config.x"], "config.model.epochs"),  # last part
    ],
)
def test_an_unknown_name_suggests_the_field_it_most_likely_means(
    name: str, known: list[str], suggested: str
) -> None:
    """The suggestion names the field a bare name lives under, else the closest spelling."""
    assert f"Did you mean {suggested!r}?" in suggestion(name, known)
    with pytest.raises(WhereError, match=f"Did you mean {suggested!r}"):
        compile_where(f"{name} < 1").check_fields(known)


def test_a_bare_name_with_config_fields_elsewhere_suggests_nothing_made_up() -> None:
    """With config fields known and none named so, a bare name is matched by spelling only."""
    assert suggestion("zzz", KNOWN) == ""
    assert "config.epochs" in suggestion("epoch", KNOWN)


# ---------------------------------------------------------------- safety


INJECTIONS = [
    "__import__('os')",
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w')",
    "eval(\"open('{marker}', 'w')\")",
    "x == __import__('os').system('touch {marker}')",
    "x == 1; open('{marker}', 'w')",
    'x == 1 or exec(\'open("{marker}", "w")\')',
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: open('{marker}', 'w')",
    "[c for c in ().__class__.__mro__]",
    "x == `id`",
    "config.lr + 1",
    "x == {{'a': 1}}",
    "x == 1 if True else 0",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_injection_attempts_are_syntax_errors_and_run_nothing(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    text = template.format(marker=marker.as_posix())

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the query language must never evaluate Python")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    with pytest.raises(WhereError):
        compile_where(text)
    assert not marker.exists()
