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
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from . import _layout as layout
from ._annotations import locked
from ._backends import Backend, FileBackend
from ._records import RUNNING, Observation, status_of
from .errors import RunningError, TrashError


def _artefacts_trash(root: Path, id: str = "") -> Path:
    """Where deleted artefacts go: inside ``storage`` itself (the same filesystem)."""
    folder = Path(root) / layout.ARTEFACTS / ".trash"
    return folder / id if id else folder


def _parts(root: Path, id: str) -> list[tuple[Path, Path]]:
    """``(in place, in the trash)`` of everything of run ``id`` but its record."""
    trash = layout.trash(root, id)
    return [
        (layout.artefacts(root, id), _artefacts_trash(root, id)),
        (layout.metrics(root, id), trash / "metrics.jsonl"),
        (layout.annotation_file(root, id), trash / "annotations.json"),
    ]


def _file_backend(backend: Backend) -> FileBackend:
    if not isinstance(backend, FileBackend):
        raise TypeError(
            f"Deleting runs needs a file backend (pickle, json, yaml...), not {backend!r}: "
            "call its delete(id) instead."
        )
    if backend.store.folder is None:  # the moves below are a folder's renames
        raise NotImplementedError(
            f"The trash does not work on {backend.where!r} yet: it moves files in a folder. "
            "Delete a run's objects (<id>" + backend.suffix + ", storage/<id>/, "
            ".de/metrics/<id>.jsonl, .de/annotations/<id>.json) with an S3 tool instead."
        )
    return backend


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
    record = store.path(id)
    _refuse_running(store, id)
    trash = layout.trash(store.root, id)
    if not os.path.lexists(record) and not (trash / record.name).exists():
        return False  # no such run
    with locked(store.store, id):  # a tagger now either came first, or finds no run
        moves = [(here, there) for here, there in _parts(store.root, id) if os.path.lexists(here)]
        _check_moves([(record, trash / record.name), *moves])
        trash.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(record, trash / record.name)
        except FileNotFoundError:
            if not (trash / record.name).exists():
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
    record = store.path(id)
    trashed = layout.trash(store.root, id) / record.name
    if not trashed.exists():
        raise FileNotFoundError(f"No run {id!r} in the trash of {str(store.root)!r}.")
    if record.exists():
        raise FileExistsError(f"Run {id!r} is in {str(store.root)!r} already.")
    with locked(store.store, id):
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
    try:
        names = os.listdir(layout.trash(backend.root))
    except FileNotFoundError:
        return []
    return sorted(name for name in names if layout.is_id(name))


def load_trashed(backend: Backend, id: str) -> Observation:
    """The record of run ``id`` from the trash."""
    store = _file_backend(backend)
    return store.load_from(layout.trash(store.root, id) / store.path(id).name, id)


def deleted_at(backend: Backend, id: str) -> float | None:
    """When run ``id`` went to the trash (its trash folder's time), if it is there."""
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
        artefacts = _artefacts_trash(root, id)
        if os.path.lexists(artefacts):  # never what a link points to
            gone = _artefacts_trash(root) / f".purging-{uuid.uuid4().hex}"
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
