"""Faults at the process level: kill -9 mid-write, kill -9 mid-run, SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import reader

KILLS = 24
SIZE = 300_000  # bytes per record: above the drivers' 100 kB fault-point threshold


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pickle", "json"])
def test_kill_9_while_writing_large_records_leaves_store_readable(
    kind: str, run_driver: Callable[..., Any], runs_root: Path
) -> None:
    """24 kill -9 of writers of 3 MB records: all listed records load whole, temp files never list.

    A later listing removes the temp files the dead writers left behind.
    """
    out = run_driver("killer", kind, KILLS, SIZE)
    assert out["mid_write"] == KILLS  # every kill landed while a record was being written
    root = runs_root / f"big_{kind}"

    big = reader(root, backend=kind)
    ids = big.backend.all_ids()
    assert not [id for id in ids if id.startswith(".")]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # cleaned by listing

    observations = big.observations(current_code_only=False, status="all")
    assert len(observations) == len(ids) >= KILLS
    completed = [o for o in observations if o.status == "completed"]
    assert completed, "no writer ever finished a record"
    for o in completed:
        i = o.config["i"]
        if kind == "pickle":
            assert o.result == bytes([i % 256]) * SIZE
        else:
            assert o.result == {"i": i, "payload": "x" * SIZE, "tail": i}
    # a writer killed mid-run left its `running` record, which reads as abandoned
    abandoned = big.observations(current_code_only=False, status="abandoned")
    assert big.observations(current_code_only=False, status="running") == []
    assert len(completed) + len(abandoned) == len(observations)
    for o in abandoned:
        assert o.status == "abandoned"
        assert o.result is None
        assert o.metadata["status"] == "running"  # the record itself is untouched
    shutil.rmtree(runs_root)  # several hundred MB: do not keep them in pytest's basetemp


def test_kill_9_mid_run_reads_as_abandoned(
    start_driver: Callable[..., subprocess.Popen[str]], runs_root: Path, tmp_path: Path
) -> None:
    """A run whose process is killed with -9 stays `running` on disk and reads as `abandoned`."""
    marker = tmp_path / "started"
    process = start_driver("hold", marker)
    _wait_for(marker, process)
    hold = reader(runs_root / "hold")
    (running,) = hold.observations(current_code_only=False, status="running")
    assert running.id == marker.read_text()

    process.kill()
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert hold.observations(current_code_only=False, status="running") == []
    (abandoned,) = hold.observations(current_code_only=False, status="abandoned")
    assert abandoned.id == running.id
    assert abandoned.status == "abandoned"
    assert abandoned.metadata["status"] == "running"  # the record is untouched
    assert hold.observations(current_code_only=False) == []  # not completed


def test_sigterm_mid_run_records_interrupted_and_exits_143(
    start_driver: Callable[..., subprocess.Popen[str]], runs_root: Path, tmp_path: Path
) -> None:
    """SIGTERM to a process whose main thread is in a run records `interrupted`, exit code 143."""
    marker = tmp_path / "started"
    process = start_driver("hold", marker)
    _wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 143

    (run,) = reader(runs_root / "hold").observations(current_code_only=False, status="all")
    assert run.id == marker.read_text()
    assert run.status == "interrupted"
    assert run.metadata["error"]["type"] == "Terminated"
    assert "Traceback" in run.metadata["error"]["traceback"]
