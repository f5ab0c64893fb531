"""What the web view shows, kept up to date by one watcher per experiment folder.

A :class:`RunIndex` holds one flat row per run of one experiment folder. Its
:meth:`~RunIndex.refresh` rereads only what changed: nothing when the folder's
mtime has not moved (publishing a record by rename changes it), else the records
whose inode changed (a record is replaced by rename, so a new version is a new
inode, which a listing gives without a stat per file), and it drops the ones
that are gone. A background thread refreshes every index twice a second, so
however many browsers watch, the disk is scanned once per folder, and each
change bumps :attr:`RunIndex.version`, which the live view waits on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from .. import _query as query
from .._backends import FileBackend, available_backends, backend_class
from .._records import Observation

INTERVAL = 0.5  # seconds between two looks at a folder


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


class RunIndex:
    """The runs of one experiment folder, as rows, refreshed incrementally."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}  # id -> row
        self.unreadable: dict[str, str] = {}  # id -> why
        self.seen: dict[str, int] = {}  # file name -> inode
        self.stamp: int | None = None  # the folder's mtime_ns at the last scan
        self.version = 0
        self._sorted: tuple[int, list[dict[str, Any]]] | None = None
        self.backends: dict[str, FileBackend] = {}  # by record suffix

    def refresh(self) -> bool:
        """Reread what changed; whether anything did."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except OSError:
            return False
        running = self._running()
        if stamp == self.stamp and not running:
            return False
        suffixes = self._suffixes()
        current: dict[str, int] = {}
        with os.scandir(self.folder) as entries:  # plain strings: 100,000 Paths cost seconds
            for entry in entries:
                name = entry.name
                if name[0] == "." or os.path.splitext(name)[1] not in suffixes:
                    continue
                # records are published by rename, so a new version is a new inode,
                # which the listing gives without a stat per file
                current[name] = entry.inode()
        # changed files, and running runs (whose process may have died since)
        changed = [n for n, sig in current.items() if self.seen.get(n) != sig]
        for id in running:
            changed += [id + suffix for suffix in suffixes if id + suffix in current]
        gone = [n for n in self.seen if n not in current]
        loaded, unreadable = [], {}
        for name in dict.fromkeys(changed):
            id, suffix = os.path.splitext(name)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    observation = suffixes[suffix].load(id)
            except FileNotFoundError:
                continue
            except Exception as exc:  # a torn or foreign file: shown as unreadable
                unreadable[id] = f"{type(exc).__name__}: {exc}"
                continue
            loaded.append(observation)
        table = query.rows(loaded, "last", metadata=False)
        rows = {o.id: row_of(o, row) for o, row in zip(loaded, table, strict=True)}
        with self.lock:
            moved = bool(gone) or any(self.rows.get(id) != row for id, row in rows.items())
            moved = moved or any(self.unreadable.get(id) != why for id, why in unreadable.items())
            for name in gone:
                id = os.path.splitext(name)[0]
                self.rows.pop(id, None)
                self.unreadable.pop(id, None)
            self.rows.update(rows)
            for id in rows:
                self.unreadable.pop(id, None)
            self.unreadable.update(unreadable)
            self.seen = current
            self.stamp = stamp
            if moved:
                self.version += 1
        return moved

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
        for backend in self.backends.values():
            if backend.path(id).exists():
                return backend.load(id)
        raise FileNotFoundError(id)


class Watcher:
    """One thread that keeps every index of a root fresh."""

    def __init__(self, indexes: dict[str, RunIndex]) -> None:
        self.indexes = indexes
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name="digital-experiments-ui", daemon=True
        )

    def start(self) -> None:
        for index in self.indexes.values():
            index.refresh()
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(INTERVAL):
            for index in list(self.indexes.values()):
                with contextlib.suppress(Exception):  # a folder being deleted: next time
                    index.refresh()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
