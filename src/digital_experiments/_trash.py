"""Deleting runs: into the root's trash, out of it again, and for good.

A deleted run moves, whole, to ``<root>/.de/trash/<id>/``: its record first
(so it leaves listings at once, atomically), then its artefacts, metrics and
annotations. Restoring moves them back in the reverse order, the record last.
Every move is a rename within the root, so a crash between two moves leaves
each part either in place or in the trash, and the next delete or restore of
that run finishes the job. Ids stay reserved (``.de/ids``), so a restored run
never collides with a newer one. A sweep that asked for a run deleted meanwhile
still gets its record from the trash (:func:`load_trashed`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from . import _layout as layout
from ._annotations import locked
from ._backends import Backend, FileBackend
from ._records import RUNNING, Observation, status_of


class RunningError(ValueError):
    """A run cannot be deleted while it runs."""


def _parts(root: Path, id: str) -> list[tuple[Path, Path]]:
    """``(in place, in the trash)`` of everything of run ``id`` but its record."""
    trash = layout.trash(root, id)
    return [
        (layout.artefacts(root, id), trash / "storage"),
        (layout.metrics(root, id), trash / "metrics.jsonl"),
        (layout.annotation_file(root, id), trash / "annotations.json"),
    ]


def _file_backend(backend: Backend) -> FileBackend:
    if not isinstance(backend, FileBackend):
        raise TypeError(
            f"Deleting runs needs a file backend (pickle, json, yaml...), not {backend!r}: "
            "call its delete(id) instead."
        )
    return backend


def delete(backend: Backend, id: str) -> bool:
    """Move run ``id`` to the trash; ``False`` if there was no such run.

    Raises
    ------
    RunningError
        If the run is ``running`` in a live process.
    """
    store = _file_backend(backend)
    record = store.path(id)
    try:
        observation = store.load(id)
    except FileNotFoundError:
        observation = None
    if observation is not None and status_of(observation) == RUNNING:
        raise RunningError(
            f"Run {id!r} is running (pid {observation.metadata.get('process', {}).get('pid')}"
            "): wait until it ends, or stop it; a run whose process is gone reads "
            "'abandoned' and can be deleted."
        )
    trash = layout.trash(store.root, id)
    if observation is None and not (trash / record.name).exists():
        return False  # no such run
    trash.mkdir(parents=True, exist_ok=True)
    with locked(store.root, id):  # a tagger now either came first, or finds no run
        try:
            os.rename(record, trash / record.name)
        except FileNotFoundError:
            if not (trash / record.name).exists():
                return False  # another deleter was first, and purged it
        for here, there in _parts(store.root, id):
            _move(here, there)
    return True


def restore(backend: Backend, id: str) -> Observation:
    """Move run ``id`` back from the trash; its observation.

    Raises
    ------
    FileNotFoundError
        If the trash holds no run ``id``.
    FileExistsError
        If a run ``id`` is in place already.
    """
    store = _file_backend(backend)
    record = store.path(id)
    trashed = layout.trash(store.root, id) / record.name
    if not trashed.exists():
        raise FileNotFoundError(f"No run {id!r} in the trash of {str(store.root)!r}.")
    if record.exists():
        raise FileExistsError(f"Run {id!r} is in {str(store.root)!r} already.")
    with locked(store.root, id):
        for here, there in _parts(store.root, id):
            _move(there, here)
        os.rename(trashed, record)  # last: the run is back, whole
    with contextlib.suppress(OSError):
        layout.trash(store.root, id).rmdir()
    return store.load(id)


def trashed(backend: Backend) -> list[str]:
    """The ids of the runs in the trash, oldest first."""
    try:
        names = os.listdir(layout.trash(backend.root))
    except FileNotFoundError:
        return []
    return sorted(name for name in names if layout.is_id(name))


def load_trashed(backend: Backend, id: str) -> Observation:
    """The record of run ``id`` from the trash."""
    store = _file_backend(backend)
    return store.load_from(layout.trash(store.root, id) / store.path(id).name, id)


def load_even_deleted(backend: Backend, id: str) -> Observation:
    """The record of run ``id``, from the trash if it was deleted since it ended
    (a sweep still counts it: it ran).

    Raises
    ------
    FileNotFoundError
        If neither the root nor its trash holds it.
    """
    try:
        return backend.load(id)
    except FileNotFoundError:
        try:
            return load_trashed(backend, id)
        except (FileNotFoundError, TypeError):  # not in the trash, or no trash at all
            pass
        raise


def purge(backend: Backend, ids: list[str] | None = None) -> int:
    """Delete runs in the trash for good (all of them by default); how many."""
    root = backend.root
    count = 0
    for id in trashed(backend) if ids is None else ids:
        folder = layout.trash(root, id)
        # renamed away first, so a half-purged run never looks restorable
        doomed = layout.trash(root) / f".purging-{uuid.uuid4().hex}"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        count += 1
    return count


def _move(source: Path, target: Path) -> None:
    if not os.path.lexists(source):
        return  # nothing of that kind, or moved already
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # another mover was first
        os.rename(source, target)
