"""A store in memory, for tests (as httpx ships ``MockTransport``): the
experiment and results suites run against it to prove that nothing above the
store interface reaches for a disk."""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .base import Missing, Store


class MemoryStore(Store):
    """Objects in a dict, safe across threads (one lock per store)."""

    def __init__(self, name: str = "memory") -> None:
        self.url = f"memory://{name}"
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)
        self._written: dict[str, float] = {}  # key -> when (monotonic), for age()
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        with self._lock:
            if self._workdir is None:  # made on first use: most tests need none
                self._workdir = Path(tempfile.mkdtemp(prefix="de-memory-"))
            return self._workdir

    # each store in memory is its own, whatever its name
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def _next(self, key: str) -> str:
        self._written[key] = time.monotonic()
        return str(next(self._versions))

    def age(self, key: str) -> float | None:
        with self._lock:
            when = self._written.get(key) if key in self._objects else None
        return None if when is None else time.monotonic() - when

    def get(self, key: str) -> tuple[bytes, str]:
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise Missing(f"No object {key!r} in {self.url!r}.") from None

    def version(self, key: str) -> str | None:
        with self._lock:
            found = self._objects.get(key)
        return found[1] if found is not None else None

    def put_new(self, key: str, data: bytes) -> str | None:
        with self._lock:
            if key in self._objects:
                return None
            version = self._objects[key] = (bytes(data), self._next(key))
            return version[1]

    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        with self._lock:
            found = self._objects.get(key)
            if found is None or found[1] != version:
                return None
            self._objects[key] = (bytes(data), self._next(key))
            return self._objects[key][1]

    def put(self, key: str, data: bytes, *, sync: bool = True) -> str:
        with self._lock:
            self._objects[key] = (bytes(data), self._next(key))
            return self._objects[key][1]

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        folder = prefix.rpartition("/")[0]
        depth = folder.count("/") + 1 if folder else 0
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        for key in keys:
            if key.count("/") == depth and (start_after is None or key > start_after):
                yield key

    def folders(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = [k[len(prefix) :] for k in self._objects if k.startswith(prefix)]
        yield from sorted({rest.partition("/")[0] for rest in keys if "/" in rest})

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)
