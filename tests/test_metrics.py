"""log(): metrics over steps, buffered, durable at the end of a run, readable at any time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from digital_experiments import NoExperimentRunning, experiment, log, propagate
from digital_experiments._model import layout
from digital_experiments._runs import metrics
from digital_experiments._store.local import LocalStore


def test_log_records_points_with_per_name_steps(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def train(epochs: int) -> str:
        for epoch in range(epochs):
            log(loss=1 / (epoch + 1))
            if epoch % 2 == 0:
                log(acc=epoch / 10)
        log(step=100, loss=0.0)
        return "done"

    train(4)
    (run,) = train.observations()
    frame = run.metrics()
    assert list(frame.columns) == ["step", "name", "value", "time"]
    loss = frame[frame.name == "loss"]
    assert list(loss.step) == [0, 1, 2, 3, 100]
    assert list(loss.value) == [1.0, 0.5, 1 / 3, 0.25, 0.0]
    acc = frame[frame.name == "acc"]
    assert list(acc.step) == [0, 1]  # its own counter: logged twice
    assert list(acc.value) == [0.0, 0.2]
    assert frame.time.is_monotonic_increasing
    assert frame.time.iloc[0] > time.time() - 600


def test_points_are_synced_to_disk_when_the_run_ends(tmp_path: Path) -> None:
    """Fewer points than a flush's worth: still all in the file once the call returns."""

    @experiment(root=tmp_path)
    def f() -> None:
        log(x=1)
        log(x=2)

    f()
    (run,) = f.observations()
    lines = layout.metrics(tmp_path, run.id).read_text().splitlines()
    assert [json.loads(line)[:3] for line in lines if line] == [[0, "x", 1], [1, "x", 2]]


def test_points_of_a_failed_run_are_kept(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f() -> None:
        log(loss=3.0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        f()
    (run,) = f.observations(status="failed")
    assert list(run.metrics().value) == [3.0]


def test_to_dataframe_adds_last_min_or_max_of_each_metric(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f(scale: float) -> float:
        for value in (3.0, 1.0, 2.0):
            log(loss=value * scale)
        return scale

    f(1.0)
    f(10.0)
    last = f.to_dataframe(metrics="last")
    assert list(last["metrics.loss"]) == [2.0, 20.0]
    assert list(f.to_dataframe(metrics="min")["metrics.loss"]) == [1.0, 10.0]
    assert list(f.to_dataframe(metrics="max")["metrics.loss"]) == [3.0, 30.0]
    assert "metrics.loss" not in f.to_dataframe().columns
    with pytest.raises(ValueError, match="metrics= takes 'last', 'min' or 'max'"):
        f.to_dataframe(metrics="mean")


def test_bad_values_and_steps_are_refused_by_name(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f(value: object) -> None:
        log(fine=1, **{"bad_one": value})

    for value in ("0.5", None, True, [1.0]):
        with pytest.raises(TypeError, match=r"Metric 'bad_one' is .*: log\(\) records numbers"):
            f(value)

    @experiment(root=tmp_path / "steps")
    def g() -> None:
        log(step=1.5, x=1)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"log\(step=...\) takes an int, not 1.5"):
        g()
    (failed,) = f.observations(status="failed")[:1]
    assert failed.metrics().empty  # nothing of a refused call is written


def test_numpy_values_are_plain_numbers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")

    @experiment(root=tmp_path)
    def f() -> None:
        log(x=np.float32(0.5), y=np.int64(3))

    f()
    frame = f.observations()[0].metrics()
    assert list(frame.value) == [0.5, 3]


def test_log_outside_a_run_raises() -> None:
    with pytest.raises(NoExperimentRunning, match=r"log\(\)"):
        log(loss=1.0)


def test_an_observation_not_loaded_from_a_folder_says_so() -> None:
    from digital_experiments import Observation

    with pytest.raises(ValueError, match="not loaded from an experiment folder"):
        Observation("2026-01-01_00-00-00_000000", {}, None, {}).metrics()


def _log_in_worker(start: int) -> int:
    for step in range(start, start + 50):
        log(step=step, worker=float(step))
    return os.getpid()


def test_pool_workers_log_into_the_run_through_propagate(tmp_path: Path) -> None:
    """Workers of a spawn pool log with propagate(); each call's points are written
    when it ends, so they are all there when the run ends."""

    @experiment(root=tmp_path)
    def fan_out() -> set[int]:
        with ProcessPoolExecutor(
            2, mp_context=__import__("multiprocessing").get_context("spawn")
        ) as pool:
            return set(pool.map(propagate(_log_in_worker), [0, 50, 100, 150]))

    pids = fan_out()
    assert os.getpid() not in pids
    frame = fan_out.observations()[0].metrics()
    assert sorted(frame.step) == list(range(200))


CHILD = """
import os, sys
sys.path.insert(0, os.getcwd())
from digital_experiments import experiment, log
from digital_experiments._runs import metrics
metrics.FLUSH_EVERY = 0.0  # write every point: a kill lands between writes or during one
root, ready = sys.argv[1], sys.argv[2]

@experiment(root=root)
def forever():
    step = 0
    while True:
        log(step=step, x=float(step), y=-float(step))
        step += 1
        if step == 2000:
            open(ready, "w").close()

forever()
"""


def test_kill_9_while_logging_leaves_whole_points(tmp_path: Path) -> None:
    """A run killed with -9 in the middle of logging: its metrics read back as a whole
    prefix of what it logged (every line intact, no step missing), the run abandoned."""
    root, ready = tmp_path / "runs", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():  # synchronised on the file, not on time
            assert child.poll() is None, "the child died before it logged"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    from digital_experiments import query

    (run,) = query.load(root, status="all")
    assert run.status == "abandoned"
    frame = run.metrics()
    steps = sorted(set(frame.step))
    assert len(steps) >= 2000
    assert steps == list(range(len(steps)))
    for name, sign in (("x", 1), ("y", -1)):
        points = frame[frame.name == name]
        assert (points.value == sign * points.step.astype(float)).all()
    raw = layout.metrics(root, run.id).read_bytes()
    for line in raw.splitlines()[:-1]:  # all but a possibly torn last line parse (or are blank)
        assert not line or json.loads(line)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = layout.metrics(tmp_path, "2026-01-01_00-00-00_000000")
    path.parent.mkdir(parents=True)
    path.write_text('[0, "x", 1.0, 1.5]\n[1, "x", 2.0, 1.6]\n[2, "x"')
    assert metrics.read(LocalStore(tmp_path), "2026-01-01_00-00-00_000000") == [
        (0, "x", 1.0, 1.5),
        (1, "x", 2.0, 1.6),
    ]
    assert isinstance(
        metrics.frame(LocalStore(tmp_path), "2026-01-01_00-00-00_000000"), pd.DataFrame
    )


def test_special_floats_round_trip(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f() -> None:
        log(a=float("nan"), b=float("inf"), c=float("-inf"), d=1e-300, e=2**70)

    f()
    values = dict(zip(*(f.observations()[0].metrics()[k] for k in ("name", "value")), strict=True))
    assert values["a"] != values["a"]  # nan
    assert (values["b"], values["c"], values["d"], values["e"]) == (
        float("inf"),
        float("-inf"),
        1e-300,
        2**70,
    )


def test_points_are_written_once_flush_every_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FLUSH_EVERY = 0 every log() writes at once: readers see points mid-run."""
    monkeypatch.setattr(metrics, "FLUSH_EVERY", 0.0)
    seen: list[int] = []

    @experiment(root=tmp_path)
    def f() -> None:
        from digital_experiments import current_id

        for step in range(3):
            log(x=step)
            seen.append(len(metrics.read(LocalStore(tmp_path), current_id())))

    f()
    assert seen == [1, 2, 3]
    monkeypatch.setattr(metrics, "FLUSH_EVERY", 3600.0)
    seen.clear()
    f()
    assert seen == [0, 0, 0]  # buffered: written when the run ends
    assert len(f.observations()[-1].metrics()) == 3
