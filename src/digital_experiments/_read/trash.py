"""Deleting runs: into the root's trash, out of it again, and for good.

A deleted run moves, whole, into the trash: its record first (so it leaves
listings at once, atomically) to ``<root>/.de/trash/<id>/``, with its metrics
and annotations, and its artefacts to ``<root>/storage/.trash/<id>/``, beside
where they were, so a rename moves them even when ``storage`` is a link to
another disk (and gigabytes of checkpoints are never copied). Restoring moves
them back in the reverse order, the record last. Every move is a rename, and
each part's rename is checked before anything moves: a run is deleted whole or
not at all, and a crash between two moves leaves each part either in place or in
the trash, which the next delete or restore of that run finishes. Deleting reads
a record only to refuse a running run, so an unreadable one can be deleted too.
Ids stay reserved (``.de/ids``), so a restored run never collides with a newer
one. A sweep that asked for a run deleted while it ran still gets its record
from the trash (:func:`load_even_deleted`).

A remote store (``s3://``) has no rename: there each object is copied on the
server, then deleted, in the same order (the record first when deleting, last
when restoring), to the same keys; a crash between the copy and the delete
leaves the object in both places (the fault point ``trash.copied`` is there), a
crash between two moves leaves each object in place or in the trash, and the
next delete or restore finishes. A small ``deleted.json`` in the run's trash
says when it was deleted. Ids there are the record keys themselves, so a restore
refuses a run whose id was taken since (a record in place that is not the
trash's copy byte for byte: the same bytes are a restore cut short, finished).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import TypeGuard

from .._model import layout
from .._runs.annotations import locked
from .._runs.backends import Backend, FileBackend, root_store
from .._runs.observation import RUNNING, Observation, status_of
from .._store import Missing, Store, faults
from ..errors import RunningError, TrashError

DELETED = "deleted.json"  # in a remote run's trash: when it was deleted
COPIED = "trash.copied"  # fault point: an object copied, its source not yet deleted


def _artefacts_trash(root: Path, id: str = "") -> Path:
    """Where deleted artefacts go: inside ``storage`` itself (the same filesystem)."""
    return layout.at(root, layout.artefacts_trash_prefix(id).rstrip("/"))


def _parts(root: Path, id: str) -> list[tuple[Path, Path]]:
    """``(in place, in the trash)`` of everything of run ``id`` but its record."""
    return [
        (layout.artefacts(root, id), _artefacts_trash(root, id)),
        *((layout.at(root, here), layout.at(root, there)) for here, there in _part_keys(id)),
    ]


def _part_keys(id: str) -> list[tuple[str, str]]:
    """``(in place, in the trash)`` of the keys of run ``id``'s metrics and annotations."""
    trash = layout.trash_prefix(id)
    return [
        (layout.metrics_key(id), trash + "metrics.jsonl"),
        (layout.annotations_key(id), trash + "annotations.json"),
    ]


def _file_backend(backend: Backend) -> FileBackend:
    if not isinstance(backend, FileBackend):
        raise TypeError(
            f"Deleting runs needs a file backend (pickle, json, yaml...), not {backend!r}: "
            "call its delete(id) instead."
        )
    return backend


def _remote(backend: Backend) -> TypeGuard[FileBackend]:
    """Whether the run's parts are objects of a remote store (no renames there)."""
    return isinstance(backend, FileBackend) and root_store(backend).folder is None


def _refuse_running(store: FileBackend, id: str) -> None:
    try:
        observation = store.load(id)
    except Exception:  # gone, or unreadable: nothing says it runs
        return
    if status_of(observation) == RUNNING:
        process = observation.metadata.get("process")
        pid = process.get("pid") if isinstance(process, dict) else None
        raise RunningError(
            f"Run {id!r} is running (pid {pid}): wait until it ends, or stop it; a run "
            "whose process is gone reads 'abandoned' and can be deleted."
        )


def _device(path: Path) -> int:
    """The filesystem of ``path``, or of its nearest existing ancestor."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return os.stat(path).st_dev


def _check_moves(moves: list[tuple[Path, Path]]) -> None:
    """Refuse, before anything moves, a part that a rename could not move (the
    folders an entry lives in are followed: ``storage`` may be a link)."""
    for here, there in moves:
        if _device(here.parent) != _device(there.parent):
            raise TrashError(
                errno.EXDEV,
                f"Cannot move {str(here)!r} to the trash in {str(there.parent)!r}: they are "
                "on different filesystems, so nothing of the run was deleted. Keep "
                f"{here.parent.name!r} on the filesystem of {str(there.parent)!r}.",
            )


def delete(backend: Backend, id: str) -> bool:
    """Move run ``id`` to the trash; ``False`` if there was no such run.

    Raises
    ------
    RunningError
        If the run is ``running`` in a live process.
    TrashError
        If a part of the run could not be moved (then nothing was).
    """
    store = _file_backend(backend)
    _refuse_running(store, id)
    if _remote(store):
        return _delete_objects(store, id)
    record = store.path(id)
    trash = layout.trash(store.root, id)
    if not os.path.lexists(record) and not (trash / record.name).exists():
        return False  # no such run
    with locked(root_store(store), id):  # a tagger now either came first, or finds no run
        moves = [(here, there) for here, there in _parts(store.root, id) if os.path.lexists(here)]
        _check_moves([(record, trash / record.name), *moves])
        trash.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(record, trash / record.name)
        except FileNotFoundError:
            if not (trash / record.name).exists():
                with contextlib.suppress(OSError):  # made just now: no trashed run to list
                    trash.rmdir()
                return False  # another deleter was first, and purged it
        for here, there in moves:
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
    if _remote(store):
        return _restore_objects(store, id)
    record = store.path(id)
    trashed = layout.trash(store.root, id) / record.name
    if not trashed.exists():
        raise FileNotFoundError(f"No run {id!r} in the trash of {str(store.root)!r}.")
    if record.exists():
        raise FileExistsError(f"Run {id!r} is in {str(store.root)!r} already.")
    with locked(root_store(store), id):
        legacy = layout.trash(store.root, id) / layout.ARTEFACTS  # where 3.4 put them
        _move(legacy, layout.artefacts(store.root, id))
        for here, there in _parts(store.root, id):
            _move(there, here)
        os.rename(trashed, record)  # last: the run is back, whole
    with contextlib.suppress(OSError):
        layout.trash(store.root, id).rmdir()
    return store.load(id)


def trashed(backend: Backend) -> list[str]:
    """The ids of the runs in the trash, oldest first."""
    if _remote(backend):
        store = root_store(backend)
        # some servers (SeaweedFS) keep a "folder" after its last object is gone, and a
        # delete cut short after deleted.json (its first write) moved nothing yet
        return [
            name
            for name in store.folders(layout.internal_prefix("trash"))
            if layout.is_id(name)
            and any(
                not key.endswith(f"/{DELETED}") for key in store.list(layout.trash_prefix(name))
            )
        ]
    try:
        names = os.listdir(layout.trash(backend.root))
    except FileNotFoundError:
        return []
    return sorted(name for name in names if layout.is_id(name))


def load_trashed(backend: Backend, id: str) -> Observation:
    """The record of run ``id`` from the trash."""
    store = _file_backend(backend)
    return store.load_key(layout.trash_prefix(id) + store.key(id), id)


def deleted_at(backend: Backend, id: str) -> float | None:
    """When run ``id`` went to the trash (its trash folder's time), if it is there."""
    if _remote(backend):
        try:
            when = json.loads(root_store(backend).read(layout.trash_prefix(id) + DELETED))["at"]
        except (Missing, ValueError, TypeError, KeyError):
            return None
        return float(when) if isinstance(when, (int, float)) else None
    try:
        return os.stat(layout.trash(backend.root, id)).st_mtime
    except OSError:
        return None


def load_even_deleted(backend: Backend, id: str, deleted_since: float | None = None) -> Observation:
    """The record of run ``id``, from the trash if it was deleted since it ended
    (a sweep still counts it: it ran).

    With ``deleted_since`` (a :func:`time.time`), only a run deleted at or after
    that time comes from the trash: a run deleted before a sweep began is gone
    for that sweep, which runs its config again.

    Raises
    ------
    FileNotFoundError
        If neither the root nor its trash holds it (deleted too early).
    """
    try:
        return backend.load(id)
    except FileNotFoundError:
        when = deleted_at(backend, id) if deleted_since is not None else None
        if deleted_since is None or (when is not None and when >= deleted_since):
            try:
                return load_trashed(backend, id)
            # not in the trash, or no trash at all (another backend, a remote store)
            except (FileNotFoundError, TypeError, NotImplementedError):
                pass
        raise


def purge(backend: Backend, ids: list[str] | None = None) -> int:
    """Delete runs in the trash for good (all of them by default); how many."""
    if _remote(backend):
        return _purge_objects(backend, trashed(backend) if ids is None else ids)
    root = backend.root
    count = 0
    for id in trashed(backend) if ids is None else ids:
        folder = layout.trash(root, id)
        # renamed away first, so a half-purged run never looks restorable
        doomed = layout.trash(root) / f".purging-{os.urandom(16).hex()}"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        artefacts = _artefacts_trash(root, id)
        if os.path.lexists(artefacts):  # never what a link points to
            gone = _artefacts_trash(root) / f".purging-{os.urandom(16).hex()}"
            os.rename(artefacts, gone)
            if os.path.islink(gone):
                os.unlink(gone)
            else:
                shutil.rmtree(gone, ignore_errors=True)
        count += 1
    return count


def _move(source: Path, target: Path) -> None:
    if not os.path.lexists(source):
        return  # nothing of that kind, or moved already
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # another mover was first
        os.rename(source, target)


# ---------------------------------------------------------------- on a remote store


def _object_parts(store: Store, id: str) -> list[tuple[str, str]]:
    """``(in place, in the trash)`` of the keys of run ``id`` other than its record
    (the artefacts in either place, so a move that was cut short is finished)."""
    parts = _part_keys(id)
    here, there = layout.artefacts_prefix(id), layout.artefacts_trash_prefix(id)
    placed = [(key, there + key[len(here) :]) for key in store.walk(here)]
    trashed = [(here + key[len(there) :], key) for key in store.walk(there)]
    return parts + list(dict.fromkeys(placed + trashed))


def _move_object(store: Store, source: str, target: str) -> None:
    """Copy, then delete: the object is in one place or both, never neither."""
    try:
        store.copy(source, target)
    except Missing:
        return  # nothing of that kind, or moved already
    faults.point(COPIED, source)  # a kill here leaves it in both places
    store.delete(source)


def _delete_objects(backend: FileBackend, id: str) -> bool:
    store, record = root_store(backend), backend.key(id)
    trash = layout.trash_prefix(id)
    if store.version(record) is not None:
        when = json.dumps({"at": time.time()}).encode()
        store.put(trash + DELETED, when)
        _move_object(store, record, trash + record)  # first: it leaves listings at once
    elif store.version(trash + record) is None:
        return False  # no such run
    for here, there in _object_parts(store, id):
        _move_object(store, here, there)
    return True


def _restore_objects(backend: FileBackend, id: str) -> Observation:
    store, record = root_store(backend), backend.key(id)
    trashed_key = layout.trash_prefix(id) + record
    found = store.get_or_none(trashed_key)
    if found is None:
        raise FileNotFoundError(f"No run {id!r} in the trash of {backend.where!r}.")
    taken = FileExistsError(f"Run {id!r} is in {backend.where!r} already.")
    placed = store.get_or_none(record)
    # the trash's copy in place too: a restore cut short after the record went back
    if placed is not None and placed[0] != found[0]:
        raise taken
    for here, there in _object_parts(store, id):
        _move_object(store, there, here)
    if placed is None and store.put_new(record, found[0]) is None:  # last: the run is back
        raise taken
    faults.point(COPIED, trashed_key)  # a kill here leaves the record in both places
    store.delete(layout.trash_prefix(id) + DELETED)
    store.delete(trashed_key)  # last: until then the next restore finishes this one
    return backend.load(id)


def _purge_objects(backend: FileBackend, ids: list[str]) -> int:
    store, count = root_store(backend), 0
    for id in ids:
        trashed_key = layout.trash_prefix(id) + backend.key(id)
        keys = [
            *store.walk(layout.trash_prefix(id)),
            *store.walk(layout.artefacts_trash_prefix(id)),
        ]
        if not keys:
            continue
        store.delete(trashed_key)  # first: a half-purged run never looks restorable
        for key in keys:
            if key != trashed_key:
                store.delete(key)
        count += 1
    return count
