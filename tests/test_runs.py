"""The run lifecycle (``runs.py``): statuses, errors, unstorable values, atomic records."""

from __future__ import annotations

import asyncio
import datetime
import errno
import inspect
import multiprocessing
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from digital_experiments import (
    Callback,
    StorageError,
    UnstorableValueError,
    current_id,
    experiment,
    query,
)
from digital_experiments._store import files as storage
from digital_experiments.errors import CallbackError, DigitalExperimentsError

from .conftest import python_code

# ---------------------------------------------------------------- statuses


def test_run_is_running_from_its_claim() -> None:
    """From inside the function, the run's own record already reads as `running`."""
    seen: dict[str, Any] = {}

    @experiment
    def f() -> None:
        seen["running"] = [o.id for o in f.observations(status="running")]
        seen["completed"] = f.observations()
        seen["id"] = current_id()

    f()
    assert seen["running"] == [seen["id"]]
    assert seen["completed"] == []
    (done,) = f.observations()
    assert done.id == seen["id"]
    assert done.metadata["status"] == "completed"
    assert f.observations(status="running") == []


def test_failed_run_records_the_error_and_reraises_the_same_object() -> None:
    """A raising run records `failed` with type, message, traceback; the same error propagates."""
    error = ValueError("boom 42")

    @experiment
    def f(x: int) -> None:
        raise error

    with pytest.raises(ValueError, match="boom 42") as info:
        f(1)
    assert info.value is error
    assert f.observations() == []
    (failed,) = f.observations(status="failed")
    assert failed.config == {"x": 1}
    assert failed.result is None
    assert failed.metadata["status"] == "failed"
    assert failed.metadata["error"]["type"] == "ValueError"
    assert failed.metadata["error"]["message"] == "boom 42"
    assert "Traceback" in failed.metadata["error"]["traceback"]
    assert "raise error" in failed.metadata["error"]["traceback"]


def test_keyboard_interrupt_records_interrupted() -> None:
    """Ctrl-C (KeyboardInterrupt) in a run records `interrupted` and still propagates."""

    @experiment
    def f() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    (run,) = f.observations(status="interrupted")
    assert run.metadata["error"]["type"] == "KeyboardInterrupt"


def test_sigterm_handler_is_restored_after_a_run() -> None:
    """A run installs its SIGTERM handler only for its own duration."""
    before = signal.getsignal(signal.SIGTERM)

    @experiment
    def f() -> Any:
        return signal.getsignal(signal.SIGTERM)

    during = f()
    if before is signal.SIG_DFL:  # nobody handles SIGTERM: the run does, meanwhile
        assert during is not signal.SIG_DFL
    else:  # somebody else does: the run leaves their handler alone
        assert during is before
    assert signal.getsignal(signal.SIGTERM) is before


def test_status_selects_one_several_or_all_statuses() -> None:
    """`status=` takes one status, a collection of them or "all"; the default is completed."""

    @experiment
    def f(kind: str) -> str:
        if kind == "fail":
            raise RuntimeError(kind)
        if kind == "stop":
            raise KeyboardInterrupt
        return kind

    f("ok")
    with pytest.raises(RuntimeError):
        f("fail")
    with pytest.raises(KeyboardInterrupt):
        f("stop")

    def kinds(**kwargs: Any) -> list[str]:
        return [o.config["kind"] for o in f.observations(**kwargs)]

    assert kinds() == ["ok"]
    assert kinds(status="completed") == ["ok"]
    assert kinds(status="failed") == ["fail"]
    assert kinds(status="interrupted") == ["stop"]
    assert kinds(status={"failed", "interrupted"}) == ["fail", "stop"]
    assert kinds(status=["completed", "failed"]) == ["ok", "fail"]
    assert kinds(status="all") == ["ok", "fail", "stop"]
    assert kinds(status="running") == kinds(status="abandoned") == []
    with pytest.raises(ValueError, match="Unknown status 'done'"):
        f.observations(status="done")


def _exit_quietly() -> None:
    """Target of a process that ends at once (its pid is then dead)."""


def test_running_record_of_a_dead_process_reads_as_abandoned() -> None:
    """A `running` record whose process is gone is selected by status="abandoned", not "running"."""

    @experiment
    def f() -> None:
        pass

    f()
    (done,) = f.observations()
    process = multiprocessing.get_context("spawn").Process(target=_exit_quietly)
    process.start()
    process.join()
    dead = {"host": storage.HOST, "pid": process.pid}
    stale = done._replace(id="2000-01-01_00-00-00_000000", result=None)
    stale.metadata.update(status="running", process=dead)
    f.backend.record(stale)
    alive = done._replace(id="2000-01-01_00-00-00_000001", result=None)
    alive.metadata.update(status="running", process=storage.process_info())
    f.backend.record(alive)

    assert [o.id for o in f.observations(status="abandoned")] == [stale.id]
    assert [o.id for o in f.observations(status="running")] == [alive.id]
    statuses = {o.id: o.status for o in f.observations(status="all")}
    assert statuses == {stale.id: "abandoned", alive.id: "running", done.id: "completed"}


# ---------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_experiment_is_a_coroutine_function_and_records() -> None:
    """`@experiment async def` stays a coroutine function; awaiting it returns and records."""

    @experiment
    async def f(x: int) -> int:
        await anyio.sleep(0)
        return x + 1

    assert inspect.iscoroutinefunction(f)
    assert await f(1) == 2
    (run,) = f.observations()
    assert (run.config, run.result, run.metadata["status"]) == ({"x": 1}, 2, "completed")


@pytest.mark.anyio
async def test_async_failure_records_failed_and_reraises() -> None:
    """An async run that raises is recorded as `failed`; the same exception propagates."""
    error = KeyError("missing")

    @experiment
    async def f() -> None:
        await anyio.sleep(0)
        raise error

    with pytest.raises(KeyError) as info:
        await f()
    assert info.value is error
    (run,) = f.observations(status="failed")
    assert run.metadata["error"]["type"] == "KeyError"


@pytest.mark.anyio
async def test_async_cancellation_records_interrupted() -> None:
    """Cancelling an awaiting run (task group cancel scope) records `interrupted`."""
    started = anyio.Event()

    @experiment
    async def f() -> None:
        started.set()
        await anyio.sleep(60)

    async with anyio.create_task_group() as group:
        group.start_soon(f)
        await started.wait()
        group.cancel_scope.cancel()
    (run,) = f.observations(status="interrupted")
    assert run.metadata["status"] == "interrupted"
    assert f.observations(status="running") == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_asyncio_task_cancel_records_interrupted() -> None:
    """`task.cancel()` on an asyncio task in a run records `interrupted`, raises CancelledError."""
    started = asyncio.Event()

    @experiment
    async def f() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(f())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = f.observations(status="interrupted")
    assert run.metadata["error"]["type"] == "CancelledError"


# ---------------------------------------------------------------- unstorable values


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_unstorable_result_loses_nothing() -> None:
    """A result json cannot store raises UnstorableValueError naming `result` and carrying it."""
    value = object()

    @experiment(backend="json")
    def f(x: int) -> object:
        return value

    with pytest.raises(UnstorableValueError, match=r"result.*backend='pickle'") as info:
        f(1)
    error = info.value
    assert isinstance(error, TypeError)
    assert isinstance(error, DigitalExperimentsError)
    assert error.field == "result"
    assert error.result is value
    (failed,) = f.observations(status="failed")
    assert failed.config == {"x": 1}
    assert failed.metadata["error"]["type"] == "UnstorableValueError"
    assert f.observations() == []
    assert _files(f.backend.root) == [".de", f"{failed.id}.json"]  # no partial file


def test_unstorable_config_is_refused_before_the_body_runs() -> None:
    """A config value json cannot store is named (`config.x`) before the body runs; no record."""
    ran = []

    @experiment(backend="json")
    def f(x: object, y: int = 2) -> int:
        ran.append(x)
        return y * 3

    with pytest.raises(UnstorableValueError, match=r"config\.x = <object object.*not started"):
        f(object())
    assert ran == []
    assert f.observations(status="all") == []
    assert [p.name for p in f.backend.root.glob("*.json")] == []


@pytest.mark.parametrize("when", ["date", "set"])
def test_unstorable_json_config_leaves_no_running_record(when: str) -> None:
    """A date or a set as a json config raises UnstorableValueError naming it; nothing runs."""
    value: object = datetime.date(2024, 1, 1) if when == "date" else {1, 2}
    ran = []

    @experiment(backend="json")
    def jc(day: object) -> int:
        ran.append(day)
        return 1

    with pytest.raises(UnstorableValueError, match=r"config\.day") as info:
        jc(value)
    assert (info.value.field, info.value.result, ran) == ("config.day", None, [])
    assert jc.observations(status="all") == []


def test_pickle_unstorable_config_does_not_advise_pickle() -> None:
    """Pickle's own error advises picklable values, not backend='pickle'."""
    lock = threading.Lock()

    @experiment
    def f(guard: object) -> int:
        return 1

    with pytest.raises(UnstorableValueError, match=r"config\.guard") as info:
        f(lock)
    assert "backend='pickle'" not in str(info.value)
    assert "lambdas" in str(info.value)


@pytest.mark.anyio
async def test_async_unstorable_result_loses_nothing() -> None:
    """An async run's unstorable result raises UnstorableValueError carrying it; recorded failed."""
    value = {1, 2}  # a set: not JSON

    @experiment(backend="json")
    async def f() -> set[int]:
        return value

    with pytest.raises(UnstorableValueError) as info:
        await f()
    assert info.value.result is value
    assert len(f.observations(status="failed")) == 1


def test_unstorable_value_error_pickles() -> None:
    """UnstorableValueError survives pickling (it crosses process pools) with field and result."""
    error = UnstorableValueError("cannot store", "config.x", [1, 2])
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.field, copy.result) == ("cannot store", "config.x", [1, 2])


# ---------------------------------------------------------------- atomic records


def test_corrupt_and_foreign_files_are_skipped_with_a_warning_naming_them() -> None:
    """Garbage `<id>.pkl` and a foreign `notes.pkl` are skipped with warnings naming them."""

    @experiment
    def f(x: int) -> int:
        return x

    f(1)
    root = f.backend.root
    (root / "2001-01-01_00-00-00_000000.pkl").write_bytes(os.urandom(64))
    (root / "notes.pkl").write_bytes(pickle.dumps({"my": "notes"}))
    (root / "empty.pkl").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipping unreadable record") as warned:
        observations = f.observations(status="all")
    assert [o.result for o in observations] == [1]
    messages = " ".join(str(w.message) for w in warned)
    for name in ("2001-01-01_00-00-00_000000", "notes", "empty"):
        assert f"'{name}'" in messages


def test_temp_files_are_never_listed_and_dead_writers_leftovers_are_removed() -> None:
    """Temp files never list; listing removes a dead writer's and keeps a live writer's."""

    @experiment
    def f() -> int:
        return 1

    f()
    (done,) = f.observations()
    root = f.backend.root
    process = multiprocessing.get_context("spawn").Process(target=_exit_quietly)
    process.start()
    process.join()
    record = f"{done.id}.pkl"  # real temp names embed the record's name, dashes and all
    me = storage.process_info()
    dead = root / storage.temp_name(record, process.pid, None, "0123456789ab")
    live = root / storage.temp_name(record, me["pid"], me["start"], "0123456789ab")
    other = root / f"{storage.TEMP_PREFIX}{'0' * 16}-{process.pid}-0-0123456789ab-{record}"
    for path in (dead, live, other):
        path.write_bytes((root / record).read_bytes()[:10])

    assert f.backend.all_ids() == [done.id]
    assert not dead.exists()
    assert live.exists()  # its writer may still finish
    assert other.exists()  # another host's writer cannot be probed
    assert [o.id for o in f.observations(status="all")] == [done.id]


# ---------------------------------------------------------------- every run ends in a final state


class _Raises(Callback):
    """A callback whose ``start`` or ``end`` raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    def start(self, id: str, config: dict[str, Any]) -> None:
        if self.where == "start":
            raise ValueError("start broke")

    def end(self, observation: Any) -> None:
        if self.where == "end":
            raise ValueError("end broke")


def test_end_callback_raising_records_failed_and_keeps_the_result() -> None:
    """An `end` callback that raises on a successful run: recorded failed, result carried."""

    @experiment(callbacks=[_Raises("end")])
    def f(x: int) -> int:
        return x * 2

    with pytest.raises(CallbackError, match=r"end broke.*\.result") as info:
        f(21)
    assert info.value.result == 42
    assert isinstance(info.value.__cause__, ValueError)
    (run,) = f.observations(status="all")
    assert (run.status, run.result) == ("failed", 42)
    assert run.metadata["error"]["type"] == "CallbackError"
    assert "timing" in run.metadata  # the other callbacks still ran
    assert pickle.loads(pickle.dumps(info.value)).result == 42


def test_start_callback_raising_records_failed_and_skips_the_body() -> None:
    """A `start` callback that raises: the body never runs, the run is failed, the error raised."""
    ran = []

    @experiment(callbacks=[_Raises("start")])
    def f() -> None:
        ran.append(1)

    with pytest.raises(ValueError, match="start broke"):
        f()
    assert ran == []
    (run,) = f.observations(status="all")
    assert run.status == "failed"
    assert run.metadata["error"]["message"] == "start broke"


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["start", "end"])
async def test_async_callback_raising_ends_in_a_final_state(where: str) -> None:
    """Async runs end failed too when a callback raises, and an end failure carries the result."""

    @experiment(callbacks=[_Raises(where)])
    async def f() -> int:
        return 7

    with pytest.raises((CallbackError, ValueError)) as info:
        await f()
    if where == "end":
        assert isinstance(info.value, CallbackError)
        assert info.value.result == 7
    (run,) = f.observations(status="all")
    assert run.status == "failed"


def _fail_large_writes(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Make record writes larger than ``limit`` bytes fail with ENOSPC, as a full disk does."""
    real = storage._write_temp
    refused: list[int] = []

    def write_temp(target: str, data: bytes, *args: Any, **kwargs: Any) -> str:
        if len(data) > limit:
            refused.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, data, *args, **kwargs)

    monkeypatch.setattr(storage, "_write_temp", write_temp)
    return refused


@pytest.mark.parametrize("is_async", [False, True])
def test_full_disk_records_failed_and_carries_the_result(
    monkeypatch: pytest.MonkeyPatch, is_async: bool
) -> None:
    """A result too big for the disk: StorageError carries it, and the run ends failed."""
    big = "x" * 100_000

    @experiment
    def f() -> str:
        return big

    @experiment
    async def af() -> str:
        return big

    refused = _fail_large_writes(monkeypatch, 50_000)
    with pytest.raises(StorageError, match="No space left") as info:
        anyio.run(af) if is_async else f()
    assert info.value.result is big
    assert refused  # the write really failed
    (run,) = (af if is_async else f).observations(status="all")
    assert (run.status, run.result) == ("failed", None)
    assert run.metadata["error"]["type"] == "StorageError"


def test_cache_index_failure_keeps_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the cache index cannot be written, the call still returns its result (with a warning)."""

    @experiment(cache=True)
    def f(x: int) -> int:
        return x + 1

    def broken(observation: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", ".de/cache")

    monkeypatch.setattr(f.experiment.index, "remember", broken)
    with pytest.warns(RuntimeWarning, match=r"Could not index run .*Permission denied"):
        assert f(1) == 2
    (run,) = f.observations()
    assert run.result == 2


def test_every_write_failing_warns_and_keeps_the_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """When not even a failed record can be written, the run's own exception still propagates."""

    @experiment
    def f() -> None:
        raise LookupError("the run's own error")

    _fail_large_writes(monkeypatch, 0)  # claims aside, every record write fails
    monkeypatch.setattr(f.backend, "create", lambda observation: observation)
    with (
        pytest.warns(RuntimeWarning, match=r"stays 'running' until this process exits"),
        pytest.raises(LookupError, match="the run's own error"),
    ):
        f()


FORK_CHILD_EXITS = """
import os, sys
from digital_experiments import experiment

go_read, go_write = os.pipe()

@experiment(root=sys.argv[1])
def parent():
    pid = os.fork()
    if pid == 0:
        os.read(go_read, 1)  # wait until the parent's run is recorded
        sys.exit(0)  # the child leaves through the run's wrapper
    return "parent"

print(parent(), flush=True)
os.write(go_write, b"x")
_, status = os.wait()
print(os.waitstatus_to_exitcode(status))
"""


def test_forked_child_that_exits_never_rewrites_the_parent_record(tmp_path: Path) -> None:
    """os.fork() inside a run, the child calls sys.exit(0): the parent's record stays completed."""
    root = tmp_path / "runs"
    done = python_code(FORK_CHILD_EXITS, root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["parent", "0"]  # the child exited cleanly, after the parent
    (run,) = query.load(root, status="all")
    assert (run.status, run.result) == ("completed", "parent")


class _BlocksInEnd(Callback):
    """An `end` callback that waits in its worker thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def end(self, observation: Any) -> None:
        self.entered.set()
        assert self.release.wait(timeout=60)


@pytest.mark.asyncio
async def test_native_cancel_while_publishing_still_ends_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio's task.cancel() while the record is being finished: the record still ends final."""
    blocker = _BlocksInEnd()

    @experiment(callbacks=[blocker])
    async def f() -> int:
        return 3

    finished = threading.Event()
    record = f.backend.record

    def record_then_tell(observation: Any) -> None:
        record(observation)
        if observation.metadata["status"] != "running":
            finished.set()

    monkeypatch.setattr(f.backend, "record", record_then_tell)
    task = asyncio.ensure_future(f())
    assert await asyncio.to_thread(blocker.entered.wait, 60)
    task.cancel()
    blocker.release.set()
    try:
        result = await task
    except asyncio.CancelledError:
        result = None
    assert result in (None, 3)
    assert await asyncio.to_thread(finished.wait, 60)  # the finishing thread went on
    (run,) = f.observations(status="all")
    assert (run.status, run.result) == ("completed", 3)
