"""Rows of runs as text: an aligned table, CSV, JSON or Markdown (for the CLI).

Colour is used only for a table on a terminal, and never when ``NO_COLOR`` is
set (https://no-color.org).
"""

from __future__ import annotations

import csv
import io
import json
import os
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


def render(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], form: str, colour: bool = False
) -> str:
    """``rows`` (flat dicts) as ``form``: ``table``, ``csv``, ``json`` or ``md``."""
    if form == "json":
        records = [{c: row.get(c) for c in columns if c in row} for row in rows]
        return json.dumps(records, indent=2, ensure_ascii=False, default=repr) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv(row.get(c)) for c in columns])
        return out.getvalue()
    cells = [[text(row.get(c)) for c in columns] for row in rows]
    if form == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    return _table(list(columns), cells, colour)


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
        return value.replace("\n", " ")
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _csv(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
