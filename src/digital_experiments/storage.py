"""The one place that knows the rules of the disk.

* ids are *claimed* (``os.link`` of a finished temp file, which fails if the
  target exists), never assumed unique because clocks differ;
* every file is written to a hidden temp file in the same folder, then renamed
  (or linked) into place, so a reader never sees half a file;
* internal files live under ``<root>/.de/`` so ``ls <root>`` shows records only.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import itertools
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _faults
from .errors import LockTimeoutError

if TYPE_CHECKING:
    from filelock import FileLock

ID_FORMAT = "%Y-%m-%d_%H-%M-%S_%f"
INTERNAL = ".de"
TEMP_PREFIX = ".tmp-"
HOST = socket.gethostname()


def new_id(now: datetime | None = None) -> str:
    """A fresh, sortable id ``YYYY-MM-DD_HH-MM-SS_ffffff`` (not yet claimed)."""
    return (now or datetime.now()).strftime(ID_FORMAT)


def next_id(id: str) -> str:
    """The id one microsecond after ``id``: the retry after a lost claim."""
    try:
        when = datetime.strptime(id, ID_FORMAT)
    except ValueError:
        return new_id()
    return new_id(max(when + timedelta(microseconds=1), datetime.now()))


def internal_dir(root: Path, *parts: str) -> Path:
    return root.joinpath(INTERNAL, *parts)


# Temp names need only be unique per process: a random token (in case a pid
# is reused) and a counter are much cheaper than a uuid per write.
_TEMP_TOKEN = uuid.uuid4().hex[:8]
_TEMP_COUNTER = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _temp_path(target: str) -> str:
    # host and pid in the name let a later listing remove leftovers of dead writers
    directory, name = os.path.split(target)
    unique = f"{os.getpid()}-{_TEMP_TOKEN}{next(_TEMP_COUNTER)}"
    return os.path.join(directory, f"{TEMP_PREFIX}{HOST}-{unique}-{name}")


def _write_temp(target: str, data: bytes, fsync: bool) -> str:
    temp = _temp_path(target)
    try:
        fd = os.open(temp, _CREATE, 0o644)
    except FileNotFoundError:  # first write to this folder: no mkdir on the hot path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(temp, _CREATE, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        _faults.point("write_temp.written", temp)
        if fsync:
            _sync_data(fd)
    except BaseException:
        os.close(fd)
        _unlink(temp)
        raise
    os.close(fd)
    return temp


# fdatasync flushes the data and the size needed to read it back, skipping the
# timestamps: the same safety for a fresh file, a little cheaper than fsync
_sync_data = getattr(os, "fdatasync", os.fsync)


def _fsync_dir(directory: str | Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_write(target: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``target`` so readers see the old file or the new one.

    With ``fsync`` the data and the rename survive a power cut too.
    """
    target = os.fspath(target)
    temp = _write_temp(target, data, fsync)
    _faults.point("atomic_write.before-rename", temp)
    try:
        os.replace(temp, target)
    except BaseException:
        _unlink(temp)
        raise
    if fsync:
        _fsync_dir(os.path.dirname(target))


def exclusive_write(target: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> bool:
    """Publish ``data`` at ``target`` only if nothing is there yet.

    Returns ``False`` (writing nothing) when ``target`` exists. ``os.link`` is
    atomic and exclusive on local filesystems and NFS alike; where hard links
    are not supported we fall back to an exclusive create of the file itself.
    """
    target = os.fspath(target)
    temp = _write_temp(target, data, fsync)
    try:
        os.link(temp, target)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        return _exclusive_create(target, data)
    finally:
        _unlink(temp)


def _exclusive_create(target: str, data: bytes) -> bool:
    # fallback only: the file exists (empty) for a moment before it is written
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return True


def claim(root: Path, suffix: str, first_id: str, encode: Callable[[str], bytes]) -> str:
    """Claim the first free id at or after ``first_id`` and publish its record.

    ``encode(id)`` returns the record's bytes for a candidate id (the id is part
    of the record, so a lost race re-encodes with the next id).
    """
    id = first_id
    while not exclusive_write(os.path.join(root, f"{id}{suffix}"), encode(id)):
        id = next_id(id)
    return id


def claim_marker(directory: Path, first_id: str) -> str:
    """Claim an id by creating ``directory/<id>`` exclusively (any backend)."""
    directory.mkdir(parents=True, exist_ok=True)
    id = first_id
    while True:
        try:
            os.close(os.open(directory / id, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return id
        except FileExistsError:
            id = next_id(id)


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def remove_stale_temp(directory: Path, name: str) -> None:
    """Delete temp file ``name`` if its writer (on this host) is dead."""
    # ".tmp-<host>-<pid>-<uuid>-<target>": host and target may both contain "-"
    rest = name[len(TEMP_PREFIX) :]
    if not rest.startswith(f"{HOST}-"):
        return  # another host's writer: we cannot tell whether it is alive
    pid = rest[len(HOST) + 1 :].split("-", 1)[0]
    if pid.isdigit() and not pid_alive(int(pid)):
        _unlink(directory / name)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_info() -> dict[str, Any]:
    return {"host": HOST, "pid": os.getpid()}


def process_gone(info: Any) -> bool:
    """Whether the process described by :func:`process_info` is known dead."""
    if not isinstance(info, dict) or info.get("host") != HOST:
        return False
    pid = info.get("pid")
    return isinstance(pid, int) and not pid_alive(pid)


# ---------------------------------------------------------------- locks


def make_lock(path: Path, timeout: float = -1) -> FileLock:
    """A new inter-process lock object on ``path``; use one per acquisition.

    flock() locks each open file description, so two lock objects exclude each
    other even inside one process. ``thread_local=False`` lets an async caller
    acquire in one worker thread and release in another.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # imported on first use: slow to import

    return FileLock(path, timeout=timeout, thread_local=False, poll_interval=0.005)


def acquire(lock: FileLock) -> None:
    """Acquire ``lock``, turning filelock's timeout into :class:`LockTimeoutError`."""
    from filelock import Timeout

    try:
        lock.acquire()
    except Timeout as exc:
        raise LockTimeoutError(
            f"Could not lock {lock.lock_file!r} within {lock.timeout} s: another "
            "process holds it. Wait for it to finish, or pass a longer timeout."
        ) from exc


def try_acquire(lock: FileLock) -> bool:
    """One attempt at ``lock`` that never waits: whether it is now held."""
    from filelock import Timeout

    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` for the body."""
    lock = make_lock(path, timeout)
    acquire(lock)
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- hashing


def stable_hash(value: Any) -> str:
    """A hex digest of ``value`` that is the same in every process."""
    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- environments

_KNOWN_BLOBS: set[tuple[Path, str]] = set()
_BLOB_CACHE: dict[tuple[Path, str], Any] = {}
# The last environment digested (a private copy) and its digest: the
# environment rarely changes within a process, so most calls skip the hash.
_LAST_DIGEST: tuple[Any, str] | None = None


def _identical(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down (``1`` is not ``1.0`` here)."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return len(a) == len(b) and all(k in b and _identical(v, b[k]) for k, v in a.items())
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(map(_identical, a, b))
    return bool(a == b)


def environment_digest(environment: dict[str, Any]) -> tuple[str, str | None]:
    """``(digest, json text)`` of ``environment``; the text is ``None`` when the
    digest comes from the cache."""
    global _LAST_DIGEST
    last = _LAST_DIGEST
    if last is not None and _identical(environment, last[0]):
        return last[1], None
    text = json.dumps(environment, sort_keys=True, default=repr)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    _LAST_DIGEST = (copy.deepcopy(environment), digest)
    return digest, text


def put_environment(root: Path, environment: dict[str, Any]) -> str:
    """Store ``environment`` once under ``.de/environments`` and return its digest."""
    digest, text = environment_digest(environment)
    if (root, digest) not in _KNOWN_BLOBS:
        if text is None:
            text = json.dumps(environment, sort_keys=True, default=repr)
        path = internal_dir(root, "environments", f"{digest}.json")
        if not path.exists() and exclusive_write(path, text.encode(), fsync=True):
            _fsync_dir(path.parent)  # records refer to it: it must survive a power cut too
        _KNOWN_BLOBS.add((root, digest))
    return digest


def get_environment(root: Path, digest: str) -> Any:
    """Load an environment stored by :func:`put_environment` (cached).

    Each caller gets its own copy: observations sharing a blob must not see
    each other's edits (nor corrupt the cache).
    """
    key = (root, digest)
    if key not in _BLOB_CACHE:
        path = internal_dir(root, "environments", f"{digest}.json")
        try:
            _BLOB_CACHE[key] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
    return _copy_json(_BLOB_CACHE[key])


def _copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars): ~10x faster than deepcopy."""
    kind = type(value)
    if kind is dict:
        return {k: _copy_json(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if kind is list:
        return [_copy_json(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = frozenset({dict, list})


def read_bytes(path: str) -> bytes:
    """The contents of the file at ``path``; cheaper than ``Path.read_bytes``
    for the many small files of a listing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
