"""Many async runs on one event loop (asyncio and trio)."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from digital_experiments import (
    SaveLogs,
    current_dir,
    current_id,
    experiment,
    time_block,
)
from digital_experiments._record import environment
from digital_experiments._store import files as storage

from .tasks import append_line

TASKS = 64
SHORT, LONG = 0.01, 0.2


def _job(root: Path) -> Any:
    @experiment(root=root, callbacks=[SaveLogs()])
    async def job(i: int, seconds: float) -> dict[str, Any]:
        folder = current_dir()
        assert folder.name == current_id()
        (folder / "who.txt").write_text(str(i))
        with time_block(f"sleep-{i}"):
            await anyio.sleep(seconds)
        assert current_dir() == folder  # after an await, other tasks have run
        print(f"task {i}")
        await anyio.sleep(random.uniform(0, 0.01))
        assert await anyio.to_thread.run_sync(current_dir) == folder
        assert current_dir() == folder
        return {"id": current_id(), "dir": str(folder)}

    return job


def _check(job: Any, returned: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in returned]
    assert len(ids) == len(set(ids)) == TASKS
    observations = job.observations()
    assert sorted(o.id for o in observations) == sorted(ids)
    for o in observations:
        i, seconds = o.config["i"], o.config["seconds"]
        assert o.result == {"id": o.id, "dir": str(job.backend.root / "storage" / o.id)}
        files = {p.name: p.read_text() for p in job.artefacts(o.id)}
        assert files == {"who.txt": str(i), "logs.txt": f"task {i}\n"}
        timing = o.metadata["timing"]
        assert set(timing) == {f"sleep-{i}", "total"}
        assert seconds <= timing[f"sleep-{i}"]["duration"] <= timing["total"]["duration"]


def _seconds(i: int) -> float:
    return LONG if i % 8 == 0 else SHORT


@pytest.mark.anyio
async def test_task_group_runs_keep_their_own_context(tmp_path: Path) -> None:
    """64 tasks in a task group each keep their own folder, blocks, log and timing across awaits."""
    job = _job(tmp_path / "tasks")
    assert inspect.iscoroutinefunction(job)
    returned: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        returned.append(await job(i, _seconds(i)))

    async with anyio.create_task_group() as group:
        for i in range(TASKS):
            group.start_soon(one, i)
    _check(job, returned)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_asyncio_gather_runs_keep_their_own_context(tmp_path: Path) -> None:
    """64 runs under asyncio.gather each keep their own folder, blocks, log and timing."""
    job = _job(tmp_path / "gather")
    returned = await asyncio.gather(*(job(i, _seconds(i)) for i in range(TASKS)))
    _check(job, list(returned))


@pytest.mark.anyio
async def test_async_cache_with_many_waiting_tasks(tmp_path: Path) -> None:
    """100 tasks on 4 cached configs (more waiters than worker threads) run each config once."""
    log = tmp_path / "executions.log"

    @experiment(root=tmp_path / "cached", cache=True)
    async def cached(x: int) -> int:
        await anyio.to_thread.run_sync(append_line, log, str(x))
        await anyio.sleep(0.05)
        return x * 7

    results: list[tuple[int, int]] = []

    async def one(x: int) -> None:
        results.append((x, await cached(x)))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for k in range(100):
                group.start_soon(one, k % 4)
    assert sorted(results) == sorted((k % 4, (k % 4) * 7) for k in range(100))
    assert Counter(log.read_text().split()) == {str(x): 1 for x in range(4)}
    assert len(cached.observations()) == 4


# Every way a run touches the disk, and the environment capture.
BLOCKING: dict[Any, tuple[str, ...]] = {
    os: ("open", "scandir", "stat", "lstat", "replace", "mkdir", "unlink", "link", "fsync"),
    builtins: ("open",),
    environment: ("pip_freeze", "git_info", "system_info"),
}


@pytest.mark.anyio
async def test_recording_never_blocks_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """81 async runs (the first capturing the environment, 20 cached): no disk step on the loop."""
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []
    watching = threading.Event()  # only while runs are recorded, not while the test reads

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if watching.is_set():
                calls.append((name, threading.get_ident() == loop_thread))
            return real(*args, **kwargs)

        return call

    for module, names in BLOCKING.items():
        for name in names:
            monkeypatch.setattr(module, name, watched(name, getattr(module, name)))
    environment.refresh()  # the first run captures the environment afresh

    @experiment(root=tmp_path / "beat", callbacks=[SaveLogs()])
    async def beat(i: int) -> int:
        await anyio.sleep(0.001)
        print(f"beat {i}")
        return i

    @experiment(root=tmp_path / "cached", cache=True)
    async def cached(i: int) -> int:
        return i

    watching.set()
    assert await beat(0) == 0
    with anyio.fail_after(120):
        async with anyio.create_task_group() as runs:
            for i in range(1, 61):
                runs.start_soon(beat, i)
            for i in range(20):
                runs.start_soon(cached, i % 4)
    watching.clear()
    assert len(beat.observations()) == 61
    assert len(cached.observations()) == 4
    called = {name for name, _ in calls}
    assert called >= {"open", "replace", "fsync", "scandir", "pip_freeze", "git_info"}
    assert [name for name, on_loop in calls if on_loop] == []


async def _settled(job: Any) -> list[Any]:
    """The runs of ``job`` once no record is ``running`` (orphaned claims finish in a thread)."""
    with anyio.fail_after(30):
        while job.observations(status="running"):
            await anyio.sleep(0.01)
    return list(job.observations(status="all"))


@pytest.mark.anyio
async def test_cancel_at_any_instant_never_leaves_a_running_record(tmp_path: Path) -> None:
    """200 runs timed out at instants from 0 to 4 ms: every recorded run is interrupted."""

    started = anyio.Event()

    @experiment(root=tmp_path / "timeouts")
    async def job(k: int) -> None:
        if k == 200:
            started.set()
        await anyio.sleep(60)

    for k in range(200):
        with anyio.move_on_after(k * 0.00002):
            await job(k)
    async with anyio.create_task_group() as group:  # and one surely inside the body
        group.start_soon(job, 200)
        await started.wait()
        group.cancel_scope.cancel()
    runs = await _settled(job)
    assert 200 in {o.config["k"] for o in runs}
    assert {o.status for o in runs} == {"interrupted"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_native_asyncio_cancel_at_any_instant_never_leaves_a_running_record(
    tmp_path: Path,
) -> None:
    """300 `task.cancel()`s at instants from 0 to 6 ms, even mid-claim: no run stays `running`."""

    started = asyncio.Event()

    @experiment(root=tmp_path / "cancels")
    async def job(k: int) -> None:
        if k == 300:
            started.set()
        await asyncio.sleep(60)

    for k in range(301):
        task = asyncio.create_task(job(k))
        if k == 300:  # and one surely inside the body
            await started.wait()
        else:
            await asyncio.sleep(k * 0.00002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    runs = await _settled(job)
    assert 300 in {o.config["k"] for o in runs}
    assert {o.status for o in runs} == {"interrupted"}
    assert len({o.id for o in runs}) == len(runs)


async def _cancel_each(job: Any, times: int, step: float) -> list[BaseException]:
    """Call ``job(1)`` ``times`` times, cancelling the k-th call after ``k * step``
    seconds; the cancellations it raised (kept alive, so garbage collection cannot
    release a leaked hold for the test)."""
    errors: list[BaseException] = []
    for k in range(times):
        task = asyncio.create_task(job(1))
        await asyncio.sleep(k * step)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as error:
            errors.append(error)
    return errors


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_native_cancel_while_taking_the_cache_lock_gives_it_back(tmp_path: Path) -> None:
    """600 cached calls cancelled at 0 to 6 ms, even mid-acquire, leave the lock free."""
    never = asyncio.Event()

    @experiment(root=tmp_path / "cached", cache=True)
    async def job(x: int) -> int:
        await never.wait()
        return x

    errors = await _cancel_each(job, 600, 0.00001)
    assert len(errors) == 600
    # attempts may still run in worker threads: the lock must come free once they end
    lock = storage.make_lock(job.experiment.index.lock_path({"x": 1}))
    with anyio.fail_after(60):
        while not await anyio.to_thread.run_sync(storage.try_acquire, lock):
            await anyio.sleep(0.01)
    lock.release()
    assert {o.status for o in await _settled(job)} == {"interrupted"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_native_cancel_while_waiting_for_a_shared_roots_lease_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a root other hosts may share, a cached call also takes the config's lease:
    200 calls cancelled at 0 to 4 ms, even mid-take, leave neither lock nor lease held."""
    from digital_experiments._store import filesystems
    from digital_experiments._store import lease as leases

    monkeypatch.setattr(filesystems, "mount_of", lambda path: ("/mnt", "nfs4"))
    never = asyncio.Event()

    @experiment(root=tmp_path / "cached", cache=True)
    async def job(x: int) -> int:
        await never.wait()
        return x

    index = job.experiment.index
    assert index.shared()
    errors = await _cancel_each(job, 200, 0.00002)
    assert len(errors) == 200
    lease = index.lease({"x": 1})
    with anyio.fail_after(60):  # tries still in worker threads give back what they took
        while await anyio.to_thread.run_sync(leases.holds_any, lease):
            await anyio.sleep(0.01)
    lock = storage.make_lock(index.lock_path({"x": 1}))
    assert await anyio.to_thread.run_sync(storage.try_acquire, lock)
    lock.release()
    assert leases.generations(lease)  # the lease path really ran
    assert {o.status for o in await _settled(job)} <= {"interrupted"}
