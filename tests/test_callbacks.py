"""Callbacks: user hooks, verbose logging, SaveLogs and the built-ins driven by hand."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from digital_experiments import (
    Callback,
    CodeVersioning,
    GitInfo,
    Logging,
    Observation,
    PipFreeze,
    SaveLogs,
    SystemInfo,
    Timing,
    current_dir,
    current_id,
    experiment,
    time_block,
)
from digital_experiments._record.environment import pip_freeze
from digital_experiments.callbacks import GlobalStateNotifier


class Recorder(Callback):
    """Remembers every hook call, and adds metadata at the end."""

    def __init__(self, label: str = "recorder", log: list[Any] | None = None) -> None:
        self.label = label
        self.log: list[Any] = [] if log is None else log

    def setup(self, function: Callable[..., Any]) -> None:
        self.log.append((self.label, "setup", function.__name__))

    def start(self, id: str, config: dict[str, Any]) -> None:
        self.log.append((self.label, "start", id, dict(config), current_id()))

    def end(self, observation: Observation) -> None:
        self.log.append((self.label, "end", observation.id, observation.result))
        observation.metadata[self.label] = "was here"


def test_user_callback_sees_setup_start_and_end() -> None:
    """A Callback gets setup(function), start(id, config) inside the run, end(observation)."""
    recorder = Recorder()

    @experiment(callbacks=[recorder])
    def square(x: int) -> int:
        return x**2

    assert recorder.log == [("recorder", "setup", "square")]
    square(3)
    (observation,) = square.observations()
    assert recorder.log[1:] == [
        ("recorder", "start", observation.id, {"x": 3}, observation.id),
        ("recorder", "end", observation.id, 9),
    ]
    assert observation.metadata["recorder"] == "was here"


def test_callbacks_start_in_order_and_end_in_reverse() -> None:
    """User callbacks start in the given order and end in the reverse order."""
    log: list[Any] = []

    @experiment(callbacks=[Recorder("a", log), Recorder("b", log)])
    def f() -> None:
        pass

    log.clear()
    f()
    assert [(entry[0], entry[1]) for entry in log] == [
        ("a", "start"),
        ("b", "start"),
        ("b", "end"),
        ("a", "end"),
    ]


def test_callback_end_sees_failed_runs() -> None:
    """``end`` is called for a failing run too, with status failed and no result."""
    seen: list[Observation] = []

    class Watch(Callback):
        def end(self, observation: Observation) -> None:
            seen.append(observation)

    @experiment(callbacks=[Watch()])
    def fail() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        fail()
    (observation,) = seen
    assert observation.metadata["status"] == "failed"
    assert observation.result is None


def test_builtin_metadata_is_present() -> None:
    """The built-in callbacks fill timing, code and environment on every run."""

    @experiment
    def f() -> int:
        return 1

    f()
    metadata = f.observations()[0].metadata
    assert {"timing", "code", "environment", "status"} <= set(metadata)
    assert {"system", "pip_freeze"} <= set(metadata["environment"])


# ---------------------------------------------------------------- verbose


def test_verbose_prints_start_and_finish(capsys: pytest.CaptureFixture[str]) -> None:
    """``verbose=True`` prints a line when the run starts and one when it ends."""

    @experiment(verbose=True)
    def square(x: int) -> int:
        return x**2

    square(3)
    run_id = square.observations()[0].id
    assert capsys.readouterr().out.splitlines() == [
        f"[digital-experiments] starting experiment {run_id} with config {{'x': 3}}",
        f"[digital-experiments] finished experiment {run_id} with result 9",
    ]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ValueError("lr must be positive, got -1"),
            "failed: ValueError: lr must be positive, got -1",
        ),
        (ZeroDivisionError(), "failed: ZeroDivisionError"),
        (KeyboardInterrupt(), "interrupted: KeyboardInterrupt"),
    ],
)
def test_verbose_prints_the_exception_of_a_run_that_did_not_complete(
    error: BaseException, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed or interrupted run prints its exception's type and message, not ``None``."""

    @experiment(verbose=True)
    def broken(x: int) -> int:
        raise error

    with pytest.raises(type(error)):
        broken(1)
    (run,) = broken.observations(status="all")
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"[digital-experiments] experiment {run.id} {line}"
    )


def test_verbose_shortens_long_error_messages(capsys: pytest.CaptureFixture[str]) -> None:
    """A long or multi-line error message is printed on one short line."""

    @experiment(verbose=True)
    def broken() -> None:
        raise RuntimeError("first line\n" + "x" * 300 + "LAST")

    with pytest.raises(RuntimeError):
        broken()
    finish = capsys.readouterr().out.splitlines()[-1]
    assert "failed: RuntimeError: first line\\nxxx" in finish
    assert finish.endswith("LAST")
    assert "..." in finish
    assert len(finish) < 200


def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``verbose`` nothing is printed."""

    @experiment
    def square(x: int) -> int:
        return x**2

    square(3)
    assert capsys.readouterr().out == ""


def test_verbose_shortens_long_results(capsys: pytest.CaptureFixture[str]) -> None:
    """Long results are printed shortened, with their start and end."""

    @experiment(verbose=True)
    def long() -> str:
        return "a" * 300 + "END"

    long()
    finish = capsys.readouterr().out.splitlines()[-1]
    assert "..." in finish
    assert finish.endswith("END'")
    assert len(finish) < 200


# ---------------------------------------------------------------- SaveLogs


def test_savelogs_tees_stdout_into_the_artefacts(capsys: pytest.CaptureFixture[str]) -> None:
    """``SaveLogs("log.txt")`` copies what the run prints to ``<artefacts>/log.txt``."""

    @experiment(callbacks=[SaveLogs("log.txt")])
    def chatty(n: int) -> int:
        for i in range(n):
            print("line", i)
        return n

    chatty(3)
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"
    run_id = chatty.observations()[0].id
    (log,) = chatty.artefacts(run_id)
    assert log == chatty.backend.root / "storage" / run_id / "log.txt"
    assert log.read_text() == "line 0\nline 1\nline 2\n"


def test_savelogs_default_name_and_one_log_per_run() -> None:
    """The default log is ``logs.txt``, and each run gets only its own output."""

    @experiment(callbacks=[SaveLogs()])
    def echo(text: str) -> None:
        print(text)

    echo("first")
    echo("second")
    logs = [echo.artefacts(o.id) for o in echo.observations()]
    assert [[p.name for p in files] for files in logs] == [["logs.txt"], ["logs.txt"]]
    assert [files[0].read_text() for files in logs] == ["first\n", "second\n"]


def test_savelogs_restores_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """After a run (even a failing one) ``sys.stdout`` is restored and prints are not logged."""
    before = sys.stdout

    @experiment(callbacks=[SaveLogs("log.txt")])
    def fail() -> None:
        print("before failing")
        raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        fail()
    assert sys.stdout is before
    print("after the run")
    (failed,) = fail.observations(status="failed")
    assert fail.artefacts(failed.id)[0].read_text() == "before failing\n"
    assert capsys.readouterr().out == "before failing\nafter the run\n"


def test_savelogs_nested_runs_log_separately() -> None:
    """An inner run's prints go to the inner log, not the outer one."""

    @experiment(callbacks=[SaveLogs()])
    def inner() -> None:
        print("inner")

    @experiment(callbacks=[SaveLogs()])
    def outer() -> None:
        print("outer 1")
        inner()
        print("outer 2")

    outer()
    outer_log = outer.artefacts(outer.observations()[0].id)[0].read_text()
    inner_log = inner.artefacts(inner.observations()[0].id)[0].read_text()
    assert outer_log == "outer 1\nouter 2\n"
    assert inner_log == "inner\n"


# ---------------------------------------------------------------- built-ins by hand


def test_global_state_notifier_by_hand(tmp_path: Path) -> None:
    """``GlobalStateNotifier(root).start`` makes current_id/current_dir work until ``end``."""
    notifier = GlobalStateNotifier(tmp_path / "root")
    notifier.start("manual-id", {})
    assert current_id() == "manual-id"
    assert current_dir() == tmp_path / "root" / "storage" / "manual-id"
    assert current_dir().is_dir()
    with time_block("by-hand"):
        pass
    notifier.end(Observation("manual-id", {}, None, {}))
    with pytest.raises(RuntimeError, match="No experiment running"):
        current_id()


def test_timing_by_hand() -> None:
    """``Timing().start`` then ``.end`` fills ``metadata["timing"]``."""
    timing = Timing()
    timing.start("id", {})
    observation = Observation("id", {}, None, {})
    timing.end(observation)
    assert set(observation.metadata["timing"]) == {"start", "end", "duration"}
    assert observation.metadata["timing"]["duration"] >= 0


def test_timing_by_hand_collects_time_blocks() -> None:
    """Driven by hand outside any run, ``Timing`` lets ``time_block`` record in between.

    2.0.4's own test does this: ``start``, ``time_block``, ``end``; the blocks
    land in ``metadata["timing"]`` beside ``total``, and no run is current.
    """
    timing = Timing()
    timing.start("id", {})
    with time_block("load"):
        pass
    with pytest.raises(RuntimeError, match="No experiment running"):
        current_id()  # only timing is by hand: there is still no run
    observation = Observation("id", {}, None, {})
    timing.end(observation)
    assert set(observation.metadata["timing"]) == {"load", "total"}
    assert set(observation.metadata["timing"]["total"]) == {"start", "end", "duration"}
    with pytest.raises(RuntimeError, match="No experiment running"), time_block("late"):
        pass


def test_timing_by_hand_leaves_runs_alone() -> None:
    """A run started while timing by hand keeps its own blocks; the hand timing keeps its."""

    @experiment
    def inner() -> None:
        with time_block("inner-block"):
            pass

    timing = Timing()
    timing.start("id", {})
    inner()
    with time_block("outer-block"):
        pass
    observation = Observation("id", {}, None, {})
    timing.end(observation)
    assert set(observation.metadata["timing"]) == {"outer-block", "total"}
    assert set(inner.observations()[0].metadata["timing"]) == {"inner-block", "total"}


def test_timing_end_without_start_adds_nothing() -> None:
    """``Timing.end`` without a matching start leaves the metadata alone."""
    observation = Observation("id", {}, None, {})
    Timing().end(observation)
    assert observation.metadata == {}


def test_code_versioning_by_hand() -> None:
    """``CodeVersioning`` stores the source given to ``setup``."""

    def f() -> int:
        return 42

    callback = CodeVersioning()
    callback.setup(f)
    observation = Observation("id", {}, None, {})
    callback.end(observation)
    assert "return 42" in observation.metadata["code"]


def test_environment_callbacks_by_hand() -> None:
    """``PipFreeze``, ``SystemInfo`` and ``GitInfo`` fill ``metadata["environment"]``."""
    observation = Observation("id", {}, None, {})
    for callback in (PipFreeze(), SystemInfo(), GitInfo()):
        callback.end(observation)
    environment = observation.metadata["environment"]
    assert environment["pip_freeze"] == pip_freeze()
    assert environment["system"]["pwd"] == str(Path.cwd())
    assert "git" not in environment  # the test folder is not a git repository


def test_logging_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """``Logging()`` prints on start and end; ``Logging(False)`` prints nothing."""
    Logging().start("id", {"x": 1})
    Logging().end(Observation("id", {"x": 1}, 2, {}))
    Logging(verbose=False).start("id", {"x": 1})
    assert capsys.readouterr().out.splitlines() == [
        "[digital-experiments] starting experiment id with config {'x': 1}",
        "[digital-experiments] finished experiment id with result 2",
    ]


def test_logging_shortens_long_configs(capsys: pytest.CaptureFixture[str]) -> None:
    """A long config is printed shortened to its start and end."""
    Logging().start("id", {"values": list(range(200))})
    start = capsys.readouterr().out.strip()
    assert start.startswith("[digital-experiments] starting experiment id with config {'values'")
    assert start.endswith("199]}")
    assert "..." in start
    assert len(start) < 200


def test_logging_cache_hit(capsys: pytest.CaptureFixture[str]) -> None:
    """``Logging.cache_hit`` says the stored result of a run was returned (when verbose)."""
    stored = Observation("2026-01-01_00-00-00_000000", {"x": 3}, 9, {"status": "completed"})
    Logging().cache_hit(stored)
    Logging(verbose=False).cache_hit(stored)
    assert capsys.readouterr().out.splitlines() == [
        "[digital-experiments] returned the stored result of run 2026-01-01_00-00-00_000000: 9"
    ]


def test_savelogs_needs_a_run() -> None:
    """``SaveLogs.start`` outside a run raises RuntimeError."""
    with pytest.raises(RuntimeError, match="No experiment running: SaveLogs"):
        SaveLogs().start("id", {})


@pytest.mark.parametrize("is_async", [False, True])
def test_verbose_cache_hit_is_announced(capsys: pytest.CaptureFixture[str], is_async: bool) -> None:
    """A verbose cached experiment says when it returns a stored result instead of running."""

    @experiment(verbose=True, cache=True)
    def square(x: int) -> int:
        return x * x

    @experiment(verbose=True, cache=True)
    async def asquare(x: int) -> int:
        return x * x

    for _ in range(2):
        assert (anyio.run(asquare, 3) if is_async else square(3)) == 9
    (run,) = (asquare if is_async else square).observations()
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"[digital-experiments] returned the stored result of run {run.id}: 9"
    assert sum("starting experiment" in line for line in lines) == 1
