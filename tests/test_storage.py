"""Where records go on disk, and the storage rules (claims, atomic writes, shared environments)."""

from __future__ import annotations

import datetime
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
