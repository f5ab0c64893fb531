"""``_store/files.py`` on its own: ids, temp names, exclusive writes, process
identity, locks, frozen values (most tests elsewhere reach it through a store).

These pin what mutation testing of the module showed no other test checked
(docs/testing.md, "Mutation testing").
"""

from __future__ import annotations

import errno
import os
import pickle
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

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


# runs until its stdin closes, then exits 0; any SIGHUP makes it exit 3 (a handler
# of its own: `nohup` would have it ignore SIGHUP)
_WAITER = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGHUP, lambda *args: os._exit(3))\n"
    "sys.stdin.read()\n"
)


def _child(executable: str) -> subprocess.Popen[bytes]:
    """A child that runs until its stdin closes, then exits 0."""
    return subprocess.Popen([executable, "-c", _WAITER], stdin=subprocess.PIPE)


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
