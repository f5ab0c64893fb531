"""What a run id looks like: ``YYYY-MM-DD_HH-MM-SS_ffffff`` (UTC)."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}")
"""A whole id: digits and separators only, so never a path."""


def is_id(name: object) -> bool:
    """Whether ``name`` is a run id (and so a safe file name: no separator, no ``..``)."""
    return isinstance(name, str) and ID_PATTERN.fullmatch(name) is not None
