"""The query language of ``where=`` (Python) and ``--where`` (command line).

::

    config.lr < 0.01 and result.loss <= 0.2 and status == "completed"
    tags.best == true or not (config.depth in [2, 4])

* **Fields** are dotted names: ``id``, ``status``, ``config.<name>``, ``result``
  (or ``result.<key>`` when the result is a dict), ``tags.<name>``, ``notes``,
  ``metrics.<name>`` (the last value logged) and ``metadata.<key>...``. Names
  hold letters, digits, ``_`` and ``-``. A prefix such as ``config`` stands for
  everything under it.
* **Comparisons**: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in [..]``,
  ``not in [..]``; a bare field is true when the run has it and it is truthy.
* **Values**: numbers (``-1``, ``0.01``, ``1e-3``), strings in single or double
  quotes (escapes ``\\"``, ``\\'``, ``\\\\``, ``\\n``, ``\\t``), ``true``,
  ``false``, ``null`` and lists ``[1, 2]``. Text is always quoted:
  ``status == "completed"``, ``id == "2026-01-31_12-00-00_000000"``.
* **Logic**: ``not`` binds tightest, then ``and``, then ``or``; parentheses
  group, so ``a or b and c`` means ``a or (b and c)``.

A run without the field fails every comparison on it (``!=`` and ``not in``
too), while ``not (...)`` negates the whole of what it wraps. Values that cannot
be compared (text with a number, ``null`` with a number, ``true`` with ``1``)
compare false, never raise; ints and floats compare as numbers.

Queries are parsed here, never evaluated by Python: nothing in one can run code.
A syntax error, or a field no run could have, is a ``WhereError`` (a
``ValueError``) that shows the query with a caret under the spot. Fields below
``tags``, ``metrics`` and ``metadata`` vary from run to run and are never
unknown: ``tags.best == true`` before any run is tagged matches nothing. Fields
below ``config`` and ``result`` are checked against those the runs have
(``config.lrr`` when runs have ``config.lr`` is a typo), unless no run has any
(only failed runs, which returned nothing). A bare name such as ``lr`` is
unknown, and the error suggests ``config.lr``.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..errors import DigitalExperimentsError

_TOKEN = re.compile(
    r"""
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<op>==|!=|<=|>=|<|>|[()\[\],])
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_CONSTANTS = {"true": True, "false": False, "null": None}
_PYTHON_CONSTANTS = {"True": "true", "False": "false", "None": "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_ORDERS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_STRAY = {"=": "comparisons use ==", "&": "use and", "|": "use or", "!": "use not or !="}
_MAX_DEPTH = 100  # nested "(" and "not": deep enough for people, shallow enough for the stack
_MAX_SHOWN = 30
_NAMESPACED = (
    " A field starts with where it comes from: config.<name>, result.<key>, tags.<name>, "
    "metrics.<name>."
)


class WhereError(DigitalExperimentsError, ValueError):
    """A ``where=`` query that cannot be used: a syntax error, or an unknown field.

    The message names the problem and repeats the query with a caret line
    under the offending spot, followed by a hint when one helps.
    """


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, op, name, keyword, end
    text: str
    at: int  # index of its first character

    @property
    def end(self) -> int:
        return self.at + len(self.text)


@dataclass(frozen=True)
class _Compare:
    field: str
    op: str  # ==, !=, <, <=, >, >=, in, not in, truthy
    value: Any  # a tuple for in / not in
    at: int


@dataclass(frozen=True)
class _Logic:
    op: str  # and, or, not
    parts: tuple[_Node, ...]


_Node: TypeAlias = "_Compare | _Logic"


@dataclass(frozen=True)
class Where:
    """A compiled ``where=`` query: call it with a run's flat fields to test the run.

    Made by :func:`compile_where`. It holds only plain data (no closures), so
    it pickles and can be sent to other processes.

    Attributes
    ----------
    text : str
        The query as written.
    fields : frozenset of str
        Every field the query names.
    """

    text: str
    fields: frozenset[str]
    tree: _Node = field(repr=False)

    def __call__(self, row: Mapping[str, Any]) -> bool:
        """Whether the run whose flat fields (``{"config.lr": 0.1, ...}``) are ``row`` matches."""
        return _evaluate(self.tree, row)

    def check_fields(self, known: Collection[str], anything_under: Collection[str] = ()) -> None:
        """Raise :class:`WhereError` for the first field that is not ``known``.

        A field is known when it is in ``known`` or is a prefix of a known
        field (``config`` when ``config.lr`` is known); a field below a known
        one (``result.loss.x`` when only ``result.loss`` is known) is not. A
        field below one of ``anything_under`` (``tags.best`` for ``tags``) is
        accepted whether or not a run has it: where it is missing, it matches
        nothing. An unknown bare name is shown the field it most likely means
        (``lr``: ``config.lr``).
        """
        present = set(known)
        names = sorted(present)
        opened = tuple(f"{prefix}." for prefix in anything_under)
        for node in _comparisons(self.tree):
            prefix = node.field + "."
            if node.field in present or node.field.startswith(opened):
                continue
            if any(k.startswith(prefix) for k in names):
                continue
            shown = ", ".join(names[:_MAX_SHOWN]) or "(none)"
            if len(names) > _MAX_SHOWN:
                shown += f", ... ({len(names) - _MAX_SHOWN} more)"
            message = _point(
                f"Unknown field {node.field!r} in where=:", self.text, node.at, len(node.field)
            )
            message += f"\nKnown fields: {shown}"
            raise WhereError(message + suggestion(node.field, names))


def suggestion(name: str, known: Collection[str]) -> str:
    """A line naming the field ``name`` most likely means (``""`` if none does).

    A bare name is looked for below the namespaces, ``config`` first (``lr``:
    ``config.lr``; ``config.lr`` too when no run is there to say); anything else
    is matched by spelling (``config.lrr``: ``config.lr``), a bare name against
    the last part of each field (``epoch``: ``config.epochs``).
    """
    names = sorted(known)
    if "." not in name:
        below = sorted(
            (k for k in names if k.endswith(f".{name}")),
            key=lambda k: (not k.startswith("config."), k.count("."), k),
        )
        if below:
            return f"\nDid you mean {below[0]!r}?{_NAMESPACED}"
        if not any(k.startswith("config.") for k in names):
            return f"\nDid you mean 'config.{name}'?{_NAMESPACED}"
        last: dict[str, str] = {}  # last part: its first field, config first
        for k in sorted(names, key=lambda k: (not k.startswith("config."), k)):
            last.setdefault(k.rsplit(".", 1)[-1], k)
        close = difflib.get_close_matches(name, [t for t in last if t != last[t]], n=1)
        if close:
            return f"\nDid you mean {last[close[0]]!r}?{_NAMESPACED}"
    close = difflib.get_close_matches(name, names, n=1)
    return f"\nDid you mean {close[0]!r}?" if close else ""


def compile_where(text: str) -> Where:
    """Parse a ``where=`` query.

    Parameters
    ----------
    text : str
        The query, such as ``'config.lr < 0.1 and status == "completed"'``.

    Returns
    -------
    Where
        The predicate; check its fields with :meth:`Where.check_fields`.

    Raises
    ------
    WhereError
        On a syntax error, with a caret under the spot.
    """
    if not isinstance(text, str):
        raise TypeError(f"A where= query is a string, not {text!r}.")
    parser = _Parser(text, _tokens(text))
    tree = parser.expression(0)
    end = parser.peek()
    if end.kind != "end":
        unmatched = "\nThis ')' closes no '('." if end.text == ")" else ""
        hint = parser.stray_hint() or unmatched
        raise parser.error(f"Unexpected {end.text!r}", end, hint)
    return Where(text, frozenset(n.field for n in _comparisons(tree)), tree)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            break
        match = _TOKEN.match(text, at)
        if match is None:
            char = text[at]
            if char in "\"'":
                problem = "Unclosed string"
            else:
                problem = f"Unexpected {char!r}" + (f" ({_STRAY[char]})" if char in _STRAY else "")
            raise WhereError(_point(f"{problem} at column {at + 1} in where=:", text, at))
        kind, word = match.lastgroup or "", match.group()
        tokens.append(_Token("keyword" if word in _KEYWORDS else kind, word, at))
        at = match.end()
    tokens.append(_Token("end", "end of the query", len(text)))
    return tokens


class _Parser:
    """Recursive descent over the tokens, one method per grammar rule."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text, self.tokens, self.position = text, tokens, 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind in ("op", "keyword") and token.text == text:
            self.take()
            return True
        return False

    def error(self, message: str, token: _Token, hint: str = "") -> WhereError:
        where = f"{message} at column {token.at + 1} in where=:"
        width = len(token.text) if token.kind != "end" else 1
        return WhereError(_point(where, self.text, token.at, width) + hint)

    def stray_hint(self) -> str:
        """A hint for the next token, found where a complete condition ended."""
        before, token = self.tokens[self.position - 1], self.peek()
        if token.text == "(":
            return "\nA query has fields, values and operators: no calls."
        if before.kind == "number" and token.kind in ("number", "name") and token.at == before.end:
            # "id == 2026-01-31_..." lexes as several numbers: it was meant as text
            word = re.findall(r"[^\s()\[\],]+", self.text[before.at :])[0]
            return f'\nStrings are quoted: "{word}"'
        if token.kind in ("name", "number", "string"):
            return "\nJoin conditions with and / or."
        return ""

    def expression(self, depth: int) -> _Node:
        parts = [self.conjunction(depth)]
        while self.accept("or"):
            parts.append(self.conjunction(depth))
        return parts[0] if len(parts) == 1 else _Logic("or", tuple(parts))

    def conjunction(self, depth: int) -> _Node:
        parts = [self.negation(depth)]
        while self.accept("and"):
            parts.append(self.negation(depth))
        return parts[0] if len(parts) == 1 else _Logic("and", tuple(parts))

    def negation(self, depth: int) -> _Node:
        if depth > _MAX_DEPTH:
            raise self.error("Too deeply nested", self.peek())
        if self.accept("not"):
            return _Logic("not", (self.negation(depth + 1),))
        opening = self.peek()
        if self.accept("("):
            inner = self.expression(depth + 1)
            if not self.accept(")"):
                hint = self.stray_hint() or f"\nThe '(' at column {opening.at + 1} is not closed."
                raise self.error("Expected ')'", self.peek(), hint)
            return inner
        return self.comparison()

    def comparison(self) -> _Compare:
        name = self.take()
        if name.kind != "name":
            raise self.error(f"Expected a field such as config.lr, not {name.text!r},", name)
        token = self.peek()
        if token.kind == "op" and token.text in ("==", "!=", *_ORDERS):
            self.take()
            return _Compare(name.text, token.text, self.value(token, name.text), name.at)
        if self.accept("in"):
            return _Compare(name.text, "in", self.values(), name.at)
        if token.text == "not" and self.peek(1).text == "in":  # only a keyword reads "in"
            self.position += 2
            return _Compare(name.text, "not in", self.values(), name.at)
        return _Compare(name.text, "truthy", None, name.at)

    def value(self, after: _Token, name: str | None = None) -> Any:
        token = self.take()
        if token.kind == "number":
            is_int = re.fullmatch(r"[-+]?\d+", token.text) is not None
            return int(token.text) if is_int else float(token.text)
        if token.kind == "string":
            return re.sub(r"\\(.)", _unescape, token.text[1:-1], flags=re.DOTALL)
        if token.kind == "keyword" and token.text in _CONSTANTS:
            return _CONSTANTS[token.text]
        hint = ""
        if token.text in _PYTHON_CONSTANTS:
            hint = f"\nWrite {_PYTHON_CONSTANTS[token.text]}, not {token.text}."
        elif token.kind == "name":
            # a bare word where a value belongs is almost always text without its quotes
            hint = f'\nStrings are quoted: "{token.text}"'
            hint += f', as in {name} {after.text} "{token.text}"' if name else ""
            hint += " (a field cannot be compared with a field)" if "." in token.text else ""
        raise self.error(f"Expected a value after {after.text!r}", token, hint)

    def values(self) -> tuple[Any, ...]:
        opening = self.take()
        if opening.text != "[":
            raise self.error("Expected a list such as [1, 2] after 'in'", opening)
        found: list[Any] = []
        while not self.accept("]"):
            found.append(self.value(self.tokens[self.position - 1]))
            if not self.accept(","):
                if not self.accept("]"):
                    raise self.error("Expected ',' or ']'", self.peek())
                break
        return tuple(found)


def _unescape(match: re.Match[str]) -> str:
    # unknown escapes keep their backslash, as in Python: 'C:\data' stays as typed
    return _ESCAPES.get(match.group(1), match.group(0))


def _point(message: str, text: str, at: int, width: int = 1) -> str:
    # newlines and tabs would shift the caret: show every whitespace as one space
    shown = "".join(" " if c.isspace() else c for c in text)
    return f"{message}\n  {shown}\n  {' ' * at}{'^' * width}"


def _comparisons(tree: _Node) -> list[_Compare]:
    if isinstance(tree, _Compare):
        return [tree]
    return [node for part in tree.parts for node in _comparisons(part)]


_MISSING, _PREFIX = object(), object()


def _lookup(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    prefix = name + "."
    return _PREFIX if any(str(k).startswith(prefix) for k in row) else _MISSING


def _is_bool(value: Any) -> bool:
    kind = type(value)
    return isinstance(value, bool) or (
        kind.__module__ == "numpy" and kind.__name__ in {"bool_", "bool"}
    )


def _equal(left: Any, right: Any) -> bool:
    if _is_bool(left) or _is_bool(right):  # true == 1 is not a match
        return _is_bool(left) and _is_bool(right) and bool(left) == bool(right)
    try:
        return bool(left == right)
    except Exception:  # an array's ambiguous truth, a broken __eq__: no match
        return False


def _evaluate(node: _Node, row: Mapping[str, Any]) -> bool:
    if isinstance(node, _Logic):
        if node.op == "not":
            return not _evaluate(node.parts[0], row)
        if node.op == "and":
            return all(_evaluate(part, row) for part in node.parts)
        return any(_evaluate(part, row) for part in node.parts)
    value = _lookup(row, node.field)
    if value is _MISSING:
        return False
    if node.op == "truthy":
        try:
            return value is _PREFIX or bool(value)
        except Exception:  # present but of ambiguous truth (an array): count it as there
            return True
    if value is _PREFIX:  # only fields below this one: nothing to compare
        return False
    if node.op in ("in", "not in"):
        return any(_equal(value, item) for item in node.value) == (node.op == "in")
    if node.op in ("==", "!="):
        return _equal(value, node.value) == (node.op == "==")
    if _is_bool(value) != _is_bool(node.value):  # true > 0 is no more meaningful than true == 1
        return False
    try:
        return bool(_ORDERS[node.op](value, node.value))
    except Exception:  # "a" < 1, None < 1: incomparable, so false
        return False
