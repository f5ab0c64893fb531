"""``_store/files.py`` on its own: ids, temp names, exclusive writes, process
identity, locks, frozen values (most tests elsewhere reach it through a store).

These pin what mutation testing of the module showed no other test checked
(docs/testing.md, "Mutation testing").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from digital_experiments._model import layout
from digital_experiments._store import files as storage

from .conftest import dead_pid, python_code

FUTURE = "2999-01-01_00-00-00_000000"  # ahead of any clock: next_id steps from it


def _micros_after(id: str, later: str) -> int:
    def when(text: str) -> datetime:
        return datetime.strptime(text, storage.ID_FORMAT).replace(tzinfo=timezone.utc)

    delta = when(later) - when(id)
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds


# ---------------------------------------------------------------- ids


def test_a_first_retry_steps_one_or_two_microseconds() -> None:
    """The first retry after a lost reservation jumps 1 or 2 microseconds, both seen."""
    steps = {_micros_after(FUTURE, storage.next_id(FUTURE)) for _ in range(200)}
    assert steps == {1, 2}


def test_retries_jump_at_most_about_a_second() -> None:
    """However many attempts, a jump is at most 2**20 microseconds."""
    steps = [_micros_after(FUTURE, storage.next_id(FUTURE, 40)) for _ in range(200)]
    assert max(steps) <= 1 << 20
    assert max(steps) > 1 << 19  # the range really reaches that far


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5 h 45 min ahead of UTC (a POSIX TZ rule: no time zone files needed)."""
    monkeypatch.setenv("TZ", "XYZ-5:45")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_ids_are_utc_times_whatever_the_local_time_zone() -> None:
    before = datetime.now(timezone.utc).strftime(storage.ID_FORMAT)
    id = storage.new_id()
    after = datetime.now(timezone.utc).strftime(storage.ID_FORMAT)
    assert before <= id <= after
    noon = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert storage.new_id(noon) == "2026-01-01_12-00-00_000000"
    assert storage.new_id(datetime(2026, 1, 1, 12, 0)) == "2026-01-01_06-15-00_000000"  # local


def test_reservations_retry_with_jumps_that_double(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lost reservation draws its jump from a range twice the last one: 1-2,
    1-4, 1-8 microseconds... (here every draw is 1, to know the ids)."""
    monkeypatch.setattr(storage, "_LAST_ID", "")  # this process reserved nothing yet
    ranges: list[tuple[int, int]] = []

    def lowest(low: int, high: int) -> int:
        ranges.append((low, high))
        return low

    monkeypatch.setattr(random, "randint", lowest)
    ids = layout.reserved_ids(tmp_path)
    ids.mkdir(parents=True)
    taken = ["2999-01-01_00-00-00_00000" + digit for digit in "012"]
    for id in taken:
        (ids / id).touch()  # another process's
    assert storage.reserve_id(tmp_path, taken[0]) == "2999-01-01_00-00-00_000003"
    assert ranges == [(1, 2), (1, 4), (1, 8)]


def test_a_process_never_reserves_one_id_twice_even_in_two_roots(tmp_path: Path) -> None:
    id = storage.reserve_id(tmp_path / "a", storage.new_id())
    again = storage.reserve_id(tmp_path / "b", id)
    assert again > id
    assert [p.name for p in layout.reserved_ids(tmp_path / "b").iterdir()] == [again]


def test_the_ids_folder_another_process_makes_meanwhile_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first reservations in one root: the one whose mkdir comes second goes on."""
    folder = layout.reserved_ids(tmp_path)
    real_open = os.open

    def raced(path: str, flags: int, mode: int = 0o777) -> int:
        if os.path.dirname(path) == os.fspath(folder) and not folder.exists():
            folder.mkdir(parents=True)  # the other process, between this open and its mkdir
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(storage.os, "open", raced)
    id = storage.reserve_id(tmp_path, storage.new_id())
    assert [p.name for p in folder.iterdir()] == [id]


# ---------------------------------------------------------------- files


def test_unlink_of_a_missing_file_is_quiet(tmp_path: Path) -> None:
    storage._unlink(tmp_path / "missing")
    (tmp_path / "there").write_bytes(b"x")
    storage._unlink(tmp_path / "there")
    assert not (tmp_path / "there").exists()


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every data or folder sync asked for."""
    seen: list[int] = []
    data_sync, fsync = storage._sync_data, os.fsync

    def counted_data(fd: int) -> None:
        seen.append(fd)
        data_sync(fd)

    def counted_fsync(fd: int) -> None:
        seen.append(fd)
        fsync(fd)

    monkeypatch.setattr(storage, "_sync_data", counted_data)
    monkeypatch.setattr(os, "fsync", counted_fsync)
    return seen


def test_exclusive_write_syncs_only_when_asked(tmp_path: Path, syncs: list[int]) -> None:
    assert storage.exclusive_write(tmp_path / "a", b"a")
    assert syncs == []
    assert storage.exclusive_write(tmp_path / "b", b"b", fsync=True)
    assert syncs
    assert (tmp_path / "b").read_bytes() == b"b"


@pytest.mark.parametrize("refusal", [errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EIO])
def test_exclusive_write_without_hard_links_creates_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    """A filesystem that refuses links (FAT, FUSE and some network mounts): the
    file is created exclusively and written in place, still never over another one."""
    refused: list[str] = []

    def no_link(source: str, target: str) -> None:
        refused.append(target)
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(storage.os, "link", no_link)
    target = tmp_path / "claim"
    assert storage.exclusive_write(target, b"first")
    assert not storage.exclusive_write(target, b"second")
    assert refused == [os.fspath(target)] * 2  # the link was tried each time
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["claim"]  # no temp file left


def test_a_name_that_only_starts_like_a_temp_file_is_none() -> None:
    assert not storage.is_temp(".tmp-notes.txt")
    me = storage._identity()
    assert storage.is_temp(storage.temp_name("x.pkl", me.pid, me.start, "u"))


def test_a_temp_file_of_a_reused_pid_is_removed(tmp_path: Path) -> None:
    """A live pid whose start time differs is another process: its writer is dead."""
    me = storage._identity()
    assert me.start is not None
    reused = storage.temp_name("x.pkl", me.pid, me.start + 1, "u")
    mine = storage.temp_name("y.pkl", me.pid, me.start, "u")
    unknown_start = storage.temp_name("z.pkl", me.pid, None, "u")  # start 0: pid only
    for name in (reused, mine, unknown_start):
        (tmp_path / name).write_bytes(b"partial")
        storage.remove_stale_temp(tmp_path, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine, unknown_start])


def _refuse_links(monkeypatch: pytest.MonkeyPatch, refusal: int = errno.EPERM) -> None:
    """A filesystem without hard links (FAT answers EPERM, weed mount EIO)."""

    def no_link(source: str, target: str) -> None:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(storage.os, "link", no_link)


def _record_at(root: Path) -> Callable[[str], str]:
    return lambda id: os.path.join(root, f"{id}.pkl")


def _record_of(id: str) -> bytes:
    return b"record " + id.encode()


def test_atomic_write_syncs_by_default(tmp_path: Path, syncs: list[int]) -> None:
    storage.atomic_write(tmp_path / "quick", b"a", fsync=False)
    assert syncs == []
    storage.atomic_write(tmp_path / "safe", b"b")
    assert len(syncs) == 2  # the data, then the folder holding the new name
    assert (tmp_path / "safe").read_bytes() == b"b"


def test_a_folder_that_cannot_be_synced_still_gets_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not every filesystem lets a folder be fsynced: the file is written all the same."""
    refused: list[int] = []

    def no_fsync(fd: int) -> None:
        refused.append(fd)
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(storage.os, "fsync", no_fsync)
    storage.atomic_write(tmp_path / "a", b"a")
    assert refused  # the folder's sync was asked for, and refused
    assert (tmp_path / "a").read_bytes() == b"a"


def test_a_temp_name_says_which_process_writes_it_and_for_what(tmp_path: Path) -> None:
    """Host, boot and PID namespace, pid, start time, then the target's name: what
    a listing needs to tell a dead writer's leftovers from a live one's."""
    seen: list[str] = []
    replace = os.replace

    def spy(source: str, target: str) -> None:
        seen.append(os.path.basename(source))
        replace(source, target)

    me = storage._identity()
    assert me.start is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage.os, "replace", spy)
        storage.atomic_write(tmp_path / "my-record.pkl", b"a", fsync=False)
    (name,) = seen
    assert name.startswith(f".tmp-{me.machine}-{me.pid}-{me.start}-")
    assert name.endswith("-my-record.pkl")
    assert storage.is_temp(name)


def test_a_folder_is_made_on_its_first_write_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mkdir on the hot path: a write to a folder that exists makes none."""
    made: list[str] = []
    makedirs = os.makedirs

    def counted(path: str, exist_ok: bool = False) -> None:
        made.append(path)
        makedirs(path, exist_ok=exist_ok)

    monkeypatch.setattr(storage.os, "makedirs", counted)
    storage.atomic_write(tmp_path / "new" / "a", b"a", fsync=False)
    assert made == [os.fspath(tmp_path / "new")]
    storage.atomic_write(tmp_path / "new" / "b", b"b", fsync=False)
    assert storage.exclusive_write(tmp_path / "new" / "c", b"c")
    assert made == [os.fspath(tmp_path / "new")]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a", "b", "c"]


def test_a_folder_another_writer_makes_meanwhile_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first writes to one new folder: the one whose mkdir comes second goes on."""
    folder = tmp_path / "new"
    real_open = os.open

    def raced(path: str, flags: int, mode: int = 0o777) -> int:
        if os.path.dirname(path) == os.fspath(folder) and not folder.exists():
            folder.mkdir()  # the other writer, between this open and its mkdir
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(storage.os, "open", raced)
    storage.atomic_write(folder / "a", b"a", fsync=False)
    assert (folder / "a").read_bytes() == b"a"


def test_a_write_that_fails_raises_its_error_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the temp file is written; a rename onto a folder."""

    def full(name: str, detail: str = "", size: int = 0) -> None:
        if name == "write_temp.written":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage.faults, "point", full)
        with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
            storage.atomic_write(tmp_path / "a", b"a", fsync=False)
        with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
            storage.exclusive_write(tmp_path / "b", b"b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "folder" / "inside").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        storage.atomic_write(tmp_path / "folder", b"c", fsync=False)
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["inside"]


@pytest.fixture
def no_umask() -> Iterator[None]:
    """A umask of 0, so a file's mode is the one it was created with."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("no_umask")
def test_files_are_created_readable_by_all_and_writable_by_their_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a file is made gives it mode 0o644 (before the umask)."""
    storage.atomic_write(tmp_path / "atomic", b"a", fsync=False)
    storage.atomic_write(tmp_path / "new" / "first", b"a", fsync=False)  # makes the folder
    assert storage.exclusive_write(tmp_path / "linked", b"b")
    reserved = storage.reserve_id(tmp_path, storage.new_id())
    created = storage.create_reserved(tmp_path, storage.new_id(), _record_at(tmp_path), _record_of)
    _refuse_links(monkeypatch)
    assert storage.exclusive_write(tmp_path / "in-place", b"c")
    renamed = storage.create_reserved(tmp_path, storage.new_id(), _record_at(tmp_path), _record_of)
    ids = layout.reserved_ids(tmp_path)
    made = [
        tmp_path / "atomic",
        tmp_path / "new" / "first",
        tmp_path / "linked",
        ids / reserved,
        ids / created,
        tmp_path / f"{created}.pkl",
        tmp_path / "in-place",
        ids / renamed,
        tmp_path / f"{renamed}.pkl",
    ]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in made}
    assert modes == {path.name: 0o644 for path in made}


@pytest.fixture
def points(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object, object, bytes]]:
    """Every fault point reached: its name, detail and size, and what the file the
    detail names held there."""
    seen: list[tuple[object, object, object, bytes]] = []

    def point(name: object, detail: object = "", size: object = 0) -> None:
        held = Path(detail).read_bytes() if isinstance(detail, str) and detail else b""
        seen.append((name, detail, size, held))

    monkeypatch.setattr(storage.faults, "point", point)
    return seen


def test_fault_points_name_the_file_written_and_its_size(
    tmp_path: Path, points: list[tuple[object, object, object, bytes]]
) -> None:
    """``DE_FAULTS`` tests stop a write by these names, at writes of a size."""
    storage.atomic_write(tmp_path / "a", b"abc", fsync=False)
    temp = points[0][1]
    assert isinstance(temp, str)
    assert os.path.dirname(temp) == os.fspath(tmp_path)
    assert storage.is_temp(os.path.basename(temp))
    assert points == [
        ("write_temp.written", temp, 3, b"abc"),
        ("atomic_write.before-rename", temp, 3, b"abc"),
    ]
    points.clear()
    id = storage.create_reserved(tmp_path, storage.new_id(), _record_at(tmp_path), _record_of)
    reservation = os.path.join(layout.reserved_ids(tmp_path), id)
    assert points == [("create_reserved.written", reservation, 33, _record_of(id))]


def test_a_link_reported_as_existing_that_was_made_is_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NFS retry can answer "exists" for the link its first try made: that record is
    ours, published, and its id is the one given."""
    link = os.link
    answered: list[str] = []

    def retried(source: str, target: str) -> None:
        link(source, target)
        if not answered:
            answered.append(target)
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)

    monkeypatch.setattr(storage.os, "link", retried)
    id = storage.create_reserved(tmp_path, storage.new_id(), _record_at(tmp_path), _record_of)
    record = tmp_path / f"{id}.pkl"
    assert answered == [os.fspath(record)]
    assert record.read_bytes() == _record_of(id)
    assert [p.name for p in layout.reserved_ids(tmp_path).iterdir()] == [id]
    assert os.path.samefile(record, layout.reserved_ids(tmp_path) / id)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".de", record.name]


def test_a_target_that_exists_but_cannot_be_read_keeps_its_id(tmp_path: Path) -> None:
    """A dangling symlink at the first id's record: the name is taken (the link says
    "exists", its file cannot be looked at), so the next id is."""
    tried: list[str] = []

    def target(id: str) -> str:
        path = os.path.join(tmp_path, f"{id}.pkl")
        if not tried:
            os.symlink(tmp_path / "nowhere", path)
        tried.append(id)
        return path

    id = storage.create_reserved(tmp_path, storage.new_id(), target, _record_of)
    first, second = tried
    assert id == second > first
    assert (tmp_path / f"{first}.pkl").is_symlink()  # left alone
    assert (tmp_path / f"{id}.pkl").read_bytes() == _record_of(id)
    assert (layout.reserved_ids(tmp_path) / first).stat().st_size == 0  # reserved, empty


def test_without_hard_links_a_reserved_record_is_not_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: list[int]
) -> None:
    """The first record of a run is written by rename there, unsynced as a link is."""
    _refuse_links(monkeypatch)
    id = storage.create_reserved(tmp_path, storage.new_id(), _record_at(tmp_path), _record_of)
    assert (tmp_path / f"{id}.pkl").read_bytes() == _record_of(id)
    assert syncs == []


# ---------------------------------------------------------------- liveness


def test_read_text_strips_and_replaces_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b" \xff boot \n")
    (tmp_path / "blank").write_bytes(b" \n")
    assert storage._read_text(os.fspath(tmp_path / "bad")) == "\ufffd boot"
    assert storage._read_text(os.fspath(tmp_path / "blank")) is None
    assert storage._read_text(os.fspath(tmp_path / "missing")) is None


def _reference_start(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, the fields counted after the last ')'."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[19])


# runs until its stdin closes, then exits 0; a SIGHUP (signal 1) makes it exit 3 (a
# handler of its own: `nohup` would have it ignore SIGHUP). It says "ready" once the
# handler is in place: a signal sent before then would go by unseen under `nohup`
_WAITER = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGHUP, lambda *args: os._exit(3))\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


def _child(executable: str) -> subprocess.Popen[bytes]:
    """A child that runs until its stdin closes, then exits 0; its handler is set."""
    child = subprocess.Popen(
        [executable, "-c", _WAITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_start_time_reads_field_22_even_after_a_name_with_parentheses(tmp_path: Path) -> None:
    """The command name may hold ') ' and spaces: the fields are counted after the last ')'."""
    assert storage._start_time(os.getpid()) == _reference_start(os.getpid())
    odd = tmp_path / "a) 1 2 3"
    odd.symlink_to(sys.executable)
    child = _child(os.fspath(odd))
    try:
        assert ")" in Path(f"/proc/{child.pid}/stat").read_text().split("(", 1)[1][:-1]
        assert storage._start_time(child.pid) == _reference_start(child.pid)
    finally:
        child.communicate(b"")
    assert storage._start_time(child.pid) is None  # gone


def test_pid_alive_asks_without_signalling() -> None:
    """A live child is alive, and checking sends it no signal (it exits 0)."""
    child = _child(sys.executable)
    try:
        assert storage.pid_alive(child.pid)
        assert child.poll() is None
    finally:
        child.communicate(b"")
    assert child.returncode == 0
    assert not storage.pid_alive(dead_pid())
    assert not storage.pid_alive(0)  # 0 and negatives name process groups, not a process
    assert not storage.pid_alive(-1)
    assert storage.pid_alive(1)


def test_a_process_of_another_user_is_alive() -> None:
    """Not allowed to signal it (another user's) is still alive."""
    code = (
        "import os\n"
        "from digital_experiments._store import files\n"
        "if os.geteuid() == 0:\n"
        "    os.setuid(65534)\n"  # nobody: pid 1 (root's) can no longer be signalled
        "print(files.pid_alive(1))\n"
    )
    assert storage.pid_alive(os.getpid())  # (mutation testing maps the test by this call)
    done = python_code(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def _info(**changes: object) -> dict[str, object]:
    return {**storage.process_info(), **changes}


def test_same_namespace_needs_this_host_boot_and_pid_namespace() -> None:
    assert storage.same_namespace(storage.process_info())
    assert storage.same_namespace({"host": storage.HOST, "pid": 1})  # 3.0.0: host and pid
    assert not storage.same_namespace(_info(host=storage.HOST + "x"))
    assert not storage.same_namespace({"host": storage.HOST + "x", "pid": 1})
    assert not storage.same_namespace(["not", "a", "dict"])
    assert not storage.same_namespace(None)
    assert not storage.same_namespace(_info(boot="another boot"))
    assert not storage.same_namespace(_info(pidns=-1))
    # one of the two known: it must match
    assert not storage.same_namespace({"host": storage.HOST, "pid": 1, "boot": "another"})
    assert not storage.same_namespace({"host": storage.HOST, "pid": 1, "pidns": -1})


def test_process_gone_by_pid_and_start_time() -> None:
    me = storage._identity()
    assert me.start is not None
    assert not storage.process_gone(storage.process_info())
    assert storage.process_gone(_info(start=me.start + 1))  # the pid was reused
    assert not storage.process_gone(_info(start="not a number"))  # judged by pid alone
    assert storage.process_gone(_info(pid=dead_pid(), start=None))
    for pid in ("123", True, None, 1.5):
        assert not storage.process_gone(_info(pid=pid)), pid  # malformed: in doubt
    assert not storage.process_gone(_info(host=storage.HOST + "x", pid=dead_pid()))


def test_is_current_process() -> None:
    me = storage._identity()
    assert me.start is not None
    assert storage.is_current_process(storage.process_info())
    assert storage.is_current_process(_info(start=None))
    assert storage.is_current_process({"host": storage.HOST, "pid": os.getpid()})
    assert not storage.is_current_process(_info(start=me.start + 1))
    assert not storage.is_current_process(_info(pid=os.getpid() + 1))
    assert not storage.is_current_process(_info(boot="another boot"))
    assert not storage.is_current_process("not a dict")


def test_an_unknown_pid_namespace_is_recorded_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc/self/ns/pid the namespace is null in records, as other
    versions and platforms write it, and in the machine's digest."""
    real_stat = os.stat

    def no_namespace(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if path == "/proc/self/ns/pid":
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "_IDENTITY", None)
    monkeypatch.setattr(storage.os, "stat", no_namespace)
    me = storage._identity()
    assert me.pidns is None
    assert storage.process_info()["pidns"] is None
    assert storage.same_namespace({"host": storage.HOST, "pid": 1, "boot": me.boot, "pidns": None})
    digest = hashlib.sha256(f"{storage.HOST}\0{me.boot}\0None".encode()).hexdigest()[:16]
    assert me.machine == digest


def test_the_host_is_the_node_name() -> None:
    assert storage._host_name() == socket.gethostname() == storage.HOST


# ---------------------------------------------------------------- locks


def test_try_acquire_never_waits_for_a_held_lock(tmp_path: Path) -> None:
    """Two lock objects on one path exclude each other even in one process."""
    first = storage.make_lock(tmp_path / "locks" / "x.lock")
    second = storage.make_lock(tmp_path / "locks" / "x.lock")
    assert storage.try_acquire(first)
    try:
        assert not storage.try_acquire(second)
    finally:
        first.release()
    assert storage.try_acquire(second)
    second.release()


def test_a_waiting_lock_looks_again_every_5_ms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocked acquire sleeps 5 ms between attempts (here the holder lets go
    during the first sleep, so the second attempt takes the lock)."""
    holder = storage.make_lock(tmp_path / "x.lock")
    waiter = storage.make_lock(tmp_path / "x.lock")
    taking = threading.Thread(target=holder.acquire)  # another thread: no deadlock
    taking.start()
    taking.join()
    assert holder.is_locked
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        holder.release()

    monkeypatch.setattr(time, "sleep", nap)
    waiter.acquire()
    monkeypatch.undo()
    waiter.release()
    assert naps == [0.005]


# ---------------------------------------------------------------- frozen values


def test_editing_a_frozen_value_says_what_to_do() -> None:
    frozen = storage.freeze({"a": [1]})
    message = (
        "This environment is shared, read-only, by every run recorded in it: "
        "edit a copy, such as environment.thaw()."
    )
    with pytest.raises(TypeError) as raised:
        frozen["b"] = 2
    assert str(raised.value) == message


def test_lists_are_frozen_too_and_what_they_hold() -> None:
    frozen = storage.freeze({"a": [1, {"b": [2]}]})
    assert type(frozen["a"]) is storage.FrozenList
    with pytest.raises(TypeError, match="read-only"):
        frozen["a"].append(3)
    with pytest.raises(TypeError, match="read-only"):
        frozen["a"][1]["c"] = 3
    with pytest.raises(TypeError, match="read-only"):
        frozen["a"][1]["b"].append(3)
    assert frozen == {"a": [1, {"b": [2]}]}
    assert type(storage.freeze([1])) is storage.FrozenList


def test_thaw_copies_all_the_way_down() -> None:
    value = {"a": [1, [2, {"b": [3]}]], "c": "d"}
    thawed = storage.thaw(storage.freeze(value))
    assert thawed == value
    assert type(thawed["a"]) is list
    assert type(thawed["a"][1][1]) is dict
    thawed["a"][1].append(4)  # editable


def test_frozen_values_pickle_as_plain_ones() -> None:
    frozen = storage.freeze({"a": [1, [2]]})
    back = pickle.loads(pickle.dumps(frozen))
    assert back == {"a": [1, [2]]}
    assert type(back) is dict
    assert type(back["a"]) is list
    assert type(back["a"][1]) is list
    assert type(pickle.loads(pickle.dumps(frozen["a"]))) is list


def test_settled_is_strictly_past_the_recent_window() -> None:
    recent = storage.RECENT_NS
    assert not storage.settled(0, now=recent)
    assert storage.settled(0, now=recent + 1)
    assert storage.settled(None, now=recent + 1)  # no stamp counts as 0
    assert not storage.settled(None, 5, now=recent + 5)  # the latest stamp counts


def test_identical_tells_types_apart_all_the_way_down() -> None:
    nan = float("nan")
    assert storage._identical(nan, nan)  # the same object, though nan != nan
    assert storage._identical({"a": [1, (2, "x")]}, {"a": [1, (2, "x")]})
    assert storage._identical("x" * 3, "".join(["x", "xx"]))  # equal, not the same object
    assert storage._identical([], [])
    assert not storage._identical(1, 1.0)
    assert not storage._identical(1, True)
    assert not storage._identical([1], (1,))
    assert not storage._identical([1], [1.0])
    assert not storage._identical((1, [2]), (1, [2.0]))
    assert not storage._identical([1, 2], [1, 3])
    assert not storage._identical([1], [1, 2])
    assert not storage._identical({"a": 1}, {"a": 1.0})
    assert not storage._identical({"a": 1}, {"b": 1})
    assert not storage._identical({"a": 1}, {"a": 1, "b": 2})
    assert not storage._identical({"a": [1]}, {"a": [1.0]})


def test_an_environment_digested_again_comes_from_the_cache() -> None:
    environment = {"python": "3.11", "packages": {"numpy": "2.0"}, "flags": [1, 2]}
    digest, text = storage.environment_digest(environment)
    assert text is not None
    assert storage.environment_digest(dict(environment)) == (digest, None)
    changed = {**environment, "flags": [1, 2.0]}  # equal, of another type: not the cache's
    other, other_text = storage.environment_digest(changed)
    assert other_text is not None
    assert other != digest


def test_values_json_does_not_know_are_digested_by_their_repr() -> None:
    environment = {"path": Path("/opt/x"), "flags": {3}}
    digest, text = storage.environment_digest(environment)
    assert text == json.dumps({"flags": "{3}", "path": repr(Path("/opt/x"))}, sort_keys=True)
    assert digest == hashlib.sha256(text.encode()).hexdigest()[:32]


def test_an_environment_edited_in_place_is_digested_again() -> None:
    """The cache keeps its own copy, all the way down."""
    environment = {"packages": {"numpy": "2.0"}}
    first, _ = storage.environment_digest(environment)
    environment["packages"]["numpy"] = "2.1"
    second, text = storage.environment_digest(environment)
    assert text == json.dumps(environment, sort_keys=True)
    assert second != first


def test_process_info_names_this_process() -> None:
    me = storage._identity()
    assert storage.process_info() == {
        "host": storage.HOST,
        "pid": os.getpid(),
        "boot": me.boot,
        "pidns": me.pidns,
        "start": me.start,
    }
    assert me.start == _reference_start(os.getpid())


def test_settling_a_reservation_empties_it_and_keeps_it(tmp_path: Path) -> None:
    id = storage.reserve_id(tmp_path, storage.new_id())
    reservation = tmp_path / ".de" / "ids" / id
    reservation.write_bytes(b"a first record")
    storage.settle_reserved(tmp_path, id)
    assert reservation.read_bytes() == b""
    storage.settle_reserved(tmp_path, "2000-01-01_00-00-00_000000")  # none: quiet
    assert sorted(p.name for p in reservation.parent.iterdir()) == [id]


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs /proc")
def test_the_identity_is_read_from_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Computed afresh (as after a fork): boot id, PID namespace, start time."""
    monkeypatch.setattr(storage, "_IDENTITY", None)
    me = storage._identity()
    assert me.pid == os.getpid()
    assert me.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert me.pidns == os.stat("/proc/self/ns/pid").st_ino
    assert me.start == _reference_start(os.getpid())
    assert storage._identity() is me  # kept for the process


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 65536 + 5])
def test_read_bytes_reads_every_chunk(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert storage.read_bytes(os.fspath(tmp_path / "f")) == data
