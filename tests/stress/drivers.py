"""Subprocess drivers for the stress tests: ``python -m tests.stress.drivers MODE ...``.

Each mode runs in a fresh interpreter whose working directory and
``$DE_STRESS_ROOT`` the test chose, and prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
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


def _pause_at_publish(signal_fd: int, nth: int, mid_data: bool) -> None:
    """Make this writer stop for good at its ``nth`` big write, telling ``signal_fd``.

    With ``mid_data`` it stops after writing half of a record's bytes to its temp
    file; otherwise with the temp file whole, just before the rename publishes it.
    """
    real_write, real_replace = os.write, os.replace
    seen = [0]

    def pause() -> None:
        real_write(signal_fd, b"p")
        while True:
            time.sleep(3600)  # the parent kills us here

    def write(fd: int, data: Any) -> int:
        if mid_data and fd != signal_fd and len(data) > 100_000:
            seen[0] += 1
            if seen[0] > nth:
                real_write(fd, data[: len(data) // 2])
                pause()
        return real_write(fd, data)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if not mid_data and os.path.getsize(src) > 100_000:
            seen[0] += 1
            if seen[0] > nth:
                pause()
        real_replace(src, dst, **kwargs)

    os.write, os.replace = write, replace  # type: ignore[assignment]


def killer(kind: str, kills: str, size: str) -> None:
    """Fork writers of large records and ``kill -9`` each at a fault point.

    Writer ``k`` stops at its ``k % 3``-th big write, half-way through the data
    (odd ``k``) or just before the rename (even ``k``), and says so on a pipe;
    only then is it killed, so every kill lands while a record is being written.
    """
    from . import workers

    function = workers.big_pickle if kind == "pickle" else workers.big_json
    mid_write = 0
    for k in range(int(kills)):
        paused, tell = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: record large runs until it pauses
            try:
                os.close(paused)
                _pause_at_publish(tell, k % 3, mid_data=k % 2 == 1)
                before = set(function.backend.all_ids())
                for i in range(10**6):
                    function(k * 10**6 + i, int(size))
                    # keep only this writer's newest record, to spare the disk
                    for id in sorted(set(function.backend.all_ids()) - before)[:-1]:
                        function.backend.delete(id)
            finally:
                os._exit(1)
        os.close(tell)
        assert os.read(paused, 1) == b"p", "the writer ended before its fault point"
        os.close(paused)
        if any(p.name.startswith(".tmp-") for p in function.backend.root.iterdir()):
            mid_write += 1  # the temp file of the record being written is there
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    _emit({"kills": int(kills), "mid_write": mid_write})


def hold(marker: str) -> None:
    """Sit in a run (main thread) until a signal arrives."""
    from . import workers

    workers.hold(marker)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
