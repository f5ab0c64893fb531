"""The one place that knows the rules of the disk.

* ids are *reserved* by an exclusive create of ``<root>/.de/ids/<id>``, one
  namespace per root whatever the record formats, never assumed unique because
  clocks differ; ids are UTC times;
* every file is written to a hidden temp file in the same folder, then renamed
  (or linked) into place, so a reader never sees half a file;
* internal files live under ``<root>/.de/`` so ``ls <root>`` shows records only.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._model import layout
from . import faults

if TYPE_CHECKING:
    from filelock import FileLock

ID_FORMAT = "%Y-%m-%d_%H-%M-%S_%f"
TEMP_PREFIX = ".tmp-"


def _host_name() -> str:
    # POSIX's node name is what gethostname() answers, without importing socket
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


HOST = _host_name()


def new_id(now: datetime | None = None) -> str:
    """The id ``YYYY-MM-DD_HH-MM-SS_ffffff`` of the time ``now`` (default: now), in UTC.

    A naive ``now`` is local time. Ids in UTC sort by absolute time, whatever
    the time zones of the processes sharing a root.
    """
    when = datetime.now(timezone.utc) if now is None else now.astimezone(timezone.utc)
    return when.strftime(ID_FORMAT)


def next_id(id: str, attempt: int = 1) -> str:
    """An id after ``id``, for the ``attempt``-th retry after a lost reservation.

    It jumps a random number of microseconds that grows with the attempts, so
    processes racing under a frozen or coarse clock spread out at once instead
    of colliding one microsecond at a time.
    """
    try:
        when = datetime.strptime(id, ID_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return new_id()
    import random  # only after a clash

    step = random.randint(1, 1 << min(attempt, 20))
    return new_id(max(when + timedelta(microseconds=step), datetime.now(timezone.utc)))


_ID_LOCK = threading.Lock()
_LAST_ID = ""  # the latest id this process reserved: it never tries one twice


def reserve_id(root: Path, first_id: str) -> str:
    """Reserve the first free id at or after ``first_id`` in ``root`` (any backend, any format).

    The reservation is an exclusive create of ``<root>/.de/ids/<id>``: atomic on local
    filesystems, NFS and FAT alike, and no hard link is needed.
    """
    return _reserve(root, first_id, _keep_empty)


def _keep_empty(fd: int, reservation: str, id: str) -> bool:
    os.close(fd)
    return True


def _reserve(root: Path, first_id: str, take: Callable[[int, str, str], bool]) -> str:
    """The first id at or after ``first_id`` whose reservation this process creates
    and ``take(fd, path, id)`` keeps (it closes ``fd``; ``False``: try the next id)."""
    global _LAST_ID
    directory = _reserved_ids(root)
    with _ID_LOCK:
        id = first_id if first_id > _LAST_ID else next_id(_LAST_ID)
    attempt = 0
    while True:
        reservation = os.path.join(directory, id)
        try:
            fd = os.open(reservation, _CREATE, 0o644)
        except FileNotFoundError:  # the first id in this root
            os.makedirs(directory, exist_ok=True)
            continue
        except FileExistsError:
            pass
        else:
            if take(fd, reservation, id):
                break
        attempt += 1
        id = next_id(id, attempt)
    with _ID_LOCK:
        _LAST_ID = max(_LAST_ID, id)
    return id


def create_reserved(
    root: Path, first_id: str, target: Callable[[str], str], data: Callable[[str], bytes]
) -> str:
    """Reserve the first free id at or after ``first_id`` and publish ``data(id)``
    at ``target(id)`` with one file created, not three.

    The reservation ``<root>/.de/ids/<id>`` is created exclusively, as
    :func:`reserve_id` does, and written with the record's bytes; a hard link
    then publishes that finished file at ``target(id)`` (whole, as a rename
    would: nothing is visible there before the link). A ``target`` already
    there (a record an older version wrote without reserving) keeps its id and
    the next id is tried. Call :func:`settle_reserved` once the record is
    replaced, so the reservation stops holding its first bytes. Where hard
    links are not supported, the record is written by :func:`atomic_write`.
    """
    return _reserve(
        root, first_id, lambda fd, path, id: _publish_reserved(fd, path, target(id), data(id))
    )


def _publish_reserved(fd: int, reservation: str, target: str, data: bytes) -> bool:
    """Write ``data`` to the reservation open at ``fd`` and link it to ``target``;
    ``False`` if ``target`` is another file (its id is taken)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        faults.point("create_reserved.written", reservation, len(data))
        try:
            os.link(reservation, target)
        except FileExistsError:
            # an NFS retry can report "exists" for a link that succeeded: ours if same file
            with contextlib.suppress(OSError):
                if os.stat(target).st_ino == os.fstat(fd).st_ino:
                    return True
            _truncate(reservation)
            return False
        except OSError:
            # links refused (FAT; FUSE mounts such as weed mount answer EIO): the
            # record goes by rename, whose own error is the one that counts
            atomic_write(target, data, fsync=False)
            _truncate(reservation)
        return True
    except BaseException:
        _truncate(reservation)  # the id stays reserved, holding nothing
        raise
    finally:
        os.close(fd)


def settle_reserved(root: Path, id: str) -> None:
    """Empty run ``id``'s reservation once its first record was replaced (its
    bytes are then held by nothing else); the id stays reserved."""
    _truncate(os.path.join(_reserved_ids(root), id))


@functools.lru_cache(maxsize=256)
def _reserved_ids(root: Path) -> str:
    # asked twice a call: the path is built once a root (a Path join costs µs)
    return os.fspath(layout.reserved_ids(root))


def _truncate(path: str) -> None:
    with contextlib.suppress(OSError):
        os.truncate(path, 0)


# A temp name says exactly which process writes it, so a listing can remove
# the leftovers of dead writers and never a live one's:
# ".tmp-<machine>-<pid>-<start>-<unique>-<target>", where <machine> is a digest
# of host, boot and PID namespace (fixed length, no dashes) and <start> the
# process's start time: no field can contain the separator before <target>.
_TEMP_TOKEN = os.urandom(4).hex()
_TEMP_COUNTER = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def temp_name(target: str, pid: int, start: int | None, unique: str) -> str:
    """The name of a temp file for ``target`` written by process ``pid`` of this machine."""
    return f"{TEMP_PREFIX}{_identity().machine}-{pid}-{start or 0}-{unique}-{target}"


def _temp_path(target: str) -> str:
    directory, name = os.path.split(target)
    me = _identity()
    return os.path.join(
        directory, temp_name(name, me.pid, me.start, f"{_TEMP_TOKEN}{next(_TEMP_COUNTER)}")
    )


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
        faults.point("write_temp.written", temp, len(data))
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
    faults.point("atomic_write.before-rename", temp, len(data))
    try:
        os.replace(temp, target)
    except BaseException:
        _unlink(temp)
        raise
    if fsync:
        _fsync_dir(os.path.dirname(target))


def exclusive_write(target: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> bool:
    """Publish ``data`` at ``target`` only if nothing is there yet.

    Returns ``False`` (writing nothing) when ``target`` exists. ``os.link`` of a
    finished temp file is atomic and exclusive on local filesystems and NFS.
    Where a link is refused for any other reason than "exists" (FAT, FUSE and
    some network mounts) the file is created exclusively and written in place:
    only small files (sweep claims) are published this way, and a reader treats
    an unreadable one as garbage.
    """
    target = os.fspath(target)
    temp = _write_temp(target, data, fsync)
    try:
        os.link(temp, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        # links refused (FAT; FUSE mounts answer EIO): an exclusive create, whose
        # own error (a full or read-only disk) is the one that counts
        return _exclusive_create(target, data)
    finally:
        _unlink(temp)


def _exclusive_create(target: str, data: bytes) -> bool:
    try:
        fd = os.open(target, _CREATE, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return True


# the shape temp_name() gives: a user's file that merely starts ".tmp-" is not one
_TEMP_NAME = re.compile(r"\.tmp-[0-9a-f]{16}-\d+-\d+-[^-]+-.")


def is_temp(name: str) -> bool:
    """Whether ``name`` is one of our temp files (see :func:`temp_name`)."""
    return name.startswith(TEMP_PREFIX) and _TEMP_NAME.match(name) is not None


def remove_stale_temp(directory: Path, name: str) -> None:
    """Delete temp file ``name`` if its writer is known dead.

    Only temp files of this machine and PID namespace are judged; any other
    (another host, a container with its own PID namespace, a name of an older
    version) is left alone.
    """
    parts = name[len(TEMP_PREFIX) :].split("-", 4)
    if len(parts) < 5 or parts[0] != _identity().machine:
        return
    pid, start = parts[1], parts[2]
    if pid.isdigit() and start.isdigit() and not _running(int(pid), int(start) or None):
        _unlink(directory / name)


# ---------------------------------------------------------------- liveness


@dataclass(frozen=True)
class _Identity:
    """What tells this process apart from every other, on any host."""

    pid: int
    boot: str | None  # the kernel's boot id: a reboot or another machine differ
    pidns: int | None  # the PID namespace: containers may share a hostname, not pids
    start: int | None  # start time in clock ticks: a reused pid differs
    machine: str  # a digest of host, boot and PID namespace


_IDENTITY: _Identity | None = None


def _identity() -> _Identity:
    global _IDENTITY
    if _IDENTITY is None or _IDENTITY.pid != os.getpid():  # computed again after a fork
        pid = os.getpid()
        boot = _read_text("/proc/sys/kernel/random/boot_id")
        try:
            pidns: int | None = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            pidns = None
        digest = hashlib.sha256(f"{HOST}\0{boot}\0{pidns}".encode()).hexdigest()[:16]
        _IDENTITY = _Identity(pid, boot, pidns, _start_time(pid), digest)
    return _IDENTITY


def _read_text(path: str) -> str | None:
    # bytes and a built-in codec: no codec module to import (a process that
    # dropped its privileges may no longer read the standard library)
    try:
        return read_bytes(path).decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), ``None`` if unknown."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: parse after the last ")"
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


_HAS_PROC = os.path.exists("/proc/self/stat")


def _running(pid: int, start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` lives in this PID namespace."""
    if not _HAS_PROC or start is None:
        return pid_alive(pid)
    return _start_time(pid) == start


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists in this PID namespace."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond any pid the OS has
        return False
    except PermissionError:
        return True
    return True


def process_info() -> dict[str, Any]:
    """This process, as recorded in ``running`` records and sweep claims (JSON-able)."""
    me = _identity()
    return {"host": HOST, "pid": me.pid, "boot": me.boot, "pidns": me.pidns, "start": me.start}


def same_namespace(info: Any) -> bool:
    """Whether :func:`process_info` ``info`` was taken on this machine, boot and PID namespace.

    Only then can its pid be looked up here. Records of 3.0.0 hold only host and
    pid: they count as this namespace's when the host matches.
    """
    if not isinstance(info, dict) or info.get("host") != HOST:
        return False
    if "boot" not in info and "pidns" not in info:
        return True
    me = _identity()
    return bool(info.get("boot") == me.boot and info.get("pidns") == me.pidns)


def process_gone(info: Any) -> bool:
    """Whether the process described by :func:`process_info` is known to be dead.

    ``False`` when in doubt: another host, another boot (or a machine sharing
    the hostname), another PID namespace, or a malformed description.
    """
    if not same_namespace(info):
        return False
    pid = info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    start = info.get("start")
    return not _running(pid, start if isinstance(start, int) else None)


def is_current_process(info: Any) -> bool:
    """Whether :func:`process_info` ``info`` describes this very process."""
    if not same_namespace(info) or info.get("pid") != os.getpid():
        return False
    start = info.get("start")
    return start is None or start == _identity().start


# ---------------------------------------------------------------- locks


def make_lock(path: Path) -> FileLock:
    """A new inter-process lock object on ``path``; use one per acquisition.

    Locks wait as long as their holder runs: a holder killed with -9 frees
    them, so a wait ends when the run it waits for ends, however long that is.

    flock() locks each open file description, so two lock objects exclude each
    other even inside one process. ``thread_local=False`` lets an async caller
    acquire in one worker thread and release in another.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # imported on first use: slow to import

    return FileLock(path, thread_local=False, poll_interval=0.005)


def try_acquire(lock: FileLock) -> bool:
    """One attempt at ``lock`` that never waits: whether it is now held."""
    from filelock import Timeout

    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` for the body."""
    lock = make_lock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- environments

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


def _refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(
        "This environment is shared, read-only, by every run recorded in it: "
        "edit a copy, such as environment.thaw()."
    )


class Frozen(dict):  # type: ignore[type-arg]
    """A read-only dict (JSON and pickle see a plain dict's content)."""

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (), None, None, iter(self.items()))

    def thaw(self) -> Any:
        """A plain, editable deep copy."""
        return thaw(self)


class FrozenList(list):  # type: ignore[type-arg]
    """A read-only list (JSON and pickle see a plain list's content)."""

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = _refuse
    clear = sort = reverse = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (), None, iter(self))


def freeze(value: Any) -> Any:
    """Parsed JSON made read-only, all the way down."""
    if type(value) is dict:
        return Frozen({k: freeze(v) for k, v in value.items()})
    if type(value) is list:
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, editable copy of a :func:`freeze` result."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value


# an mtime this recent may yet be shared by a change to come (timestamps are coarse,
# a second or two on some file systems), so a folder listed this soon after its
# last change is looked at again rather than trusted
RECENT_NS = 2_000_000_000


def settled(*stamps: int | None, now: int | None = None) -> bool:
    """Whether mtimes ``stamps`` were old enough at ``now`` (default: now, in
    ``time.time_ns()``) that any later change moves them."""
    return (now or time.time_ns()) - max(s or 0 for s in stamps) > RECENT_NS


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
