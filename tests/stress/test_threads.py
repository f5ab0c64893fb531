"""Many runs on many threads of one process."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from digital_experiments import SaveLogs, current_dir, current_id, experiment, time_block

from .tasks import append_line

THREADS, RUNS = 8, 200
SHORT, LONG = 0.01, 0.1


def _sleep_for(thread: int, i: int) -> float:
    return LONG if (thread + i) % 20 == 0 else SHORT


def test_threads_each_run_keeps_its_own_folder_timing_and_log(tmp_path: Path) -> None:
    """8 threads x 200 runs: distinct ids, none lost, each artefact, log and timing is its own."""
    barrier = threading.Barrier(THREADS)

    @experiment(root=tmp_path / "threads", callbacks=[SaveLogs()])
    def job(thread: int, i: int, seconds: float) -> dict[str, Any]:
        folder = current_dir()
        (folder / "who.txt").write_text(f"{thread} {i}")
        print(f"thread {thread} run {i}")
        with time_block(f"sleep-{thread}-{i}"):
            time.sleep(seconds)
        assert current_dir() == folder  # still ours after other threads ran
        return {"id": current_id(), "thread": threading.get_ident()}

    def worker(thread: int) -> list[str]:
        barrier.wait()
        return [job(thread, i, _sleep_for(thread, i))["id"] for i in range(RUNS)]

    with ThreadPoolExecutor(THREADS) as pool:
        returned = [id for ids in pool.map(worker, range(THREADS)) for id in ids]

    assert len(returned) == len(set(returned)) == THREADS * RUNS
    observations = job.observations()
    assert sorted(o.id for o in observations) == sorted(returned)
    assert len({o.result["thread"] for o in observations}) == THREADS
    for o in observations:
        thread, i, seconds = o.config["thread"], o.config["i"], o.config["seconds"]
        assert o.result["id"] == o.id
        files = {p.name: p.read_text() for p in job.artefacts(o.id)}
        assert files == {"who.txt": f"{thread} {i}", "logs.txt": f"thread {thread} run {i}\n"}
        timing = o.metadata["timing"]
        assert set(timing) == {f"sleep-{thread}-{i}", "total"}
        block = timing[f"sleep-{thread}-{i}"]["duration"]
        assert seconds <= block <= timing["total"]["duration"]
        if seconds == SHORT:  # never another run's (long) timing
            assert block < LONG


def test_threads_share_cached_configs_and_run_each_once(tmp_path: Path) -> None:
    """8 threads x the same 10 configs with cache=True: each config executes exactly once."""
    log = tmp_path / "executions.log"

    @experiment(root=tmp_path / "cached", cache=True)
    def cached(x: int) -> int:
        append_line(log, str(x))
        time.sleep(0.02)
        return x * 3

    def worker(thread: int) -> list[int]:
        order = range(10) if thread % 2 else reversed(range(10))
        return [cached(x) for x in order]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))

    assert all(sorted(r) == [x * 3 for x in range(10)] for r in results)
    assert Counter(log.read_text().split()) == {str(x): 1 for x in range(10)}
    assert len(cached.observations()) == 10
