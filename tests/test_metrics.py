"""log(): metrics over steps, buffered, durable at the end of a run, readable at any time."""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from digital_experiments import NoExperimentRunning, current_id, experiment, log, propagate
from digital_experiments._model import layout
from digital_experiments._runs import metrics
from digital_experiments._runs.context import Run, activate
from digital_experiments._store import files as storage
from digital_experiments._store import open_store
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


# ---------------------------------------------------------------- what mutation testing asked

ID = "2026-01-01_00-00-00_000000"


def test_an_int_subclass_is_logged_as_a_plain_number(tmp_path: Path) -> None:
    """An IntEnum was written as its repr (``<Level.HIGH: 3>``), which no reader
    parses: its point was lost without a word."""

    class Level(enum.IntEnum):
        HIGH = 3

    @experiment(root=tmp_path)
    def f() -> None:
        log(level=Level.HIGH)

    f()
    (run,) = f.observations()
    assert list(run.metrics().value) == [3]
    (line,) = [line for line in layout.metrics(tmp_path, run.id).read_text().splitlines() if line]
    assert json.loads(line)[:3] == [0, "level", 3]


def _synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The ``(device, inode)`` of every file synced from now on."""
    synced: list[tuple[int, int]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        stat = os.fstat(fd)
        synced.append((stat.st_dev, stat.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _file(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino)


def test_a_propagated_call_writes_and_syncs_its_points_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its process may move on or exit: what it logged is on disk when it returns."""
    monkeypatch.setattr(metrics, "FLUSH_EVERY", 3600.0)  # no write of log() itself
    synced = _synced(monkeypatch)
    run = Run(ID, tmp_path)
    with activate(run):
        propagate(log)(step=7, x=1.5)
        points = metrics.read(LocalStore(tmp_path), ID)
    assert [point[:3] for point in points] == [(7, "x", 1.5)]
    assert synced == [_file(layout.metrics(tmp_path, ID))]


def test_the_end_of_a_run_syncs_points_written_before_unsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "FLUSH_EVERY", 0.0)  # every log() writes, unsynced
    synced = _synced(monkeypatch)
    run = Run(ID, tmp_path)
    with activate(run):
        log(x=1.0)
        log(x=2.0)
    path = layout.metrics(tmp_path, ID)
    assert path.exists()
    assert synced == []
    metrics.finish(run, LocalStore(tmp_path), sync=False)
    assert synced == []
    metrics.finish(run, LocalStore(tmp_path))  # syncs by default, with nothing left to write
    assert synced == [_file(path)]
    # each write began a fresh line; the ends, with nothing to write, added nothing
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 5
    assert lines[0] == lines[2] == lines[4] == b""
    assert [json.loads(line)[:3] for line in lines[1::2][:2]] == [[0, "x", 1.0], [1, "x", 2.0]]
    assert metrics._encode([]) == b""


def test_a_name_is_encoded_once_then_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_NAMES", {})
    dumped: list[object] = []

    def dumps(value: object) -> str:
        dumped.append(value)
        return json.dumps(value)

    monkeypatch.setattr(metrics, "json", SimpleNamespace(dumps=dumps, loads=json.loads))
    odd = 'naïve "name"'
    data = metrics._encode([(0, "loss", 1.0, 2.0), (1, "loss", 0.5, 3.0), (0, odd, 1, 2.5)])
    assert data == (
        b'\n[0, "loss", 1.0, 2.0]\n[1, "loss", 0.5, 3.0]\n[0, "na\\u00efve \\"name\\"", 1, 2.5]\n'
    )
    assert metrics._encode([(2, "loss", 0.25, 4.0)]) == b'\n[2, "loss", 0.25, 4.0]\n'
    assert dumped == ["loss", odd]


def test_points_files_are_created_0o644(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        metrics._append(tmp_path / "metrics" / "first.jsonl", b"\n[0]\n", False)  # no folder yet
        metrics._append(tmp_path / "metrics" / "second.jsonl", b"\n[0]\n", False)
    finally:
        os.umask(old)
    for name in ("first", "second"):
        assert (tmp_path / "metrics" / f"{name}.jsonl").stat().st_mode & 0o777 == 0o644


def test_a_metrics_folder_made_by_another_writer_meanwhile_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between this writer's open (no folder) and its mkdir, another made it."""
    folder = tmp_path / "metrics"
    path = folder / f"{ID}.jsonl"
    real = os.open

    def racing(file: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if not folder.exists():
            folder.mkdir()
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real(file, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", racing)
    metrics._append(path, b'\n[0, "x", 1.0, 2.0]\n', False)
    monkeypatch.undo()
    assert path.read_bytes() == b'\n[0, "x", 1.0, 2.0]\n'


def test_a_run_logging_for_the_first_time_twice_keeps_one_buffer(tmp_path: Path) -> None:
    """Two threads of a run logging their first points at once: the second finds
    the buffer the first made (one step counter per name, one flush when leaving)."""
    run = Run(ID, tmp_path)
    first = metrics._buffer(run)
    assert metrics._buffer(run) is first
    assert run.points is first
    assert len(run.leaving) == 1


def test_points_are_written_once_a_second_has_passed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "time", SimpleNamespace(time=lambda: 1000.0))
    buffer = metrics._Buffer(tmp_path / "points.jsonl")
    assert buffer.written == 1000.0
    assert not buffer.add(None, {"x": 1.0}, 1000.0 + metrics.FLUSH_EVERY / 2)
    assert buffer.add(None, {"x": 2.0}, 1000.0 + metrics.FLUSH_EVERY)


def test_a_remote_runs_points_are_uploaded_every_upload_every_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(metrics, "time", SimpleNamespace(time=lambda: clock[0]))
    puts: list[tuple[str, bytes]] = []
    store = SimpleNamespace(put=lambda key, data: puts.append((key, data)))
    path = tmp_path / "points.jsonl"
    buffer = metrics._Buffer(path, store, "the/key")  # type: ignore[arg-type]
    local = metrics._Buffer(tmp_path / "local.jsonl")  # no store: never uploads
    for each in (buffer, local):
        each.add(None, {"x": 1.0}, clock[0])
    clock[0] = 1000.0 + metrics.UPLOAD_EVERY / 2
    buffer.write(sync=False)
    assert puts == []  # too soon
    clock[0] = 1000.0 + metrics.UPLOAD_EVERY
    for each in (buffer, local):
        each.add(None, {"x": 2.0}, clock[0])
        each.write(sync=False)
    assert puts == [("the/key", path.read_bytes())]  # UPLOAD_EVERY since the last one, exactly
    clock[0] += 3 * metrics.UPLOAD_EVERY
    buffer.add(None, {"x": 3.0}, clock[0])
    buffer.write(sync=True)  # the run ends: finish() uploads the whole file after
    assert len(puts) == 1
    later = 1000.0 + metrics.UPLOAD_EVERY
    both = f'\n[0, "x", 1.0, 1000.0]\n[1, "x", 2.0, {later!r}]\n'
    assert local.path.read_bytes() == both.encode()  # no store: no upload, no error


def test_a_remote_run_is_forgotten_when_it_ends() -> None:
    url = f"memory://{uuid.uuid4().hex}"

    @experiment(root=url)
    def f() -> None:
        assert current_id() in metrics._REMOTE
        log(x=1.0)

    f()
    (run,) = f.observations()
    assert run.id not in metrics._REMOTE
    assert list(run.metrics().value) == [1.0]


def test_runs_that_logged_on_a_remote_store(tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}"

    @experiment(root=url)
    def f(n: int) -> None:
        for _ in range(n):
            log(x=1.0)

    f(2)
    f(0)
    store = open_store(url)
    store.put(".de/metrics/notes.txt", b"not a run's points")
    store.put(".de/metrics/deeper/x.jsonl", b"")
    (logged,) = [run.id for run in f.observations() if run.config["n"] == 2]
    assert metrics.logged(store) == {logged}


def test_a_settled_metrics_folder_is_listed_again_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = layout.internal(tmp_path, "metrics")
    folder.mkdir(parents=True)
    (folder / "2026-01-01_00-00-00_000001.jsonl").write_text("")
    (folder / "notes.txt").write_text("")
    old = time.time_ns() - 10 * storage.RECENT_NS
    os.utime(folder, ns=(old, old))
    listed: list[str] = []
    real = os.listdir

    def listdir(path: Any) -> list[str]:
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    store = LocalStore(tmp_path)
    assert metrics.logged(store) == {"2026-01-01_00-00-00_000001"}
    assert metrics.logged(store) == {"2026-01-01_00-00-00_000001"}
    assert listed == [str(folder)]  # the second call only stat()ed it
    (folder / "2026-01-01_00-00-00_000002.jsonl").write_text("")
    os.utime(folder, ns=(old + 1_000_000_000, old + 1_000_000_000))
    assert metrics.logged(store) == {"2026-01-01_00-00-00_000001", "2026-01-01_00-00-00_000002"}
    assert listed == [str(folder)] * 2


def test_the_last_value_is_the_one_of_the_highest_step_and_nan_is_skipped(
    tmp_path: Path,
) -> None:
    path = layout.metrics(tmp_path, ID)
    path.parent.mkdir(parents=True)
    points = [(5, "a", 1.0), (2, "a", 2.0), (5, "b", 1.0), (5, "b", 4.0)]
    points += [(0, "c", 3.0), (1, "c", float("nan")), (2, "c", 1.0), (3, "c", 5.0), (4, "c", 2.0)]
    path.write_bytes(metrics._encode([(s, n, v, 0.0) for s, n, v in points]))
    store = LocalStore(tmp_path)
    assert metrics.summary(store, ID, "last") == {"a": 1.0, "b": 4.0, "c": 2.0}
    assert metrics.summary(store, ID, "min") == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert metrics.summary(store, ID, "max") == {"a": 2.0, "b": 4.0, "c": 5.0}


def test_refusals_say_what_to_do_instead(tmp_path: Path) -> None:
    with pytest.raises(NoExperimentRunning) as outside:
        log(loss=1.0)
    assert str(outside.value) == str(NoExperimentRunning("log()"))
    with activate(Run(ID, tmp_path)), pytest.raises(TypeError) as refused:
        log(loss="low")
    assert str(refused.value) == (
        "Metric 'loss' is 'low': log() records numbers (int or float). "
        "Store other values in the result, or as an artefact in current_dir()."
    )
