"""Subprocess drivers for the stress tests: ``python -m tests.stress.drivers MODE ...``.

Each mode runs in a fresh interpreter whose working directory and
``$DE_STRESS_ROOT`` the test chose, and prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any


def _emit(value: Any) -> None:
    print(json.dumps(value), flush=True)


def _wait_until(t0: float) -> None:
    delay = t0 - time.time()
    if delay > 0:
        time.sleep(delay)


def pool(method: str, n: str) -> None:
    """Ship ``workers.square`` to a process pool ``n`` times, then propagate into it."""
    import cloudpickle

    from . import workers

    by_reference = {
        "pickle": pickle.loads(pickle.dumps(workers.square)) is workers.square,
        "cloudpickle": cloudpickle.loads(cloudpickle.dumps(workers.square)) is workers.square,
        "pickle_size": len(pickle.dumps(workers.square)),
    }
    if method == "loky":
        import loky

        executor: Any = loky.ProcessPoolExecutor(max_workers=2)
    else:
        executor = ProcessPoolExecutor(max_workers=2, mp_context=get_context(method))
    with executor:
        results = list(executor.map(workers.square, range(int(n))))
        workers.POOL = executor
        parts = workers.outer(12)
    _emit({"driver": os.getpid(), "by_reference": by_reference, "results": results, "parts": parts})


def many(process: str, n: str, t0: str) -> None:
    """Record ``n`` runs of ``workers.tagged`` once the clock reaches ``t0``."""
    from . import workers

    _wait_until(float(t0))
    _emit([workers.tagged(int(process), i) for i in range(int(n))])


def cache(order: str, t0: str) -> None:
    """Call ``workers.cached`` on each config of ``order`` (comma separated)."""
    from . import workers

    _wait_until(float(t0))
    _emit([[int(x), workers.cached(int(x))] for x in order.split(",")])


def writer(kind: str, size: str) -> None:
    """Record large runs, one after another, until killed (a fault point stops it)."""
    from . import workers

    function = workers.big_pickle if kind == "pickle" else workers.big_json
    for i in range(10**6):
        function(i, int(size))


def hold(marker: str) -> None:
    """Sit in a run (main thread) until a signal arrives."""
    from . import workers

    workers.hold(marker)


def heartbeat(backend: str) -> None:
    """Tick every 5 ms while async runs record; report the worst gap."""
    import anyio

    from . import workers

    gaps: list[float] = []
    first: list[int] = []

    async def main() -> None:
        done = anyio.Event()

        async def tick() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await anyio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            await anyio.sleep(0.05)
            first.append(len(gaps))
            await workers.beat(0)  # the first run captures the environment
            first.append(len(gaps))
            async with anyio.create_task_group() as runs:
                for i in range(1, 61):
                    runs.start_soon(workers.beat, i)
                for i in range(20):
                    runs.start_soon(workers.beat_cached, i % 4)
            done.set()

    anyio.run(main, backend=backend)
    _emit(
        {
            "max_gap": max(gaps),
            "max_gap_first_run": max(gaps[first[0] : first[1] + 1]),
            "beats": len(gaps),
            "beats_first_run": first[1] - first[0],
            "runs": len(workers.beat.observations()),
            "cached_runs": len(workers.beat_cached.observations()),
        }
    )


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
