"""The current run: ``current_id``, ``current_dir``, ``time_block`` and ``propagate`` (basics)."""

from __future__ import annotations

import pickle
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import (
    NoExperimentRunning,
    current_dir,
    current_id,
    experiment,
    propagate,
    time_block,
)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (current_id, "current_id()"),
        (current_dir, "current_dir()"),
        (lambda: time_block("x").__enter__(), "time_block()"),
    ],
)
def test_outside_a_run_raises_runtimeerror(call: Any, what: str) -> None:
    """``current_id``/``current_dir``/``time_block`` outside a run raise RuntimeError."""
    with pytest.raises(RuntimeError, match="^No experiment running: " + re.escape(what)):
        call()


def test_no_experiment_running_is_picklable() -> None:
    """The error survives pickling (it may cross a process boundary)."""
    error = NoExperimentRunning("current_dir()")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, RuntimeError)
    assert str(copy) == str(error)


def test_current_id_is_the_recorded_id() -> None:
    """Inside a run ``current_id()`` is the id its record gets."""

    @experiment
    def f() -> str:
        return current_id()

    returned = f()
    assert f.observations()[0].id == returned


def test_nested_experiments_restore_the_parent() -> None:
    """An experiment called inside another has its own id; the outer id is back afterwards."""

    @experiment
    def inner() -> str:
        return current_id()

    @experiment
    def outer() -> tuple[str, str, str, Path]:
        before = current_id()
        child = inner()
        return before, child, current_id(), current_dir()

    before, child, after, directory = outer()
    assert before == after != child
    assert directory.name == before
    assert directory.parent.parent == outer.backend.root
    assert [o.id for o in inner.observations()] == [child]
    assert [o.id for o in outer.observations()] == [before]
    with pytest.raises(RuntimeError, match="No experiment running"):
        current_id()


def test_run_context_ends_when_the_run_fails() -> None:
    """After a failing run, nothing is left running."""

    @experiment
    def fail() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        fail()
    with pytest.raises(RuntimeError, match="No experiment running"):
        current_id()


# ---------------------------------------------------------------- time_block


def test_time_block_adds_named_timing_and_total() -> None:
    """``time_block(name)`` adds ``timing[name]`` and moves the run's own timing to ``total``."""

    @experiment
    def work() -> None:
        with time_block("sleep"):
            time.sleep(0.05)
        with time_block("fast"):
            pass

    work()
    timing = work.observations()[0].metadata["timing"]
    assert set(timing) == {"sleep", "fast", "total"}
    for block in timing.values():
        assert set(block) == {"start", "end", "duration"}
    assert timing["sleep"]["duration"] >= 0.05
    # the blocks are the run's own, one after the other: together within the total
    assert timing["sleep"]["duration"] + timing["fast"]["duration"] <= timing["total"]["duration"]


def test_timing_without_blocks_is_flat() -> None:
    """Without ``time_block`` the run's timing is a single ``{start, end, duration}``."""

    @experiment
    def work() -> None:
        time.sleep(0.01)

    work()
    timing = work.observations()[0].metadata["timing"]
    assert set(timing) == {"start", "end", "duration"}
    assert timing["duration"] >= 0.01


def test_time_block_records_even_if_the_body_raises() -> None:
    """A block that raises is still timed; the run is recorded as failed."""

    @experiment
    def work() -> None:
        with time_block("doomed"):
            raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        work()
    (failed,) = work.observations(status="failed")
    assert "doomed" in failed.metadata["timing"]


def test_time_blocks_belong_to_their_own_run() -> None:
    """Blocks of a nested run do not leak into the outer run's timing."""

    @experiment
    def inner() -> None:
        with time_block("inner-block"):
            pass

    @experiment
    def outer() -> None:
        with time_block("outer-block"):
            inner()

    outer()
    assert set(outer.observations()[0].metadata["timing"]) == {"outer-block", "total"}
    assert set(inner.observations()[0].metadata["timing"]) == {"inner-block", "total"}


# ---------------------------------------------------------------- crossing into threads


def test_plain_threads_do_not_see_the_run() -> None:
    """A ``threading.Thread`` started in a run does not inherit it (context is per thread)."""
    errors: list[BaseException] = []

    def child() -> None:
        try:
            current_id()
        except RuntimeError as exc:
            errors.append(exc)

    @experiment
    def f() -> None:
        thread = threading.Thread(target=child)
        thread.start()
        thread.join()

    f()
    assert len(errors) == 1


def test_propagate_carries_the_run_into_a_pool() -> None:
    """``propagate(fn)`` runs fn in the current run, even in a thread pool worker."""

    def save(text: str) -> tuple[str, Path]:
        path = current_dir() / "from-thread.txt"
        path.write_text(text)
        return current_id(), path

    @experiment
    def f() -> tuple[str, Path]:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(propagate(save), "hello").result()

    run_id, path = f()
    assert run_id == f.observations()[0].id
    assert f.artefacts(run_id) == [path]
    assert path.read_text() == "hello"


def test_propagate_is_picklable_and_needs_a_run() -> None:
    """A propagated callable pickles (for process pools); outside a run it is refused."""
    captured: list[Any] = []

    @experiment
    def f() -> None:
        captured.append(pickle.loads(pickle.dumps(propagate(len))))

    f()
    wrapped = captured[0]
    assert wrapped("abc") == 3
    assert wrapped.run.id == f.observations()[0].id
    assert repr(wrapped).startswith("propagate(<built-in function len>, run=")
    with pytest.raises(RuntimeError, match=r"No experiment running: propagate\(\)"):
        propagate(len)


@pytest.mark.anyio
async def test_async_run_sees_its_context() -> None:
    """``current_id``/``current_dir``/``time_block`` work inside an ``async`` experiment."""

    @experiment
    async def f() -> tuple[str, Path]:
        with time_block("block"):
            pass
        return current_id(), current_dir()

    run_id, directory = await f()
    (observation,) = f.observations()
    assert observation.id == run_id == directory.name
    assert "block" in observation.metadata["timing"]


# ---------------------------------------------------------------- found by mutation testing


def test_current_run_outside_a_run_names_what_needs_one() -> None:
    """Outside a run, the error says what was called ("this function" by default)."""
    from digital_experiments._runs.context import current_run
    from digital_experiments.errors import NoExperimentRunning

    with pytest.raises(NoExperimentRunning, match=r"^No experiment running: this function only"):
        current_run()
    with pytest.raises(NoExperimentRunning, match=r"^No experiment running: time_block\(\) only"):
        current_run("time_block()")


def test_a_run_crosses_processes_with_its_id_and_root(tmp_path: Path) -> None:
    """A pickled Run keeps id and root, and gets fresh (unshared) state."""
    from digital_experiments._runs.context import Run

    run = Run("2026-01-01_00-00-00_000000", tmp_path)
    run.callback_state(object())["x"] = 1
    copy = pickle.loads(pickle.dumps(run))
    assert (copy.id, copy.root) == (run.id, run.root)
    assert copy.state == {}


def test_each_callback_has_its_own_state_in_a_run(tmp_path: Path) -> None:
    """callback_state is per callback: two callbacks never see each other's scratch space."""
    from digital_experiments._runs.context import Run

    run = Run("2026-01-01_00-00-00_000000", tmp_path)
    first, second = object(), object()
    run.callback_state(first)["x"] = 1
    assert run.callback_state(second) == {}
    assert run.callback_state(first) == {"x": 1}


def test_propagate_passes_keyword_arguments() -> None:
    """A propagated callable receives its keyword arguments."""

    @experiment
    def f() -> str:
        wrapped = propagate(lambda a, b="unset": f"{a}-{b}")
        return wrapped("x", b="y")  # type: ignore[no-any-return]

    assert f() == "x-y"


def test_hand_timing_ends_quietly_twice_or_in_another_context() -> None:
    """end_hand_timing ignores a token already used, or one made in another context."""
    import contextvars

    from digital_experiments._runs.context import begin_hand_timing, end_hand_timing

    _, token = begin_hand_timing("by-hand")
    end_hand_timing(token)
    end_hand_timing(token)  # used twice: RuntimeError inside, ignored
    _, foreign = contextvars.copy_context().run(begin_hand_timing, "elsewhere")
    end_hand_timing(foreign)  # made in another context: ValueError inside, ignored
