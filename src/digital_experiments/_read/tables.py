"""Rows of runs as text: an aligned table, CSV, JSON or Markdown (for the CLI).

Colour is used only for a table on a terminal, and never when ``NO_COLOR`` is
set (https://no-color.org).
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any, TextIO

from .._runs.observation import ABANDONED, COMPLETED, FAILED, INTERRUPTED, RUNNING

FORMATS = ("table", "csv", "json", "md")
_ANSI = {RUNNING: "34", COMPLETED: "32", FAILED: "31", INTERRUPTED: "33", ABANDONED: "90"}


def wants_colour(stream: TextIO) -> bool:
    """Whether to colour output to ``stream``: a terminal, and no ``NO_COLOR``."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# C0 controls, DEL and C1 controls: what a terminal may act on (clear the screen,
# set the title, write the clipboard with OSC 52...) instead of showing
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_HIGH_CONTROLS = re.compile("[\x7f-\x9f]")  # those json.dumps leaves as they are


def printable(text: str, keep: str = "") -> str:
    """``text`` with every control character written as an escape (``\\x1b``),
    but those in ``keep`` (such as ``"\\n\\t"``): record contents are printed
    as data, never acted on by the terminal."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return char if char in keep else repr(char)[1:-1]

    return _CONTROLS.sub(escape, text)


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON that is safe on a terminal: ``json`` escapes C0 controls
    itself; DEL and C1 controls become ``\\u`` escapes too (still valid JSON)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=repr)
    return _HIGH_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


KEPT = ("id", "status", "duration")  # the columns a table never cuts


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    form: str,
    colour: bool = False,
    keep: Sequence[str] = KEPT,
) -> str:
    """``rows`` (flat dicts) as ``form``: ``table``, ``csv``, ``json`` or ``md``.

    A table fits the terminal's width: the columns in ``keep`` are shown whole,
    the others share what is left and long values are cut with ``…``.
    """
    if form == "json":
        records = [{c: row.get(c) for c in columns if c in row} for row in rows]
        return json_text(records) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([printable(c) for c in columns])
        for row in rows:
            writer.writerow([_csv(row.get(c)) for c in columns])
        return out.getvalue()
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    if form == "md":
        header = [printable(c) for c in columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    kept = [c in keep for c in columns]
    return _table([printable(c) for c in columns], cells, colour, kept)


def _table(columns: list[str], cells: list[list[str]], colour: bool, kept: list[bool]) -> str:
    width = shutil.get_terminal_size((120, 24)).columns
    widths = fit(columns, cells, kept, width)
    out = []
    status_at = columns.index("status") if "status" in columns else -1
    for number, line in enumerate([columns, *cells]):
        parts = []
        for i, (cell, w) in enumerate(zip(line, widths, strict=True)):
            shown = cut(cell, w).ljust(w)
            if colour and number and i == status_at and cell in _ANSI:
                shown = f"\x1b[{_ANSI[cell]}m{shown}\x1b[0m"
            parts.append(shown)
        out.append("  ".join(parts).rstrip())
    return "\n".join(out) + "\n"


def fit(columns: list[str], cells: list[list[str]], kept: list[bool], width: int) -> list[int]:
    """The width of each column of a table ``width`` characters wide (two spaces
    between columns).

    Kept columns get their whole width; the others share the rest fairly: a
    narrow column keeps its width, and what it leaves goes to the wider ones.
    Each cut column still shows its header (at least four characters), so on a
    very narrow terminal the lines are longer than ``width`` rather than empty.
    """
    natural = [max(len(line[i]) for line in [columns, *cells]) for i in range(len(columns))]
    room = width - 2 * (len(columns) - 1) - sum(w for w, k in zip(natural, kept, strict=True) if k)
    widths = list(natural)
    flexible = sorted((i for i, k in enumerate(kept) if not k), key=lambda i: natural[i])
    smallest = {i: min(natural[i], max(len(columns[i]), 4)) for i in flexible}
    for left, i in enumerate(flexible):
        later = sum(smallest[j] for j in flexible[left + 1 :])  # kept for the columns after
        share = min(room // (len(flexible) - left), room - later)
        widths[i] = max(min(natural[i], share), smallest[i])
        room -= widths[i]
    return widths


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def text(value: Any) -> str:
    """A cell: strings as they are, numbers short, missing values as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return printable(value.replace("\n", " "))
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(repr(value))


def cell(value: Any) -> str:
    """A table cell a person reads: :func:`short`, and ``-`` for a missing value."""
    return "-" if value is None else short(value)


def short(value: Any) -> str:
    """``value`` for a table cell a person reads: floats as written when that is
    short (``0.1``, ``3.0``), else to 4 significant digits (``0.30000000000000004``:
    ``0.3``, ``123.456789``: ``123.5``), ``true``/``false``/``null`` as queries
    write them, text unquoted, dicts as ``name=value`` pairs, control characters
    escaped. ``show`` has the values whole."""
    if value is None:
        return "null"
    if isinstance(value, bool) or _numpy_kind(value) == "bool":
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        exact = repr(float(value))  # 0.1 and 3.0 as written; 0.30000000000000004 short
        return exact if len(exact) <= _SHORT else f"{float(value):.4g}"
    if isinstance(value, str):
        return printable(value.replace("\n", " "))
    if isinstance(value, dict):
        return "{" + pairs(value) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(short(item) for item in value[:_MAX_ITEMS])
        more = ", …" if len(value) > _MAX_ITEMS else ""
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        return f"{opening}{inner}{more}{closing}"
    return printable(repr(value).replace("\n", " "))


def pairs(mapping: dict[Any, Any]) -> str:
    """``mapping`` as ``lr=0.1, opt=adam`` (see :func:`short`)."""
    return ", ".join(f"{printable(str(k))}={short(v)}" for k, v in mapping.items())


def duration(seconds: float) -> str:
    """A duration a person reads: ``52 µs``, ``3.4 ms``, ``1.2 s``, ``4 min 05 s``,
    ``2 h 05 min``: one decimal below ten, none above."""
    if seconds < 60:
        for scale, unit in ((1e6, "µs"), (1e3, "ms"), (1, "s")):
            value = seconds * scale
            shown = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
            if float(shown) < 1000 or unit == "s":
                return f"{'0' if value == 0 else shown} {unit}"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


_MAX_ITEMS = 8  # items of a list shown in a cell
_SHORT = 8  # a float whose repr is longer is rounded


def _numpy_kind(value: Any) -> str:
    kind = type(value)
    return "bool" if kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool") else ""


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value, keep="\n\t")  # CSV quotes those
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return printable(repr(value))
