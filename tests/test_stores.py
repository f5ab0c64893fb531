"""The :class:`Store` contract, on every store: a folder, memory, and two real
S3-compatible servers on loopback (SeaweedFS, moto); races between real
processes on the stores whose conditional writes are atomic; the errors a user
sees for wrong settings; and a write whose answer was lost."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._store import LocalStore, Missing, Store, StoreError, open_store
from digital_experiments._store import files as storage
from digital_experiments._store.s3 import ATTEMPTS, S3Store, parse

from .servers import ATOMIC_KINDS, DroppingProxy, Server, free_ports, race, store_of, use_server

# ---------------------------------------------------------------- the contract


def test_get_of_a_missing_key_raises_missing(any_store: Store) -> None:
    with pytest.raises(Missing):
        any_store.get("nothing/here")
    with pytest.raises(FileNotFoundError):  # as records always raised
        any_store.get("nothing")
    assert any_store.version("nothing") is None
    assert any_store.get_or_none("nothing") is None


def test_put_then_get_gives_the_bytes_and_the_version(any_store: Store) -> None:
    version = any_store.put("a/b.pkl", b"\x00one")
    assert any_store.get("a/b.pkl") == (b"\x00one", version)
    assert any_store.version("a/b.pkl") == version
    newer = any_store.put("a/b.pkl", b"two")
    assert newer != version
    assert any_store.get("a/b.pkl") == (b"two", newer)


def test_put_new_lets_one_writer_win(any_store: Store) -> None:
    first = any_store.put_new("claims/k", b"mine")
    assert first is not None
    assert any_store.put_new("claims/k", b"theirs") is None
    assert any_store.get("claims/k") == (b"mine", first)


def test_put_new_of_the_very_same_bytes_settles_as_ours(any_store: Store) -> None:
    # the documented rule: what is created must be unique to its writer, because
    # an "exists" answer is settled by comparing bytes (a retried request's 412)
    assert any_store.put_new("k", b"token-1") is not None
    assert any_store.settle_new("k", b"token-1") == any_store.version("k")
    assert any_store.settle_new("k", b"token-2") is None


def test_put_if_swaps_only_from_the_version_seen(any_store: Store) -> None:
    version = any_store.put("k", b"one")
    newer = any_store.put_if("k", b"two", version)
    assert newer is not None
    assert newer != version
    assert any_store.put_if("k", b"three", version) is None  # stale version
    assert any_store.get("k") == (b"two", newer)
    assert any_store.put_if("gone", b"x", newer) is None  # missing key
    assert any_store.get_or_none("gone") is None


def test_list_is_sorted_one_level_and_filtered_by_name(any_store: Store) -> None:
    for key in ["exp/b.pkl", "exp/a.pkl", "exp/c.json", "exp/sub/deep.pkl", "other/x", "top"]:
        any_store.put(key, b"x")
    assert list(any_store.list("exp/")) == ["exp/a.pkl", "exp/b.pkl", "exp/c.json"]
    assert list(any_store.list("exp/b")) == ["exp/b.pkl"]
    assert list(any_store.list("exp/", start_after="exp/a.pkl")) == ["exp/b.pkl", "exp/c.json"]
    assert list(any_store.list("")) == ["top"]
    assert list(any_store.list("missing/")) == []
    assert list(any_store.folders("")) == ["exp", "other"]
    assert list(any_store.folders("exp/")) == ["sub"]


def test_delete_removes_and_a_missing_key_is_fine(any_store: Store) -> None:
    any_store.put("k", b"x")
    any_store.delete("k")
    any_store.delete("k")
    assert any_store.version("k") is None
    assert list(any_store.list("")) == []


def test_get_many_keeps_the_order_and_marks_the_missing(any_store: Store) -> None:
    keys = [f"r/{i:03d}" for i in range(40)]
    for key in keys:
        any_store.put(key, key.encode())
    any_store.delete("r/007")
    found = list(any_store.get_many(keys))
    assert [key for key, _ in found] == keys
    for key, got in found:
        if key == "r/007":
            assert got is None
        else:
            assert got is not None
            assert got[0] == key.encode()


def test_read_many_keeps_the_order_and_gives_each_missing_key_its_error(
    any_store: Store,
) -> None:
    keys = [f"r/{i:03d}" for i in range(40)]
    for key in keys:
        any_store.write(key, key.encode(), sync=False)
    any_store.delete("r/007")
    found = list(any_store.read_many(keys))
    assert [key for key, _ in found] == keys
    for key, got in found:
        if key == "r/007":
            assert isinstance(got, Missing)  # a FileNotFoundError, as records always raised
        else:
            assert got == key.encode()


def test_read_many_of_a_folder_gives_an_unreadable_file_its_error(tmp_path: Path) -> None:
    """A file that is there and cannot be read (here a link to itself) is that
    record's problem: the others are read; a folder in a key's place is no object."""
    store = LocalStore(tmp_path)
    store.write("a", b"1")
    (tmp_path / "b").symlink_to("b")
    (tmp_path / "c").mkdir()
    store.write("d", b"4")
    found = dict(store.read_many(["a", "b", "c", "d"]))
    assert (found["a"], found["d"]) == (b"1", b"4")
    assert isinstance(found["b"], OSError)
    assert not isinstance(found["b"], FileNotFoundError)
    assert isinstance(found["c"], Missing)


def test_write_and_has(any_store: Store) -> None:
    assert not any_store.has("w/k.pkl")
    any_store.write("w/k.pkl", b"one")  # its folder made on the way
    any_store.write("w/k.pkl", b"two", sync=False)
    assert any_store.has("w/k.pkl")
    assert any_store.read("w/k.pkl") == b"two"
    assert not any_store.has("w/other.pkl")


def test_modified_moves_when_a_folder_gets_a_key_or_says_it_cannot_tell(
    any_store: Store,
) -> None:
    if not isinstance(any_store, LocalStore):
        assert any_store.modified("m/") is None  # callers list instead
        return
    assert any_store.modified("m/") == 0  # no such folder
    any_store.write("m/k", b"x")
    assert any_store.modified("m/") == (any_store.root / "m").stat().st_mtime_ns > 0


def test_prepare_makes_a_folder_and_nothing_else(any_store: Store, tmp_path: Path) -> None:
    any_store.prepare()
    any_store.prepare()  # again: nothing to do
    if isinstance(any_store, LocalStore):
        assert any_store.root.is_dir()
    nested = LocalStore(tmp_path / "a" / "b")
    nested.prepare()
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        LocalStore(tmp_path / "file").prepare()


def test_walk_finds_every_key_under_a_prefix(any_store: Store) -> None:
    keys = ["s/1/a.txt", "s/1/deep/b.bin", "s/1/deep/er/c", "s/2/other"]
    for key in keys:
        any_store.write(key, b"x")
    assert sorted(any_store.walk("s/1/")) == keys[:3]


def test_a_folder_listing_removes_dead_writers_temp_files_and_lists_none(
    tmp_path: Path,
) -> None:
    """A writer killed between its temp file and its rename leaves the temp file:
    the next listing of that folder removes it (a live writer's is kept)."""
    store = LocalStore(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = storage.temp_name("r1.pkl", child.pid, None, "u1")
    alive = storage.temp_name("r2.pkl", os.getpid(), None, "u2")
    # names that sort right beside the temp files' but are none
    others = [".tmp", ".tmp,x", ".tmp.x", "r.pkl"]
    for name in [dead, alive, *others]:
        (tmp_path / name).write_bytes(b"partial")
    assert list(store.list("")) == others
    assert not (tmp_path / dead).exists()
    assert (tmp_path / alive).exists()


def test_s3_listing_pages_past_a_thousand_keys(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_of("seaweedfs", request, tmp_path, monkeypatch)
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"runs/{i:05d}.pkl" for i in range(1100)]  # S3 pages hold 1,000 keys
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))
    assert list(store.list("runs/")) == keys
    assert list(store.list("runs/", start_after="runs/01049.pkl")) == keys[1050:]


# ---------------------------------------------------------------- real processes racing


def _race_new(url: str, env: dict[str, str], key: str, me: int, barrier: Any, out: Any) -> None:
    import os

    os.environ.update(env)
    store = open_store(url, fsync=False)
    barrier.wait()
    out.put((me, store.put_new(key, f"writer-{me}".encode())))


def _race_swap(
    url: str, env: dict[str, str], key: str, me: int, version: str, barrier: Any, out: Any
) -> None:
    import os

    os.environ.update(env)
    store = open_store(url, fsync=False)
    barrier.wait()
    out.put((me, store.put_if(key, f"writer-{me}".encode(), version)))


def _where(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    """The URL of a fresh store of ``kind``, and the settings that reach it (set
    in this process's environment too)."""
    if kind == "local":
        return str(tmp_path / "store"), {}
    server = use_server(kind, request, monkeypatch)
    return server.url(), server.env()


@pytest.mark.parametrize("kind", ATOMIC_KINDS)
@pytest.mark.parametrize("start", ["spawn", "fork", "forkserver"])
def test_processes_racing_to_create_one_key_one_wins(
    kind: str,
    start: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, env = _where(kind, request, tmp_path, monkeypatch)
    context = multiprocessing.get_context(start)
    writers, rounds = 4, 5
    for round in range(rounds):
        key = f"race/{round}"
        args = [(url, env, key, me) for me in range(writers)]
        results = dict(race(context, _race_new, args))
        winners = [me for me, version in results.items() if version is not None]
        assert len(winners) == 1, results
        (winner,) = winners
        assert open_store(url, fsync=False).get(key)[0] == f"writer-{winner}".encode()


@pytest.mark.parametrize("kind", ATOMIC_KINDS)
def test_processes_racing_to_swap_one_version_one_wins(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, env = _where(kind, request, tmp_path, monkeypatch)
    context = multiprocessing.get_context("spawn")
    writers = 4
    for round in range(4):
        key = f"swap/{round}"
        version = open_store(url, fsync=False).put(key, b"start")
        args = [(url, env, key, me, version) for me in range(writers)]
        results = dict(race(context, _race_swap, args))
        winners = [me for me, new in results.items() if new is not None]
        assert len(winners) == 1, results
        assert open_store(url, fsync=False).get(key)[0] == f"writer-{winners[0]}".encode()


# ---------------------------------------------------------------- a lost answer


def _through(proxy: DroppingProxy, server: Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    for name, value in {**server.env(), "AWS_ENDPOINT_URL": proxy.endpoint}.items():
        monkeypatch.setenv(name, value)
    return S3Store(server.url())


# once: the client's retry finds the object there (412) and reading back settles it;
# on every try: the client gives up, and reading back still finds the write made
EVERY = 50  # more answers lost than any client retries
LOST = pytest.mark.parametrize("lost", [1, EVERY], ids=["retried", "given-up"])


def _lost_as_planned(proxy: DroppingProxy, lost: int) -> None:
    """The answers were lost as the test meant: one, or every try's until the
    client gave up (then the proxy is disarmed)."""
    if lost == 1:
        assert proxy.dropped == 1
    else:
        assert ATTEMPTS <= proxy.dropped < EVERY
        proxy.drop_next("PUT", 0)


@LOST
def test_a_create_whose_answer_was_lost_is_settled_by_reading_back(
    lost: int, seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DroppingProxy(seaweedfs.endpoint) as proxy:
        store = _through(proxy, seaweedfs, monkeypatch)
        proxy.drop_next("PUT", lost)
        version = store.put_new("claims/k", b"token-mine")
        _lost_as_planned(proxy, lost)  # the server applied the write; its answers were lost
        assert version is not None
        assert store.get("claims/k") == (b"token-mine", version)
        assert store.put_new("claims/k", b"token-theirs") is None


@LOST
def test_a_swap_whose_answer_was_lost_is_settled_by_reading_back(
    lost: int, seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DroppingProxy(seaweedfs.endpoint) as proxy:
        store = _through(proxy, seaweedfs, monkeypatch)
        version = store.put("k", b"one")
        proxy.drop_next("PUT", lost)
        newer = store.put_if("k", b"two-mine", version)
        _lost_as_planned(proxy, lost)
        assert newer is not None
        assert store.get("k") == (b"two-mine", newer)


def test_a_lost_create_of_anothers_key_is_not_taken_for_ours(
    seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DroppingProxy(seaweedfs.endpoint) as proxy:
        store = _through(proxy, seaweedfs, monkeypatch)
        store.put_new("k", b"token-theirs")
        proxy.drop_next("PUT", EVERY)
        with pytest.raises(StoreError, match="cannot reach"):
            store.put_new("k", b"token-mine")  # not ours, and no answer: say so
        _lost_as_planned(proxy, EVERY)
        assert store.get("k")[0] == b"token-theirs"


# ---------------------------------------------------------------- settings a user gets wrong


def test_wrong_credentials_name_the_keys_to_fix(
    seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = S3Store(seaweedfs.url())
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        store.check()
    with pytest.raises(StoreError, match="refused the credentials"):
        store.put("k", b"x")


def test_a_missing_bucket_is_named(seaweedfs: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreError, match="the bucket 'no-such-bucket' does not exist"):
        S3Store("s3://no-such-bucket/prefix").check()


def test_an_unreachable_endpoint_names_the_endpoint_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(StoreError, match=rf"cannot reach http://127.0.0.1:{port}") as caught:
        S3Store("s3://bucket/p").check()
    assert "AWS_ENDPOINT_URL" not in str(caught.value)  # it is set: no hint to set it
    assert len(str(caught.value)) < 300  # one short line, not a traceback's worth


def test_plain_http_without_allow_http_says_so(
    seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises(StoreError, match="AWS_ALLOW_HTTP=true"):
        S3Store(seaweedfs.url()).check()


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://UPPER/p", "s3://a/p"])
def test_an_s3_url_without_a_valid_bucket_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="valid bucket"):
        parse(url)


def test_open_store_picks_the_store_of_a_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    store = open_store("s3://bucket/some/prefix/")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (
        "bucket",
        "some/prefix",
        "s3://bucket/some/prefix",
    )
    with pytest.raises(ValueError, match="gs:// roots are not supported"):
        open_store("gs://bucket/prefix")


def test_an_s3_store_travels_to_another_process_by_its_url(
    seaweedfs: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    store = S3Store(seaweedfs.url())
    store.put("k", b"x")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url
    assert copy.get("k")[0] == b"x"


def test_a_store_opened_twice_is_one_store(tmp_path: Path) -> None:
    """Equal (and hashed alike) by kind and place, so a listing groups runs by store;
    two stores in memory are never one, whatever their names."""
    from digital_experiments._store import MemoryStore

    assert LocalStore(tmp_path) == LocalStore(tmp_path)
    assert len({LocalStore(tmp_path), LocalStore(tmp_path), LocalStore(tmp_path / "b")}) == 2
    assert S3Store("s3://bucket/a") == S3Store("s3://bucket/a/")
    assert S3Store("s3://bucket/a") != S3Store("s3://bucket/b")
    assert MemoryStore() != MemoryStore()
    assert LocalStore(tmp_path) != open_store("s3://bucket/a")


def test_an_unsynced_put_is_still_whole(any_store: Store) -> None:
    """put(sync=False) (the cache index) skips only the wait for the disk."""
    any_store.put("cache/k", b"an id", sync=False)
    assert any_store.read("cache/k") == b"an id"


def test_a_users_file_named_like_a_temp_file_is_listed_and_kept(tmp_path: Path) -> None:
    """Only names of the shape our temp files have are skipped: a user's ``.tmp-notes.txt``
    artefact is listed, walked, and uploaded with its run."""
    from digital_experiments import current_dir, experiment

    store = LocalStore(tmp_path / "folder")
    store.put("storage/run/.tmp-notes.txt", b"mine")
    ours = storage.temp_name("x.pkl", os.getpid(), None, "0123abcd7")
    assert storage.is_temp(ours)
    assert not storage.is_temp(".tmp-notes.txt")
    (tmp_path / "folder" / "storage" / "run" / ours).write_bytes(b"half")
    assert list(store.list("storage/run/")) == ["storage/run/.tmp-notes.txt"]
    assert list(store.walk("storage/run/")) == ["storage/run/.tmp-notes.txt"]

    @experiment(root=f"memory://temp-named-{uuid.uuid4().hex}")  # a new root each time
    def f() -> int:
        (current_dir() / ".tmp-notes.txt").write_text("mine")
        return 1

    f()
    (run,) = f.observations()
    assert [p.name for p in f.artefacts(run.id)] == [".tmp-notes.txt"]


# ---------------------------------------------------------------- the store in memory


def test_a_store_in_memory_is_named_by_its_url_and_says_so_when_a_key_is_missing() -> None:
    from digital_experiments._store import MemoryStore

    assert MemoryStore().url == "memory://memory"
    store = MemoryStore("runs")
    assert store.url == "memory://runs"
    with pytest.raises(Missing) as missing:
        store.get("a/k")
    assert str(missing.value) == "No object 'a/k' in 'memory://runs'."
    store.put("top", b"1")
    store.put("a/k", b"2")
    assert list(store.list()) == ["top"]  # the top level by default


def test_a_store_in_memory_stages_in_a_folder_of_its_own() -> None:
    from digital_experiments._store import MemoryStore

    first, second = MemoryStore(), MemoryStore()
    assert first.workdir.is_dir()
    assert first.workdir == first.workdir  # made once
    assert list(first.workdir.iterdir()) == []
    assert first.workdir != second.workdir
    assert first.workdir.resolve() != Path.cwd().resolve()


def test_the_age_of_an_object_in_memory_counts_from_its_last_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from digital_experiments._store import MemoryStore, memory

    clock = [100.0]
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    store = MemoryStore()
    assert store.age("k") is None  # no such object
    version = store.put("k", b"1")
    store.put_new("new", b"1")
    clock[0] = 107.5
    assert store.age("k") == 7.5
    assert store.age("new") == 7.5
    assert store.put_if("k", b"2", version) is not None
    clock[0] = 110.0
    assert store.age("k") == 2.5  # from the rewrite
    store.put("k", b"3")
    assert store.age("k") == 0.0
    store.delete("k")
    assert store.age("k") is None  # gone
    assert store.age("new") == 10.0
