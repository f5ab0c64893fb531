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

A run's row is built by :func:`~digital_experiments._read.query.rows`, the builder
``where=`` and ``sort=`` use in Python and on the command line, ``metadata.*``
included, so a query means the same everywhere. What the page shows besides
(duration, error, when a running run started and its last step) is kept apart
in :attr:`RunIndex.extras` and is never queried.

Pickle records are loaded only where :func:`~digital_experiments._read.roots.trust_refusal`
allows (a folder digital-experiments 3.x recorded, or ``trust``); a record whose
row cannot be built is shown as unreadable, and the rest of the folder still is.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._model import layout
from .._read import query, roots
from .._runs.backends import FileBackend, available_backends, backend_class, root_store
from .._runs.index import paused_gc
from .._runs.observation import Observation
from .._store import Store, open_store
from .._store.files import settled

INTERVAL = 0.5  # seconds between two looks at a folder
REMOTE_INTERVAL = 5.0  # seconds between two looks at a bucket (each costs requests)
TAIL = 16_384  # bytes read from the end of a running run's metrics file
SAMPLE = 5_000  # rows looked at to tell numeric and varying columns
_MANY = 64  # changed records read through the root's index rather than one by one
ID_FORMAT = "%Y-%m-%d_%H-%M-%S_%f"  # ids are the time of the claim, in UTC
# the table's order of namespaces ("duration" is shown, not a field)
ORDER = ("id", "status", "duration", "config", "result", "metrics", "tags", "notes", "metadata")


class Refused(Exception):
    """A record the view will not load: unpickling it would need trust."""


def extras_of(observation: Observation, status: str, store: Store) -> dict[str, Any]:
    """What the runs table shows of a run besides its fields: ``duration`` (seconds),
    ``error`` (``Type: message``), and for a running run ``started`` (seconds since
    the epoch, from its id, which is UTC) and ``step`` (the last step it logged)."""
    extras: dict[str, Any] = {"duration": duration_of(observation.metadata)}
    error = observation.metadata.get("error")
    if isinstance(error, dict):
        extras["error"] = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    if status == "running":
        with contextlib.suppress(ValueError):
            claimed = datetime.strptime(observation.id, ID_FORMAT)
            extras["started"] = claimed.replace(tzinfo=timezone.utc).timestamp()
        extras["step"] = last_step(store, observation.id)
    return extras


def duration_of(metadata: dict[str, Any]) -> float | None:
    """The run's duration in seconds (its ``total`` when :func:`time_block` was used)."""
    timing = metadata.get("timing")
    if isinstance(timing, dict) and isinstance(timing.get("total"), dict):
        timing = timing["total"]
    seconds = timing.get("duration") if isinstance(timing, dict) else None
    return seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def duration_field(columns: Iterable[str]) -> str | None:
    """The field that the ``duration`` column sorts by, among ``columns``."""
    known = set(columns)
    for field in ("metadata.timing.duration", "metadata.timing.total.duration"):
        if field in known:
            return field
    return None


def last_step(store: Store, id: str) -> int | None:
    """The highest step in the last lines of run ``id``'s metrics file, read from its
    end (a running run's file is read twice a second; it may hold millions of points).
    A remote store's is read whole (it is uploaded now and then while the run runs)."""
    try:
        if store.folder is None:
            data = store.read(layout.metrics_key(id))
            size = len(data)
            lines = data[-TAIL:].splitlines()
        else:
            with open(layout.metrics(store.folder, id), "rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - TAIL))
                lines = file.read().splitlines()
    except OSError:
        return None
    if size > TAIL:
        lines = lines[1:]  # the first may be cut
    steps = []
    for line in lines[-64:]:  # one step of a few dozen metrics
        with contextlib.suppress(ValueError):
            point = json.loads(line)
            if isinstance(point, list) and point and type(point[0]) is int:
                steps.append(point[0])
    return max(steps) if steps else None


class Columns:
    """What the table can show of an index's rows: every field (``columns``), in
    the table's order, and which are ``numeric`` and which ``varying`` (not the
    same in every run), judged on at most :data:`SAMPLE` rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        # in the order runs name them (a config's own order), by namespace
        names = dict.fromkeys(itertools.chain.from_iterable(rows))
        self.columns = sorted({"id": None, "status": None, "duration": None, **names}, key=_rank)
        step = max(1, len(rows) // SAMPLE)
        sample = rows[::step] + rows[-SAMPLE // 10 :] if len(rows) > SAMPLE else rows
        numeric: dict[str, bool] = {}
        first: dict[str, Any] = {}
        counts: dict[str, int] = {}
        varying: set[str] = set()
        for row in sample:
            for key, value in row.items():
                if value is None:
                    continue
                counts[key] = counts.get(key, 0) + 1
                if key not in first:
                    first[key] = value
                    numeric[key] = _is_number(value)
                    continue
                if numeric[key] and not _is_number(value):
                    numeric[key] = False
                if key not in varying and not _same(first[key], value):
                    varying.add(key)
        varying.update(k for k, n in counts.items() if n < len(sample))  # missing in some
        self.numeric = [c for c in self.columns if numeric.get(c)]
        self.varying = [c for c in self.columns if c in varying]
        # with a value in some run (tags and notes are rare: never judged on a sample)
        self.filled = [
            c
            for c in self.columns
            if c in counts or c in ("id", "status", "duration", "notes") or c.startswith("tags.")
        ]
        self.duration = duration_field(names)


def labels(rows: list[dict[str, Any] | None], ids: list[str]) -> dict[str, str]:
    """A short name for each run of ``ids`` (``rows``: their fields, ``None`` if not
    known) by what differs in their configs: ``lr=0.2, depth=4``; the id where
    nothing does, and the name followed by the id's time where two share one."""
    keys: dict[str, None] = {}
    for row in rows:
        for key in row or {}:
            if key.startswith("config."):
                keys[key] = None
    differing = []
    for key in keys:
        values = [(row or {}).get(key) for row in rows]
        if any(not _same(values[0], v) for v in values[1:]):
            differing.append(key)
    names = {}
    for id, row in zip(ids, rows, strict=True):
        parts = [f"{k[len('config.') :]}={_short((row or {}).get(k))}" for k in differing[:4]]
        names[id] = ", ".join(parts) + (", …" if len(differing) > 4 else "") or id
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        id: name if counts[name] == 1 or name == id else f"{name} ({id[11:]})"
        for id, name in names.items()
    }


def _short(value: Any) -> str:
    """A config value as a legend names it: ``0.2``, ``1e-05``, ``adam``."""
    if isinstance(value, float):
        return f"{value:.3g}"
    text = "–" if value is None else str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def _rank(name: str) -> int:
    first = name.split(".")[0]
    return ORDER.index(first) if first in ORDER else len(ORDER)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # an odd value with an odd __eq__
        return a is b


def _loaded(backend: FileBackend, id: str) -> Observation | Exception:
    """Run ``id``'s record, or what stopped its reading."""
    try:
        return backend.load(id)
    except Exception as exc:  # a torn or foreign file: shown as unreadable
        return exc


def why(exc: BaseException) -> str:
    """How an exception reads on the page: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


class RunIndex:
    """The runs of one experiment folder, as rows, refreshed incrementally.

    Parameters
    ----------
    folder : Path or str
        The experiment folder, or an ``s3://`` URL of one (looked at every
        :data:`REMOTE_INTERVAL` seconds, listing records and annotations with
        their versions).
    trust : bool
        Load pickle records even where digital-experiments 3.x did not record
        them (see :func:`~digital_experiments._read.roots.trust_refusal`).
    """

    def __init__(self, folder: Path | str, trust: bool = False) -> None:
        self.where = folder
        self.store = open_store(folder)
        self.folder: Path = self.store.workdir  # where artefacts are (downloaded)
        self.remote = self.store.folder is None
        self.looked: float | None = None  # when a remote index last listed (monotonic)
        self.trust = trust
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}  # id -> its fields (query.rows)
        self.extras: dict[str, dict[str, Any]] = {}  # id -> what is shown besides
        self.unreadable: dict[str, str] = {}  # id -> why
        self.refused: dict[str, str] = {}  # record suffix -> why its records are not loaded
        self.problem: str | None = None  # why the last refresh failed, if it did
        self.seen: dict[str, Any] = {}  # file name -> inode (a bucket: its version)
        self.marks: dict[str, Any] = {}  # annotation file -> inode, mtime_ns (or version)
        self.stamp: tuple[int, int | None] | None = None  # mtime_ns of folder, annotations
        self.settled = False  # whether self.stamp is too old to hide a change
        self.version = 0
        self._sorted: tuple[int, list[dict[str, Any]]] | None = None
        self._columns: tuple[int, Columns] | None = None
        self.backends: dict[str, FileBackend] = {}  # by record suffix

    def refresh(self) -> bool:
        """Reread what changed; whether anything did."""
        if self.remote:
            now = time.monotonic()
            if self.looked is not None and now - self.looked < REMOTE_INTERVAL:
                return False
            self.looked = now
            return self._refresh(None, self._remote_marks())
        notes = os.fspath(layout.internal(self.folder, "annotations"))
        # when the times were read: a listing that takes seconds must not make
        # them look settled (a write in their tick, after the listing, hides)
        read_at = time.time_ns()
        try:
            folder_stamp = os.stat(self.folder).st_mtime_ns
        except OSError:
            return False
        try:
            notes_stamp: int | None = os.stat(notes).st_mtime_ns
        except OSError:
            notes_stamp = None
        stamp = (folder_stamp, notes_stamp)
        if stamp == self.stamp and self.settled and not self._running():
            return False
        same = self.settled and self.stamp is not None and self.stamp[1] == notes_stamp
        return self._refresh(stamp, self.marks if same else self._marks(notes), read_at)

    def _refresh(
        self, stamp: tuple[int, int | None] | None, marks: dict[str, Any], read_at: int = 0
    ) -> bool:
        """Reread the records that changed since the last listing (``stamp``: the
        folder's times then, ``None`` for a bucket) and those whose annotations did
        (``marks``: each annotation file's signature now, listed before any record
        is read, so a later change shows at the next refresh)."""
        running = self._running()
        suffixes = self._suffixes()
        refused = {}
        for suffix, backend in suffixes.items():
            refusal = roots.trust_refusal(backend, self.trust)
            if refusal is not None:
                refused[suffix] = refusal
        current = self._listing(suffixes, refused)
        # changed files, running runs (whose process may have died since), and runs
        # whose tags or notes changed (their records did not)
        changed = [n for n, sig in current.items() if self.seen.get(n) != sig]
        touched = {n[:-5] for n in marks.keys() ^ self.marks.keys()}
        touched |= {n[:-5] for n, sig in marks.items() if self.marks.get(n, sig) != sig}
        for id in running | touched:
            changed += [id + suffix for suffix in suffixes if id + suffix in current]
        gone = [n for n in self.seen if n not in current]
        # the page shows what is wrong (no one reads stderr); the collector is paused
        # while many rows are built at once (it would scan them again and again)
        with warnings.catch_warnings(), paused_gc():
            warnings.simplefilter("ignore")
            loaded, unreadable = self._load(dict.fromkeys(changed), suffixes)
            rows, extras = self._rows(loaded, unreadable)
        with self.lock:
            moved = bool(gone) or any(self.rows.get(id) != row for id, row in rows.items())
            moved = moved or any(self.extras.get(id) != e for id, e in extras.items())
            moved = moved or any(self.unreadable.get(id) != t for id, t in unreadable.items())
            moved = moved or refused != self.refused or self.problem is not None
            for name in gone:
                id = os.path.splitext(name)[0]
                self.rows.pop(id, None)
                self.extras.pop(id, None)
                self.unreadable.pop(id, None)
            for id in unreadable:
                self.rows.pop(id, None)  # a run reread and now unreadable
                self.extras.pop(id, None)
            self.rows.update(rows)
            self.extras.update(extras)
            for id in rows:
                self.unreadable.pop(id, None)
            self.unreadable.update(unreadable)
            self.refused = refused
            self.problem = None
            self.seen = current
            self.marks = marks
            self.stamp = stamp
            self.settled = stamp is not None and settled(*stamp, now=read_at)
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
        by_suffix: dict[str, list[str]] = {}
        for name in names:
            id, suffix = os.path.splitext(name)
            by_suffix.setdefault(suffix, []).append(id)
        for suffix, ids in by_suffix.items():
            backend = suffixes[suffix]
            if len(ids) > _MANY and all(map(layout.is_id, ids)):
                # a first load, or many changes: through the root's read index
                found = backend.load_many(ids, stamps=backend.stamps())
            else:
                found = ((id, _loaded(backend, id)) for id in ids)
            for id, run in found:
                if isinstance(run, Observation):
                    loaded.append(run)
                elif not isinstance(run, FileNotFoundError):  # a torn or foreign file
                    unreadable[id] = why(run)
        return loaded, unreadable

    def _rows(
        self, loaded: list[Observation], unreadable: dict[str, str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The rows of ``loaded`` (built by :func:`~digital_experiments._read.query.rows`,
        as Python and the CLI build them) and their extras; a run whose row cannot be
        built joins ``unreadable``."""
        rows, extras = {}, {}
        try:
            table = query.rows(loaded, "last")
            built = list(zip(loaded, table, strict=True))
        except Exception:  # one odd record: find it by building each row
            built = []
            for observation in loaded:
                try:
                    (row,) = query.rows([observation], "last")
                    built.append((observation, row))
                except Exception as exc:
                    unreadable[observation.id] = why(exc)
        for observation, row in built:
            try:
                extras[observation.id] = extras_of(observation, row["status"], self.store)
            except Exception as exc:
                unreadable[observation.id] = why(exc)
                continue
            rows[observation.id] = row
        return rows, extras

    def _listing(self, suffixes: dict[str, FileBackend], refused: dict[str, str]) -> dict[str, Any]:
        """Each record's file name and a signature that changes when it is rewritten."""
        current: dict[str, Any] = {}
        if self.remote:
            for name, version in self.store.versions(""):
                suffix = os.path.splitext(name)[1]
                if suffix in suffixes and suffix not in refused:
                    current[name] = version
            return current
        with os.scandir(self.folder) as entries:  # plain strings: 100,000 Paths cost seconds
            for entry in entries:
                name = entry.name
                suffix = os.path.splitext(name)[1]
                if name[0] == "." or suffix not in suffixes or suffix in refused:
                    continue
                # records are published by rename, so a new version is a new inode,
                # which the listing gives without a stat per file
                current[name] = entry.inode()
        return current

    def _remote_marks(self) -> dict[str, Any]:
        """A bucket's annotation objects (``<id>.json``), each with its version."""
        prefix = layout.internal_prefix("annotations")
        return {
            key[len(prefix) :]: version
            for key, version in self.store.versions(prefix)
            if key.endswith(".json") and layout.is_id(key[len(prefix) : -5])
        }

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
                self.backends[suffix] = cls(self.where)
        return self.backends

    def _running(self) -> set[str]:
        """Ids of running runs: one can turn abandoned without any file changing."""
        with self.lock:
            return {id for id, row in self.rows.items() if row["status"] == "running"}

    def snapshot(self) -> list[dict[str, Any]]:
        """Every row, oldest first (sorted once per version)."""
        return self._snapshot()[1]

    def _snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        with self.lock:
            if self._sorted is None or self._sorted[0] != self.version:
                self._sorted = (self.version, [self.rows[id] for id in sorted(self.rows)])
            return self._sorted

    def columns(self) -> Columns:
        """The :class:`Columns` of every row (worked out once per version)."""
        version, rows = self._snapshot()
        with self.lock:
            known = self._columns
        if known is None or known[0] != version:
            known = (version, Columns(rows))
            with self.lock:
                self._columns = known
        return known[1]

    def extra(self, id: str) -> dict[str, Any]:
        """What the table shows of run ``id`` besides its fields (``{}`` if unknown)."""
        with self.lock:
            return self.extras.get(id, {})

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
            if root_store(backend).version(backend.key(id)) is not None:
                refusal = roots.trust_refusal(backend, self.trust)
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
