"""One benchmark scenario per process, for whichever digital-experiments is installed.

``benchmarks/run.py`` starts this file with each interpreter (ours and 2.0.4's)
as ``python _scenarios.py NAME ARGS...``; it prints one JSON line. Only public
APIs of both versions are used, except to clone records quickly (see
:func:`populate`).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any


def trivial(x: int, y: float = 2.0, name: str = "a") -> dict[str, float]:
    """The benchmarked experiment: as cheap as a function can be."""
    return {"loss": x * y, "acc": 0.5}


def _experiment(root: str) -> Any:
    from digital_experiments import experiment

    return experiment(root=Path(root))(trivial)


def _is_ours() -> bool:
    return not metadata.version("digital-experiments").startswith("2.")


def version() -> dict[str, Any]:
    import platform

    import digital_experiments

    return {
        "version": metadata.version("digital-experiments"),
        "python": platform.python_version(),
        "file": digital_experiments.__file__,
    }


def import_time() -> dict[str, Any]:
    start = time.perf_counter()
    import digital_experiments  # noqa: F401

    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pandas": "pandas" in sys.modules}


def per_call(root: str, calls: str) -> dict[str, Any]:
    waited = 0.0  # time spent in fsync: the disk's share of the overhead

    def timed(sync: Any) -> Any:
        def timed_sync(fd: int) -> None:
            nonlocal waited
            start = time.perf_counter()
            sync(fd)
            waited += time.perf_counter() - start

        return timed_sync

    os.fsync = timed(os.fsync)  # looked up at each call (folders, and 2.0.4 if it did)
    function = _experiment(root)
    # ours binds its data sync at import: time the function it really calls
    storage = sys.modules.get("digital_experiments._store.files")
    if storage is not None and hasattr(storage, "_sync_data"):
        storage._sync_data = timed(storage._sync_data)
    function(-1)  # warm-up: environment capture, first folder creation
    n = int(calls)
    waited = 0.0
    start = time.perf_counter()
    for i in range(n):
        function(i)
    seconds = time.perf_counter() - start
    return {"seconds": seconds / n, "fsync": waited / n}


def populate(root: str, runs: str) -> dict[str, Any]:
    """Make a store of ``runs`` realistic records in this version's own format.

    Three real calls, then clones of a real record with new ids, configs and
    results, written without fsync (the store is scratch).
    """
    function = _experiment(root)
    for i in range(3):
        function(i)
    folder = Path(root)
    template_path = next(folder.glob("*.pkl"))
    if _is_ours():
        backend = function.backend  # clone through our own format: packed records
        template = backend.loads(template_path.read_bytes())
        dumps = backend.dumps
    else:
        template = pickle.loads(template_path.read_bytes())
        dumps = pickle.dumps  # what 2.0.4's PickleBackend writes
    first = datetime(2025, 1, 1)
    start = time.perf_counter()
    for i in range(int(runs) - 3):
        id = (first + timedelta(seconds=i)).strftime("%Y-%m-%d_%H-%M-%S_%f")
        clone = template._replace(
            id=id, config={"x": i, "y": 2.0, "name": "a"}, result={"loss": i * 2.0, "acc": 0.5}
        )
        (folder / f"{id}.pkl").write_bytes(dumps(clone))
    return {"seconds": time.perf_counter() - start}


def observations(root: str, runs: str) -> dict[str, Any]:
    function = _experiment(root)
    start = time.perf_counter()
    found = function.observations()
    seconds = time.perf_counter() - start
    assert len(found) == int(runs), (len(found), runs)
    return {"seconds": seconds}


def to_dataframe(root: str, runs: str) -> dict[str, Any]:
    import pandas  # noqa: F401  both versions import it lazily: keep it off the clock

    function = _experiment(root)
    start = time.perf_counter()
    frame = function.to_dataframe()
    seconds = time.perf_counter() - start
    assert len(frame) == int(runs), (len(frame), runs)
    return {"seconds": seconds, "columns": list(frame.columns)}


SCENARIOS = {
    "version": version,
    "import": import_time,
    "per_call": per_call,
    "populate": populate,
    "observations": observations,
    "to_dataframe": to_dataframe,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](*sys.argv[2:])))
