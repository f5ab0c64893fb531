"""SIGTERM and Ctrl-C around runs (``signals.py``): every run ends in a final state.

Each test sends real signals to a real interpreter and reads the records it left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import experiment, query

from .conftest import python_code

END_CALLBACK_SIGNALS_ITSELF = """
import os, signal, sys
from digital_experiments import Callback, experiment

# Python's own Ctrl-C handling, even where the parent ignores SIGINT (a background job)
signal.signal(signal.SIGINT, signal.default_int_handler)

class SignalsItself(Callback):
    def end(self, observation):
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        self.survived = [n * n for n in range(1000)]  # the handler runs between bytecodes

@experiment(root=sys.argv[1], callbacks=[SignalsItself()])
def f():
    return 5

f()
print("after the run")
"""


@pytest.mark.parametrize(
    ("name", "exit_code"), [("SIGTERM", 128 + signal.SIGTERM), ("SIGINT", -signal.SIGINT)]
)
def test_signal_while_finishing_is_held_until_the_record_is_written(
    tmp_path: Path, name: str, exit_code: int
) -> None:
    """SIGTERM or Ctrl-C landing in an end callback: the run is recorded completed, then it acts."""
    done = python_code(END_CALLBACK_SIGNALS_ITSELF, tmp_path, name)
    assert done.returncode == exit_code, done.stderr
    assert "after the run" not in done.stdout
    if name == "SIGINT":
        assert "KeyboardInterrupt" in done.stderr
    (run,) = query.load(tmp_path, status="all")
    assert (run.status, run.result) == ("completed", 5)


ASYNC_RUNS_WAIT = """
import sys
import anyio
from digital_experiments import experiment

@experiment(root=sys.argv[1])
async def wait(i):
    print("started", i, flush=True)
    await anyio.sleep_forever()

async def main():
    async with anyio.create_task_group() as group:
        for i in range(3):
            group.start_soon(wait, i)

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_interrupts_async_runs(tmp_path: Path, backend: str) -> None:
    """SIGTERM to a process awaiting async runs records each `interrupted`, not `abandoned`."""
    process = subprocess.Popen(
        [sys.executable, "-c", ASYNC_RUNS_WAIT, str(tmp_path), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    started = [process.stdout.readline() for _ in range(3)]
    assert all(line.startswith("started") for line in started), started
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != -signal.SIGTERM, stderr  # not killed by the signal
    # asyncio exits 143; trio wraps the SystemExit in an exception group, so exits 1
    assert process.returncode == (128 + signal.SIGTERM if backend == "asyncio" else 1), stderr
    runs = query.load(tmp_path, status="all")
    assert [run.status for run in runs] == ["interrupted"] * 3
    assert {run.metadata["error"]["type"] for run in runs} == {"Terminated"}


def test_sigterm_interrupts_a_sync_run(tmp_path: Path) -> None:
    """SIGTERM in a sync run's body: recorded `interrupted`, and the process exits with 143."""
    code = """
import sys
from digital_experiments import experiment

@experiment(root=sys.argv[1])
def wait():
    print("started", flush=True)
    sys.stdin.read()

wait()
"""
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "started\n"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    (run,) = query.load(tmp_path, status="all")
    assert run.status == "interrupted"


def test_handler_installed_inside_a_run_stays(tmp_path: Path) -> None:
    """A SIGTERM handler the user installs inside a run is still there after the run."""
    code = """
import os, signal, sys
from digital_experiments import experiment

def checkpoint(signum, frame):
    print("checkpoint saved", flush=True)

@experiment(root=sys.argv[1])
def train():
    signal.signal(signal.SIGTERM, checkpoint)
    return 1

train()
assert signal.getsignal(signal.SIGTERM) is checkpoint
os.kill(os.getpid(), signal.SIGTERM)
print("still alive", flush=True)
"""
    done = python_code(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["checkpoint saved", "still alive"]


def test_someone_elses_handler_is_left_alone() -> None:
    """Where SIGTERM is already handled, a run neither replaces nor removes that handler."""

    def mine(signum: int, frame: Any) -> None: ...

    previous = signal.signal(signal.SIGTERM, mine)
    try:

        @experiment
        def f() -> bool:
            return signal.getsignal(signal.SIGTERM) is mine

        assert f() is True
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
