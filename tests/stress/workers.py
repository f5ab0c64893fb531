"""Module-level experiments that pool workers import by reference.

Only the subprocess drivers (``tests/stress/drivers.py``) import this module,
never the pytest process: every experiment's root is fixed at import time, from
``$DE_STRESS_ROOT`` (which the test sets, and pool workers inherit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from digital_experiments import Callback, Observation, current_dir, current_id, experiment

from .tasks import append_line

ROOT = Path(os.environ.get("DE_STRESS_ROOT", "stress-runs")).absolute()


class RecordedBy(Callback):
    """Stamps ``metadata["recorded_by"]`` with the pid of the process that records the run."""

    def end(self, observation: Observation) -> None:
        observation.metadata["recorded_by"] = os.getpid()


@experiment(root=ROOT / "square", callbacks=[RecordedBy()])
def square(x: int) -> dict[str, Any]:
    """Square ``x`` and leave an artefact saying who computed it."""
    (current_dir() / "who.txt").write_text(f"{x} {current_id()} {os.getpid()}")
    return {"x": x, "square": x * x, "pid": os.getpid()}


@experiment(root=ROOT / "tagged")
def tagged(process: int, i: int) -> str:
    """Record ``(process, i)`` and write it as an artefact."""
    (current_dir() / "tag.txt").write_text(f"{process} {i}")
    return current_id()


@experiment(root=ROOT / "cached", cache=True)
def cached(x: int, delay: float = 0.05) -> int:
    """Log each real execution to ``executions.log``, then return ``10 * x``."""
    append_line(ROOT / "executions.log", f"{x} {os.getpid()}")
    time.sleep(delay)
    return 10 * x


@experiment(root=ROOT / "big_pickle", backend="pickle")
def big_pickle(i: int, size: int) -> bytes:
    """A record of ``size`` bytes or so."""
    return bytes([i % 256]) * size


@experiment(root=ROOT / "big_json", backend="json")
def big_json(i: int, size: int) -> dict[str, Any]:
    """A JSON record of ``size`` characters or so."""
    return {"i": i, "payload": "x" * size, "tail": i}


@experiment(root=ROOT / "hold")
def hold(marker: str, seconds: float = 60.0) -> str:
    """Announce the run by creating ``marker``, then sleep (to be killed).

    The marker appears whole (renamed into place): a test that signals as soon
    as it exists must find the run's id in it, not a file created but not yet
    written."""
    temp = Path(f"{marker}.tmp")
    temp.write_text(current_id())
    os.replace(temp, marker)
    time.sleep(seconds)
    return "finished"


# set by the driver to the pool under test; a global, so it is not part of any config
POOL: Any = None


@experiment(root=ROOT / "outer")
def outer(parts: int) -> list[Any]:
    """Hand ``parts`` writes to :data:`POOL` with ``propagate``: all land in this run's folder."""
    from digital_experiments import propagate

    from .tasks import save

    futures = [POOL.submit(propagate(save), f"part-{k}.txt", str(k)) for k in range(parts)]
    return [future.result() for future in futures]
