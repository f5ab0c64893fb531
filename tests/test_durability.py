"""Durability levels: "power" syncs every final record, "process" never waits for the disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import experiment, log, query
from digital_experiments._store import files as storage


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every data or folder sync the library asks for, by kind."""
    seen: list[str] = []
    data_sync, fsync = storage._sync_data, os.fsync

    def counted_data(fd: int) -> None:
        seen.append("data")
        data_sync(fd)

    def counted_fsync(fd: int) -> None:
        seen.append("fsync")
        fsync(fd)

    monkeypatch.setattr(storage, "_sync_data", counted_data)
    monkeypatch.setattr(os, "fsync", counted_fsync)
    return seen


def make(root: Path, **options: Any) -> Any:
    @experiment(root=root, **options)
    def f(x: int) -> int:
        log(x=x)
        return x

    f(0)  # the first call also stores the shared environment
    return f


def test_power_syncs_each_completed_record(tmp_path: Path, syncs: list[str]) -> None:
    f = make(tmp_path)
    syncs.clear()
    f(1)
    assert "data" in syncs  # the record's data...
    assert syncs.count("fsync") >= 2  # ...its folder, and the metrics file


def test_process_never_waits_for_the_disk(tmp_path: Path, syncs: list[str]) -> None:
    f = make(tmp_path, durability="process")
    syncs.clear()
    for x in range(1, 4):
        f(x)
    assert syncs == []
    assert [o.result for o in f.observations()] == [0, 1, 2, 3]
    assert list(f.observations()[-1].metrics().value) == [3]


def test_the_environment_variable_sets_the_default(
    tmp_path: Path, syncs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DE_DURABILITY", "process")
    f = make(tmp_path / "env")
    assert f.backend.durability == "process"
    syncs.clear()
    f(1)
    assert syncs == []
    g = make(tmp_path / "explicit", durability="power")  # the argument wins
    assert g.backend.durability == "power"


def test_an_unknown_level_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"durability= 'disk' is not a durability level"):

        @experiment(durability="disk")
        def f() -> None: ...

    monkeypatch.setenv("DE_DURABILITY", "sometimes")
    with pytest.raises(ValueError, match=r"\$DE_DURABILITY 'sometimes' is not a durability"):

        @experiment
        def g() -> None: ...


CHILD = """
import os, signal, sys
from digital_experiments import experiment

@experiment(root=sys.argv[1], durability="process")
def f(x):
    return x * 2

f(21)
os.kill(os.getpid(), signal.SIGKILL)  # no exit handlers, no flush: the process just dies
"""


def test_a_completed_run_survives_kill_9_at_process_level(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL
    (run,) = query.load(tmp_path)
    assert run.result == 42
    assert run.status == "completed"
