"""Sweeps: run every config of a grid, serially, on any executor, or as async tasks.

One engine, :class:`_Engine`, decides what a sweep does next: which config
starts (a window limits how many are in flight), claims (:class:`_Keeper`
defers configs held by others, with back-off, and keeps held claims fresh) and
what a finished run leaves in the :class:`~digital_experiments._sweep.plan.Plan`.
Two thin front ends drive it and differ only where one awaits: :func:`sweep`
submits jobs to an executor and waits on futures, :func:`asweep` starts them as
tasks of the running event loop and waits on a stream. How a sweep works
(``docs/sweeps.md`` has the user's version):

* **What is submitted.** One module-level function, :func:`_run_job`, with one
  small picklable :class:`_Job`: the decorated function (which pickles by
  reference, or by value from ``__main__`` with cloudpickle), the driver's
  backend (so the worker writes under the driver's root whatever its own
  environment says), the call's keyword arguments and the config's claim. The
  worker makes the call, so the worker writes the record and its artefacts, and
  returns a tiny :class:`_Outcome` (the run's id and status, and the exception
  if it failed) instead of raising; the driver then loads the record by id, so a
  sweep returns exactly what ``observations()`` will, and finds out at once if
  the workers write where it cannot read.
* **Claims.** With ``skip="completed"`` the driver claims each distinct config
  just before it starts; the worker adopts the claim and removes it when the run
  ends, after indexing a completed run. A config held by another live process
  is waited for, and its run's record returned (see :mod:`digital_experiments._sweep.claims`).
* **Resume.** A sweep first lists the completed runs of the current code: those
  configs are not run again, so calling the same sweep after a crash or Ctrl-C
  runs only what is missing (failed and interrupted configs run again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import math
import os
import pickle
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.to_thread

from .._read.query import select
from .._read.trash import load_even_deleted
from .._record import signals
from .._record.run import Ending, Recorder, as_recorder
from .._runs.backends import Backend
from .._runs.observation import COMPLETED, FAILED, Observation, error_info, is_completed, status_of
from .._store import faults
from .._store.lease import DEFAULT_LENGTH
from ..errors import StorageError
from .claims import Claim, adopt, heartbeat, release, touch, try_claim
from .plan import Entry, Plan, Progress

__all__ = ["asweep", "sweep"]

SKIPS = (COMPLETED, None)
ON_ERRORS = ("record", "raise")
# how often a sweep looks again at configs that another process holds: from
# POLL_INTERVAL, slower and slower up to MAX_POLL_INTERVAL (a long SLURM run
# must not cost a shared filesystem several requests a second)
POLL_INTERVAL = 0.2
MAX_POLL_INTERVAL = 5.0


# ---------------------------------------------------------------- the worker side


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to run one config (small and picklable)."""

    target: Any  # the decorated function, or the Experiment itself
    backend: Backend  # the driver's: where the record goes, whatever the worker's env
    kwargs: dict[str, Any]
    claim: Claim | None
    # unique per submission: an executor that deduplicates equal calls
    # (Dask's pure=True) still runs each one
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    driver: int = field(default_factory=os.getpid)  # the process that submitted it


@dataclass(frozen=True)
class _Outcome:
    """What a worker sends back: which record the run ended with."""

    id: str | None  # None: no record (claim lost, or the run could not be recorded)
    status: str
    error: BaseException | None = None
    lost: bool = False
    # the record read back, where the run's process did it for the driver (asweep)
    observation: Observation | None = None


def _outcome(ending: Ending) -> _Outcome:
    observation, error = ending
    if observation is None:
        return _Outcome(None, FAILED, _portable(error))
    return _Outcome(observation.id, status_of(observation), _portable(error))


# per worker process: each experiment re-rooted at the driver's backend
_REROOTED: dict[tuple[int, type, str], tuple[Recorder, Recorder]] = {}


def _worker_recorder(target: Any, backend: Backend) -> Recorder:
    """The recorder to run, writing where the driver's backend says."""
    exp = as_recorder(target)
    mine = exp.backend
    if mine is backend or (type(mine) is type(backend) and mine.where == backend.where):
        return exp
    key = (id(exp), type(backend), backend.where)
    cached = _REROOTED.get(key)
    if cached is not None and cached[0] is exp:
        return cached[1]
    rooted = exp.rooted(backend)
    backend.root.mkdir(parents=True, exist_ok=True)
    _REROOTED[key] = (exp, rooted)
    return rooted


def _portable(error: BaseException | None) -> BaseException | None:
    """``error``, or a stand-in when it cannot be pickled back to the driver."""
    if error is None:
        return None
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__qualname__}: {error}")
    return error


def _run_job(job: _Job) -> _Outcome:
    """Run one config in whatever process the executor chose (submitted by :func:`sweep`).

    Never raises for a failing run: the run is recorded as failed and the
    exception comes back in the outcome, so a sweep can keep going (and
    submitit's debug executor does not stop in a debugger). SIGTERM ends a pool
    worker once its run is recorded ``interrupted``: a pool would otherwise take
    the exit for a call's result and start its next call.
    """
    try:
        # our SIGTERM handler for the whole job, not just the run: a second SIGTERM
        # (a pool that saw a sibling exit sends one) waits until the claim is back
        with signals.sigterm_interrupts():
            return _run_claimed(job)
    except signals.Terminated as exc:
        if os.getpid() == job.driver:  # a serial sweep: the driver exits as usual
            raise
        os._exit(exc.code if isinstance(exc.code, int) else 1)


def _run_claimed(job: _Job) -> _Outcome:
    exp = _worker_recorder(job.target, job.backend)
    claim = job.claim
    if claim is not None and not adopt(claim):
        return _Outcome(None, FAILED, lost=True)
    ended = False
    try:
        with heartbeat(claim):
            if exp.is_async:
                ending = anyio.run(exp.arecord, (), job.kwargs)
            else:
                ending = exp.record((), job.kwargs)
        ended = True
        if not _end_claim(exp, claim, ending):
            return _Outcome(None, FAILED, lost=True)
    finally:
        if not ended:  # the run raised (SIGTERM, Ctrl-C): no completion to mark
            _give_back(claim)
    return _outcome(ending)


def _end_claim(exp: Recorder, claim: Claim | None, ending: Ending) -> bool:
    """Give ``claim`` back once its run ended, if it still holds: the release of a
    completed run is marked with that run, which is then the cache index's entry
    for the config. Whether the ending stands: a completed run whose claim was
    taken over while it ran is the new holder's to complete."""
    observation = ending[0]
    if observation is None or not is_completed(observation):
        _give_back(claim)
        return True
    return _give_back(claim, exp.index.mark(observation))


def _give_back(claim: Claim | None, mark: bytes = b"") -> bool:
    """Release ``claim`` with ``mark``; whether it still held its config."""
    if claim is None:
        return True
    with signals.held():  # a kill now would leave the claim held by a dead process
        faults.point("sweep.release", str(os.getpid()))
        return release(claim, mark=mark)


def _end_claimed(exp: Recorder, claim: Claim | None, ending: Ending) -> _Outcome:
    """An async run's whole ending in one trip to a worker thread: its claim given
    back (:func:`_end_claim`), and its record read back as the driver would."""
    if not _end_claim(exp, claim, ending):
        return _Outcome(None, FAILED, lost=True)  # taken over while it ran
    outcome = _outcome(ending)
    if outcome.id is None:
        return outcome
    return replace(outcome, observation=_load(exp, outcome.id))


async def _arun_job(job: _Job) -> _Outcome:
    """:func:`_run_claimed` as a task of :func:`asweep` (the claim is this process's).

    An async run ends its claim in the worker thread that published its final
    record (``arecord``'s ``then``): two trips a run."""
    exp = as_recorder(job.target)
    claim = job.claim
    # set as the claim's ending starts (from then on nobody else gives it back),
    # then to its outcome
    ended: list[_Outcome | None] = []

    def end(ending: Ending) -> None:
        ended.append(None)
        ended[0] = _end_claimed(exp, claim, ending)

    try:
        with heartbeat(claim):
            if exp.is_async:
                ending = await exp.arecord((), job.kwargs, then=end)
            else:  # a sync experiment runs in a worker thread (which copies the context)
                ending = await anyio.to_thread.run_sync(exp.record, (), job.kwargs)
        if not ended:  # a sync run, a cache hit, or a run that could not begin
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(end, ending)
    finally:
        if not ended and claim is not None:  # the run itself raised or was cancelled
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(release, claim)
    outcome = ended[0]
    if outcome is None:  # end() returns only once it is set
        raise AssertionError("unreachable")
    return outcome


class _Inline:
    """The executor of a serial sweep: runs each call at once, in this process."""

    def submit(self, fn: Any, *args: Any) -> _Done:
        return _Done(fn(*args))


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value

    def done(self) -> bool:
        return True


# ---------------------------------------------------------------- the engine


class _Keeper:
    """The claims side of a sweep: configs held by others wait here and are
    looked at again with back-off; held claims are touched for ``stale_after``."""

    def __init__(self, stale_after: float | None) -> None:
        self.stale_after = stale_after
        self.deferred: list[Entry] = []
        self.next_poll = self.next_beat = 0.0
        self.poll_delay = POLL_INTERVAL

    def defer(self, entry: Entry) -> None:
        if not self.deferred:
            self.next_poll = time.monotonic() + self.poll_delay
            self.poll_delay = min(self.poll_delay * 1.5, MAX_POLL_INTERVAL)
        self.deferred.append(entry)

    def due(self) -> list[Entry]:
        """The deferred configs whose time to look again has come."""
        if not self.deferred or time.monotonic() < self.next_poll:
            return []
        entries, self.deferred = self.deferred, []
        return entries

    def beat(self, claims: Iterable[Claim | None]) -> None:
        if time.monotonic() < self.next_beat:
            return
        self.next_beat = time.monotonic() + (self.stale_after or DEFAULT_LENGTH) / 4
        for claim in claims:
            if claim is not None:
                touch(claim)

    def wake(self) -> float | None:
        """When the keeper next has something to do (a ``time.monotonic()``)."""
        wakes = []
        if self.deferred:
            wakes.append(self.next_poll)
        wakes.append(self.next_beat)  # held claims are renewed, whatever stale_after
        return min(wakes)


@dataclass(frozen=True)
class _Look:
    """What :meth:`_Engine.look` found of one config: its run, completed
    elsewhere; its claim, taken; or that another process holds it (``held``)."""

    found: Observation | None = None
    claim: Claim | None = None
    held: bool = False


class _Engine:
    """What a sweep does next; the front ends run its jobs and wait.

    The blocking steps (:meth:`attempt`, :meth:`finish`) touch files: an async
    front end runs them in a worker thread.
    """

    def __init__(
        self,
        recorder: Recorder,
        plan: Plan,
        progress: Progress,
        *,
        target: Any,
        on_error: str,
        claims: bool,
        window: int | None,
        stale_after: float | None,
    ) -> None:
        self.recorder = recorder
        self.plan = plan
        self.progress = progress
        self.target = target
        self.on_error = on_error
        self.claims = claims
        self.window = window
        self.stale_after = stale_after
        self.keeper = _Keeper(stale_after)
        self.queue: deque[Entry] = deque(plan.todo)
        self.in_flight: dict[Any, tuple[Entry, Claim | None]] = {}
        # runs deleted before now are gone for this sweep; later ones still count
        self.began = time.time()

    def done(self) -> bool:
        """Whether every config has its observation (a method: it changes under us)."""
        return not (self.queue or self.in_flight or self.keeper.deferred)

    def next_entry(self) -> Entry | None:
        """The next config to attempt, if the window has room."""
        if self.queue and (self.window is None or len(self.in_flight) < self.window):
            return self.queue.popleft()
        return None

    def next_entries(self) -> list[Entry]:
        """Every config that can start now (the window's room), to claim together."""
        room = len(self.queue) if self.window is None else self.window - len(self.in_flight)
        return [self.queue.popleft() for _ in range(min(room, len(self.queue)))]

    def attempt(self, entry: Entry) -> _Job | None:
        """Claim ``entry``: its job, or ``None`` if it was deferred or found done."""
        return self.settle(entry, self.look(entry))

    def look(self, entry: Entry) -> _Look:
        """The I/O of :meth:`attempt`: what the runs and the claims say of
        ``entry`` (it changes nothing of the engine, so any thread may ask)."""
        if not self.claims:
            return _Look()
        key = entry.key or ""
        # completed by another sweep since we listed the runs? Asked before claiming
        # too: taking over a finished config's released claim costs a write and
        # the tidy-up of the old generation, for nothing
        found = self.recorder.index.find(key, self.began)
        if found is not None:
            return _Look(found=found)
        claim = Claim(self.recorder.backend.where, key, stale_after=self.stale_after)
        claimed = try_claim(claim)
        # completed (and its claim released) between that look and the claim?
        found = self.recorder.index.find(key, self.began)
        if found is not None:
            if claimed:  # given back naming the run: the next taker finds it too
                release(claim, mark=self.recorder.index.mark(found))
            return _Look(found=found)
        return _Look(claim=claim) if claimed else _Look(held=True)

    def look_all(self, entries: list[Entry]) -> list[_Look]:
        """:meth:`look` at each of ``entries`` (an async sweep's in one trip)."""
        return [self.look(entry) for entry in entries]

    def settle(self, entry: Entry, look: _Look) -> _Job | None:
        """The bookkeeping of :meth:`attempt`, once :meth:`look` has said."""
        if look.found is not None:
            self._record(entry, look.found, skipped=True)
            return None
        if look.held:
            self.keeper.defer(entry)
            return None
        return _Job(self.target, self.recorder.backend, entry.kwargs, look.claim)

    def started(self, handle: Any, entry: Entry, job: _Job) -> None:
        self.in_flight[handle] = (entry, job.claim)

    def refused(self, entry: Entry, job: _Job, exc: BaseException) -> None:
        """The executor would not take ``job``: raise, unless the pool broke."""
        if job.claim is not None:
            release(job.claim)
        if self.on_error == "raise" or not _lost_executor(exc):
            raise exc
        # the pool broke (a worker died): this config cannot run on it any more
        self._record(entry, _unrecorded(entry, exc))

    def finish(self, handle: Any, outcome: _Outcome | BaseException) -> None:
        """Take in what the job of ``handle`` ended with (an exception: the
        executor lost the call, as when its worker died or its job was cancelled)."""
        entry, claim = self.in_flight.pop(handle)
        if isinstance(outcome, BaseException):
            if claim is not None:
                release(claim)
            if self.on_error == "raise":
                raise outcome
            self._record(entry, _unrecorded(entry, outcome))
            return
        if outcome.lost:  # another sweep took the claim over: wait for its run
            self.keeper.defer(entry)
            return
        if outcome.id is None:
            error = outcome.error or RuntimeError("the run left no record")
            observation = _unrecorded(entry, error)
        elif outcome.observation is not None:
            observation = outcome.observation
        else:
            observation = _load(self.recorder, outcome.id)
        self._record(entry, observation)
        if outcome.error is not None and self.on_error == "raise":
            _raise(outcome.error, self.recorder, observation)

    def timeout(self) -> float | None:
        """How long the front end may wait for a job before calling :meth:`tick`."""
        wake = self.keeper.wake()
        return None if wake is None else max(0.0, wake - time.monotonic())

    def tick(self) -> None:
        self.queue.extendleft(reversed(self.keeper.due()))
        self.keeper.beat(claim for _, claim in self.in_flight.values())

    def abandon(self) -> None:
        """On the way out early (an error, Ctrl-C, SIGTERM): give back the claims
        of calls that have not started, so no live process keeps holding them.

        A call that starts later anyway (queued in a process pool, which cannot
        cancel it) finds its claim gone and does not run; a started call holds
        (has adopted) its claim, and its worker gives it back when the run ends.
        Only concurrent.futures are cancelled: submitit's cancel kills running jobs.
        """
        for future, (_, claim) in self.in_flight.items():
            if isinstance(future, cf.Future):
                future.cancel()
            if claim is not None:
                release(claim, only_unadopted=True)
        self.in_flight.clear()

    def _record(self, entry: Entry, observation: Observation, skipped: bool = False) -> None:
        self.plan.finish(entry, observation, skipped)
        self.progress.update(self.plan)


def _shippable(exp: Recorder) -> Any:
    """The decorated function if it can be found by name (it then pickles by
    reference, or by value from ``__main__``), else the experiment itself."""
    function = exp.function
    found: Any = sys.modules.get(function.__module__)
    for part in function.__qualname__.split("."):
        found = getattr(found, part, None)
    inner = getattr(found, "experiment", None)
    if inner is not None and getattr(inner, "function", None) is function:
        return found
    return exp


def _capacity(executor: Any) -> int | None:
    """How many calls ``executor`` runs at once, when it says."""
    workers = getattr(executor, "_max_workers", None)  # concurrent.futures, loky
    if isinstance(workers, int) and workers > 0:
        return workers
    client = getattr(executor, "_client", executor)  # Dask's ClientExecutor, or a Client
    nthreads = getattr(client, "nthreads", None)
    if callable(nthreads):
        try:
            counts = nthreads()
        except Exception:
            return None
        if isinstance(counts, dict) and counts:
            return sum(int(n) for n in counts.values())
    return None


def _load(exp: Recorder, id: str) -> Observation:
    """The record ``id`` a worker wrote, retrying briefly for slow shared filesystems."""
    for delay in (0.05, 0.25, 1.0, None):
        try:
            return load_even_deleted(exp.backend, id)
        except FileNotFoundError as exc:
            if delay is None:
                raise StorageError(
                    f"Run {id!r} of {exp.name} was recorded by a worker under "
                    f"{str(exp.root)!r}, but this process cannot read it ({exc}). The "
                    "driver and every worker must share the root: pass root= on a "
                    "shared filesystem."
                ) from exc
            time.sleep(delay)
    raise AssertionError("unreachable")


def _unrecorded(entry: Entry, error: BaseException) -> Observation:
    """A stand-in for a config whose run left no record (its worker was lost)."""
    metadata = {"status": FAILED, "error": error_info(error), "recorded": False}
    return Observation("", entry.config, None, metadata)


def _raise(error: BaseException, exp: Recorder, observation: Observation) -> None:
    if observation.id and hasattr(error, "add_note") and error.__traceback__ is None:
        error.add_note(
            f"Raised in a worker by run {observation.id!r} of {exp.name}; its "
            "traceback is in the run's metadata['error']['traceback']."
        )
    raise error


def _check_options(skip: Any, on_error: Any, stale_after: Any) -> None:
    if skip not in SKIPS:
        raise ValueError(
            "skip= takes 'completed' (configs already completed with the current "
            f"code are not run again) or None (run every config), not {skip!r}."
        )
    if on_error not in ON_ERRORS:
        raise ValueError(
            "on_error= takes 'record' (keep going; failed runs are returned too) or "
            f"'raise' (stop at the first failure), not {on_error!r}."
        )
    if stale_after is not None and not (isinstance(stale_after, (int, float)) and stale_after > 0):
        raise ValueError(
            f"stale_after= takes a number of seconds > 0 or None, not {stale_after!r}."
        )


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _lost_executor(exc: BaseException) -> bool:
    """Whether ``submit`` failed because the executor broke (a worker died), not a bug."""
    if isinstance(exc, cf.BrokenExecutor):
        return True
    # loky's TerminatedWorkerError and the like, without importing loky
    return type(exc).__name__ in ("TerminatedWorkerError", "ShutdownExecutorError")


def _is_done(future: Any) -> bool:
    done = getattr(future, "done", None)
    return bool(done()) if callable(done) else True


def _plan(exp: Recorder, grid: Any, skip: str | None) -> Plan:
    """The sweep's plan, without the configs already completed (``skip``)."""
    plan = Plan(exp, grid, skip)
    if skip is not None and plan.todo:
        completed = select(exp.backend, code=exp.code_identity)
        plan.resume(completed, lambda o: exp.config_key(o.config))
    return plan


# ---------------------------------------------------------------- the front ends


def sweep(
    experiment: Any,
    grid: Any,
    *,
    executor: Any = None,
    skip: str | None = "completed",
    progress: bool = True,
    on_error: str = "record",
    max_pending: int | None = None,
    stale_after: float | None = None,
) -> list[Observation]:
    """Run every config of ``grid`` and return their observations in grid order.

    Usually called as ``my_experiment.sweep(grid, ...)``. Each run is recorded
    by the process that executes it, as for any call.

    Parameters
    ----------
    experiment : decorated function or Experiment
        What to run.
    grid : dict or iterable
        A dict of lists such as ``{"lr": [0.1, 0.01], "depth": [2, 4]}`` runs
        every combination; an iterable of dicts such as
        ``[{"lr": 0.1}, {"lr": 0.01, "depth": 8}]`` runs each config. Parameters
        left out take the function's defaults.
    executor : optional
        ``None`` runs the configs one by one in this process. Otherwise anything
        with ``submit(fn, *args)`` returning an object with ``.result()``: a
        ``concurrent.futures`` pool, loky, Dask (``client.get_executor(pure=False)``)
        or a submitit executor (SLURM). Workers must see the same root: put it on
        a shared filesystem.
    skip : str or None
        ``"completed"`` (default): configs already completed with the current
        code are not run again (their latest observation is returned), a config
        listed twice runs once, and two sweeps sharing the root never run the
        same config at the same time. ``None``: run every listed config, repeats
        included.
    progress : bool
        Show a progress bar (done, failed, skipped, ETA) on stderr when it is a
        terminal.
    on_error : str
        ``"record"`` (default): keep going; failed runs are returned too.
        ``"raise"``: stop at the first failure (once it is recorded) and raise
        its exception; calls not yet started are cancelled.
    max_pending : int, optional
        At most this many configs are submitted and unfinished at a time, and so
        claimed. Default: twice the executor's workers when it says
        (``concurrent.futures``, loky, Dask), else every config at once.
    stale_after : float, optional
        Seconds after which a claim that nobody touched may be taken over,
        whoever holds it (holders touch theirs every ``stale_after / 4`` s).
        Without it, only claims of dead processes on this host are taken over.

    Returns
    -------
    list of Observation
        One per grid entry, in grid order. A run whose worker was lost before it
        could report (killed, out of memory, a SLURM time limit) is returned as
        an unsaved observation with status ``failed``, id ``""`` and
        ``metadata["recorded"] = False``.

    Raises
    ------
    TypeError
        If ``grid`` is not a dict of lists or an iterable of dicts, names an
        unknown parameter, misses a required one, or ``executor`` has no ``submit``.
    ValueError
        For an unknown ``skip`` or ``on_error``.

    Examples
    --------
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> from digital_experiments import experiment
    >>> @experiment
    ... def train(lr, depth=2):
    ...     return lr * depth
    >>> runs = train.sweep({"lr": [0.1, 0.01], "depth": [2, 4]})  # doctest: +SKIP
    >>> with ProcessPoolExecutor(2) as pool:  # doctest: +SKIP
    ...     runs = train.sweep({"lr": [0.1, 0.01]}, executor=pool)
    """
    exp = as_recorder(experiment)
    _check_options(skip, on_error, stale_after)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor= takes an object with submit(fn, *args) returning a future, "
            "such as a ProcessPoolExecutor, Dask's client.get_executor(pure=False) or "
            f"a submitit executor, not {executor!r}."
        )
    if max_pending is not None and not (isinstance(max_pending, int) and max_pending >= 1):
        raise ValueError(f"max_pending= takes an int >= 1 or None, not {max_pending!r}.")
    if executor is None and exp.is_async and _in_event_loop():
        raise RuntimeError(
            f"{exp.name} is async and this thread runs an event loop: use "
            f"`await {exp.name}.asweep(...)` here, or pass an executor=."
        )
    plan = _plan(exp, grid, skip)
    window: int | None = 1
    target: Any = exp
    if executor is None:
        executor = _Inline()
    else:
        capacity = _capacity(executor)
        window = max_pending or (2 * capacity if capacity else None)
        target = _shippable(exp)
    bar = Progress(plan, progress)
    engine = _Engine(
        exp,
        plan,
        bar,
        target=target,
        on_error=on_error,
        claims=skip is not None,
        window=window,
        stale_after=stale_after,
    )
    try:
        with signals.sigterm_interrupts():
            _drive(engine, executor)
    except signals.Terminated:
        _terminate_workers(executor)
        raise
    finally:
        bar.close()
    return plan.observations()


def _drive(engine: _Engine, executor: Any) -> None:
    """Run ``engine``'s jobs on ``executor`` until every config has an observation."""
    try:
        while not engine.done():
            while (entry := engine.next_entry()) is not None:
                job = engine.attempt(entry)
                if job is None:
                    continue
                try:
                    future = executor.submit(_run_job, job)
                except BaseException as exc:
                    engine.refused(entry, job, exc)
                    continue
                engine.started(future, entry, job)
            if engine.done():  # the last configs were found done elsewhere
                break
            if engine.in_flight:
                for future in _wait(list(engine.in_flight), engine.timeout()):
                    engine.finish(future, _result_of(future))
            else:  # only configs held by others are left: wait until they are due
                time.sleep(engine.timeout() or 0.0)
            engine.tick()
    finally:
        engine.abandon()


def _result_of(future: Any) -> _Outcome | BaseException:
    try:
        outcome: _Outcome = future.result()
    except Exception as exc:  # the executor lost the call (worker died, job cancelled)
        return exc
    return outcome


def _wait(futures: list[Any], timeout: float | None) -> list[Any]:
    """The futures that are done, waiting up to ``timeout`` for one."""
    if all(isinstance(f, cf.Future) for f in futures):
        finished, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(finished)
    # submitit jobs, Dask futures...: only .done() and .result() are relied on
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    while True:
        done = [f for f in futures if _is_done(f)]
        if done:
            return done
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return []
        time.sleep(delay if left is None else min(delay, left))
        delay = min(delay * 2, 0.5)


def _terminate_workers(executor: Any) -> None:
    """Pass SIGTERM on to the worker processes of a local pool, as the driver dies.

    Their runs are then recorded ``interrupted`` and the workers exit at once,
    instead of running their calls to the end for a driver that is gone (and
    keeping ``with ProcessPoolExecutor()`` waiting). Only concurrent.futures and
    loky pools show their workers (``_processes``); a cluster's are its own.
    """
    processes = getattr(executor, "_processes", None)
    if not isinstance(processes, dict):
        return
    for process in list(processes.values()):
        with contextlib.suppress(Exception):  # already gone
            process.terminate()


async def asweep(
    experiment: Any,
    grid: Any,
    *,
    max_concurrency: int = 8,
    skip: str | None = "completed",
    progress: bool = True,
    on_error: str = "record",
    stale_after: float | None = None,
) -> list[Observation]:
    """Run every config of ``grid`` as concurrent tasks of the running event loop.

    For ``async`` experiments (a sync experiment runs each call in a worker
    thread); works on asyncio and trio. Usually called as
    ``await my_experiment.asweep(grid, ...)``.

    Parameters
    ----------
    experiment : decorated function or Experiment
        What to run.
    grid : dict or iterable
        As in :func:`sweep`.
    max_concurrency : int
        At most this many runs in flight at once.
    skip : str or None
        As in :func:`sweep`.
    progress : bool
        As in :func:`sweep`.
    on_error : str
        As in :func:`sweep`; with ``"raise"`` the runs still in flight are
        cancelled (and recorded as ``interrupted``).
    stale_after : float, optional
        As in :func:`sweep`.

    Returns
    -------
    list of Observation
        One per grid entry, in grid order.

    Examples
    --------
    >>> import anyio
    >>> from digital_experiments import experiment
    >>> @experiment
    ... async def fetch(page):
    ...     await anyio.sleep(0.1)
    ...     return page
    >>> async def main():
    ...     return await fetch.asweep({"page": range(20)}, max_concurrency=5)
    >>> runs = anyio.run(main)  # doctest: +SKIP
    """
    exp = as_recorder(experiment)
    _check_options(skip, on_error, stale_after)
    if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
        raise ValueError(f"max_concurrency= takes an int >= 1, not {max_concurrency!r}.")
    plan = await anyio.to_thread.run_sync(_plan, exp, grid, skip)
    bar = Progress(plan, progress)
    engine = _Engine(
        exp,
        plan,
        bar,
        target=exp,
        on_error=on_error,
        claims=skip is not None,
        window=max_concurrency,
        stale_after=stale_after,
    )
    try:
        await _adrive(engine)
    finally:
        bar.close()
    return plan.observations()


# what an asweep task tells its driver: its job's handle and outcome, or an error
_Message = tuple[object, _Outcome] | Exception


async def _adrive(engine: _Engine) -> None:
    """:func:`_drive` on the running event loop: each job is a task, which runs
    its config and reads its record back in worker threads; the configs that can
    start are claimed together, in one trip, and the driver's bookkeeping runs
    on the loop, so the loop itself never waits for a file."""
    send, receive = anyio.create_memory_object_stream[_Message](math.inf)
    failure: Exception | None = None

    async def run(job: _Job, handle: object) -> None:
        try:
            message: _Message = (handle, await _arun_job(job))
        except Exception as exc:  # the driver raises it, as if it had done this work
            message = exc
        await send.send(message)

    def take(message: _Message) -> None:
        if isinstance(message, Exception):
            raise message
        engine.finish(*message)

    async with send, receive, anyio.create_task_group() as group:
        try:
            while not engine.done():
                entries = engine.next_entries()
                if entries:
                    looks = await anyio.to_thread.run_sync(engine.look_all, entries)
                    for entry, look in zip(entries, looks, strict=True):
                        job = engine.settle(entry, look)
                        if job is not None:
                            handle = object()
                            engine.started(handle, entry, job)
                            group.start_soon(run, job, handle)
                    continue  # more may start now (some were found done)
                with anyio.move_on_after(engine.timeout()):
                    take(await receive.receive())
                    while True:  # every run that ended meanwhile, before claiming more
                        try:
                            take(receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                engine.tick()
        except Exception as exc:  # on_error="raise": the runs in flight are cancelled
            failure = exc
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
