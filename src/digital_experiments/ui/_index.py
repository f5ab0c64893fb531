"""What the web view shows, kept up to date by one watcher per experiment folder.

A :class:`RunIndex` holds one flat row per run of one experiment folder. Its
:meth:`~RunIndex.refresh` rereads only what changed: nothing when the folder's
mtime has not moved (a record published by rename changes it), else the records
whose size or mtime changed, and drops the ones that are gone. A background
thread refreshes every index twice a second, so however many browsers watch, the
disk is scanned once per folder, and each change bumps :attr:`RunIndex.version`,
which the live view waits on.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .. import _query as query
from .._backends import FileBackend
from .._records import Observation, status_of

INTERVAL = 0.5  # seconds between two looks at a folder


def row_of(observation: Observation) -> dict[str, Any]:
    """A run as the runs table shows it: its flat fields, duration and error."""
    row = query.fields(observation, "last")
    row = {k: v for k, v in row.items() if not k.startswith("metadata.")}
    row["status"] = status_of(observation)
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
        self.seen: dict[str, tuple[int, int]] = {}  # file name -> (mtime_ns, size)
        self.stamp: int | None = None  # the folder's mtime_ns at the last scan
        self.version = 0
        self.backends: dict[str, FileBackend] = {}

    def refresh(self) -> bool:
        """Reread what changed; whether anything did."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except OSError:
            return False
        running = self._running()
        if stamp == self.stamp and not running:
            return False
        formats = query.record_formats(self.folder)
        for name in formats:
            if name not in self.backends:
                self.backends[name] = query.open_root(self.folder, name)
        by_suffix = {b.suffix: b for b in self.backends.values()}
        current: dict[str, tuple[int, int]] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                suffix = Path(entry.name).suffix
                if suffix in by_suffix and not entry.name.startswith("."):
                    try:
                        info = entry.stat()
                    except OSError:
                        continue
                    current[entry.name] = (info.st_mtime_ns, info.st_size)
        # changed files, and running runs (whose process may have died since)
        changed = [n for n, sig in current.items() if self.seen.get(n) != sig]
        changed += [n for n in current if n[: -len(Path(n).suffix)] in running]
        gone = [n for n in self.seen if n not in current]
        rows, unreadable = {}, {}
        for name in dict.fromkeys(changed):
            suffix = Path(name).suffix
            id = name[: -len(suffix)]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    observation = by_suffix[suffix].load(id)
            except FileNotFoundError:
                continue
            except Exception as exc:  # a torn or foreign file: shown as unreadable
                unreadable[id] = f"{type(exc).__name__}: {exc}"
                continue
            rows[id] = row_of(observation)
        with self.lock:
            moved = bool(gone) or any(self.rows.get(id) != row for id, row in rows.items())
            moved = moved or any(self.unreadable.get(id) != why for id, why in unreadable.items())
            for name in gone:
                id = name[: -len(Path(name).suffix)]
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

    def _running(self) -> set[str]:
        """Ids of running runs: one can turn abandoned without any file changing."""
        with self.lock:
            return {id for id, row in self.rows.items() if row["status"] == "running"}

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.rows[id] for id in sorted(self.rows)]

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
                try:
                    index.refresh()
                except Exception:  # a folder being deleted, say: try again next time
                    time.sleep(0)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
