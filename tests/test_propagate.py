"""Crossing boundaries from inside a run: worker threads, pools, nesting, logs."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import cloudpickle
import pytest

from digital_experiments import (
    NoExperimentRunning,
    SaveLogs,
    current_dir,
    current_id,
    experiment,
    propagate,
)
from digital_experiments._runs.context import active_run

from .stress.tasks import save, timed_sleep, whoami


@pytest.mark.anyio
async def test_anyio_to_thread_sees_the_run() -> None:
    """`anyio.to_thread.run_sync` inside an async run sees the run's current_dir() and id."""

    @experiment
    async def f() -> tuple[Any, Any]:
        return whoami()[:2], (await anyio.to_thread.run_sync(whoami))[:2]

    outside, inside = await f()
    assert inside == outside
    (run,) = f.observations()
    assert inside[0] == run.id


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_asyncio_to_thread_sees_the_run() -> None:
    """`asyncio.to_thread` copies the context: the thread writes into the run's folder."""

    @experiment
    async def f() -> str:
        path, _ = await asyncio.to_thread(save, "from-thread.txt", "hi")
        return path

    path = await f()
    (run,) = f.observations()
    assert Path(path) == f.backend.root / "storage" / run.id / "from-thread.txt"


def test_thread_pool_needs_propagate() -> None:
    """A ThreadPoolExecutor does not copy the context; `propagate(fn)` carries the run into it."""

    @experiment
    def f() -> tuple[str, str]:
        with ThreadPoolExecutor(2) as pool:
            with pytest.raises(NoExperimentRunning):
                pool.submit(current_dir).result()
            path, _ = pool.submit(propagate(save), "pooled.txt", "data").result()
            pool.submit(propagate(timed_sleep), "in-pool", 0.01).result()
            # the worker thread is back outside any run afterwards
            assert pool.submit(active_run).result() is None
        return path, current_id()

    path, id = f()
    assert Path(path) == f.backend.root / "storage" / id / "pooled.txt"
    assert Path(path).read_text() == "data"
    (run,) = f.observations()
    assert run.metadata["timing"]["in-pool"]["duration"] >= 0.01


@pytest.mark.anyio
async def test_propagate_into_a_plain_thread_and_a_loop_executor() -> None:
    """A propagated callable lands in the run's folder from a plain Thread and a worker thread."""

    @experiment
    async def f() -> list[str]:
        propagated = propagate(save)
        box: list[Any] = []
        thread = threading.Thread(target=lambda: box.append(propagated("t.txt", "t")))
        thread.start()
        thread.join()
        path, _ = await anyio.to_thread.run_sync(propagated, "a.txt", "a")
        return [box[0][0], path]

    paths = await f()
    (run,) = f.observations()
    assert {Path(p).parent for p in paths} == {f.backend.root / "storage" / run.id}


def test_process_pool_with_propagate_writes_into_the_run() -> None:
    """`ProcessPoolExecutor(spawn).submit(propagate(save))` writes into the run's own folder."""

    @experiment
    def f() -> list[tuple[str, int]]:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(propagate(save), f"p{k}.txt", str(k)) for k in range(6)]
            return [future.result() for future in futures]

    results = f()
    (run,) = f.observations()
    folder = f.backend.root / "storage" / run.id
    assert {Path(path).parent for path, _ in results} == {folder}
    assert os.getpid() not in {pid for _, pid in results}
    assert sorted(p.name for p in folder.iterdir()) == [f"p{k}.txt" for k in range(6)]


def test_propagate_pickles_by_value_of_the_run() -> None:
    """A propagated callable pickles (pickle, cloudpickle) and re-enters the same run."""

    @experiment
    def f() -> list[Any]:
        wrapped = propagate(whoami)
        return [
            pickle.loads(pickle.dumps(wrapped))(),
            cloudpickle.loads(cloudpickle.dumps(wrapped))(),
        ]

    results = f()
    (run,) = f.observations()
    assert {tuple(r[:2]) for r in results} == {(run.id, str(f.backend.root / "storage" / run.id))}


def test_propagate_outside_a_run_raises() -> None:
    """`propagate` has nothing to carry outside a run and says so."""
    with pytest.raises(NoExperimentRunning, match=r"propagate\(\)"):
        propagate(save)


def test_nested_experiments_get_their_own_folder_and_restore_the_parent() -> None:
    """A nested experiment has its own id and folder; the parent's are back when it returns."""

    @experiment
    def inner(k: int) -> str:
        save("inner.txt", str(k))
        return current_id()

    @experiment
    def outer() -> dict[str, Any]:
        mine = current_id()
        children = [inner(k) for k in range(3)]
        assert current_id() == mine
        save("outer.txt", "o")
        return {"id": mine, "children": children}

    out = outer()
    assert out["id"] not in out["children"]
    assert len(set(out["children"])) == 3
    assert [p.name for p in outer.artefacts(out["id"])] == ["outer.txt"]
    for k, child in enumerate(out["children"]):
        (artefact,) = inner.artefacts(child)
        assert artefact.read_text() == str(k)
    with pytest.raises(NoExperimentRunning):
        current_id()


@pytest.mark.anyio
async def test_nested_async_experiments_restore_the_parent() -> None:
    """Awaiting a nested async experiment (no new task) restores the parent's run afterwards."""

    @experiment
    async def inner() -> str:
        await anyio.sleep(0)
        return current_id()

    @experiment
    async def outer() -> tuple[str, str, str]:
        before = current_id()
        child = await inner()
        return before, child, current_id()

    before, child, after = await outer()
    assert before == after != child
    assert active_run() is None


def test_save_logs_keeps_each_threads_prints_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs printing at once on 6 threads each log only their own lines (stdout gets all)."""
    barrier = threading.Barrier(6)

    @experiment(callbacks=[SaveLogs("log.txt")])
    def f(k: int) -> str:
        barrier.wait()
        for line in range(50):
            print(f"run {k} line {line}")
        return current_id()

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(f, range(6)))
    for k, id in enumerate(ids):
        (log,) = f.artefacts(id)
        assert log.read_text() == "".join(f"run {k} line {line}\n" for line in range(50))
    assert capsys.readouterr().out.count("line") == 300


@pytest.mark.anyio
async def test_save_logs_keeps_each_tasks_prints_apart() -> None:
    """Interleaved prints of 10 concurrent async runs each land in their own log only."""

    @experiment(callbacks=[SaveLogs()])
    async def f(k: int) -> str:
        for line in range(5):
            print(f"task {k} line {line}")
            await anyio.sleep(0.001)
        return current_id()

    ids: dict[int, str] = {}

    async def one(k: int) -> None:
        ids[k] = await f(k)

    async with anyio.create_task_group() as group:
        for k in range(10):
            group.start_soon(one, k)
    for k, id in ids.items():
        (log,) = f.artefacts(id)
        assert log.read_text() == "".join(f"task {k} line {line}\n" for line in range(5))
