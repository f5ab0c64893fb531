"""The caches and shortcuts that keep calls and listings fast stay correct.

Environment digests are memoised, git facts are cached on file signatures,
temp names use a counter and records are read with raw ``os.read``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._model import layout
from digital_experiments._record import environment
from digital_experiments._store import blobs as shared
from digital_experiments._store import files as storage
from digital_experiments._store.local import LocalStore

from .conftest import git


def blobs(root: Path) -> list[str]:
    return sorted(p.name for p in layout.internal(root, "environments").glob("*.json"))


def test_equal_environments_are_stored_once(tmp_path: Path) -> None:
    """The same environment, even as a new dict, gets the same digest and one blob."""
    env = {"system": {"pwd": "/a"}, "pip_freeze": "x==1"}
    first = shared.put_environment(LocalStore(tmp_path), env)
    second = shared.put_environment(
        LocalStore(tmp_path), {"system": {"pwd": "/a"}, "pip_freeze": "x==1"}
    )
    assert first == second
    assert blobs(tmp_path) == [f"{first}.json"]


def test_a_changed_environment_gets_a_new_blob(tmp_path: Path) -> None:
    """Changing a value, even in place after it was stored, makes a new digest."""
    env = {"system": {"pwd": "/a"}, "pip_freeze": "x==1"}
    first = shared.put_environment(LocalStore(tmp_path), env)
    env["system"]["pwd"] = "/b"  # the memo kept its own copy
    second = shared.put_environment(LocalStore(tmp_path), env)
    assert first != second
    assert len(blobs(tmp_path)) == 2
    assert shared.get_environment(LocalStore(tmp_path), second) == env


def test_equal_values_of_other_types_are_not_confused(tmp_path: Path) -> None:
    """``1`` and ``1.0`` compare equal but are stored as different environments."""
    as_int = shared.put_environment(LocalStore(tmp_path), {"value": 1})
    as_float = shared.put_environment(LocalStore(tmp_path), {"value": 1.0})
    assert as_int != as_float
    assert shared.get_environment(LocalStore(tmp_path), as_float) == {"value": 1.0}
    assert type(shared.get_environment(LocalStore(tmp_path), as_float)["value"]) is float


@pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
    reason="git not installed",
)
def test_git_info_follows_commits_branches_and_remotes(tmp_path: Path) -> None:
    """The cached git facts change as soon as HEAD, its branch or the config do."""
    git(tmp_path, "init", "-q", "-b", "main")
    assert environment.git_info(str(tmp_path)) == {
        "branch": "main",
        "commit": None,
        "remote": None,
        "dirty": False,
    }
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "one")
    one = git(tmp_path, "rev-parse", "HEAD")
    assert environment.git_info(str(tmp_path))["commit"] == one  # type: ignore[index]
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "two")
    two = git(tmp_path, "rev-parse", "HEAD")
    assert environment.git_info(str(tmp_path))["commit"] == two  # type: ignore[index]
    git(tmp_path, "checkout", "-q", "-b", "other", one)
    assert environment.git_info(str(tmp_path)) == {
        "branch": "other",
        "commit": one,
        "remote": None,
        "dirty": False,
    }
    git(tmp_path, "remote", "add", "origin", "https://example.com/r.git")
    info = environment.git_info(str(tmp_path))
    assert info is not None
    assert info["remote"] == "https://example.com/r.git"
    git(tmp_path, "checkout", "-q", "--detach", two)
    assert environment.git_info(str(tmp_path)) == {
        "branch": "HEAD",
        "commit": two,
        "remote": "https://example.com/r.git",
        "dirty": False,
    }


def test_temp_names_are_unique_and_cleaned_up_after_their_writer_dies(tmp_path: Path) -> None:
    """Temp names differ per write, and a dead writer's leftovers are removable."""
    target = str(tmp_path / "record.pkl")
    names = {os.path.basename(storage._temp_path(target)) for _ in range(1000)}
    assert len(names) == 1000
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    leftover = next(iter(names)).replace(f"-{os.getpid()}-", f"-{child.pid}-", 1)
    (tmp_path / leftover).write_bytes(b"partial")
    storage.remove_stale_temp(tmp_path, leftover)
    assert not (tmp_path / leftover).exists()
    mine = next(iter(names))
    (tmp_path / mine).write_bytes(b"in progress")
    storage.remove_stale_temp(tmp_path, mine)  # this process is alive: kept
    assert (tmp_path / mine).exists()


def test_writes_create_missing_folders(tmp_path: Path) -> None:
    """The first write to a folder creates it (no mkdir on every write)."""
    target = tmp_path / "a" / "b" / "record.pkl"
    storage.atomic_write(target, b"data")
    assert target.read_bytes() == b"data"
    assert storage.exclusive_write(tmp_path / "c" / "x", b"one")


@pytest.mark.parametrize("size", [0, 10, 65536, 200_000])
def test_read_bytes_reads_whole_files(tmp_path: Path, size: int) -> None:
    """Records of any size are read whole."""
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert storage.read_bytes(str(tmp_path / "f")) == data


def _same_tick(folder: Path, stamp: int) -> None:
    """Give ``folder`` the mtime ``stamp`` again, as a coarse clock does when two
    changes land in one tick."""
    os.utime(folder, ns=(stamp, stamp))


def _two_runs_the_first_tagged(root: Path) -> tuple[Any, str, str]:
    """An experiment in ``root`` with two runs, the first tagged ``seen=True``."""
    from digital_experiments import experiment

    def f(x: int) -> int:
        return x

    run = experiment(root=root)(f)
    run(1)
    run(2)
    first, second = (o.id for o in run.observations())
    run.tag(first, seen=True)
    return run, first, second


def test_tags_added_in_the_same_mtime_tick_as_a_listing_still_show(tmp_path: Path) -> None:
    """The cached list of tagged runs is keyed by the annotations folder's mtime;
    a run tagged just after a listing, in the same tick, is still found."""
    run, first, second = _two_runs_the_first_tagged(tmp_path / "f")
    folder = layout.internal(tmp_path / "f", "annotations")
    stamp = os.stat(folder).st_mtime_ns
    backend = run.backend
    assert backend.load(first).metadata["tags"] == {"seen": True}  # the listing is cached
    run.tag(second, seen=False)
    _same_tick(folder, stamp)
    assert backend.load(second).metadata["tags"] == {"seen": False}


def test_a_first_metric_in_the_same_mtime_tick_as_a_listing_still_shows(tmp_path: Path) -> None:
    from digital_experiments._runs import metrics

    folder = layout.internal(tmp_path, "metrics")
    folder.mkdir(parents=True)
    (folder / "2026-01-01_00-00-00_000001.jsonl").write_text('[0, "loss", 1.0, 0.0]\n')
    stamp = os.stat(folder).st_mtime_ns
    store = LocalStore(tmp_path)
    assert metrics.logged(store) == {"2026-01-01_00-00-00_000001"}
    (folder / "2026-01-01_00-00-00_000002.jsonl").write_text('[0, "loss", 2.0, 0.0]\n')
    _same_tick(folder, stamp)
    assert metrics.logged(store) == {"2026-01-01_00-00-00_000001", "2026-01-01_00-00-00_000002"}


def test_an_old_listing_is_trusted_without_looking_again(tmp_path: Path) -> None:
    """Once the folder's mtime is settled, an untagged run costs no file lookup."""
    run, first, second = _two_runs_the_first_tagged(tmp_path / "g")
    folder = layout.internal(tmp_path / "g", "annotations")
    old = os.stat(folder).st_mtime_ns - 2 * storage.RECENT_NS
    _same_tick(folder, old)
    backend = run.backend
    assert backend.load(first).metadata["tags"] == {"seen": True}
    # a file the settled listing does not name is not looked for
    (folder / f"{second}.json").write_text('{"tags": {"sneaked": 1}}')
    _same_tick(folder, old)
    assert "tags" not in backend.load(second).metadata
