"""Faults at the process level: kill -9 mid-write, kill -9 mid-run, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import driver_env, reader

SIZE = 300_000  # bytes per record
PAUSES = (1, 2, 3)  # each writer pauses at its N-th record write, and is killed there


def _wait_for(
    path: Path, process: subprocess.Popen[str], timeout: float = 60, line: bool = False
) -> None:
    # polls a condition; the timeout only guards against a hang
    deadline = time.monotonic() + timeout
    while not path.exists() or (line and not path.read_text().endswith("\n")):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pickle", "json"])
def test_kill_9_while_writing_large_records_leaves_store_readable(
    kind: str,
    start_driver: Callable[..., subprocess.Popen[str]],
    runs_root: Path,
    tmp_path: Path,
) -> None:
    """kill -9 of writers paused with a record's temp file written, not renamed: the store reads.

    Every listed record loads whole, and a later listing removes the temp files
    the dead writers left behind.
    """
    root = runs_root / f"big_{kind}"
    for n in PAUSES:
        signal_file = tmp_path / f"paused-{n}"
        process = start_driver(
            "writer",
            kind,
            SIZE,
            env={
                "DE_FAULTS": f"atomic_write.before-rename=pause@{n}",
                "DE_FAULTS_MIN_BYTES": str(SIZE),  # count the large (completed) records only
                "DE_FAULTS_SIGNAL": str(signal_file),
            },
        )
        _wait_for(signal_file, process, line=True)
        name, temp = signal_file.read_text().split()
        assert name == "atomic_write.before-rename"
        temp_path = Path(temp)
        # the kill lands mid-write: the record's temp file is there, not yet renamed
        assert temp_path.parent == root
        assert temp_path.name.startswith(".tmp-")
        assert temp_path.exists()
        assert temp_path.stat().st_size > SIZE
        process.kill()
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        assert temp_path.exists()  # the dead writer left it behind

    big = reader(root, backend=kind)
    ids = big.backend.all_ids()
    assert not [id for id in ids if id.startswith(".")]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # cleaned by listing

    observations = big.observations(current_code_only=False, status="all")
    assert len(observations) == len(ids) == sum(PAUSES)
    completed = [o for o in observations if o.status == "completed"]
    assert len(completed) == sum(n - 1 for n in PAUSES)
    for o in completed:
        i = o.config["i"]
        if kind == "pickle":
            assert o.result == bytes([i % 256]) * SIZE
        else:
            assert o.result == {"i": i, "payload": "x" * SIZE, "tail": i}
    # a writer killed mid-write left its `running` record, which reads as abandoned
    abandoned = big.observations(current_code_only=False, status="abandoned")
    assert len(abandoned) == len(PAUSES)
    assert big.observations(current_code_only=False, status="running") == []
    assert len(completed) + len(abandoned) == len(observations)
    for o in abandoned:
        assert o.status == "abandoned"
        assert o.result is None
        assert o.metadata["status"] == "running"  # the record itself is untouched


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


_READ_ONLY_CALL = """
import json, os, sys
from digital_experiments import experiment

# drop to nobody once imported (the interpreter itself may be private to root)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)

@experiment(root=sys.argv[1])
def job(x):
    print("body ran", flush=True)
    return x

try:
    job(1)
except Exception as error:
    print(json.dumps({"types": [c.__name__ for c in type(error).__mro__], "message": str(error)}))
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop privileges"
)
def test_read_only_root_raises_storage_error_before_the_body_runs() -> None:
    """A root the caller cannot write: `StorageError` naming the folder and the fix, no body run.

    The child drops to uid/gid 65534 (nobody), so it works where CI runs as root.
    """
    with tempfile.TemporaryDirectory() as base:  # tmp_path's parents are private to root
        os.chmod(base, 0o755)
        root = Path(base) / "runs"
        root.mkdir()  # owned by root, 0755: readable, not writable, by nobody
        before = sorted(p.name for p in root.rglob("*"))
        done = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CALL, str(root)],
            cwd=base,
            env=driver_env(root),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "body ran" not in done.stdout  # a run that cannot be recorded does not run
        error = json.loads(done.stdout.strip().splitlines()[-1])
        assert "StorageError" in error["types"]
        assert repr(str(root)) in error["message"]
        assert "writable" in error["message"]
        assert "root=" in error["message"]
        assert sorted(p.name for p in root.rglob("*")) == before  # nothing half-written
