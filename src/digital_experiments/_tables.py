"""Rows of runs as text: an aligned table, CSV, JSON or Markdown (for the CLI).

Colour is used only for a table on a terminal, and never when ``NO_COLOR`` is
set (https://no-color.org).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any, TextIO

from ._records import ABANDONED, COMPLETED, FAILED, INTERRUPTED, RUNNING

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


def render(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], form: str, colour: bool = False
) -> str:
    """``rows`` (flat dicts) as ``form``: ``table``, ``csv``, ``json`` or ``md``."""
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
    cells = [[text(row.get(c)) for c in columns] for row in rows]
    if form == "md":
        header = [printable(c) for c in columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    return _table([printable(c) for c in columns], cells, colour)


def _table(columns: list[str], cells: list[list[str]], colour: bool) -> str:
    width = shutil.get_terminal_size((120, 24)).columns
    widths = [max(len(line[i]) for line in [columns, *cells]) for i in range(len(columns))]
    # the last column takes what is left of the terminal
    room = max(width - sum(widths[:-1]) - 2 * (len(columns) - 1), 20)
    widths[-1] = min(widths[-1], room)
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


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value, keep="\n\t")  # CSV quotes those
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return printable(repr(value))
