"""The scenarios of ``benchmarks/targets_bench.py``: ours and its floor, one per process.

``targets_bench.py`` starts this file as ``python _target_scenarios.py NAME SIDE
ARGS...`` (``SIDE`` is ``ours`` or ``reference``); it prints one JSON line. Ours
is the public API of digital-experiments; the reference is the least a program
doing the same job must do, built from the functions our code really calls
(the same pickle protocol, the same data sync, ``os.replace``), so the ratio
ours / reference is the price of everything else we do.

Imports stay inside the scenarios: ``import`` times ``import digital_experiments``
in a process that loaded no more than ``_scenarios.py`` does for ``run.py``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _scenarios import import_time, per_call, populate, trivial
from _scenarios import observations as observations_ours

# Set by the entry point for ours of ``sweep`` before this module is imported, so a
# pool worker importing it (any start method) finds the same recorded function:
# a decorated function pickles by reference to this module's ``sweep_run``.
SWEEP_ROOT = "DE_TARGETS_SWEEP_ROOT"


def sweep_run(x: int, y: float = 2.0, name: str = "a") -> dict[str, float]:
    """What ``sweep`` runs: the body of ``_scenarios.trivial``."""
    return {"loss": x * y, "acc": 0.5}


if os.environ.get(SWEEP_ROOT):
    from digital_experiments import experiment

    sweep_run = experiment(root=os.environ[SWEEP_ROOT])(sweep_run)


def call_config(config: dict[str, Any]) -> dict[str, float]:
    """The reference's job for ``pool.map``: the same function body, on one config."""
    return trivial(**config)


async def sleeper(i: int) -> int:
    """What ``asweep`` runs: 10 ms of waiting and nothing else."""
    import asyncio

    await asyncio.sleep(0.01)
    return i


# ---------------------------------------------------------------- one call


def call_ours(durability: str, root: str, calls: str) -> dict[str, Any]:
    """``_scenarios.per_call`` under ``DE_DURABILITY=durability``: seconds per call."""
    os.environ["DE_DURABILITY"] = durability
    return per_call(root, calls)


def call_reference(durability: str, root: str, calls: str) -> dict[str, Any]:
    """Write one record as a floor would: per call, ``pickle.dumps`` of the same
    Observation, a temp file, its data synced, renamed into place, the folder synced
    (``durability="process"``: no syncs). Seconds per call."""
    os.environ["DE_DURABILITY"] = durability
    from digital_experiments._runs.formats import PickleFormat
    from digital_experiments._store import files

    # the Observation a real call records: one call, then its record read back
    template_root = Path(root) / "template"
    function = _experiment(str(template_root))
    function(-1)
    template = PickleFormat().loads(next(template_root.glob("*.pkl")).read_bytes())
    sync_data = files._sync_data  # what ours binds at import: os.fdatasync on Linux
    sync = durability == "power"
    folder = os.path.join(root, "floor")
    os.makedirs(folder)
    create = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def write(i: int) -> None:
        target = os.path.join(folder, f"{i:08d}.pkl")
        temp = os.path.join(folder, f".tmp-{i:08d}.pkl")
        data = pickle.dumps(template, protocol=pickle.HIGHEST_PROTOCOL)  # PickleFormat's
        fd = os.open(temp, create, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                sync_data(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        if sync:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    write(-1)  # warm-up, as ours makes one call first
    n = int(calls)
    start = time.perf_counter()
    for i in range(n):
        write(i)
    return {"seconds": (time.perf_counter() - start) / n}


def _experiment(root: str) -> Any:
    from digital_experiments import experiment

    return experiment(root=Path(root))(trivial)


# ---------------------------------------------------------------- sweep


def sweep_ours(root: str, configs: str) -> dict[str, Any]:
    """``sweep`` of ``configs`` trivial configs on ``ProcessPoolExecutor(2)``; a
    4-config sweep first starts the workers and loads the sweep engine."""
    from concurrent.futures import ProcessPoolExecutor

    assert os.environ.get(SWEEP_ROOT) == root, "the entry point sets the root"
    run: Any = sweep_run
    n = int(configs)
    with ProcessPoolExecutor(2) as pool:
        run.sweep({"x": range(-4, 0)}, executor=pool, progress=False)
        start = time.perf_counter()
        found = run.sweep({"x": range(n)}, executor=pool, progress=False)
        seconds = time.perf_counter() - start
    assert len(found) == n
    assert all(o.status == "completed" for o in found)
    return {"seconds": seconds}


def sweep_reference(root: str, configs: str) -> dict[str, Any]:
    """Bare ``pool.map`` of the same body over the same configs, workers started first."""
    from concurrent.futures import ProcessPoolExecutor

    n = int(configs)
    grid = [{"x": x} for x in range(n)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(call_config, [{"x": x} for x in range(-4, 0)]))
        start = time.perf_counter()
        results = list(pool.map(call_config, grid))
        seconds = time.perf_counter() - start
    assert len(results) == n
    return {"seconds": seconds}


# ---------------------------------------------------------------- asweep


def asweep_ours(root: str, runs: str, concurrency: str) -> dict[str, Any]:
    """``asweep`` of ``runs`` sleeps, ``max_concurrency`` at once, on asyncio; a
    4-config asweep first loads the engine and captures the environment."""
    import asyncio

    from digital_experiments import experiment

    function: Any = experiment(root=Path(root))(sleeper)
    n, window = int(runs), int(concurrency)

    async def main() -> tuple[float, int]:
        await function.asweep({"i": range(-4, 0)}, max_concurrency=window, progress=False)
        start = time.perf_counter()
        found = await function.asweep({"i": range(n)}, max_concurrency=window, progress=False)
        seconds = time.perf_counter() - start
        assert all(o.status == "completed" for o in found)
        return seconds, len(found)

    seconds, count = asyncio.run(main())
    assert count == n
    return {"seconds": seconds}


def asweep_reference(root: str, runs: str, concurrency: str) -> dict[str, Any]:
    """``asyncio.gather`` of the bare coroutine, a semaphore letting ``concurrency`` in."""
    import asyncio

    n, window = int(runs), int(concurrency)

    async def main() -> tuple[float, int]:
        semaphore = asyncio.Semaphore(window)

        async def one(i: int) -> int:
            async with semaphore:
                return await sleeper(i)

        await asyncio.gather(*(one(i) for i in range(-4, 0)))
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start, len(results)

    seconds, count = asyncio.run(main())
    assert count == n
    return {"seconds": seconds}


# ---------------------------------------------------------------- listing


def observations_reference(root: str, runs: str) -> dict[str, Any]:
    """List the folder, open and unpickle every record file (``PickleFormat.loads``
    is ``pickle.loads``); the class the records name is imported first, off the clock."""
    import digital_experiments.core  # noqa: F401  what the records' bytes name

    start = time.perf_counter()
    found = []
    for name in os.listdir(root):
        if name.endswith(".pkl"):
            with open(os.path.join(root, name), "rb") as file:
                found.append(pickle.loads(file.read()))
    seconds = time.perf_counter() - start
    assert len(found) == int(runs), (len(found), runs)
    return {"seconds": seconds}


def observations_cold(root: str, runs: str) -> dict[str, Any]:
    """``observations()`` with the root's read index deleted first (off the clock):
    the listing reads every record and builds the index."""
    import shutil

    shutil.rmtree(os.path.join(root, ".de", "index"), ignore_errors=True)
    return observations_ours(root, runs)


SCENARIOS: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
    ("import", "ours"): import_time,
    ("populate", "ours"): populate,
    ("call", "ours"): call_ours,
    ("call", "reference"): call_reference,
    ("sweep", "ours"): sweep_ours,
    ("sweep", "reference"): sweep_reference,
    ("asweep", "ours"): asweep_ours,
    ("asweep", "reference"): asweep_reference,
    ("observations", "ours"): observations_ours,
    ("observations", "reference"): observations_reference,
    ("observations_cold", "ours"): observations_cold,
    ("observations_cold", "reference"): observations_reference,
}


def main(argv: list[str]) -> None:
    name, side, *args = argv
    print(json.dumps(SCENARIOS[name, side](*args)))


if __name__ == "__main__":
    name, side, *rest = sys.argv[1:]
    if (name, side) == ("sweep", "ours"):
        os.environ[SWEEP_ROOT] = rest[0]
    # run as the module it is, not as __main__: its functions pickle by reference
    # to ``_target_scenarios``, which pool workers import whatever their start method
    import _target_scenarios

    _target_scenarios.main(sys.argv[1:])
