"""What the web view shows, kept up to date by one watcher per experiment folder.

A :class:`RunIndex` holds one flat row per run of one experiment folder. Its
:meth:`~RunIndex.refresh` rereads only what changed: nothing when neither the
folder's mtime nor that of its annotations folder (``.de/annotations``, where
tags and notes live) has moved (publishing a record or an annotation by rename
changes it), else the records whose inode changed (a record is replaced by
rename, so a new version is a new inode, which a listing gives without a stat
per file) and those whose annotation file changed, and it drops the ones that
are gone. A background thread refreshes every index twice a second, so however
many browsers watch, the disk is scanned once per folder, and each change bumps
:attr:`RunIndex.version`, which the live view waits on.

Pickle records are loaded only where :func:`~digital_experiments._query.trust_refusal`
allows (a folder digital-experiments 3.x recorded, or ``trust``); a record whose
row cannot be built is shown as unreadable, and the rest of the folder still is.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import _layout as layout
from .. import _query as query
from .._backends import FileBackend, available_backends, backend_class
from .._records import Observation

INTERVAL = 0.5  # seconds between two looks at a folder
# an mtime this recent may yet be shared by a change to come (timestamps are coarse,
# a second or two on some file systems), so the folder is looked at again
RECENT_NS = 2_000_000_000


def settled(*stamps: int | None) -> bool:
    """Whether mtimes ``stamps`` are old enough that a later change will move them."""
    return time.time_ns() - max(s or 0 for s in stamps) > RECENT_NS


class Refused(Exception):
    """A record the view will not load: unpickling it would need trust."""


def row_of(observation: Observation, row: dict[str, Any]) -> dict[str, Any]:
    """A run as the runs table shows it: its flat fields (``row``, from
    :func:`~digital_experiments._query.rows`) with its duration and error."""
    timing = observation.metadata.get("timing")
    if isinstance(timing, dict) and isinstance(timing.get("total"), dict):
        timing = timing["total"]
    seconds = timing.get("duration") if isinstance(timing, dict) else None
    row["duration"] = seconds if isinstance(seconds, (int, float)) else None
    error = observation.metadata.get("error")
    if isinstance(error, dict):
        row["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return row


def why(exc: BaseException) -> str:
    """How an exception reads on the page: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


class RunIndex:
    """The runs of one experiment folder, as rows, refreshed incrementally.

    Parameters
    ----------
    folder : Path
        The experiment folder.
    trust : bool
        Load pickle records even where digital-experiments 3.x did not record
        them (see :func:`~digital_experiments._query.trust_refusal`).
    """

    def __init__(self, folder: Path, trust: bool = False) -> None:
        self.folder = folder
        self.trust = trust
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}  # id -> row
        self.unreadable: dict[str, str] = {}  # id -> why
        self.refused: dict[str, str] = {}  # record suffix -> why its records are not loaded
        self.problem: str | None = None  # why the last refresh failed, if it did
        self.seen: dict[str, int] = {}  # file name -> inode
        self.marks: dict[str, tuple[int, int]] = {}  # annotation file -> inode, mtime_ns
        self.stamp: tuple[int, int | None] | None = None  # mtime_ns of folder, annotations
        self.settled = False  # whether self.stamp is too old to hide a change
        self.version = 0
        self._sorted: tuple[int, list[dict[str, Any]]] | None = None
        self.backends: dict[str, FileBackend] = {}  # by record suffix

    def refresh(self) -> bool:
        """Reread what changed; whether anything did."""
        notes = os.fspath(layout.internal(self.folder, "annotations"))
        try:
            folder_stamp = os.stat(self.folder).st_mtime_ns
        except OSError:
            return False
        try:
            notes_stamp: int | None = os.stat(notes).st_mtime_ns
        except OSError:
            notes_stamp = None
        stamp = (folder_stamp, notes_stamp)
        running = self._running()
        if stamp == self.stamp and self.settled and not running:
            return False
        suffixes = self._suffixes()
        refused = {}
        for suffix, backend in suffixes.items():
            refusal = query.trust_refusal(backend, self.trust)
            if refusal is not None:
                refused[suffix] = refusal
        current: dict[str, int] = {}
        with os.scandir(self.folder) as entries:  # plain strings: 100,000 Paths cost seconds
            for entry in entries:
                name = entry.name
                suffix = os.path.splitext(name)[1]
                if name[0] == "." or suffix not in suffixes or suffix in refused:
                    continue
                # records are published by rename, so a new version is a new inode,
                # which the listing gives without a stat per file
                current[name] = entry.inode()
        same = self.settled and self.stamp is not None and self.stamp[1] == notes_stamp
        marks = self.marks if same else self._marks(notes)
        # changed files, running runs (whose process may have died since), and runs
        # whose tags or notes changed (their records did not)
        changed = [n for n, sig in current.items() if self.seen.get(n) != sig]
        touched = {n[:-5] for n in marks.keys() ^ self.marks.keys()}
        touched |= {n[:-5] for n, sig in marks.items() if self.marks.get(n, sig) != sig}
        for id in running | touched:
            changed += [id + suffix for suffix in suffixes if id + suffix in current]
        gone = [n for n in self.seen if n not in current]
        with warnings.catch_warnings():  # the page shows what is wrong; no one reads stderr
            warnings.simplefilter("ignore")
            loaded, unreadable = self._load(dict.fromkeys(changed), suffixes)
            rows = self._rows(loaded, unreadable)
        with self.lock:
            moved = bool(gone) or any(self.rows.get(id) != row for id, row in rows.items())
            moved = moved or any(self.unreadable.get(id) != t for id, t in unreadable.items())
            moved = moved or refused != self.refused or self.problem is not None
            for name in gone:
                id = os.path.splitext(name)[0]
                self.rows.pop(id, None)
                self.unreadable.pop(id, None)
            for id in unreadable:
                self.rows.pop(id, None)  # a run reread and now unreadable
            self.rows.update(rows)
            for id in rows:
                self.unreadable.pop(id, None)
            self.unreadable.update(unreadable)
            self.refused = refused
            self.problem = None
            self.seen = current
            self.marks = marks
            self.stamp = stamp
            self.settled = settled(*stamp)
            if moved:
                self.version += 1
        return moved

    def update(self) -> bool:
        """:meth:`refresh`, with a failure kept in :attr:`problem` (shown on the
        experiment's page) instead of raised: the view goes on, and retries."""
        try:
            return self.refresh()
        except Exception as exc:
            with self.lock:
                if self.problem != why(exc):
                    self.problem = why(exc)
                    self.version += 1
            return True

    @staticmethod
    def _load(
        names: Iterable[str], suffixes: dict[str, FileBackend]
    ) -> tuple[list[Observation], dict[str, str]]:
        loaded, unreadable = [], {}
        for name in names:
            id, suffix = os.path.splitext(name)
            try:
                loaded.append(suffixes[suffix].load(id))
            except FileNotFoundError:
                continue
            except Exception as exc:  # a torn or foreign file: shown as unreadable
                unreadable[id] = why(exc)
        return loaded, unreadable

    def _rows(
        self, loaded: list[Observation], unreadable: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        """The rows of ``loaded``; a run whose row cannot be built joins ``unreadable``."""
        with contextlib.suppress(Exception):  # one odd record: find it by building each row
            table = query.rows(loaded, "last", metadata=False)
            return {o.id: row_of(o, row) for o, row in zip(loaded, table, strict=True)}
        rows = {}
        for observation in loaded:
            try:
                (row,) = query.rows([observation], "last", metadata=False)
                rows[observation.id] = row_of(observation, row)
            except Exception as exc:
                unreadable[observation.id] = why(exc)
        return rows

    @staticmethod
    def _marks(notes: str) -> dict[str, tuple[int, int]]:
        """The annotation files of the folder, each with its inode and mtime."""
        found: dict[str, tuple[int, int]] = {}
        with contextlib.suppress(OSError), os.scandir(notes) as entries:  # none (yet)
            for entry in entries:
                if entry.name.endswith(".json") and layout.is_id(entry.name[:-5]):
                    with contextlib.suppress(OSError):  # removed while listing
                        found[entry.name] = (entry.inode(), entry.stat().st_mtime_ns)
        return found

    def _suffixes(self) -> dict[str, FileBackend]:
        """A backend for each record suffix (``.pkl``, ``.json``...) of the registry."""
        for name in available_backends():
            cls = backend_class(name)
            if not (isinstance(cls, type) and issubclass(cls, FileBackend)):
                continue
            suffix = getattr(cls, "suffix", None)
            if isinstance(suffix, str) and suffix not in self.backends:
                self.backends[suffix] = cls(self.folder)
        return self.backends

    def _running(self) -> set[str]:
        """Ids of running runs: one can turn abandoned without any file changing."""
        with self.lock:
            return {id for id, row in self.rows.items() if row["status"] == "running"}

    def snapshot(self) -> list[dict[str, Any]]:
        """Every row, oldest first (sorted once per version)."""
        with self.lock:
            if self._sorted is None or self._sorted[0] != self.version:
                self._sorted = (self.version, [self.rows[id] for id in sorted(self.rows)])
            return self._sorted[1]

    def load(self, id: str) -> Observation:
        """Run ``id`` in full.

        Raises
        ------
        FileNotFoundError
            If there is no such run.
        Refused
            If its record is a pickle this view may not load (see ``trust``).
        """
        for backend in self._suffixes().values():
            if backend.path(id).exists():
                refusal = query.trust_refusal(backend, self.trust)
                if refusal is not None:
                    raise Refused(refusal)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return backend.load(id)
        raise FileNotFoundError(id)


class Watcher:
    """One thread that keeps every index of a root fresh.

    ``discover``, if given, is called before each round, to add the experiment
    folders that appeared and drop the ones that went.
    """

    def __init__(
        self, indexes: dict[str, RunIndex], discover: Callable[[], object] | None = None
    ) -> None:
        self.indexes = indexes
        self.discover = discover
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name="digital-experiments-ui", daemon=True
        )

    def start(self) -> None:
        self._round()
        self.thread.start()

    def _round(self) -> None:
        if self.discover is not None:
            with contextlib.suppress(Exception):  # the root being moved: keep what is known
                self.discover()
        for index in list(self.indexes.values()):
            index.update()

    def _loop(self) -> None:
        while not self.stop.wait(INTERVAL):
            self._round()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
