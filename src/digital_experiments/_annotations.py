"""Tags and notes: what people add to a run after the fact.

Records stay immutable: a run's tags and notes live beside it, in
``<root>/.de/annotations/<id>.json`` (``{"tags": {...}, "notes": [...]}``).
Every change is a read-modify-write under a lock on that run, published by an
atomic rename, so concurrent taggers merge and a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import _layout as layout
from . import _storage as storage

_JSON_TYPES = (str, int, float, bool, type(None))


def read_annotations(root: Path, id: str) -> dict[str, Any]:
    """``{"tags": ..., "notes": ...}`` of run ``id`` (only the keys it has).

    A file that cannot be read, or holds something else, gives ``{}``: a
    listing shows the run without tags rather than stop.
    """
    data = _read(layout.annotation_file(root, id))
    if not isinstance(data, dict):
        return {}
    found: dict[str, Any] = {}
    if isinstance(data.get("tags"), dict) and data["tags"]:
        found["tags"] = data["tags"]
    if isinstance(data.get("notes"), list) and data["notes"]:
        found["notes"] = data["notes"]
    return found


_NONE, _UNREADABLE = object(), object()


def _read(path: Path) -> Any:
    """The parsed file at ``path``: ``_NONE`` if there is none, ``_UNREADABLE``
    if it cannot be read or parsed."""
    try:
        data = storage.read_bytes(os.fspath(path))
    except FileNotFoundError:
        return _NONE
    except OSError:  # a folder in its place, no permission
        return _UNREADABLE
    try:
        return json.loads(data)
    # not JSON, not UTF-8, or nested past the parser's limit (a RecursionError)
    except (ValueError, RecursionError):
        return _UNREADABLE


def annotated(root: Path) -> set[str]:
    """The ids of the runs under ``root`` that have tags or notes."""
    try:
        names = os.listdir(layout.internal(root, "annotations"))
    except OSError:
        return set()
    return {name[:-5] for name in names if name.endswith(".json") and layout.is_id(name[:-5])}


def locked(root: Path, id: str) -> AbstractContextManager[None]:
    """Hold run ``id``'s annotation lock (a delete moves them under it too)."""
    return storage.file_lock(layout.lock(root, f"annotations-{id}"))


def tag(root: Path, id: str, values: dict[str, Any], record: Path | None = None) -> dict[str, Any]:
    """Merge ``values`` into run ``id``'s tags (``None`` removes a tag); its tags now.

    With ``record``, refuse (``ValueError``) if that file is gone when the lock is held:
    the run was deleted meanwhile."""
    for name, value in values.items():
        if not isinstance(value, _JSON_TYPES):
            raise TypeError(
                f"Tag {name}={value!r}: tags are str, int, float, bool or None (which "
                "removes the tag). Keep other values in an artefact or a note."
            )

    def change(data: dict[str, Any]) -> None:
        tags = data.setdefault("tags", {})
        for name, value in values.items():
            if value is None:
                tags.pop(name, None)
            else:
                tags[name] = value

    tags: dict[str, Any] = _update(root, id, change, record).get("tags", {})
    return tags


def note(root: Path, id: str, text: str, record: Path | None = None) -> list[str]:
    """Add ``text`` to run ``id``'s notes; its notes now (``record`` as for :func:`tag`)."""
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"A note is non-empty text, not {text!r}.")

    def add(data: dict[str, Any]) -> None:
        data.setdefault("notes", []).append(text)

    notes: list[str] = _update(root, id, add, record)["notes"]
    return notes


def _update(root: Path, id: str, change: Any, record: Path | None) -> dict[str, Any]:
    path = layout.annotation_file(root, id)
    with locked(root, id):
        if record is not None and not record.exists():
            raise ValueError(f"No run {id!r} in {str(root)!r} (deleted?).")
        data = _read(path)
        if data is _NONE:
            data = {}
        elif not _whole(data):  # rewriting it would drop what it holds
            raise ValueError(
                f"The tags and notes of run {id!r} in {str(path)!r} cannot be read: the file "
                'is not {"tags": {...}, "notes": [...]}. Fix or remove it, then tag again.'
            )
        change(data)  # other fields (another tool's) are kept
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write(path, json.dumps(data, sort_keys=True).encode())
    return dict(data)


def _whole(data: Any) -> bool:
    """Whether ``data`` is an annotations file tag() and note() can add to, losing nothing."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("tags", {}), dict)
        and isinstance(data.get("notes", []), list)
    )
