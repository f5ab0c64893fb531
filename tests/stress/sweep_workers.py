"""Module-level experiments that sweep workers import by reference.

Their roots are import-time placeholders: a test points an experiment at its own
folder (see ``rooted`` in ``test_sweep_engines.py``) and a sweep ships that
backend with every call, so workers write there whatever they imported.

Run as a driver, ``python -m tests.stress.sweep_workers ROOT N [crash_at]``
sweeps ``slow`` (or ``crash``) over ``x = 0 .. N-1`` serially under ``ROOT``
and prints one JSON line: ``{"pid": ..., "ids": {x: id}}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from digital_experiments import Callback, Observation, current_dir, current_id, experiment
from digital_experiments.backends import PickleBackend

PLACEHOLDER = Path(tempfile.gettempdir()) / "digital-experiments-sweep-workers"


class RecordedBy(Callback):
    """Stamps ``metadata["recorded_by"]`` with the pid of the process that records the run."""

    def end(self, observation: Observation) -> None:
        observation.metadata["recorded_by"] = os.getpid()


@experiment(root=PLACEHOLDER / "square", callbacks=[RecordedBy()])
def square(x: int, offset: int = 0) -> dict[str, Any]:
    """``x**2 + offset``; leaves ``pid.txt`` in the run's folder; fails for ``x < 0``."""
    if x < 0:
        raise ValueError(f"negative x: {x}")
    (current_dir() / "pid.txt").write_text(str(os.getpid()))
    return {"square": x * x + offset, "pid": os.getpid()}


@experiment(root=PLACEHOLDER / "asquare", callbacks=[RecordedBy()])
async def asquare(x: int) -> dict[str, Any]:
    """An async :func:`square`: a sync sweep runs it with ``anyio.run`` in the worker."""
    await anyio.sleep(0.001)
    (current_dir() / "pid.txt").write_text(str(os.getpid()))
    return {"square": x * x, "pid": os.getpid()}


@experiment(root=PLACEHOLDER / "slow")
def slow(x: int, seconds: float = 0.05) -> dict[str, Any]:
    """Sleep a little, so that two sweeps overlap."""
    time.sleep(seconds)
    (current_dir() / "pid.txt").write_text(str(os.getpid()))
    return {"x": x, "pid": os.getpid()}


@experiment(root=PLACEHOLDER / "crash")
def crash(x: int, crash_at: int = -1) -> int:
    """Kill this process (``kill -9``) at ``x == crash_at`` unless ``crashed`` exists."""
    marker = current_dir().parent.parent / "crashed"
    if x == crash_at and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@experiment(root=PLACEHOLDER / "blocks")
def blocks(x: int, started: str) -> int:
    """Say so in the folder ``started``, then sleep for ten minutes (to be interrupted)."""
    (Path(started) / str(os.getpid())).write_text(current_id())
    time.sleep(600)
    return x


def main(argv: list[str]) -> None:
    root, n = Path(argv[0]), int(argv[1])
    if argv[2:] == ["fast"]:  # no sleep: releases and takeovers interleave densely
        function, grid = slow, [{"x": x, "seconds": 0.0} for x in range(n)]
        # start together: say "ready", then wait for the test's "go"
        Path(f"{root}.ready.{os.getpid()}").touch()
        go = Path(f"{root}.go")
        while not go.exists():
            time.sleep(0.005)
    elif len(argv) > 2:
        function: Any = crash
        grid: list[dict[str, Any]] = [{"x": x, "crash_at": int(argv[2])} for x in range(n)]
    else:
        function, grid = slow, [{"x": x} for x in range(n)]
    function.experiment.backend = PickleBackend(root)
    observations = function.sweep(grid, progress=False)
    ids = {o.config["x"]: o.id for o in observations}
    print(json.dumps({"pid": os.getpid(), "ids": ids}))


if __name__ == "__main__":
    main(sys.argv[1:])
