"""Sweeps (``sweep.py``): grids, skipping, errors, claims, progress, async and controllers.

Real process pools, loky, Dask and submitit are in ``tests/stress/test_sweep_engines.py``;
here the executors are in-process (threads, or stand-ins with only ``submit``/``result``).
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from digital_experiments import Callback, current_dir, experiment
from digital_experiments._store import files as storage
from digital_experiments._store import lease as leases
from digital_experiments._store.lease import Lease, Observer
from digital_experiments._sweep import claims
from digital_experiments._sweep.claims import Claim
from digital_experiments._sweep.engine import _Job, _run_job, asweep, sweep
from digital_experiments.backends import PickleBackend
from digital_experiments.controllers import GridSearch, RandomSearch

from .conftest import dead_pid, python_code

THEIRS = "someone-else"  # the token of another sweep's claim


def claims_left(function: Any) -> list[str]:
    """The config keys whose claims are still held under the experiment's root."""
    return claims.held(str(function.experiment.root))


def claim_key(function: Any, **config: Any) -> str:
    exp = function.experiment
    return str(exp.config_key(exp.bind((), config)))


def their_lease(function: Any, key: str) -> Lease:
    return Claim(str(function.experiment.root), key, THEIRS).lease


def write_claim(function: Any, key: str, **holder: Any) -> None:
    """Another sweep's claim on ``key``, held by the process ``holder`` describes."""
    lease = their_lease(function, key)
    generation = max(leases.generations(lease), default=-1) + 1  # over any earlier one
    body = {"token": THEIRS, "generation": generation, "holder": holder}
    assert lease.store.put_new(lease.generation_key(generation), json.dumps(body).encode())


def give_back(function: Any, key: str) -> None:
    """The other sweep releases its claim."""
    leases.release(their_lease(function, key))


class JumpingClock:
    """An observer's monotonic clock on which an hour passes between two looks."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 3600.0
        return self.now


@pytest.fixture
def add() -> Any:
    @experiment
    def add(a: int, b: int = 10) -> int:
        (current_dir() / "sum.txt").write_text(str(a + b))
        if a < 0:
            raise ValueError(f"negative a: {a}")
        return a + b

    return add


# ---------------------------------------------------------------- grids


def test_dict_grid_runs_every_combination_in_grid_order(add: Any) -> None:
    """A dict of lists runs the cartesian product, observations in grid order."""
    runs = add.sweep({"a": [1, 2], "b": [0, 100]})
    assert [o.config for o in runs] == [
        {"a": 1, "b": 0},
        {"a": 1, "b": 100},
        {"a": 2, "b": 0},
        {"a": 2, "b": 100},
    ]
    assert [o.result for o in runs] == [1, 101, 2, 102]
    assert {o.status for o in runs} == {"completed"}
    assert sorted(o.id for o in add.observations()) == sorted(o.id for o in runs)
    for o in runs:
        (artefact,) = add.artefacts(o.id)
        assert artefact.read_text() == str(o.result)


def test_iterable_grid_of_partial_configs_gets_defaults(add: Any) -> None:
    """Configs that leave parameters out are run, and recorded, with the defaults."""
    runs = add.sweep({"a": a} for a in range(3))  # any iterable, here a generator
    assert [o.config for o in runs] == [{"a": a, "b": 10} for a in range(3)]
    assert [o.result for o in runs] == [10, 11, 12]


def test_a_config_spelled_with_its_defaults_is_the_same_config(add: Any) -> None:
    """`{"a": 1}` and `{"a": 1, "b": 10}` are one config: it runs once."""
    first, second = add.sweep([{"a": 1}, {"a": 1, "b": 10}])
    assert first is second
    assert len(add.observations()) == 1


def test_empty_grid_returns_nothing(add: Any) -> None:
    """An empty grid (or an empty dimension) runs nothing."""
    assert add.sweep([]) == []
    assert add.sweep({"a": []}) == []
    assert add.observations() == []


def test_function_with_var_keyword_accepts_any_key() -> None:
    """A function taking **kwargs accepts any name in the grid."""

    @experiment
    def loose(a: int, **rest: Any) -> int:
        return a + len(rest)

    (run,) = loose.sweep([{"a": 1, "anything": 2}])
    assert run.result == 2


def test_experiment_object_and_module_function_sweep() -> None:
    """`digital_experiments.sweep.sweep` takes the decorated function or its Experiment."""

    @experiment
    def one(x: int) -> int:
        return x

    assert [o.result for o in sweep(one, {"x": [1]})] == [1]
    assert [o.result for o in sweep(one.experiment, {"x": [2]})] == [2]
    assert [o.result for o in one.experiment.sweep({"x": [3]})] == [3]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"skip": "all"}, r"skip= takes 'completed' .* or None .*, not 'all'"),
        ({"on_error": "ignore"}, r"on_error= takes 'record' .* or 'raise' .*, not 'ignore'"),
        ({"max_pending": 0}, r"max_pending= takes an int >= 1 or None, not 0"),
        ({"stale_after": -1}, r"stale_after= takes a number of seconds > 0 or None, not -1"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    add: Any, options: dict[str, Any], match: str
) -> None:
    """Each bad option raises ValueError naming the option, the value and the choices."""
    with pytest.raises(ValueError, match=match):
        add.sweep({"a": [1]}, **options)
    assert add.observations(status="all") == []


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        (5, r"grid= takes a dict of lists .* or an iterable of config dicts, not 5"),
        ("ab", r"grid= takes .*, not 'ab'"),
        ({"a": 1}, r"grid\['a'\] is 1: a dict grid maps each parameter to a list"),
        ({"a": "xy"}, r"grid\['a'\] is 'xy'"),
        ([{"a": 1}, 2], r"Config 1 of the grid is 2: an iterable grid holds dicts"),
        (
            [{"a": 1}, {"a": 2, "c": 3}],
            r"Unknown parameter 'c' in config 1 of the grid: add takes a, b\.",
        ),
        ([{"b": 1}], r"Config 0 of the grid, \{'b': 1\}: add\(a.*missing a required argument"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(add: Any, grid: Any, match: str) -> None:
    """A malformed grid raises TypeError saying what is wrong and how to write it."""
    with pytest.raises(TypeError, match=match):
        add.sweep(grid)
    assert add.observations(status="all") == []


def test_executor_without_submit_is_refused(add: Any) -> None:
    """executor= must have submit()."""
    with pytest.raises(TypeError, match=r"executor= takes an object with submit\(fn, \*args\)"):
        add.sweep({"a": [1]}, executor=object())


def test_sweep_refuses_non_experiments() -> None:
    """Only decorated functions (or Experiments) can be swept."""
    with pytest.raises(TypeError, match="Expected a function decorated with @experiment"):
        sweep(len, {"x": [1]})


# ---------------------------------------------------------------- skipping and resuming


def test_completed_configs_are_not_run_again(add: Any) -> None:
    """A second sweep returns the stored observations and runs only what is new."""
    first = add.sweep({"a": [1, 2]})
    second = add.sweep({"a": [1, 2, 3]})
    assert [o.id for o in second[:2]] == [o.id for o in first]
    assert second[2].result == 13
    assert len(add.observations()) == 3


def test_a_config_listed_twice_runs_once(add: Any) -> None:
    """Duplicates in one grid share one run (and one observation)."""
    runs = add.sweep([{"a": 1}, {"a": 2}, {"a": 1}])
    assert runs[0] is runs[2]
    assert len(add.observations()) == 2


def test_skip_none_runs_everything_repeats_included(add: Any) -> None:
    """skip=None runs every listed config, even completed ones and repeats."""
    add.sweep({"a": [1]})
    runs = add.sweep([{"a": 1}, {"a": 1}], skip=None)
    assert len({o.id for o in runs}) == 2
    assert len(add.observations()) == 3


def test_failed_configs_run_again_on_resume() -> None:
    """Only completed configs are skipped: failed ones are retried by the next sweep."""
    healthy: set[int] = set()

    @experiment
    def fragile(x: int) -> int:
        if x not in healthy:
            raise RuntimeError(f"not yet {x}")
        return x

    healthy.add(0)
    runs = fragile.sweep({"x": [0, 1]})
    assert [o.status for o in runs] == ["completed", "failed"]
    healthy.add(1)
    again = fragile.sweep({"x": [0, 1]})
    assert again[0].id == runs[0].id
    assert again[1].status == "completed"
    assert len(fragile.observations(status="all")) == 3


def test_new_code_runs_again(tmp_path: Path) -> None:
    """Runs recorded with other code do not count as completed."""

    @experiment(root=tmp_path / "f")
    def f(x: int) -> int:
        return x

    f.sweep({"x": [1]})

    @experiment(root=tmp_path / "f")  # type: ignore[no-redef]
    def f(x: int) -> int:
        return x + 1

    (run,) = f.sweep({"x": [1]})
    assert run.result == 2
    assert len(f.observations(current_code_only=False)) == 2


def test_resume_after_ctrl_c_runs_only_what_is_missing() -> None:
    """Ctrl-C stops the sweep (run recorded as interrupted); sweeping again finishes it."""
    interrupt = {2}

    @experiment
    def step(x: int) -> int:
        if x in interrupt:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        step.sweep({"x": range(4)})
    assert sorted(o.config["x"] for o in step.observations()) == [0, 1]
    (stopped,) = step.observations(status="interrupted")
    assert stopped.config == {"x": 2}
    assert claims_left(step) == []

    interrupt.clear()
    runs = step.sweep({"x": range(4)})
    assert [o.result for o in runs] == [0, 1, 2, 3]
    assert len(step.observations()) == 4  # 0 and 1 were not run again


def test_cached_experiment_with_skip_none_returns_the_cached_run() -> None:
    """With cache=True a call is not run again, whatever skip= says."""

    @experiment(cache=True)
    def cached(x: int) -> int:
        return x

    first = cached.sweep({"x": [1]})
    again = cached.sweep({"x": [1]}, skip=None)
    assert again[0].id == first[0].id
    assert len(cached.observations()) == 1


def test_the_swept_run_is_returned_not_a_nested_one() -> None:
    """A run that calls another experiment returns its own observation."""

    @experiment
    def inner(y: int) -> int:
        return y

    @experiment
    def outer(x: int) -> int:
        return inner(x) + 1

    (run,) = outer.sweep({"x": [1]})
    assert run.result == 2
    assert run.id == outer.observations()[0].id


def test_big_numpy_configs_are_keyed_by_content() -> None:
    """Two 2,000-element arrays differing in one element are two configs, not one."""
    np = pytest.importorskip("numpy")

    @experiment
    def total(xs: Any) -> float:
        return float(xs.sum())

    zeros = np.zeros(2000)
    other = zeros.copy()
    other[1000] = 5.0
    assert [o.result for o in total.sweep([{"xs": zeros}, {"xs": other}])] == [0.0, 5.0]
    assert [o.result for o in total.sweep([{"xs": zeros.copy()}, {"xs": other}])] == [0.0, 5.0]
    assert len(total.observations()) == 2  # the second sweep skipped both


@pytest.mark.parametrize("backend", ["pickle", "json", "yaml"])
def test_sweep_keys_dicts_with_mixed_or_tuple_keys(backend: str) -> None:
    """Dict configs with mixed int/str (or, in pickle, tuple) keys are keyed, not a TypeError."""
    calls: list[Any] = []

    @experiment(backend=backend)
    def f(d: Any) -> int:
        calls.append(d)
        return len(d)

    mixed = {1: "a", "b": 2}
    grid = [{"d": mixed}, {"d": {"b": 2, 1: "a"}}]
    if backend == "pickle":
        grid.append({"d": {(1, 2): "x"}})
    runs = f.sweep(grid)
    assert [o.result for o in runs] == [2, 2, 1][: len(grid)]
    assert len(calls) == len(grid) - 1  # the two spellings of one dict ran once
    f.sweep(grid)  # completed: nothing runs again, whatever the backend stored
    assert len(calls) == len(grid) - 1


def test_tuples_and_lists_are_one_config_in_a_sweep() -> None:
    """A tuple and the list a JSON record turns it into are the same config."""

    @experiment(backend="json")
    def shape(s: Any) -> int:
        return int(s[0] * s[1])

    first, second = shape.sweep([{"s": (2, 3)}, {"s": [2, 3]}])
    assert first is second
    assert shape.sweep([{"s": (2, 3)}])[0].id == first.id


def test_grid_search_sees_numpy_points_as_run() -> None:
    """GridSearch counts a point as run whatever form its values came back in."""
    np = pytest.importorskip("numpy")

    @experiment(backend="json")
    def g(x: Any, shape: Any) -> float:
        return float(x)

    search = GridSearch(x=np.linspace(0, 1, 3), shape=[(1, 2)])
    search.control(g, 2)
    assert len(g.observations()) == 2
    assert search.suggest(g) == {"x": np.float64(1.0), "shape": (1, 2)}


# ---------------------------------------------------------------- errors


def test_on_error_record_keeps_going_and_returns_failures(add: Any) -> None:
    """Failed runs are recorded and returned; the other configs still run."""
    runs = add.sweep({"a": [1, -1, 2]})
    assert [o.status for o in runs] == ["completed", "failed", "completed"]
    error = runs[1].metadata["error"]
    assert error["type"] == "ValueError"
    assert "negative a: -1" in error["message"]
    assert "Traceback" in error["traceback"]
    assert claims_left(add) == []


def test_on_error_raise_stops_at_the_first_failure_once_recorded(add: Any) -> None:
    """The run's own exception propagates after its failure is recorded; nothing after runs."""
    with pytest.raises(ValueError, match="negative a: -1"):
        add.sweep({"a": [1, -1, 2]}, on_error="raise")
    assert [o.config["a"] for o in add.observations()] == [1]
    (failed,) = add.observations(status="failed")
    assert failed.config["a"] == -1
    assert claims_left(add) == []


def test_on_error_raise_with_an_executor(add: Any) -> None:
    """With an executor, the failure is raised too, and no claim is left behind."""
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="negative a: -1"):
        add.sweep({"a": [-1, 1, 2, 3]}, executor=pool, on_error="raise", max_pending=1)
    assert len(add.observations(status="failed")) == 1
    assert claims_left(add) == []


def test_ctrl_c_in_a_pool_gives_back_the_claims_of_queued_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupting an executor sweep cancels queued calls and releases their claims, so
    the same process can sweep again at once (it would otherwise wait on itself); a call
    the pool started meanwhile finds its claim gone and does not run.

    The pool's one thread takes the next call as soon as the first one ends, before or
    after the driver gives the claims back, whichever the scheduler picks: here it waits
    until the driver has, so the test checks the same thing every time."""
    from digital_experiments._sweep import engine

    abandoned = threading.Event()
    real_abandon, real_run_job = engine._Engine.abandon, engine._run_job

    def abandon(self: Any) -> None:
        real_abandon(self)
        abandoned.set()

    def run_job(job: Any) -> Any:
        if job.kwargs["x"] != 0:  # only guards against a hang: the driver sets it
            assert abandoned.wait(60), "the driver never gave the claims back"
        return real_run_job(job)

    monkeypatch.setattr(engine._Engine, "abandon", abandon)
    monkeypatch.setattr(engine, "_run_job", run_job)

    @experiment
    def halt(x: int) -> int:
        if x == 0:
            raise KeyboardInterrupt
        return x

    with ThreadPoolExecutor(1) as pool, pytest.raises(KeyboardInterrupt):
        halt.sweep({"x": range(4)}, executor=pool, max_pending=4)
    assert abandoned.is_set()
    assert claims_left(halt) == []
    (stopped,) = halt.observations(status="all")  # the queued calls never ran
    assert stopped.config == {"x": 0}
    assert stopped.status == "interrupted"


def test_stopping_gives_back_claims_of_jobs_not_started() -> None:
    """With futures that are not concurrent.futures (submitit), jobs that had not started
    when the sweep stopped find their claim gone and do not run."""

    @experiment
    def job(x: int) -> int:
        if x == 0:
            raise ValueError("first")
        return x

    class Lazy:
        """Runs a job when its result is asked for, like submitit's DebugExecutor."""

        def __init__(self) -> None:
            self.jobs: list[Any] = []

        def submit(self, fn: Any, *args: Any) -> Any:
            executor = self

            class Job:
                def result(self) -> Any:
                    return fn(*args)

                def done(self) -> bool:
                    return self is executor.jobs[0]  # only the first "finishes"

            self.jobs.append(Job())
            return self.jobs[-1]

    executor = Lazy()
    with pytest.raises(ValueError, match="first"):
        job.sweep({"x": range(3)}, executor=executor, on_error="raise")
    assert claims_left(job) == []
    late = [j.result() for j in executor.jobs[1:]]  # the scheduler starts them after all
    assert all(outcome.lost for outcome in late)
    assert len(job.observations(status="all")) == 1


class LostFutures:
    """An executor whose calls are lost, like a worker killed with -9."""

    def submit(self, fn: Any, *args: Any) -> Any:
        return self

    def result(self) -> Any:
        raise RuntimeError("worker lost")


def test_a_lost_call_returns_an_unsaved_failed_observation(add: Any) -> None:
    """When the executor loses a call, the sweep says so and keeps going."""
    (run,) = add.sweep({"a": [1]}, executor=LostFutures())
    assert run.id == ""
    assert run.config == {"a": 1, "b": 10}
    assert run.metadata["status"] == "failed"
    assert run.metadata["recorded"] is False
    assert "worker lost" in run.metadata["error"]["message"]
    assert claims_left(add) == []
    with pytest.raises(RuntimeError, match="worker lost"):
        add.sweep({"a": [1]}, executor=LostFutures(), on_error="raise")


def test_run_one_returns_failures_instead_of_raising(add: Any) -> None:
    """The submitted function never raises for a failing run (submitit's debug executor
    would open a debugger): the exception comes back with the failed run's id."""
    outcome = _run_job(_Job(add, add.experiment.backend, {"a": -1}, None))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, ValueError)
    assert add.experiment.backend.load(outcome.id).status == "failed"


def test_worker_writes_under_the_backend_it_is_given(add: Any, tmp_path: Path) -> None:
    """A job carries the driver's backend: the record lands there, not where the worker's
    own copy of the experiment points."""
    elsewhere = PickleBackend(tmp_path / "driver-root")
    outcome = _run_job(_Job(add, elsewhere, {"a": 1}, None))
    assert elsewhere.load(outcome.id).result == 11
    assert add.observations() == []


# ---------------------------------------------------------------- executors


def test_thread_pool_sweep_records_every_config_once(add: Any) -> None:
    """A thread pool runs the grid; every config is recorded once, in grid order."""
    with ThreadPoolExecutor(3) as pool:
        runs = add.sweep({"a": range(12)}, executor=pool)
    assert [o.result for o in runs] == [a + 10 for a in range(12)]
    assert len({o.id for o in add.observations()}) == 12


class Counting:
    """A thread pool that counts how many submitted calls are unfinished at once."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(workers)
        self._max_workers = workers
        self.pending = self.most = 0
        self.lock = threading.Lock()

    def submit(self, fn: Any, *args: Any) -> Any:
        with self.lock:
            self.pending += 1
            self.most = max(self.most, self.pending)
        future = self.pool.submit(fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Any) -> None:
        with self.lock:
            self.pending -= 1


def test_submissions_are_bounded_by_the_executors_size() -> None:
    """At most twice the workers (or max_pending) are submitted at once, so that two
    sweeps started together share the work instead of one claiming everything."""

    @experiment
    def nap(x: int) -> int:
        time.sleep(0.01)
        return x

    executor = Counting(2)
    nap.sweep({"x": range(12)}, executor=executor)
    assert executor.most == 4
    executor = Counting(2)
    nap.sweep({"x": range(12, 20)}, executor=executor, max_pending=1)
    assert executor.most == 1
    executor.pool.shutdown()


class ResultOnly:
    """An executor like submitit's: jobs are not concurrent.futures, only .result() works."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Any, *args: Any) -> Any:
        self.submitted += 1

        class Job:
            def result(self) -> Any:
                return fn(*args)

        return Job()


def test_futures_with_only_result_are_enough(add: Any) -> None:
    """A sweep needs nothing but submit() and .result() from an executor."""
    executor = ResultOnly()
    runs = add.sweep({"a": range(5)}, executor=executor)
    assert [o.result for o in runs] == [10, 11, 12, 13, 14]
    assert executor.submitted == 5


# ---------------------------------------------------------------- claims


def test_a_config_is_claimed_while_it_runs_and_released_after() -> None:
    """The claim names the process running the config; it is given back once the run ends."""
    seen: list[dict[str, Any] | None] = []

    @experiment
    def look(x: int) -> int:
        (key,) = claims_left(look)
        assert key == claim_key(look, x=x)
        seen.append(leases.worker(Claim(str(look.experiment.root), key).lease))
        return x

    look.sweep({"x": [1, 2]})
    assert [(s["host"], s["pid"]) for s in seen if s] == [(storage.HOST, os.getpid())] * 2
    assert claims_left(look) == []


# a driver in another process: claims config "k" of root argv[1] with token argv[2],
# renews it (its heartbeat names the driver) and, with argv[3] == "adopt", adopts it
_OTHER_PROCESS = """
import sys
from digital_experiments._sweep import claims
claim = claims.Claim(sys.argv[1], "k", sys.argv[2])
assert claims.try_claim(claim)
claims.touch(claim)
if sys.argv[3] == "adopt":
    assert claims.adopt(claim)
"""


def test_a_worker_adopts_the_claim_its_driver_took(tmp_path: Path) -> None:
    """The driver (another process) claims and renews; the worker (this one)
    adopts: the heartbeat now names the worker, and renewing keeps naming it."""
    claim = Claim(str(tmp_path), "k", "the sweep's token")
    assert python_code(_OTHER_PROCESS, tmp_path, claim.token, "no").returncode == 0
    driver = leases.worker(claim.lease)
    assert driver is not None
    assert not storage.is_current_process(driver)
    assert claims.adopt(claim)
    assert storage.is_current_process(leases.worker(claim.lease))
    claims.touch(claim)
    assert storage.is_current_process(leases.worker(claim.lease))
    assert not claims.adopt(Claim(str(tmp_path), "k", THEIRS))  # not its token: lost


def test_a_claim_adopted_elsewhere_stays_when_only_unadopted_ones_are_given_back(
    tmp_path: Path,
) -> None:
    """A worker in another process adopted the claim: giving back only unadopted
    claims (a driver stopping early) leaves it to that worker; a plain release
    gives it back."""
    claim = Claim(str(tmp_path), "k", "the sweep's token")
    assert python_code(_OTHER_PROCESS, tmp_path, claim.token, "adopt").returncode == 0
    assert leases.worker(claim.lease) is not None  # the other process adopted it
    claims.release(claim, only_unadopted=True)
    assert claims.held(str(tmp_path)) == ["k"]
    claims.release(claim)
    assert claims.held(str(tmp_path)) == []


def test_a_claim_adopted_here_is_given_back_with_only_unadopted_ones(tmp_path: Path) -> None:
    """The worker is this very process (a thread pool): the driver stopping early
    gives that claim back too, as no other process will."""
    claim = Claim(str(tmp_path), "k")
    assert claims.try_claim(claim)
    assert claims.adopt(claim)
    claims.release(claim, only_unadopted=True)
    assert claims.held(str(tmp_path)) == []


def test_claims_never_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims are a cache of who runs what: taking, renewing, adopting and giving
    one back in a folder syncs nothing, whatever the root's durability."""
    syncs: list[int] = []
    data_sync, fsync = storage._sync_data, os.fsync

    def counted_data(fd: int) -> None:
        syncs.append(fd)
        data_sync(fd)

    def counted_fsync(fd: int) -> None:
        syncs.append(fd)
        fsync(fd)

    monkeypatch.setattr(storage, "_sync_data", counted_data)
    monkeypatch.setattr(os, "fsync", counted_fsync)
    claim = Claim(str(tmp_path), "k")
    assert claims.try_claim(claim)
    claims.touch(claim)
    assert claims.adopt(claim)
    claims.release(claim)
    assert claims.held(str(tmp_path)) == []
    assert syncs == []
    storage.atomic_write(tmp_path / "synced", b"x")  # the counters see a synced write
    assert syncs


def test_a_claim_of_a_dead_process_is_taken_over(add: Any) -> None:
    """A driver killed mid-sweep leaves claims: the next sweep takes them over."""
    write_claim(add, claim_key(add, a=1), host=storage.HOST, pid=dead_pid())
    (run,) = add.sweep({"a": [1]})
    assert run.status == "completed"
    assert claims_left(add) == []


def test_a_live_claim_is_waited_for_and_its_run_returned(add: Any) -> None:
    """A config another live sweep holds is not run again: its run is returned."""
    key = claim_key(add, a=1)
    write_claim(add, key, host=storage.HOST, pid=os.getppid())
    other: dict[str, Any] = {}

    def the_other_sweep() -> None:
        time.sleep(0.3)
        other["runs"] = add.sweep({"a": [1]}, skip=None)  # runs it, then...
        add.experiment.index.remember(other["runs"][0])  # ...indexes it, as a sweep's worker does
        give_back(add, key)

    thread = threading.Thread(target=the_other_sweep)
    thread.start()
    runs = add.sweep({"a": [2, 1]})
    thread.join()
    assert runs[1].id == other["runs"][0].id
    assert len(add.observations()) == 2


def test_a_released_claim_of_an_unfinished_run_is_run_here(add: Any) -> None:
    """If the holder gives the config up without completing it, this sweep runs it."""
    key = claim_key(add, a=1)
    write_claim(add, key, host=storage.HOST, pid=os.getppid())
    threading.Timer(0.3, give_back, (add, key)).start()
    (run,) = add.sweep({"a": [1]})
    assert run.status == "completed"
    assert len(add.observations()) == 1


def test_claims_from_other_hosts_are_respected_until_stale(
    add: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim from another host cannot be checked: one that shows no heartbeat for
    stale_after, on this process's own clock, is taken over."""
    write_claim(add, claim_key(add, a=1), host="elsewhere.example", pid=1)
    monkeypatch.setattr(leases, "OBSERVER", Observer(JumpingClock()))
    (run,) = add.sweep({"a": [1]}, stale_after=60)
    assert run.status == "completed"
    assert claims_left(add) == []


def test_a_fresh_claim_from_another_host_is_not_taken(add: Any) -> None:
    """Before its lease runs out, the other host's claim holds."""
    key = claim_key(add, a=1)
    write_claim(add, key, host="elsewhere.example", pid=1)
    threading.Timer(0.4, give_back, (add, key)).start()
    began = time.monotonic()
    add.sweep({"a": [1]}, stale_after=60)
    assert time.monotonic() - began >= 0.4


def test_a_superseded_job_does_not_run() -> None:
    """A job whose claim was taken over before it started gives way to the new holder."""

    @experiment
    def once(x: int) -> int:
        return x

    class TakenOver:
        """Another sweep takes the claim after submission, then gives it back."""

        def __init__(self) -> None:
            self.lost = 0

        def submit(self, fn: Any, job: Any) -> Any:
            key = job.claim.key
            if self.lost == 0:
                leases.release(job.claim.lease)  # the other sweep took it over
                write_claim(once, key, host=storage.HOST, pid=os.getpid())
                outcome = fn(job)
                assert outcome.lost
                self.lost += 1
                give_back(once, key)
                return ResultOnlyJob(outcome)
            return ResultOnlyJob(fn(job))

    class ResultOnlyJob:
        def __init__(self, value: Any) -> None:
            self.value = value

        def result(self) -> Any:
            return self.value

    executor = TakenOver()
    (run,) = once.sweep({"x": [1]}, executor=executor)
    assert executor.lost == 1
    assert run.status == "completed"
    assert len(once.observations(status="all")) == 1


def test_two_sweeps_at_once_run_each_config_once() -> None:
    """Two sweeps of one grid started together split the work and return the same runs."""

    @experiment
    def slow(x: int) -> int:
        time.sleep(0.02)
        return x

    results: list[list[Any]] = []

    def one_sweep() -> None:
        with ThreadPoolExecutor(2) as pool:
            results.append(slow.sweep({"x": range(12)}, executor=pool))

    threads = [threading.Thread(target=one_sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = results
    assert [o.id for o in first] == [o.id for o in second]
    assert len(slow.observations(status="all")) == 12
    assert claims_left(slow) == []


# ---------------------------------------------------------------- progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_counts_on_a_terminal(add: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, stderr shows a bar with done, failed and skipped counts."""
    add.sweep({"a": [1]})
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    add.sweep({"a": [1, 2, -1]})
    text = terminal.getvalue()
    assert "add:" in text
    assert "3/3" in text
    assert "done=1" in text
    assert "failed=1" in text
    assert "skipped=1" in text


def test_progress_is_silent_off_a_terminal_or_when_disabled(
    add: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing on stderr when it is not a terminal, or with progress=False."""
    add.sweep({"a": [1, 2]})
    assert capsys.readouterr().err == ""
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    add.sweep({"a": [3]}, progress=False)
    assert terminal.getvalue() == ""


# ---------------------------------------------------------------- async


def test_sync_sweep_of_an_async_experiment() -> None:
    """sweep() runs each call of an async experiment with anyio.run."""

    @experiment
    async def double(x: int) -> int:
        await anyio.sleep(0)
        return 2 * x

    runs = double.sweep({"x": [1, 2]})
    assert [o.result for o in runs] == [2, 4]
    with ThreadPoolExecutor(2) as pool:
        runs = double.sweep({"x": [3, 4]}, executor=pool)
    assert [o.result for o in runs] == [6, 8]


@pytest.mark.anyio
async def test_sync_sweep_of_an_async_experiment_inside_a_loop_is_refused() -> None:
    """Inside an event loop, a serial sweep of an async experiment says to use asweep."""

    @experiment
    async def double(x: int) -> int:
        return 2 * x

    with pytest.raises(RuntimeError, match=r"use `await double.asweep\(...\)` here"):
        double.sweep({"x": [1]})


@pytest.mark.anyio
async def test_asweep_bounds_concurrency_and_keeps_grid_order() -> None:
    """Never more than max_concurrency runs in flight; observations in grid order."""
    active = {"now": 0, "most": 0}
    three = anyio.Event()  # the first runs wait until three are in flight at once

    @experiment
    async def fetch(page: int) -> int:
        active["now"] += 1
        active["most"] = max(active["most"], active["now"])
        if active["now"] == 3:
            three.set()
        with anyio.fail_after(60):  # fewer than three let in would wait forever
            await three.wait()
        await anyio.sleep(0)  # a run in flight lets the others start
        active["now"] -= 1
        return page

    runs = await fetch.asweep({"page": range(20)}, max_concurrency=3)
    assert [o.result for o in runs] == list(range(20))
    assert active["most"] == 3
    assert len(fetch.observations()) == 20


@pytest.mark.anyio
async def test_asweep_skips_completed_and_records_failures() -> None:
    """asweep shares sweep's skipping and on_error='record'."""

    @experiment
    async def check(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    first = await asweep(check, {"x": [1]})
    runs = await check.asweep([{"x": 1}, {"x": -1}, {"x": 1}])
    assert runs[0].id == runs[2].id == first[0].id
    assert runs[1].status == "failed"
    assert claims_left(check) == []


@pytest.mark.anyio
async def test_asweep_on_error_raise_cancels_the_rest() -> None:
    """The first failure is raised as itself; runs in flight are recorded as interrupted."""

    @experiment
    async def work(x: int) -> int:
        if x == 0:
            raise ValueError("zero")
        await anyio.sleep(5)
        return x

    with anyio.fail_after(4), pytest.raises(ValueError, match="zero"):
        await work.asweep({"x": [1, 2, 0]}, on_error="raise")
    assert sorted(o.config["x"] for o in work.observations(status="interrupted")) == [1, 2]
    assert claims_left(work) == []
    for x in (1, 2, 0):  # given back naming no run: nothing completed them
        assert leases.released_mark(their_lease(work, claim_key(work, x=x))) is None


@pytest.mark.parametrize("engine", ["sweep", "pool", "asweep"])
def test_a_claim_released_with_its_completed_run_is_the_cache_index_entry(engine: str) -> None:
    """A sweep run writes no cache entry of its own: the mark its claim is
    released with names the run that completed the config, and the index finds
    the run there; a failed run's mark names nothing."""

    @experiment
    def half(x: int) -> float:
        if x < 0:
            raise ValueError("negative")
        return x / 2

    grid = {"x": [2, -2]}
    if engine == "sweep":
        done, failed = half.sweep(grid)
    elif engine == "pool":
        with ThreadPoolExecutor(2) as pool:
            done, failed = half.sweep(grid, executor=pool)
    else:
        done, failed = anyio.run(half.asweep, grid)
    assert (done.status, failed.status) == ("completed", "failed")
    root = half.experiment.root
    assert not (root / ".de" / "cache").exists()
    key, failed_key = claim_key(half, x=2), claim_key(half, x=-2)
    assert leases.released_mark(their_lease(half, key)) == json.dumps({"id": done.id}).encode()
    assert leases.released_mark(their_lease(half, failed_key)) is None  # released, unmarked
    found = half.experiment.index.find(key)
    assert found is not None
    assert found.id == done.id
    assert found.result == 1.0
    assert half.experiment.index.find(failed_key) is None
    assert claims_left(half) == []


def test_a_config_found_done_after_its_claim_was_taken_is_given_back_naming_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sweep that takes over the released claim of a config another sweep
    completed just before (its first look came too early) gives the claim back
    marked with that run, and a takeover keeps the marks below it: whoever takes
    the claim next finds the run at once, and nobody runs the config again."""
    from digital_experiments._sweep import engine
    from digital_experiments._sweep.plan import Progress

    calls: list[int] = []

    @experiment
    def once(x: int) -> int:
        calls.append(x)
        return x

    exp, key = once.experiment, claim_key(once, x=1)
    plan = engine._plan(exp, {"x": [1]}, "completed")  # listed before the other sweep ran
    (first,) = once.sweep({"x": [1]})  # generation 0, released naming the run
    mark = json.dumps({"id": first.id}).encode()
    real, looks = exp.index.find, []

    def first_look_misses(key: str, deleted_since: float | None = None) -> Any:
        looks.append(key)
        return None if len(looks) == 1 else real(key, deleted_since)

    monkeypatch.setattr(exp.index, "find", first_look_misses)
    driver = engine._Engine(
        exp,
        plan,
        Progress(plan, False),
        target=exp,
        on_error="record",
        claims=True,
        window=None,
        stale_after=None,
    )
    look = driver.look(plan.todo[0])
    assert look.found is not None
    assert look.found.id == first.id
    assert look.claim is None
    lease = their_lease(once, key)
    assert leases.generations(lease) == [1]  # it did take the claim over
    taken = lease.store.get_or_none(lease.generation_key(1) + ".released")
    assert taken is not None
    assert taken[0] == mark
    monkeypatch.undo()
    assert leases.acquire(lease)  # the next taker, generation 2, still holding
    found = exp.index.find(key)
    assert found is not None
    assert found.id == first.id
    assert calls == [1]


def test_a_cache_hit_on_its_entry_reads_no_sweep_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache=True call found by its index entry lists no claim folder: the
    release marks of sweeps are read only when the entry does not answer (on a
    bucket each listing is a request)."""
    from digital_experiments._store.local import LocalStore

    calls: list[int] = []

    @experiment(cache=True)
    def cached(x: int) -> int:
        calls.append(x)
        return x

    cached(1)  # a miss: the entry, then the claim's marks, are read
    listed: list[str] = []
    real = LocalStore.list

    def counting(self: LocalStore, prefix: str = "", start_after: str | None = None) -> Any:
        listed.append(prefix)
        return real(self, prefix, start_after)

    monkeypatch.setattr(LocalStore, "list", counting)
    assert cached(1) == 1
    assert calls == [1]  # the hit was the entry's
    assert not [prefix for prefix in listed if prefix.startswith(".de/claims/")]
    monkeypatch.undo()
    monkeypatch.setattr(LocalStore, "list", counting)
    assert cached.experiment.index.find("0" * 64) is None  # no entry: the marks are read
    assert ".de/claims/" + "0" * 64 + "/" in listed


@pytest.mark.parametrize(
    "mark",
    [b"\x00\xff", b"[1, 2]", b'{"id": 7}', b'{"id": "../../etc/passwd"}', b"{", b"[" * 5000],
)
def test_a_release_mark_of_any_other_shape_names_no_run(mark: bytes) -> None:
    """A mark that is not the JSON of a run's id (written by hand, or by a later
    version) names nothing: the index reads past it, and the config runs."""
    calls: list[int] = []

    @experiment
    def seen(x: int) -> int:
        calls.append(x)
        return x

    key = claim_key(seen, x=1)
    lease = their_lease(seen, key)
    assert leases.acquire(lease)
    assert leases.release(lease, mark)
    assert seen.experiment.index.find(key) is None
    (run,) = seen.sweep({"x": [1]})
    assert calls == [1]
    assert run.status == "completed"
    assert leases.released_mark(their_lease(seen, key)) == json.dumps({"id": run.id}).encode()


@pytest.mark.anyio
async def test_an_asweep_whose_record_cannot_be_read_back_raises_and_keeps_the_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trip that ends an async run gives its claim back, marked, then reads the
    record back; when that read fails the sweep raises the error itself (not in an
    exception group) and the claim is not given back a second time, which would
    write over its mark."""
    from digital_experiments._sweep import engine
    from digital_experiments.errors import StorageError

    def unreadable(exp: Any, id: str) -> Any:
        raise StorageError(f"cannot read {id}")

    @experiment
    async def quick(x: int) -> int:
        return x

    monkeypatch.setattr(engine, "_load", unreadable)
    with pytest.raises(StorageError, match="cannot read"):
        await quick.asweep({"x": [1]})
    (run,) = quick.observations()
    key = claim_key(quick, x=1)
    assert leases.released_mark(their_lease(quick, key)) == json.dumps({"id": run.id}).encode()
    assert claims_left(quick) == []


@pytest.mark.anyio
async def test_asweep_run_taken_over_while_it_ran_publishes_nothing() -> None:
    """Another sweep takes the claim over while the first run runs: that run is
    recorded but not put in the cache index, and its config completes once,
    by the run after the other sweep gives its claim back."""
    calls: list[int] = []
    indexed: list[bool] = []  # whether the cache index knew the config, at each call

    @experiment
    async def once(x: int) -> int:
        key = claim_key(once, x=x)
        calls.append(x)
        indexed.append(once.experiment.index.find(key) is not None)
        if len(calls) == 1:  # the other sweep's takeover, a generation above ours
            write_claim(once, key, host=storage.HOST, pid=os.getpid())
            threading.Timer(0.2, give_back, (once, key)).start()
        return len(calls)

    (run,) = await once.asweep({"x": [1]})
    assert calls == [1, 1]  # ran again: the first run's completion did not stand
    assert indexed == [False, False]  # the first run was never put in the cache index
    assert run.result == 2
    assert [o.result for o in once.observations(status="all")] == [1, 2]
    found = once.experiment.index.find(claim_key(once, x=1))
    assert found is not None
    assert found.id == run.id
    assert claims_left(once) == []


@pytest.mark.anyio
async def test_asweep_goes_to_a_worker_thread_twice_a_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What docs/performance.md says: a claimed async run whose callbacks all start
    quickly (the default ones) makes two trips to a worker thread (its running
    record; its final record, then its claim given back and its record read back
    in the same trip), not eight; the configs that can start are claimed
    together, one trip for them all, and the driver's bookkeeping makes none; a
    user's start hook, which may block, adds one a run."""
    import anyio.to_thread

    trips: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(function: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args, **kwargs)

    @experiment
    async def quick(x: int) -> int:
        return x

    await quick.asweep({"x": [-1]})  # the first sweep captures the environment
    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    runs = await quick.asweep({"x": range(10)}, max_concurrency=20)
    assert [run.result for run in runs] == list(range(10))
    per_run = [name for name in trips if name != "_plan"]
    assert trips.count("_plan") == 1
    assert sorted(per_run) == sorted(["begin", "complete"] * 10 + ["look_all"])

    class Slow(Callback):
        def start(self, id: str, config: dict[str, Any]) -> None:
            pass  # a user's hook: it could block

    @experiment(callbacks=[Slow()])
    async def hooked(x: int) -> int:
        return x

    await hooked.asweep({"x": [-1]})
    trips.clear()
    await hooked.asweep({"x": range(10)})
    assert trips.count("start") == 10


@pytest.mark.anyio
async def test_asweep_of_a_sync_experiment_uses_threads() -> None:
    """A sync experiment in asweep runs in worker threads, each with its own run."""

    @experiment
    def where(x: int) -> str:
        return str(current_dir())

    runs = await where.asweep({"x": range(4)}, max_concurrency=2)
    assert len({o.result for o in runs}) == 4


@pytest.mark.anyio
async def test_asweep_validates_max_concurrency() -> None:
    """max_concurrency must be a positive int."""

    @experiment
    async def noop(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="max_concurrency= takes an int >= 1, not 0"):
        await noop.asweep({"x": [1]}, max_concurrency=0)


# ---------------------------------------------------------------- controllers


def test_grid_search_control_with_an_executor(add: Any) -> None:
    """GridSearch.control(executor=) runs the next untried points as one sweep."""
    with ThreadPoolExecutor(2) as pool:
        runs = GridSearch(a=[1, 2, 3], b=[0]).control(add, 2, executor=pool)
        assert runs is not None
        assert [o.config for o in runs] == [{"a": 1, "b": 0}, {"a": 2, "b": 0}]
        rest = GridSearch(a=[1, 2, 3], b=[0]).control(add, 5, executor=pool)
    assert rest is not None
    assert [o.config["a"] for o in rest] == [3]
    assert len(add.observations()) == 3


def test_random_search_control_with_an_executor(add: Any) -> None:
    """RandomSearch.control(executor=) runs n random configs through the same machinery."""
    with ThreadPoolExecutor(2) as pool:
        runs = RandomSearch(a=range(100)).control(add, 4, executor=pool, b=1)
    assert runs is not None
    assert len(runs) == 4
    assert all(o.config["b"] == 1 and o.status == "completed" for o in runs)
    assert len(add.observations()) == len({o.config["a"] for o in runs})


def test_sweep_returns_the_recorded_failure_of_an_unstorable_result() -> None:
    """A run whose result cannot be stored comes back as its failed record, not a stand-in."""

    @experiment(backend="json")
    def opaque(x: int) -> object:
        return object() if x else x

    runs = opaque.sweep({"x": [0, 1]})
    assert [run.status for run in runs] == ["completed", "failed"]
    assert runs[1].id  # the record on disk, not an unrecorded stand-in
    assert runs[1].metadata["error"]["type"] == "UnstorableValueError"


@pytest.mark.parametrize("garbage", [b"\x00\xffnot json", b"[1, 2]"])
def test_a_garbage_claim_is_taken_over_at_once(
    add: Any, monkeypatch: pytest.MonkeyPatch, garbage: bytes
) -> None:
    """An unreadable claim is garbage (claims are published whole): taken over at once."""
    lease = their_lease(add, claim_key(add, a=1))
    assert lease.store.put_new(lease.generation_key(0), garbage)
    attempts: list[bool] = []
    real = claims.try_claim

    def counted(claim: Any) -> bool:
        attempts.append(real(claim))
        return attempts[-1]

    monkeypatch.setattr("digital_experiments._sweep.engine.try_claim", counted)
    (run,) = add.sweep({"a": [1]})
    assert run.status == "completed"
    assert attempts == [True]  # the first look took the claim over: no waiting
    assert leases.generations(lease) == [1]  # the garbage generation is gone


def test_the_heartbeat_keeps_a_live_claim_past_stale_after(tmp_path: Path) -> None:
    """While a run lasts its claim is renewed, so another host that watched it for
    longer than stale_after still finds it alive."""
    started, release = threading.Event(), threading.Event()

    @experiment(root=tmp_path / "long")
    def long(a: int) -> int:
        started.set()
        assert release.wait(60)
        return a

    key = claim_key(long, a=1)
    sweep = threading.Thread(target=long.sweep, args=({"a": [1]},), kwargs={"stale_after": 4})
    sweep.start()
    try:
        assert started.wait(60)
        clock = JumpingClock()  # an hour between two looks: far past stale_after
        other = Claim(str(long.experiment.root), key, "another host", stale_after=4)
        lease = other.lease
        beats = f"{lease.generation_key(max(leases.generations(lease)))}.beat"
        first = lease.store.version(beats)
        observer = Observer(clock)
        monkey = pytest.MonkeyPatch()
        monkey.setattr(storage, "same_namespace", lambda info: False)  # seen from elsewhere
        try:
            assert not leases.acquire(lease, observer)  # the first look starts its clock
            for _ in range(6000):  # until the heartbeat renews it (every 1 s)
                if lease.store.version(beats) != first:
                    break
                time.sleep(0.01)
            assert lease.store.version(beats) != first, "the heartbeat never renewed the claim"
            assert not leases.acquire(lease, observer)  # an hour on, but it moved: alive
        finally:
            monkey.undo()
    finally:
        release.set()
        sweep.join(60)
    (run,) = long.observations()
    assert run.result == 1


def test_the_progress_bar_is_tqdm_auto_in_a_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a Jupyter kernel (stderr is no terminal there) the sweep shows tqdm.auto's bar."""
    import types

    import tqdm.auto

    class ZMQInteractiveShell:  # what IPython's get_ipython() returns in a kernel
        pass

    shown: list[Any] = []

    class Bar(tqdm.auto.tqdm):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})
            shown.append(kwargs)

    fake = types.ModuleType("IPython")
    fake.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)

    @experiment(root=tmp_path)
    def f(x: int) -> int:
        return x

    assert [run.result for run in f.sweep({"x": [1, 2, 3]})] == [1, 2, 3]
    assert shown[0]["total"] == 3
    shown.clear()
    monkeypatch.delitem(sys.modules, "IPython")
    f.sweep({"x": [4]})  # not a notebook, and stderr is no terminal: no bar
    assert shown == []
