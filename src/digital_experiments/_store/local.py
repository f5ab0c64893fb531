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
from collections.abc import Iterator
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

    @property
    def workdir(self) -> Path:
        return self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, checked(key))

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
        folder, _, start = prefix.rpartition("/")
        base = os.path.join(self.root, folder) if folder else os.fspath(self.root)
        try:
            with os.scandir(base) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if entry.name.startswith(start)
                    and not storage.is_temp(entry.name)
                    and entry.is_file()
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        head = f"{folder}/" if folder else ""
        for name in names:
            key = head + name
            if start_after is None or key > start_after:
                yield key

    def folders(self, prefix: str) -> Iterator[str]:
        base = os.path.join(self.root, prefix) if prefix else os.fspath(self.root)
        try:
            with os.scandir(base) as entries:
                names = sorted(entry.name for entry in entries if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))


def _version(stat: os.stat_result) -> str:
    # a rename publishes a new inode, so a rewrite of the same bytes is a new version
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"
