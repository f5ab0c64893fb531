"""Where records go on disk, and the storage rules (claims, atomic writes, shared environments)."""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import current_dir, experiment
from digital_experiments._record import run as runs
from digital_experiments._record.environment import pip_freeze
from digital_experiments._store import blobs
from digital_experiments._store import files as storage

SUFFIXES = {"pickle": ".pkl", "json": ".json", "yaml": ".yaml"}
ID_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}$")


def visible(folder: Path) -> list[str]:
    """The names ``ls folder`` shows (hidden files excluded), sorted."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------- layout


def test_default_root_is_experiments_slash_name(tmp_path: Path) -> None:
    """Without ``root`` or ``DE_ROOT`` records go to ``./experiments/<name>/<id>.pkl``."""

    @experiment
    def square(x: int) -> int:
        return x**2

    square(1)
    root = tmp_path / "experiments" / "square"
    assert square.backend.root == root
    (observation,) = square.observations()
    assert visible(root) == [f"{observation.id}.pkl"]


@pytest.mark.parametrize(("backend", "suffix"), SUFFIXES.items())
def test_backend_chooses_the_record_suffix(tmp_path: Path, backend: str, suffix: str) -> None:
    """``backend="json"``/``"yaml"`` write ``<id>.json``/``<id>.yaml`` (pickle: ``.pkl``)."""

    @experiment(backend=backend)
    def square(x: int) -> int:
        return x**2

    square(1)
    square(2)
    ids = [o.id for o in square.observations()]
    assert visible(tmp_path / "experiments" / "square") == [f"{i}{suffix}" for i in ids]


@pytest.mark.parametrize("as_type", [str, Path])
def test_root_is_the_experiments_own_folder(tmp_path: Path, as_type: type) -> None:
    """``root=`` (a str or a Path) is used as is, without appending the name."""

    @experiment(root=as_type("my-runs"))
    def square(x: int) -> int:
        return x**2

    square(1)
    assert square.backend.root == tmp_path / "my-runs"
    assert visible(tmp_path / "my-runs") == [f"{square.observations()[0].id}.pkl"]
    assert not (tmp_path / "experiments").exists()


def test_root_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``root="~/runs"`` expands the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    @experiment(root="~/runs")
    def f() -> None:
        pass

    assert f.backend.root == tmp_path / "home" / "runs"


def test_de_root_gives_a_folder_per_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``DE_ROOT`` set each experiment lives in ``$DE_ROOT/<name>``."""
    monkeypatch.setenv("DE_ROOT", str(tmp_path / "shared"))

    @experiment
    def first() -> int:
        return 1

    @experiment
    def second() -> int:
        return 2

    first()
    second()
    assert first.backend.root == tmp_path / "shared" / "first"
    assert second.backend.root == tmp_path / "shared" / "second"
    assert [o.result for o in first.observations()] == [1]
    assert [o.result for o in second.observations()] == [2]


def test_root_beats_de_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit ``root=`` wins over ``DE_ROOT``."""
    monkeypatch.setenv("DE_ROOT", str(tmp_path / "shared"))

    @experiment(root="mine")
    def f() -> None:
        pass

    assert f.backend.root == tmp_path / "mine"


def test_relative_root_is_fixed_at_decoration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative root is resolved once, so changing directory later does not move the store."""

    @experiment(root="runs")
    def f() -> None:
        pass

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    f()
    assert len(list((tmp_path / "runs").glob("*.pkl"))) == 1


def test_ls_root_shows_only_records_and_storage(tmp_path: Path) -> None:
    """Internal files live in a hidden ``.de`` folder: ``ls root`` shows records and ``storage``."""

    @experiment(cache=True)
    def save(x: int) -> int:
        (current_dir() / "out.txt").write_text(str(x))
        return x

    save(1)
    save(2)
    save(1)  # a cache hit, to exercise the cache index too
    root = tmp_path / "experiments" / "save"
    ids = [o.id for o in save.observations()]
    assert visible(root) == sorted([f"{i}.pkl" for i in ids] + ["storage"])
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [".de"]
    assert visible(root / "storage") == ids


@pytest.mark.parametrize("backend", SUFFIXES)
def test_no_temporary_files_are_left_behind(tmp_path: Path, backend: str) -> None:
    """After runs finish the experiment folder holds no temp files."""

    @experiment(backend=backend)
    def f(x: int) -> int:
        return x

    for i in range(5):
        f(i)
    leftovers = [p for p in (tmp_path / "experiments" / "f").rglob("*") if storage.is_temp(p.name)]
    assert leftovers == []


# ---------------------------------------------------------------- ids


def test_ids_have_the_2_0_4_shape_and_are_unique() -> None:
    """Ids look like ``YYYY-MM-DD_HH-MM-SS_ffffff`` and never repeat, even in a tight loop."""

    @experiment
    def f(x: int) -> int:
        return x

    for i in range(50):
        f(i)
    ids = [o.id for o in f.observations()]
    assert len(set(ids)) == 50
    assert all(ID_PATTERN.match(i) for i in ids)
    assert [o.result for o in f.observations()] == list(range(50))


def test_claim_takes_a_free_id_at_or_after_the_one_asked(tmp_path: Path) -> None:
    """A claimed id is never reused: a clash moves on to a later id of the same shape."""
    first = storage.reserve_id(tmp_path, "2020-01-01_00-00-00_000000")
    second = storage.reserve_id(tmp_path, "2020-01-01_00-00-00_000000")
    assert "2020-01-01_00-00-00_000000" <= first < second
    assert ID_PATTERN.match(second)
    assert sorted(os.listdir(tmp_path / ".de" / "ids")) == [first, second]


def test_ids_are_one_namespace_per_root_whatever_the_format(tmp_path: Path) -> None:
    """A pickle and a json experiment on one root never share an id, even under a frozen clock."""

    @experiment(root=tmp_path, backend="pickle")
    def p(i: int) -> int:
        return i

    @experiment(root=tmp_path, backend="json")
    def j(i: int) -> int:
        return i

    frozen = datetime.datetime(2026, 1, 1, 12, 0, 0)

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(frozen.timestamp(), tz)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "datetime", Frozen)
        for i in range(20):
            p(i)
            j(i)
    ids = [path.stem for path in tmp_path.iterdir() if path.suffix in (".pkl", ".json")]
    assert len(ids) == len(set(ids)) == 40


def test_exclusive_write_never_overwrites(tmp_path: Path) -> None:
    """``exclusive_write`` publishes once and reports False afterwards, leaving the first data."""
    target = tmp_path / "record"
    assert storage.exclusive_write(target, b"first")
    assert not storage.exclusive_write(target, b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["record"]


def test_atomic_write_replaces(tmp_path: Path) -> None:
    """``atomic_write`` replaces the whole file and leaves no temp file."""
    target = tmp_path / "sub" / "record"
    storage.atomic_write(target, b"old")
    storage.atomic_write(target, b"new", fsync=False)
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["record"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """Listing removes temp files left by a dead process of this machine, and keeps live ones."""

    @experiment(root="runs")
    def f() -> None:
        pass

    root = tmp_path / "runs"
    me = storage.process_info()
    dead = root / storage.temp_name("x.pkl", 999_999_999, None, "abcdefabcdef")
    alive = root / storage.temp_name("y.pkl", me["pid"], me["start"], "abcdefabcdef")
    dead.write_bytes(b"partial")
    alive.write_bytes(b"partial")
    assert f.observations() == []
    assert not dead.exists()
    assert alive.exists()


# ---------------------------------------------------------------- unreadable records


@pytest.mark.parametrize(("backend", "suffix"), SUFFIXES.items())
def test_unreadable_record_is_skipped_with_a_warning(
    tmp_path: Path, backend: str, suffix: str
) -> None:
    """A corrupt record file is skipped (with a warning); the other runs still list."""

    @experiment(backend=backend)
    def f(x: int) -> int:
        return x

    f(1)
    (tmp_path / "experiments" / "f" / f"2000-01-01_00-00-00_000000{suffix}").write_bytes(
        b"\x80\x04garbage{{: ["
    )
    with pytest.warns(UserWarning, match="Skipping unreadable record '2000-01-01_00-00-00_000000'"):
        observations = f.observations()
    assert [o.result for o in observations] == [1]


# ---------------------------------------------------------------- shared environments


@pytest.mark.parametrize(("backend", "suffix"), SUFFIXES.items())
def test_environment_is_stored_once_and_referenced(
    tmp_path: Path, backend: str, suffix: str
) -> None:
    """Records reference a shared environment blob, yet observations show the full environment."""

    @experiment(backend=backend)
    def f(x: int) -> int:
        return x

    for i in range(10):
        f(i)
    root = tmp_path / "experiments" / "f"
    blobs = list((root / ".de" / "environments").iterdir())
    assert len(blobs) == 1
    freeze = pip_freeze()
    assert freeze.splitlines()[0].encode() in blobs[0].read_bytes()
    for record in root.glob(f"*{suffix}"):
        data = record.read_bytes()
        assert b"filelock==" not in data
        assert freeze.splitlines()[0].encode() not in data
    for observation in f.observations():
        assert observation.metadata["environment"]["pip_freeze"] == freeze
        assert "environment_ref" not in observation.metadata


def test_editing_one_observations_environment_cannot_change_another() -> None:
    """Observations share one read-only environment (issue 13): an edit raises
    instead of reaching every other observation and the cache."""

    @experiment
    def f(x: int) -> int:
        return x

    f(1)
    f(2)
    a, b = f.observations()
    assert a.metadata["environment"] is b.metadata["environment"]
    with pytest.raises(TypeError, match="read-only"):
        a.metadata["environment"].pop("pip_freeze")
    with pytest.raises(TypeError, match="read-only"):
        a.metadata["environment"]["system"]["pwd"] = "changed"
    again = f.observations()
    assert all("pip_freeze" in o.metadata["environment"] for o in again)
    assert all(o.metadata["environment"]["system"]["pwd"] != "changed" for o in again)


def test_missing_environment_blob_loads_as_none(tmp_path: Path) -> None:
    """If the shared blob is deleted, records still load, with environment None."""

    @experiment(root="runs")
    def f() -> int:
        return 1

    f()
    blobs._CACHE.clear()
    for blob in (tmp_path / "runs" / ".de" / "environments").iterdir():
        blob.unlink()
    with pytest.warns(UserWarning, match="is missing"):
        (observation,) = f.observations()
    assert observation.result == 1
    assert observation.metadata["environment"] is None


def test_a_frozen_clock_costs_no_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a frozen clock a process never retries its own ids: 600 claims, 600 creates."""
    frozen = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(frozen.timestamp(), tz)

    monkeypatch.setattr(storage, "datetime", Frozen)
    creates = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if f"{os.sep}ids{os.sep}" in os.fspath(path):
            creates.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    ids = [storage.reserve_id(tmp_path, storage.new_id()) for _ in range(600)]
    assert len(set(ids)) == 600
    assert len(creates) == 600 + 1  # one retry at most: the very first create makes the folder
    assert ids == sorted(ids)


def _blob(root: Path) -> Path:
    (blob,) = (root / ".de" / "environments").iterdir()
    return blob


def _run_in_new_process(root: Path) -> None:
    """One run of ``f`` at ``root`` from a fresh interpreter (empty per-process caches)."""
    code = (
        "import sys\n"
        "from digital_experiments import experiment\n"
        "@experiment(root=sys.argv[1])\n"
        "def f() -> int:\n"
        "    return 1\n"
        "f()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(root)], check=True)


def test_deleted_environment_blob_warns_once_and_is_rewritten(tmp_path: Path) -> None:
    """A deleted blob warns (naming it) once; the next run in this process writes it again."""

    @experiment(root=tmp_path / "runs")
    def f(x: int) -> int:
        return x

    f(1)
    blob = _blob(tmp_path / "runs")
    content = blob.read_bytes()
    blobs._CACHE.clear()
    blob.unlink()
    with pytest.warns(UserWarning, match=re.escape(str(blob))) as caught:
        assert [o.metadata["environment"] for o in f.observations()] == [None]
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second listing is quiet
        f.observations()
    f(2)  # same process, blob known: a stat notices it is gone
    assert blob.read_bytes() == content
    envs = [o.metadata["environment"] for o in f.observations()]
    assert envs[0] == envs[1] is not None
    assert not [p for p in blob.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "damage",
    [b"", b'{"pip_freeze": "tru', b'{"pip_freeze": "other"}'],
    ids=["empty", "torn", "wrong"],
)
def test_corrupt_environment_blob_warns_and_next_writer_repairs(
    tmp_path: Path, damage: bytes
) -> None:
    """A torn, empty or foreign blob reads as None with a warning; a new writer rewrites it."""
    root = tmp_path / "runs"
    _run_in_new_process(root)
    blob = _blob(root)
    content = blob.read_bytes()
    blob.write_bytes(damage)
    with pytest.warns(UserWarning, match=re.escape(str(blob)) + ".* is corrupt"):
        observations = storage_observations(root)
    assert [o.metadata["environment"] for o in observations] == [None]
    _run_in_new_process(root)
    assert blob.read_bytes() == content
    blobs._CACHE.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        environments = [o.metadata["environment"] for o in storage_observations(root)]
    assert len(environments) == 2
    assert environments[0] == environments[1] == json.loads(content)


def storage_observations(root: Path) -> list[object]:
    """Every observation at ``root``, read by a fresh experiment object."""
    from digital_experiments import Observation

    @experiment(root=root)
    def f() -> int:
        return 1

    observations: list[Observation] = f.observations(current_code_only=False)
    return list(observations)


def _recorded(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The ``(method, key)`` of each ``get``, ``version`` and ``put`` ``store`` is asked
    (not those a store's own methods make of each other)."""
    calls: list[tuple[str, str]] = []
    inside: list[bool] = []
    for name in ("get", "version", "put"):
        real = getattr(store, name)

        def method(key: str, *args: Any, _name: str = name, _real: Any = real, **kw: Any) -> Any:
            if not inside:
                calls.append((_name, key))
            inside.append(True)
            try:
                return _real(key, *args, **kw)
            finally:
                inside.pop()

        monkeypatch.setattr(store, name, method)
    return calls


@pytest.fixture
def fresh_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: no blob known, none read, no environment digested."""
    monkeypatch.setattr(blobs, "_KNOWN", set())
    monkeypatch.setattr(blobs, "_CACHE", {})
    monkeypatch.setattr(blobs, "_WARNED", set())
    monkeypatch.setattr(storage, "_LAST_DIGEST", None)


ENVIRONMENT = {"pip_freeze": "a==1", "python": {"executable": Path("/usr/bin/python3")}}


def test_a_blob_costs_requests_only_until_it_is_known(
    fresh_blobs: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote store's blob is trusted for the process's life; a folder's is checked
    to exist (a ``stat``), and written again once gone."""
    from digital_experiments._store import LocalStore, MemoryStore

    remote, folder = MemoryStore("requests"), LocalStore(tmp_path / "runs")
    digest = blobs.put_environment(remote, ENVIRONMENT)
    key = f".de/environments/{digest}.json"
    for store in (remote, folder):
        calls = _recorded(store, monkeypatch)
        assert blobs.put_environment(store, ENVIRONMENT) == digest
        if store is folder:
            assert calls == [("get", key), ("put", key)]  # read back (missing), written
            calls.clear()
            assert blobs.put_environment(store, ENVIRONMENT) == digest
        assert calls == ([] if store is remote else [("version", key)])
    (tmp_path / "runs" / ".de" / "environments" / f"{digest}.json").unlink()
    calls.clear()
    blobs.put_environment(folder, ENVIRONMENT)
    assert calls == [("version", key), ("get", key), ("put", key)]
    assert folder.read(key) == remote.read(key)
    # a write that failed leaves the blob unknown: the next store looks for it afresh
    (tmp_path / "runs" / ".de" / "environments" / f"{digest}.json").unlink()
    recording = folder.put

    def full(key: str, data: bytes, **options: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder, "put", full)
    with pytest.raises(OSError, match="No space"):
        blobs.put_environment(folder, ENVIRONMENT)
    monkeypatch.setattr(folder, "put", recording)
    calls.clear()
    blobs.put_environment(folder, ENVIRONMENT)
    assert calls == [("get", key), ("put", key)]


def test_a_blob_already_there_is_rewritten_only_if_damaged(
    fresh_blobs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first store in a process reads back the blob another process wrote."""
    from digital_experiments._store import MemoryStore

    digest, _ = storage.environment_digest(ENVIRONMENT)
    key = f".de/environments/{digest}.json"
    cases = {"intact": None, "torn": b'{"pip_freeze": "tru', "empty": b""}
    for name, damage in cases.items():
        store = MemoryStore(name)
        blobs.put_environment(store, ENVIRONMENT)  # as another process did
        written = store.read(key)
        if damage is not None:
            store.put(key, damage)
        monkeypatch.setattr(blobs, "_KNOWN", set())  # this process knows no blob yet
        calls = _recorded(store, monkeypatch)
        assert blobs.put_environment(store, ENVIRONMENT) == digest
        assert calls == [("get", key)] + ([] if damage is None else [("put", key)])
        assert store.read(key) == written
        assert json.loads(written)["pip_freeze"] == "a==1"


def test_an_environment_digested_already_is_written_alike_to_another_root(
    fresh_blobs: None,
) -> None:
    """The second root gets no text from the digest (it was cached), so the blob is
    written again from the environment: values JSON does not know by their repr."""
    from digital_experiments._store import MemoryStore

    first, second = MemoryStore("first"), MemoryStore("second")  # blobs are known by URL
    digest = blobs.put_environment(first, ENVIRONMENT)
    assert blobs.put_environment(second, ENVIRONMENT) == digest
    key = f".de/environments/{digest}.json"
    assert second.read(key) == first.read(key)
    assert json.loads(first.read(key))["python"] == {"executable": repr(Path("/usr/bin/python3"))}


def test_a_blob_that_cannot_be_read_warns_naming_it_and_what_is_wrong(
    fresh_blobs: None, tmp_path: Path
) -> None:
    from digital_experiments._store import LocalStore, MemoryStore

    remote, folder = MemoryStore("blobs"), LocalStore(tmp_path / "runs")
    digest = blobs.put_environment(folder, ENVIRONMENT)
    key = f".de/environments/{digest}.json"
    folder.put(key, b'{"pip_freeze": "other"}')
    tail = (
        "; the runs that refer to it show metadata['environment'] as None. The next run in "
        "the same environment writes it again."
    )
    path = str(tmp_path / "runs" / ".de" / "environments" / f"{digest}.json")
    with pytest.warns(UserWarning, match="is corrupt") as corrupt:
        assert blobs.get_environment(folder, digest) is None
    with pytest.warns(UserWarning, match="is missing") as missing:
        assert blobs.get_environment(remote, digest) is None
    assert [str(w.message) for w in [*corrupt, *missing]] == [
        f"Environment blob {path!r} is corrupt (its content does not match its name)" + tail,
        f"Environment blob 'memory://blobs/{key}' is missing (No object {key!r} in "
        "'memory://blobs'.)" + tail,
    ]


def test_upload_copies_only_the_prefix_in_key_order(tmp_path: Path) -> None:
    from digital_experiments._store import LocalStore, MemoryStore

    local, remote = LocalStore(tmp_path / "work"), MemoryStore()
    for key in ("storage/a/z.txt", "storage/a/deep/y.bin", "storage/b/x.txt", "top.txt"):
        local.put(key, key.encode())
    order: list[str] = []
    real = remote.put
    remote.put = lambda key, data, **kw: order.append(key) or real(key, data, **kw)  # type: ignore[method-assign]
    blobs.upload(local, remote, "storage/a/")
    assert order == ["storage/a/deep/y.bin", "storage/a/z.txt"]
    assert sorted(remote.walk("")) == order
    assert remote.read("storage/a/z.txt") == b"storage/a/z.txt"


def test_download_keeps_local_files_and_never_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The working folder is a cache of the store's copy: nothing waits for its disk."""
    from digital_experiments._store import LocalStore, MemoryStore

    remote, local = MemoryStore(), LocalStore(tmp_path / "work", fsync=True)
    remote.put("storage/r/a.txt", b"store's")
    remote.put("storage/r/b.txt", b"store's")
    local.put("storage/r/b.txt", b"edited here")
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    blobs.download(remote, local, "storage/r/")
    monkeypatch.undo()
    assert synced == []
    assert local.read("storage/r/a.txt") == b"store's"
    assert local.read("storage/r/b.txt") == b"edited here"


CLAIM_ONE_ID = """
import sys
from pathlib import Path
from digital_experiments import Observation
from digital_experiments.backends import instantiate_backend

backend = instantiate_backend(sys.argv[2], Path(sys.argv[1]))
print(backend.create(Observation("2030-01-01_00-00-00_000000", {}, None, {})).id)
"""


def test_two_processes_and_two_formats_never_share_an_id(tmp_path: Path) -> None:
    """Fresh processes asking for one id, in pickle and in json, on one root: two ids."""
    from .conftest import python_code

    ids = []
    for backend in ("pickle", "json"):
        done = python_code(CLAIM_ONE_ID, tmp_path, backend)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    assert ids[0] == "2030-01-01_00-00-00_000000"  # a fresh process takes the id it asks for
    assert ids[1] != ids[0]
    assert sorted(os.listdir(tmp_path / ".de" / "ids")) == sorted(ids)
