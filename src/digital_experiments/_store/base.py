"""The :class:`Store` interface: the few operations a record store needs.

Keys are relative, ``/``-separated (``2026-01-01_00-00-00_000000.pkl``,
``.de/ids/<id>``); a version is an opaque string that changes whenever the
object is written (an S3 ETag, a local inode and time). Stores never interpret
the bytes they keep.

Create-only writes (:meth:`Store.put_new`) are how many hosts agree on
something without a lock: exactly one writer of a key wins. A write whose
answer was lost (a timeout, a dropped connection, a retry that reports
"exists" after the first try succeeded) is settled by reading the object back
and comparing bytes, so *what a caller creates must be unique to it* (claims
carry a random token): then a match proves the caller wrote it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import DigitalExperimentsError


class Missing(DigitalExperimentsError, FileNotFoundError):
    """No object at that key (a :class:`FileNotFoundError`, as records always raised)."""


class StoreError(DigitalExperimentsError, OSError):
    """The store could not be reached or refused the request; the message says
    which setting to fix."""


def checked(key: str) -> str:
    """``key``, if it is a relative key inside the root (no ``..``, no leading ``/``).

    Raises
    ------
    ValueError
        Otherwise: a key must never reach outside its root, on any store.
    """
    # the split only for a key holding "..": most keys hold none (this is on every read)
    if not key or key[0] == "/" or (".." in key and ".." in key.split("/")):
        raise ValueError(f"Invalid key {key!r}: keys are relative paths inside the root.")
    return key


class Store(ABC):
    """One root's objects, by key.

    Subclasses implement the six primitives; every policy above (records,
    claims, trash, cache, metrics) is written once on top of them.
    """

    url: str
    """Where the store is, for messages: a folder path or ``s3://bucket/prefix``."""

    folder: Path | None = None
    """The folder whose files are this store's objects, when it is one (a local
    or network folder); ``None`` for a remote store. Policies above may take a
    folder's faster paths (an append, a rename) only where this is set."""

    @property
    def workdir(self) -> Path:
        """A local folder for this root's working files: each run's
        ``current_dir()`` (staged here, then uploaded) and the artefacts
        downloaded on demand. A folder store's is the folder itself."""
        raise NotImplementedError(f"{type(self).__name__} has no working folder")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # two stores of one kind at one URL are one store (a folder opened twice)
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Store) and other.url == self.url

    def __hash__(self) -> int:
        return hash((type(self), self.url))

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, str]:
        """The bytes at ``key`` and their version.

        Raises
        ------
        Missing
            If there is no object at ``key``.
        """

    @abstractmethod
    def version(self, key: str) -> str | None:
        """The version of ``key`` (``None`` if missing), without its bytes."""

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> str | None:
        """Create ``key`` holding ``data`` only if it does not exist: its version,
        or ``None`` when another writer's object is there (nothing is written).

        Of any number of concurrent callers, on any number of hosts, exactly one
        gets a version. Readers see the whole object or none.
        """

    @abstractmethod
    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        """Replace ``key`` with ``data`` only if it is still at ``version``: the new
        version, or ``None`` when it moved or is gone (nothing is written)."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, sync: bool = True) -> str:
        """Write ``data`` at ``key``, replacing what is there; its version.
        Readers see the old object or the new one, never a part. ``sync=False``
        lets a folder skip the wait for the disk (for caches such as the cache
        index); a remote store's write is durable when it answers, either way."""

    @abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        """The keys that start with ``prefix``, sorted, each after ``start_after``
        when given (so a listing can resume, and ``since=`` skips old ids)."""

    def folders(self, prefix: str) -> Iterator[str]:
        """The names of the "folders" directly under ``prefix`` (which ends in
        ``/``, or is empty): the next part of every deeper key, sorted, once each."""
        raise NotImplementedError(f"{type(self).__name__} does not list folders")

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if it is missing)."""

    def read(self, key: str) -> bytes:
        """The bytes at ``key`` (:meth:`get` without the version).

        Raises
        ------
        Missing
            If there is no object at ``key``.
        """
        return self.get(key)[0]

    # -- beyond the primitives: each has a generic default, and a store overrides
    # it where it has a faster way (a folder: no stat after a write, one scandir)

    def write(self, key: str, data: bytes, *, sync: bool = True) -> None:
        """:meth:`put` without asking for the new version (a folder saves a ``stat``)."""
        self.put(key, data, sync=sync)

    def has(self, key: str) -> bool:
        """Whether anything is at ``key`` (in a folder, a dangling link counts: the
        name is taken)."""
        return self.version(key) is not None

    def read_many(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes | OSError]]:
        """``(key, bytes)`` for each of ``keys``, in order, or ``(key, error)`` for one
        that cannot be read: a :class:`Missing` for a key deleted since it was
        listed, any other ``OSError`` for an object that is there but unreadable (a
        folder's file with no permission). A listing skips those and goes on; an
        error of the store as a whole (a bucket out of reach) raises. Remote stores
        fetch in parallel."""
        for key in keys:
            try:
                data = self.read(key)
            except Missing as missing:
                yield key, missing
            else:
                yield key, data

    def modified(self, prefix: str) -> int | None:
        """When a key directly under the folder ``prefix`` was last added, replaced or
        removed, in :func:`time.time_ns` units (a folder's mtime); ``0`` when there is
        no such folder; ``None`` when the store cannot say without a listing (a
        bucket), so callers list. As coarse as the clock: a change in the same tick
        as the last may not move it (see ``files.settled``)."""
        return None

    def prepare(self) -> None:
        """Make the store ready to write: a folder is created, with its parents;
        other stores need nothing (a prefix exists once a key is under it).

        Raises
        ------
        OSError
            If the folder cannot be created (a file in its place, no permission).
        """
        return None

    def versions(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """``(key, version)`` of each key :meth:`list` gives (S3 lists them together:
        one request a thousand keys, where a folder stats each file)."""
        for key in self.list(prefix):
            version = self.version(key)
            if version is not None:  # deleted since it was listed
                yield key, version

    def stamped(self, prefix: str = "") -> Iterator[tuple[str, str | None]]:
        """``(key, stamp)`` of each key :meth:`list` gives: a stamp is a version that
        moves whenever the object is rewritten, however it was written, or
        ``None`` when the store cannot vouch for that yet (a folder's file changed
        within its clock's last tick). What the read index checks a record by;
        an S3 ETag and the memory store's counter always vouch."""
        yield from self.versions(prefix)

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was last written, by the store's own clock (an S3
        server's, a folder's filesystem): ``None`` if it is missing or the store
        cannot say. Readers on other hosts judge a heartbeat by it without
        comparing their clock with the writer's."""
        return None

    def copy(self, source: str, target: str) -> str:
        """Write the bytes at ``source`` at ``target`` too; the new version (a
        server-side copy on S3: artefacts never travel through this host).

        Raises
        ------
        Missing
            If there is no object at ``source``.
        """
        return self.put(target, self.read(source))

    def walk(self, prefix: str) -> Iterator[str]:
        """Every key under the folder ``prefix`` (which ends in ``/``), at any depth."""
        yield from self.list(prefix)
        for name in self.folders(prefix):
            yield from self.walk(f"{prefix}{name}/")

    def get_or_none(self, key: str) -> tuple[bytes, str] | None:
        """:meth:`get`, with ``None`` for a missing key."""
        try:
            return self.get(key)
        except Missing:
            return None

    def get_many(self, keys: Sequence[str]) -> Iterator[tuple[str, tuple[bytes, str] | None]]:
        """``(key, (bytes, version))`` for each of ``keys``, in order (``None`` for a
        key deleted since it was listed). Remote stores fetch them in parallel."""
        for key in keys:
            yield key, self.get_or_none(key)

    def check(self) -> None:
        """Fail now, with a :class:`StoreError` naming the setting to fix, if the
        store cannot be used (remote stores ask the server; folders need nothing)."""
        return None

    def settle_new(self, key: str, data: bytes) -> str | None:
        """After a create-only write whose answer was lost or said "exists": the
        version if the object at ``key`` is ``data`` (ours), else ``None``."""
        found = self.get_or_none(key)
        return found[1] if found is not None and found[0] == data else None
