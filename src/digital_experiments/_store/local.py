"""A store in a local (or network) folder: today's layout, one file per key.

Writes are atomic (temp file, rename); :meth:`LocalStore.put_new` publishes by
``link`` of a finished temp file, exclusive at the server on NFSv3+ as on a
local disk, and settles an "exists" by reading the file back (an NFS retry can
report ``EEXIST`` for a link that succeeded). :meth:`LocalStore.put_if` holds a
file lock around its check and rename: exact on one host, so nothing that must
hold across hosts relies on it (claims use :meth:`put_new` alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .._model import layout
from . import files as storage
from .base import Missing, Store, checked


class LocalStore(Store):
    """The objects of a folder ``root``; ``fsync`` syncs each write to the disk."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = self.folder = Path(root)
        self.url = os.fspath(root)
        self.fsync = fsync
        # "<root>/" as a str, made once: keys become paths by one concatenation
        # (a Path, or os.path.join of one, costs more than the write it names)
        self._head = os.path.join(self.url, "")
        self._folders: dict[str, str] = {}  # prefix -> path, for modified()

    @property
    def workdir(self) -> Path:
        return self.root

    def _path(self, key: str) -> str:
        return self._head + checked(key)

    def get(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                data = file.read()
                return data, _version(os.fstat(file.fileno()))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise Missing(f"No object {key!r} in {self.url!r}.") from None

    def read(self, key: str) -> bytes:
        try:
            return storage.read_bytes(self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise Missing(f"No object {key!r} in {self.url!r}.") from None

    def version(self, key: str) -> str | None:
        try:
            return _version(os.stat(self._path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def age(self, key: str) -> float | None:
        try:
            return time.time() - os.stat(self._path(key)).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put_new(self, key: str, data: bytes) -> str | None:
        path = self._path(key)
        try:
            created = storage.exclusive_write(path, data, fsync=self.fsync)
        except FileNotFoundError:  # the key's folder, made once
            os.makedirs(os.path.dirname(path), exist_ok=True)
            created = storage.exclusive_write(path, data, fsync=self.fsync)
        if not created:
            return self.settle_new(key, data)
        return self.version(key)

    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        lock = layout.lock(self.root, f"store-{digest}")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with storage.file_lock(lock):
            if self.version(key) != version:
                return None
            return self.put(key, data)

    def put(self, key: str, data: bytes, *, sync: bool = True) -> str:
        path = self._path(key)
        fsync = self.fsync and sync
        try:
            storage.atomic_write(path, data, fsync=fsync)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            storage.atomic_write(path, data, fsync=fsync)
        found = self.version(key)
        return found if found is not None else ""

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        """The files of one folder, by one ``scandir``; the temp files of writers
        known dead (a ``kill -9`` mid-write) are removed on the way."""
        folder, entries = self._entries(prefix)
        names = sorted(entries)
        if folder:
            names = [f"{folder}/{name}" for name in names]
        if start_after is not None:
            names = [key for key in names if key > start_after]
        yield from names

    def stamped(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        """Each file's inode, size, mtime and ctime (a rename's new inode, an
        in-place edit's times, a tar's unlink and create with the old mtime: its
        ctime), by one ``scandir`` and a ``stat`` each; ``None`` for a file whose
        times are too recent to be sure a later change moves them (git's "racy"
        rule: :func:`files.settled`)."""
        now, recent = time.time_ns(), storage.RECENT_NS
        folder, entries = self._entries(prefix)
        head = f"{folder}/" if folder else ""
        stamps: list[tuple[str, str | None]] = []
        for name, entry in entries.items():
            try:
                stat = entry.stat()
            except OSError:  # gone since listed, or a dangling link
                continue
            changed = stat.st_ctime_ns
            if now - max(stat.st_mtime_ns, changed) > recent:
                stamp: str | None = f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}-{changed}"
            else:
                stamp = None
            stamps.append((head + name, stamp))
        stamps.sort()
        yield from stamps

    def _entries(self, prefix: str) -> tuple[str, dict[str, os.DirEntry[str]]]:
        """The folder part of ``prefix``, and its files whose names start with the
        rest (without temp files; those of dead writers are removed)."""
        folder, _, start = prefix.rpartition("/")
        base = self._head + folder if folder else self.url
        try:
            with os.scandir(base) as scan:
                entries = {entry.name: entry for entry in scan if entry.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return folder, {}
        # temp names share a prefix few other names have: one pass of startswith
        temps = [name for name in entries if name.startswith(storage.TEMP_PREFIX)]
        for name in temps:
            if storage.is_temp(name):
                del entries[name]
                storage.remove_stale_temp(Path(base), name)
        if start:
            entries = {name: e for name, e in entries.items() if name.startswith(start)}
        return folder, entries

    def folders(self, prefix: str) -> Iterator[str]:
        base = os.path.join(self.root, prefix) if prefix else os.fspath(self.root)
        try:
            with os.scandir(base) as entries:
                names = sorted(entry.name for entry in entries if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def delete(self, key: str) -> None:
        # unlinks a link itself, never what it points to
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    # -- the folder's faster ways (see Store)

    def write(self, key: str, data: bytes, *, sync: bool = True) -> None:
        # temp file and rename; the temp's first write makes a missing folder
        storage.atomic_write(self._path(key), data, fsync=self.fsync and sync)

    def create_reserved(
        self, first_id: str, key: Callable[[str], str], data: Callable[[str], bytes]
    ) -> str:
        """Reserve the first free id at or after ``first_id`` in ``.de/ids`` and
        publish ``data(id)`` at ``key(id)``, creating one file (see
        :func:`files.create_reserved`); :meth:`settle_reserved` once it is replaced."""
        head = self._head
        return storage.create_reserved(self.root, first_id, lambda id: head + key(id), data)

    def settle_reserved(self, id: str) -> None:
        """Empty ``id``'s reservation: its first record has been replaced."""
        storage.settle_reserved(self.root, id)

    def has(self, key: str) -> bool:
        return os.path.lexists(self._path(key))

    def read_many(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes | OSError]]:
        # a file that is there and cannot be read is that record's problem, not the folder's
        read, head = storage.read_bytes, self._head
        for key in keys:
            if not key or key[0] == "/" or ".." in key:  # checked() only where it may refuse
                checked(key)
            try:
                data = read(head + key)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                yield key, Missing(f"No object {key!r} in {self.url!r}.")  # as read() says
            except OSError as exc:
                yield key, exc
            else:
                yield key, data

    def modified(self, prefix: str) -> int | None:
        # one stat of the folder (asked once per record read: its path is made once);
        # a folder that cannot be stat'ed cannot be listed either
        path = self._folders.get(prefix)
        if path is None:
            path = self._folders[prefix] = self._head + checked(prefix) if prefix else self.url
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return 0

    def prepare(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def walk(self, prefix: str) -> Iterator[str]:
        """Every file under ``prefix``, by ``os.walk``: a link at ``prefix`` itself is
        followed (a run folder moved elsewhere and linked back), links below it
        are not, and unreadable folders are skipped, so a dangling or looping
        link never makes this raise."""
        top = self._head + checked(prefix).rstrip("/") if prefix else self.url
        start = len(self._head)
        for folder, _, names in os.walk(top):
            for name in names:
                path = os.path.join(folder, name)
                if not storage.is_temp(name) and os.path.isfile(path):
                    yield path[start:].replace(os.sep, "/")


def _version(stat: os.stat_result) -> str:
    # a rename publishes a new inode, so a rewrite of the same bytes is a new version
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"
