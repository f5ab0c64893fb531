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


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
