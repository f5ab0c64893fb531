"""Sweeps on real engines: process pools, loky, Dask, submitit; two sweeps at once; kill -9.

Every test checks that each config was recorded exactly once, by the process
that ran it (``metadata["recorded_by"]`` and the ``pid.txt`` artefact agree with the
pid the run returned), under the root the driver chose.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import query
from digital_experiments._store import files as storage
from digital_experiments._sweep import claims
from digital_experiments.backends import PickleBackend

from . import sweep_workers
from .conftest import REPO, driver_env, last_json, run_example

GRID = {"x": list(range(8))}


@pytest.fixture
def rooted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point a module-level experiment at this test's folder (sweeps ship the backend)."""

    def root(function: Any) -> Any:
        backend = PickleBackend(tmp_path / function.__name__)
        monkeypatch.setattr(function.experiment, "backend", backend)
        return function

    return root


def check_recorded_once(function: Any, runs: list[Any], same_process: bool = False) -> set[int]:
    """Every run completed, recorded once, by the process that ran it; returns the pids."""
    xs = [o.config["x"] for o in runs]
    assert sorted(o.config["x"] for o in function.observations()) == sorted(xs)
    assert len(function.observations(status="all", where={"x": xs.__contains__})) == len(runs)
    pids = set()
    for run in runs:
        assert run.status == "completed"
        assert run.result["square"] == run.config["x"] ** 2
        pid = run.result["pid"]
        pids.add(pid)
        assert (pid == os.getpid()) is same_process
        assert run.metadata["recorded_by"] == pid  # the record was written by the worker
        (artefact,) = function.artefacts(run.id)
        assert artefact.name == "pid.txt"
        assert artefact.read_text() == str(pid)
    root = function.experiment.root
    assert claims.held(str(root)) == []
    return pids


def test_process_pool_spawn(rooted: Any) -> None:
    """A spawn process pool: workers import the experiment by reference and record under
    the driver's root; a failure comes back as a failed observation; async runs too."""
    square, asquare = rooted(sweep_workers.square), rooted(sweep_workers.asquare)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        runs = square.sweep(GRID, executor=pool)
        failed = square.sweep({"x": [-1]}, executor=pool)
        aruns = asquare.sweep({"x": [0, 1, 2]}, executor=pool)
    assert [o.config["x"] for o in runs] == GRID["x"]
    assert check_recorded_once(square, runs)
    assert failed[0].status == "failed"
    assert failed[0].metadata["error"]["type"] == "ValueError"
    assert check_recorded_once(asquare, aruns)


def test_loky(rooted: Any) -> None:
    """loky's reusable executor (cloudpickle) runs and records the grid."""
    from loky import get_reusable_executor

    square = rooted(sweep_workers.square)
    executor = get_reusable_executor(max_workers=2)
    try:
        runs = square.sweep(GRID, executor=executor)
    finally:
        executor.shutdown(wait=True)
    check_recorded_once(square, runs)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two single-threaded worker processes on 127.0.0.1, no dashboard; closed after."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_dask(rooted: Any, dask_client: Any) -> None:
    """Dask's client.get_executor(pure=False): both workers record, nothing twice."""
    square, asquare = rooted(sweep_workers.square), rooted(sweep_workers.asquare)
    runs = square.sweep(GRID, executor=dask_client.get_executor(pure=False))
    check_recorded_once(square, runs)
    aruns = asquare.sweep({"x": [0, 1, 2]}, executor=dask_client.get_executor(pure=False))
    check_recorded_once(asquare, aruns)


def test_dask_client_directly_and_pure_calls(rooted: Any, dask_client: Any) -> None:
    """A Client (pure=True by default) still runs every listed call: each submission
    carries a unique token, so Dask never merges two equal calls into one."""
    square = rooted(sweep_workers.square)
    runs = square.sweep([{"x": 1}, {"x": 1}], executor=dask_client, skip=None)
    assert len({o.id for o in runs}) == 2
    assert len(square.observations()) == 2


# submitit's DebugJob removes its log FileHandlers from the root logger without closing them
@pytest.mark.filterwarnings(
    r"ignore:unclosed file <_io\.\w+ name='.*/DEBUG_\w+_log:ResourceWarning"
)
def test_submitit_debug_executor(rooted: Any, tmp_path: Path) -> None:
    """submitit's DebugExecutor runs jobs in this process when their result is asked for."""
    import submitit

    square = rooted(sweep_workers.square)
    executor = submitit.DebugExecutor(folder=tmp_path / "submitit")
    runs = square.sweep({"x": [0, 1, 2, -1]}, executor=executor)
    gc.collect()  # those handlers, while the filter above is on
    assert [o.status for o in runs] == ["completed"] * 3 + ["failed"]
    check_recorded_once(square, runs[:3], same_process=True)


def test_submitit_local_executor(
    rooted: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit's LocalExecutor: each job is a new Python process (as on SLURM) that
    imports the experiment by reference and writes under the driver's root."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # jobs import tests.stress.sweep_workers
    square = rooted(sweep_workers.square)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=2)
    runs = square.sweep({"x": [0, 1, 2]}, executor=executor)
    pids = check_recorded_once(square, runs)
    assert len(pids) == 3


def _start(root: Path, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stress.sweep_workers", str(root), *map(str, args)],
        cwd=root.parent,
        env=driver_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_sweeping_one_root_run_each_config_once(tmp_path: Path) -> None:
    """Two sweeps of the same grid started together (two processes, one root) never run a
    config twice, and both return the same observation for each config."""
    root = tmp_path / "slow"
    drivers = [_start(root, 24) for _ in range(2)]
    outs = []
    for driver in drivers:
        stdout, stderr = driver.communicate(timeout=120)
        assert driver.returncode == 0, stderr
        outs.append(last_json(stdout))
    assert outs[0]["ids"] == outs[1]["ids"]
    reader = PickleBackend(root)
    observations = reader.load_all()
    assert sorted(o.config["x"] for o in observations) == list(range(24))
    assert {o.status for o in observations} == {"completed"}
    assert claims.held(str(root)) == []


def test_four_processes_sweeping_fast_configs_into_one_root_run_each_once(
    tmp_path: Path,
) -> None:
    """Four sweeps of one grid of configs that take no time, started together:
    claims are released and taken over while others look, and still no config
    runs twice. (It did: a sweep that took over a claim released by one that had
    only found the config done read no mark naming the run, and ran it again.)"""
    root = tmp_path / "slow"
    drivers = [_start(root, 200, "fast") for _ in range(4)]
    deadline = time.monotonic() + 120  # only guards against a hang
    while len(list(tmp_path.glob("slow.ready.*"))) < 4:
        assert all(driver.poll() is None for driver in drivers)
        assert time.monotonic() < deadline, "the sweeps never got ready"
        time.sleep(0.01)
    (tmp_path / "slow.go").touch()
    outs = []
    for driver in drivers:
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
        outs.append(last_json(stdout))
    assert all(out["ids"] == outs[0]["ids"] for out in outs)
    observations = PickleBackend(root).load_all()
    assert sorted(o.config["x"] for o in observations) == list(range(200))
    assert {o.status for o in observations} == {"completed"}
    assert claims.held(str(root)) == []


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    """kill -9 mid-sweep leaves a claim of a dead process: the next sweep takes it over,
    runs only what is missing and leaves no claim behind."""
    root = tmp_path / "crash"
    first = _start(root, 5, 2)
    first.communicate(timeout=120)
    assert first.returncode == -9
    reader = PickleBackend(root)
    before = {o.config["x"]: o for o in reader.load_all()}
    assert {x: o.status for x, o in before.items()} == {
        0: "completed",
        1: "completed",
        2: "abandoned",
    }
    assert len(claims.held(str(root))) == 1

    second = _start(root, 5, 2)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    ids = last_json(stdout)["ids"]
    assert ids["0"] == before[0].id
    assert ids["1"] == before[1].id
    completed = [o for o in reader.load_all() if o.status == "completed"]
    assert sorted(o.config["x"] for o in completed) == [0, 1, 2, 3, 4]
    assert claims.held(str(root)) == []


def test_sweep_dask_example(tmp_path: Path) -> None:
    """examples/sweep_dask.py runs from its folder, twice: the second time runs nothing."""
    folder = tmp_path / "examples"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "sweep_dask.py", folder)
    for expected in (
        r"8 configs: 8 run now by [12] Dask workers, 0 already done",
        r"8 configs: 0 run now by 0 Dask workers, 8 already done",
    ):
        out = run_example(folder, "sweep_dask.py")
        assert re.search(f"^{expected}$", out, re.M), out
        assert re.search(r"^best: lr=0\.3 steps=20 ", out, re.M)
    records = PickleBackend(folder / "experiments" / "fit").load_all()
    assert len(records) == 8
    for record in records:
        assert json.loads(str(record.result["pid"])) != os.getpid()


@pytest.mark.parametrize("engine", ["spawn", "loky"])
def test_a_worker_killed_mid_run_fails_its_config_and_the_sweep_returns(
    rooted: Any, engine: str
) -> None:
    """A pool worker killed with SIGKILL: the sweep returns every config, lost ones failed,
    and running it again on a fresh pool completes them all."""
    crash = rooted(sweep_workers.crash)
    grid = [{"x": x, "crash_at": 2} for x in range(8)]

    def make_pool() -> Any:
        if engine == "loky":
            from loky import get_reusable_executor

            return get_reusable_executor(max_workers=2, reuse=False)
        return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))

    pool = make_pool()
    try:
        runs = crash.sweep(grid, executor=pool, progress=False)
    finally:
        pool.shutdown(wait=True)
    assert [run.config["x"] for run in runs] == list(range(8))
    assert runs[2].status == "failed"  # the run whose worker died
    lost = {run.metadata["error"]["type"] for run in runs if run.status == "failed"}
    assert lost <= {"BrokenProcessPool", "TerminatedWorkerError"}, lost
    assert {run.status for run in runs} <= {"completed", "failed"}
    # its running record reads abandoned (loky also kills the other worker, mid-run or not)
    abandoned = [run.config["x"] for run in crash.observations(status="abandoned")]
    assert 2 in abandoned
    assert len(abandoned) <= 2

    pool = make_pool()  # the sweep again resumes: the marker file stops the crash now
    try:
        again = crash.sweep(grid, executor=pool, progress=False)
    finally:
        pool.shutdown(wait=True)
    assert [run.status for run in again] == ["completed"] * 8
    assert [run.result for run in again] == list(range(8))


SWEEP_THEN_WAIT = """
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from digital_experiments.backends import PickleBackend
from tests.stress.sweep_workers import blocks

if __name__ == "__main__":
    blocks.experiment.backend = PickleBackend(Path(sys.argv[1]))
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        blocks.sweep({"x": range(6), "started": [sys.argv[2]]}, executor=pool, progress=False)
"""


def test_sigterm_to_a_sweep_driver_stops_its_pool_workers(tmp_path: Path) -> None:
    """SIGTERM to the driver: it exits 143 and its pool workers' runs end `interrupted`."""
    root, started = tmp_path / "runs", tmp_path / "started"
    started.mkdir()
    script = tmp_path / "sweep_then_wait.py"
    script.write_text(SWEEP_THEN_WAIT)
    driver = subprocess.Popen(
        [sys.executable, str(script), str(root), str(started)],
        cwd=REPO,
        env=driver_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(6000):  # until both workers are inside a run
        if len(list(started.iterdir())) == 2 or driver.poll() is not None:
            break
        time.sleep(0.01)
    workers = [int(path.name) for path in started.iterdir()]
    assert len(workers) == 2, driver.communicate(timeout=60)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 128 + signal.SIGTERM, stderr
    for pid in workers:  # gone, not sleeping out their ten minutes
        for _ in range(12000):
            if not storage.pid_alive(pid):
                break
            time.sleep(0.01)
        assert not storage.pid_alive(pid), f"worker {pid} still runs"
    runs = query.load(root, status="all")
    assert sorted(run.status for run in runs) == ["interrupted", "interrupted"]
    assert claims.held(str(root)) == []  # every claim given back


ONE_WORKER = """
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from digital_experiments.backends import PickleBackend
from tests.stress.sweep_workers import square

if __name__ == "__main__":
    square.experiment.backend = PickleBackend(Path(sys.argv[1]))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        square.sweep({"x": [1]}, executor=pool, progress=False)
"""


def test_sigterm_while_a_worker_gives_its_claim_back_waits_for_it(tmp_path: Path) -> None:
    """A SIGTERM that reaches a pool worker as it releases its claim (a pool that saw
    a sibling exit sends one) is held until the claim is back: no claim is left held
    by a dead process, for other hosts to wait out."""
    root, signal_file = tmp_path / "runs", tmp_path / "faults"
    script = tmp_path / "one_worker.py"
    script.write_text(ONE_WORKER)
    env = {**driver_env(root), "DE_FAULTS": "sweep.release=wait"}
    env["DE_FAULTS_SIGNAL"] = str(signal_file)
    log = (tmp_path / "driver.log").open("w")  # not a pipe: the worker would hold it open
    driver = subprocess.Popen(
        [sys.executable, str(script), str(root)], cwd=REPO, env=env, stdout=log, stderr=log
    )
    try:
        for _ in range(12000):  # until the worker waits at the point, claim still held
            if signal_file.exists() and signal_file.read_text().endswith("\n"):
                break
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            time.sleep(0.01)
        (line,) = signal_file.read_text().splitlines()
        worker = int(line.split()[1])
        assert worker != driver.pid
        assert len(claims.held(str(root))) == 1
        driver.kill()  # gone, as a driver killed on a cluster: nobody else gives it back
        driver.wait(timeout=120)
        os.kill(worker, signal.SIGTERM)  # lands while the claim is being given back
        Path(f"{signal_file}.go").touch()
        for _ in range(12000):
            if not storage.pid_alive(worker):
                break
            time.sleep(0.01)
        assert not storage.pid_alive(worker)
    finally:
        Path(f"{signal_file}.go").touch()
        driver.kill()
        driver.wait(timeout=120)
        log.close()
    assert claims.held(str(root)) == []
    (run,) = query.load(root, status="all")
    assert run.status == "completed"
