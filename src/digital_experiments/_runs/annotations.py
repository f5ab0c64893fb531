"""Tags and notes: what people add to a run after the fact.

Records stay immutable: a run's tags and notes live beside it, in
``<root>/.de/annotations/<id>.json`` (``{"tags": {...}, "notes": [...]}``).
Every change is a read-modify-write published by compare-and-swap (retried
when another tagger came first), so concurrent taggers on any number of hosts
merge and a reader never sees half a file. In a folder, the change is also
made under a lock on that run, which a delete takes too.
"""

from __future__ import annotations

import contextlib
import json
from contextlib import AbstractContextManager
from typing import Any

from .._model import layout
from .._store import files as storage
from .._store.base import Store

_JSON_TYPES = (str, int, float, bool, type(None))


def read_annotations(store: Store, id: str) -> dict[str, Any]:
    """``{"tags": ..., "notes": ...}`` of run ``id`` (only the keys it has).

    A file that cannot be read, or holds something else, gives ``{}``: a
    listing shows the run without tags rather than stop.
    """
    data = _read(store, layout.annotations_key(id))[0]
    if not isinstance(data, dict):
        return {}
    found: dict[str, Any] = {}
    if isinstance(data.get("tags"), dict) and data["tags"]:
        found["tags"] = data["tags"]
    if isinstance(data.get("notes"), list) and data["notes"]:
        found["notes"] = data["notes"]
    return found


_NONE, _UNREADABLE = object(), object()


def _read(store: Store, key: str) -> tuple[Any, str | None]:
    """The parsed object at ``key`` and its version: ``_NONE`` if there is none,
    ``_UNREADABLE`` if it cannot be read or parsed."""
    try:
        found = store.get_or_none(key)
    except OSError:  # no permission (a folder in its place reads as none)
        return _UNREADABLE, None
    if found is None:
        return _NONE, None
    try:
        return json.loads(found[0]), found[1]
    # not JSON, not UTF-8, or nested past the parser's limit (a RecursionError)
    except (ValueError, RecursionError):
        return _UNREADABLE, found[1]


def annotated(store: Store) -> set[str]:
    """The ids of the runs of ``store`` that have tags or notes."""
    prefix = layout.internal_prefix("annotations")
    try:
        keys = list(store.list(prefix))
    except OSError:
        return set()
    start = len(prefix)
    return {k[start:-5] for k in keys if k.endswith(".json") and layout.is_id(k[start:-5])}


def locked(store: Store, id: str) -> AbstractContextManager[None]:
    """Hold run ``id``'s annotation lock in a folder (a delete moves them under it
    too); nothing on a remote store, where compare-and-swap alone merges."""
    if store.folder is None:
        return contextlib.nullcontext()
    return storage.file_lock(layout.lock(store.folder, f"annotations-{id}"))


def tag(store: Store, id: str, values: dict[str, Any], record: str | None = None) -> dict[str, Any]:
    """Merge ``values`` into run ``id``'s tags (``None`` removes a tag); its tags now.

    With ``record`` (the key of the run's record), refuse (``ValueError``) if it is
    gone when the lock is held: the run was deleted meanwhile."""
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

    tags: dict[str, Any] = _update(store, id, change, record).get("tags", {})
    return tags


def note(store: Store, id: str, text: str, record: str | None = None) -> list[str]:
    """Add ``text`` to run ``id``'s notes; its notes now (``record`` as for :func:`tag`)."""
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"A note is non-empty text, not {text!r}.")

    def add(data: dict[str, Any]) -> None:
        data.setdefault("notes", []).append(text)

    notes: list[str] = _update(store, id, add, record)["notes"]
    return notes


def _update(store: Store, id: str, change: Any, record: str | None) -> dict[str, Any]:
    key = layout.annotations_key(id)
    with locked(store, id):
        while True:
            if record is not None and store.version(record) is None:
                raise ValueError(f"No run {id!r} in {store.url!r} (deleted?).")
            data, version = _read(store, key)
            if data is _NONE:
                data = {}
            elif not _whole(data):  # rewriting it would drop what it holds
                raise _unreadable(store, id, key)
            change(data)  # other fields (another tool's) are kept
            body = json.dumps(data, sort_keys=True).encode()
            if version is None:
                written = store.put_new(key, body)
                if written is None and store.get_or_none(key) is None and store.version(key):
                    # something no object is in its place (a folder): every read says
                    # "none" and every create "exists", so trying again never ends
                    raise _unreadable(store, id, key)
            else:
                written = store.put_if(key, body, version)
            if written is not None:
                return dict(data)
            # another tagger came first: read theirs and change it again


def _unreadable(store: Store, id: str, key: str) -> ValueError:
    return ValueError(
        f"The tags and notes of run {id!r} ({key!r} in {store.url!r}) cannot be "
        'read: it is not {"tags": {...}, "notes": [...]}. Fix or remove it, '
        "then tag again."
    )


def _whole(data: Any) -> bool:
    """Whether ``data`` is an annotations file tag() and note() can add to, losing nothing."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("tags", {}), dict)
        and isinstance(data.get("notes", []), list)
    )
