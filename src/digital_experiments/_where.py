"""The query language of ``where=`` (Python) and ``--where`` (command line).

::

    config.lr < 0.01 and result.loss <= 0.2 and status == "completed"
    tags.best == true or not (config.depth in [2, 4])

* **Fields** are dotted names: ``id``, ``status``, ``config.<name>``, ``result``
  (or ``result.<key>`` when the result is a dict), ``tags.<name>``, ``notes``,
  ``metrics.<name>`` (the last value logged) and ``metadata.<key>...``.
* **Comparisons**: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in [..]``,
  ``not in [..]``; a bare field is true when the run has it and it is truthy.
* **Values**: numbers (``-1``, ``0.01``, ``1e-3``), strings in single or double
  quotes (with ``\\`` escapes), ``true``, ``false``, ``null`` and lists ``[..]``.
* **Logic**: ``not``, then ``and``, then ``or``; parentheses group.

A run without the field fails every comparison on it; values that cannot be
compared (text with a number, ``true`` with ``1``) compare false, never raise.
Queries are parsed here, never evaluated by Python: nothing in one can run code.
An unknown field or a syntax error is a ``WhereError`` (a ``ValueError``)
that shows the query with a caret under the spot.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DigitalExperimentsError

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_CONSTANTS = {"true": True, "false": False, "null": None}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


class WhereError(DigitalExperimentsError, ValueError):
    """A ``where=`` query that cannot be used: a syntax error, or an unknown field."""


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, op, name, keyword, end
    text: str
    at: int  # column of its first character


@dataclass(frozen=True)
class _Compare:
    field: str
    op: str  # ==, !=, <, <=, >, >=, in, not in, truthy
    value: Any
    at: int


@dataclass(frozen=True)
class _Logic:
    op: str  # and, or, not
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Where:
    """A compiled query: call it with a run's flat fields to test the run."""

    text: str
    tree: Any
    fields: frozenset[str]

    def __call__(self, row: Mapping[str, Any]) -> bool:
        return _evaluate(self.tree, row)

    def check_fields(self, known: Collection[str]) -> None:
        """Raise :class:`WhereError` for a field that no run has."""
        names = set(known)
        for node in _comparisons(self.tree):
            name = node.field
            if name in names or any(k.startswith(name + ".") for k in names):
                continue
            shown = ", ".join(sorted(names)[:30]) + (", ..." if len(names) > 30 else "")
            raise WhereError(
                _point(f"Unknown field {name!r} in where=:", self.text, node.at, len(name))
                + f"\nKnown fields: {shown}"
            )


def compile_where(text: str) -> Where:
    """Parse the query ``text``.

    Raises
    ------
    WhereError
        On a syntax error, with a caret under the spot.
    """
    if not isinstance(text, str):
        raise TypeError(f"A where= query is a string, not {text!r}.")
    parser = _Parser(text, _tokens(text))
    tree = parser.expression()
    end = parser.peek()
    if end.kind != "end":
        raise parser.error(f"Unexpected {end.text!r}", end)
    return Where(text, tree, frozenset(n.field for n in _comparisons(tree)))


def _tokens(text: str) -> list[_Token]:
    tokens, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.lastgroup is None:
            column = len(text) - len(text[at:].lstrip())
            if text[column] in "\"'":
                raise WhereError(_point("Unclosed string in where=:", text, column, 1))
            hint = " (comparisons use ==)" if text[column] == "=" else ""
            raise WhereError(
                _point(f"Unexpected {text[column]!r}{hint} in where=:", text, column, 1)
            )
        kind, value = match.lastgroup, match.group(match.lastgroup)
        start = match.start(kind)
        if kind == "name" and value in _KEYWORDS:
            kind = "keyword"
        tokens.append(_Token(kind, value, start))
        at = match.end()
    tokens.append(_Token("end", "end of the query", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text, self.tokens, self.position = text, tokens, 0

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def error(self, message: str, token: _Token, hint: str = "") -> WhereError:
        width = max(len(token.text), 1) if token.kind != "end" else 1
        return WhereError(
            _point(f"{message} at column {token.at + 1} in where=:", self.text, token.at, width)
            + hint
        )

    def accept(self, kind: str, text: str) -> bool:
        token = self.peek()
        if token.kind == kind and token.text == text:
            self.position += 1
            return True
        return False

    def expression(self) -> Any:
        parts = [self.conjunction()]
        while self.accept("keyword", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _Logic("or", tuple(parts))

    def conjunction(self) -> Any:
        parts = [self.negation()]
        while self.accept("keyword", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _Logic("and", tuple(parts))

    def negation(self) -> Any:
        if self.accept("keyword", "not"):
            return _Logic("not", (self.negation(),))
        if self.accept("op", "("):
            inner = self.expression()
            if not self.accept("op", ")"):
                raise self.error("Expected ')'", self.peek())
            return inner
        return self.comparison()

    def comparison(self) -> _Compare:
        field = self.take()
        if field.kind != "name":
            raise self.error(f"Expected a field such as config.lr, not {field.text!r},", field)
        token = self.peek()
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return _Compare(field.text, token.text, self.value(token), field.at)
        if self.accept("keyword", "in"):
            return _Compare(field.text, "in", self.values(), field.at)
        if token.kind == "keyword" and token.text == "not":
            following = self.tokens[self.position + 1]
            if following.kind == "keyword" and following.text == "in":
                self.position += 2
                return _Compare(field.text, "not in", self.values(), field.at)
        return _Compare(field.text, "truthy", None, field.at)

    def value(self, after: _Token) -> Any:
        token = self.take()
        if token.kind == "number":
            number = float(token.text)
            return int(token.text) if re.fullmatch(r"[-+]?\d+", token.text) else number
        if token.kind == "string":
            return re.sub(
                r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), token.text[1:-1]
            )
        if token.kind == "keyword" and token.text in _CONSTANTS:
            return _CONSTANTS[token.text]
        hint = f'\nStrings are quoted: "{token.text}"' if token.kind == "name" else ""
        raise self.error(f"Expected a value after {after.text!r}", token, hint)

    def values(self) -> tuple[Any, ...]:
        opening = self.take()
        if opening.text != "[":
            raise self.error("Expected a list such as [1, 2] after 'in'", opening)
        found: list[Any] = []
        while not self.accept("op", "]"):
            found.append(self.value(opening if not found else self.tokens[self.position - 1]))
            if not self.accept("op", ","):
                if not self.accept("op", "]"):
                    raise self.error("Expected ',' or ']'", self.peek())
                break
        return tuple(found)


def _point(message: str, text: str, at: int, width: int) -> str:
    return f"{message}\n  {text}\n  {' ' * at}{'^' * width}"


def _comparisons(tree: Any) -> list[_Compare]:
    if isinstance(tree, _Compare):
        return [tree]
    return [node for part in tree.parts for node in _comparisons(part)]


_MISSING = object()


def _lookup(row: Mapping[str, Any], field: str) -> Any:
    if field in row:
        return row[field]
    prefix = field + "."
    return {k: v for k, v in row.items() if k.startswith(prefix)} or _MISSING


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except Exception:
        return False


def _evaluate(tree: Any, row: Mapping[str, Any]) -> bool:
    if isinstance(tree, _Logic):
        if tree.op == "not":
            return not _evaluate(tree.parts[0], row)
        if tree.op == "and":
            return all(_evaluate(part, row) for part in tree.parts)
        return any(_evaluate(part, row) for part in tree.parts)
    value = _lookup(row, tree.field)
    if value is _MISSING:
        return False
    op = tree.op
    if op == "truthy":
        try:
            return bool(value)
        except Exception:
            return True
    if isinstance(value, dict):  # a prefix: nothing to compare
        return False
    if op == "==":
        return _equal(value, tree.value)
    if op == "!=":
        return not _equal(value, tree.value)
    if op == "in":
        return any(_equal(value, item) for item in tree.value)
    if op == "not in":
        return not any(_equal(value, item) for item in tree.value)
    if isinstance(value, bool) or isinstance(tree.value, bool):
        return False
    try:
        if op == "<":
            return bool(value < tree.value)
        if op == "<=":
            return bool(value <= tree.value)
        if op == ">":
            return bool(value > tree.value)
        return bool(value >= tree.value)
    except TypeError:
        return False
