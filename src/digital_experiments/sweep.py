"""Sweeps: run every config of a grid, serially, on any executor, or as async tasks.

How a sweep works (``docs/sweeps.md`` has the user's version):

* **What is submitted.** One module-level function, :func:`_run_one`, with one
  small picklable :class:`_Job`: the decorated function (which pickles by
  reference, or by value from ``__main__`` with cloudpickle), the driver's
  backend (so the worker writes under the driver's root whatever its own
  environment says), the call's keyword arguments and the config's claim. The
  worker makes the call, so the worker writes the record and its artefacts, and
  returns a tiny :class:`_Outcome` (the run's id and status, and the exception
  if it failed) instead of raising; the driver then loads the record by id, so a
  sweep returns exactly what ``observations()`` will, and finds out at once if
  the workers write where it cannot read.
* **Claims.** With ``skip="completed"`` each distinct config is claimed by the
  driver, just before it is submitted, with an exclusive file
  ``<root>/.de/sweep-claims/<config_key>`` holding the holder's host, pid and a
  token. The worker *adopts* the claim when it starts (rewrites the holder, same
  token; a job that finds another token was superseded and does not run) and
  removes it when the run ends, after indexing a completed run under
  ``<root>/.de/cache/<config_key>``. A claim whose holder is known dead (same
  host, pid gone) is taken over; one held by a live process or another host is
  waited for, and its run's record returned; ``stale_after`` lets claims that
  have not been touched for that long be taken over too (holders touch theirs).
  Creating a claim is lock-free (exclusive create); the rare transitions that
  could race (a takeover, adopting a claim whose holder is not known alive) also
  hold a file lock on the config.
* **Resume.** A sweep first lists the completed runs of the current code: those
  configs are not run again, so calling the same sweep after a crash or Ctrl-C
  runs only what is missing (failed and interrupted configs run again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import copy
import inspect
import itertools
import json
import os
import pickle
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from . import storage
from .core import Backend, Observation
from .errors import StorageError
from .runs import COMPLETED, FAILED, RECORDS, call_async, call_sync, error_info

if TYPE_CHECKING:
    from .experiment import Experiment

__all__ = ["asweep", "sweep"]

SKIPS = ("completed", None)
ON_ERRORS = ("record", "raise")
CLAIMS = "sweep-claims"
# how often a sweep looks again at configs that another process holds: from
# POLL_INTERVAL, slower and slower up to MAX_POLL_INTERVAL (a long SLURM run
# must not cost a shared filesystem several requests a second)
POLL_INTERVAL = 0.2
MAX_POLL_INTERVAL = 5.0
# an unreadable claim may be one being written (no hard links): wait this long
_UNREADABLE_GRACE = 60.0


# ---------------------------------------------------------------- the grid


def _grid_configs(exp: Experiment[Any, Any], grid: Any) -> list[dict[str, Any]]:
    """The call keyword arguments of every point of ``grid``, in grid order."""
    if isinstance(grid, Mapping):
        names, values = [], []
        for name, dimension in grid.items():
            if isinstance(dimension, (str, bytes)) or not isinstance(dimension, Iterable):
                raise TypeError(
                    f"grid[{name!r}] is {dimension!r}: a dict grid maps each parameter "
                    f"to a list of values, such as {{{name!r}: [{dimension!r}]}}."
                )
            names.append(name)
            values.append(list(dimension))
        return [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(
            "grid= takes a dict of lists (every combination is run) or an iterable "
            f"of config dicts, not {grid!r}."
        )
    configs = []
    for index, config in enumerate(grid):
        if not isinstance(config, Mapping):
            raise TypeError(
                f"Config {index} of the grid is {config!r}: an iterable grid holds "
                "dicts such as {'lr': 0.1}."
            )
        configs.append(dict(config))
    return configs


def _check_names(exp: Experiment[Any, Any], configs: list[dict[str, Any]]) -> None:
    parameters = inspect.signature(exp.function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    names = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    known = set(names)
    for index, config in enumerate(configs):
        for key in config:
            if key not in known:
                raise TypeError(
                    f"Unknown parameter {key!r} in config {index} of the grid: "
                    f"{exp.name} takes {', '.join(names) or 'no parameters'}."
                )


@dataclass(eq=False)
class _Entry:
    """One distinct config of a sweep and where it sits in the grid."""

    kwargs: dict[str, Any]  # as given: what the call receives
    config: dict[str, Any]  # bound, defaults applied: what is recorded
    key: str | None  # config_key (only when configs are skipped or claimed)
    positions: list[int] = field(default_factory=list)


class _Plan:
    """The configs of one sweep: validated, deduplicated, and their outcomes."""

    def __init__(self, exp: Experiment[Any, Any], grid: Any, skip: str | None) -> None:
        self.exp = exp
        configs = _grid_configs(exp, grid)
        _check_names(exp, configs)
        self.results: list[Observation | None] = [None] * len(configs)
        self.todo: list[_Entry] = []
        by_key: dict[str, _Entry] = {}
        for position, kwargs in enumerate(configs):
            try:
                config = exp.bind((), kwargs)
            except TypeError as exc:
                raise TypeError(f"Config {position} of the grid, {kwargs!r}: {exc}") from None
            if skip is None:  # every listed config runs, repeats included
                self.todo.append(_Entry(kwargs, config, None, [position]))
                continue
            key = exp.config_key(config)
            if key not in by_key:
                by_key[key] = _Entry(kwargs, config, key)
                self.todo.append(by_key[key])
            by_key[key].positions.append(position)
        self.total = len(self.todo)
        self.done = self.failed = self.skipped = 0
        self.progress: _Progress | None = None
        if skip is not None and self.todo:
            # the latest completed run of each config with the current code
            completed = {exp.config_key(o.config): o for o in exp.observations()}
            todo = []
            for entry in self.todo:
                found = completed.get(entry.key)  # type: ignore[arg-type]
                if found is None:
                    todo.append(entry)
                else:
                    self._fill(entry, found)
                    self.skipped += 1
            self.todo = todo

    def _fill(self, entry: _Entry, observation: Observation) -> None:
        for position in entry.positions:
            self.results[position] = observation

    def finish(self, entry: _Entry, observation: Observation, skipped: bool = False) -> None:
        self._fill(entry, observation)
        if skipped:
            self.skipped += 1
        elif observation.metadata.get("status", COMPLETED) == COMPLETED:
            self.done += 1
        else:
            self.failed += 1
        if self.progress is not None:
            self.progress.update(self)

    def observations(self) -> list[Observation]:
        missing = [i for i, o in enumerate(self.results) if o is None]
        assert not missing, f"sweep finished without an observation for configs {missing}"
        return self.results  # type: ignore[return-value]


class _Progress:
    """A tqdm bar on stderr: done / failed / skipped and an ETA; only on a terminal."""

    def __init__(self, plan: _Plan, enabled: bool) -> None:
        self.bar: Any = None
        stream = sys.stderr
        if not (enabled and stream is not None and _isatty(stream)):
            return
        from tqdm import tqdm  # imported only when a bar is shown

        self.bar = tqdm(
            total=plan.total,
            initial=plan.skipped,
            desc=plan.exp.name,
            unit="run",
            file=stream,
            dynamic_ncols=True,
        )
        self._postfix(plan)

    def _postfix(self, plan: _Plan) -> None:
        self.bar.set_postfix(
            done=plan.done, failed=plan.failed, skipped=plan.skipped, refresh=False
        )

    def update(self, plan: _Plan) -> None:
        if self.bar is not None:
            self._postfix(plan)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class _Ticket:
    """A config's claim, as handed to the process that runs it."""

    path: str
    token: str
    stale_after: float | None = None


def _ticket(exp: Experiment[Any, Any], entry: _Entry, stale_after: float | None) -> _Ticket:
    path = storage.internal_dir(exp.root, CLAIMS, entry.key or "")
    return _Ticket(str(path), uuid.uuid4().hex, stale_after)


def _claim_bytes(token: str) -> bytes:
    holder = {**storage.process_info(), "token": token, "since": time.time()}
    return json.dumps(holder).encode()


def _read_claim(path: str) -> tuple[dict[str, Any] | None, float]:
    """``(holder, mtime)``; ``holder`` is ``None`` if there is no claim, ``{}`` if unreadable."""
    try:
        mtime = os.stat(path).st_mtime
        holder = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return None, 0.0
    except ValueError:
        return {}, mtime
    return (holder if isinstance(holder, dict) else {}), mtime


def _is_mine(holder: dict[str, Any]) -> bool:
    return holder.get("host") == storage.HOST and holder.get("pid") == os.getpid()


def _stale(holder: dict[str, Any], mtime: float, stale_after: float | None) -> bool:
    """Whether a claim may be taken over: its holder is dead, or it was left too long."""
    age = time.time() - mtime
    if stale_after is not None and age > stale_after:
        return True
    if not holder:
        return age > _UNREADABLE_GRACE
    return storage.process_gone(holder)


def _lock_path(ticket: _Ticket) -> Path:
    path = Path(ticket.path)
    return path.parent.parent / "locks" / f"sweep-{path.name}.lock"


def _try_claim(ticket: _Ticket) -> bool:
    """Claim the config of ``ticket``, taking over a stale claim; ``False`` if held."""
    data = _claim_bytes(ticket.token)
    holder, mtime = _read_claim(ticket.path)  # waiting on a held claim writes nothing
    if holder is None:
        if storage.exclusive_write(ticket.path, data):
            return True
        holder, mtime = _read_claim(ticket.path)
    if holder is not None and not _stale(holder, mtime, ticket.stale_after):
        return False
    # Taking over is rare: a lock keeps two takers (and a job adopting a claim
    # from another host) from interleaving; exclusive create still decides.
    with storage.file_lock(_lock_path(ticket)):
        holder, mtime = _read_claim(ticket.path)
        if holder is not None:
            if not _stale(holder, mtime, ticket.stale_after):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ticket.path)
        return storage.exclusive_write(ticket.path, data)


def _adopt(ticket: _Ticket) -> bool:
    """Make the running process the holder of ``ticket``'s claim; ``False`` if it was lost."""
    holder, _ = _read_claim(ticket.path)
    if not holder or holder.get("token") != ticket.token:
        return False  # taken over meanwhile: someone else runs this config
    if _is_mine(holder):
        return True
    if holder.get("host") == storage.HOST and not storage.process_gone(holder):
        # a live holder's claim is never taken over (stale_after aside: the driver
        # touches it), so nobody else writes it now: no lock needed
        storage.atomic_write(ticket.path, _claim_bytes(ticket.token), fsync=False)
        return True
    # a dead holder, or another host's: a takeover may be racing us (it holds the lock)
    with storage.file_lock(_lock_path(ticket)):
        holder, _ = _read_claim(ticket.path)
        if not holder or holder.get("token") != ticket.token:
            return False
        storage.atomic_write(ticket.path, _claim_bytes(ticket.token), fsync=False)
    return True


def _release(ticket: _Ticket, only_unadopted: bool = False) -> None:
    """Remove ``ticket``'s claim if it is still this ticket's.

    With ``only_unadopted`` the claim stays if a worker adopted it: that worker
    removes it when its run ends.
    """
    holder, _ = _read_claim(ticket.path)
    if not holder or holder.get("token") != ticket.token:
        return
    if only_unadopted and not _is_mine(holder):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ticket.path)


def _touch(ticket: _Ticket) -> None:
    holder, _ = _read_claim(ticket.path)
    if holder and holder.get("token") == ticket.token:
        with contextlib.suppress(OSError):
            os.utime(ticket.path)


@contextlib.contextmanager
def _heartbeat(ticket: _Ticket | None) -> Iterator[None]:
    """Keep touching the claim while the run lasts, so ``stale_after`` never expires it."""
    if ticket is None or ticket.stale_after is None:
        yield
        return
    stop = threading.Event()
    interval = ticket.stale_after / 4

    def beat() -> None:
        while not stop.wait(interval):
            _touch(ticket)

    thread = threading.Thread(target=beat, name="digital-experiments-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _indexed(exp: Experiment[Any, Any], entry: _Entry) -> Observation | None:
    """The completed run of ``entry`` that another sweep indexed, if any."""
    try:
        id = storage.internal_dir(exp.root, "cache", entry.key or "").read_text()
    except OSError:
        return None
    try:
        observation = exp.backend.load(id)
    except Exception:
        return None
    if (
        observation.metadata.get("status", COMPLETED) == COMPLETED
        and observation.metadata.get("code") == exp.code
    ):
        return observation
    return None


# ---------------------------------------------------------------- the worker side


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to run one config (small and picklable)."""

    target: Any  # the decorated function, or the Experiment itself
    backend: Backend  # the driver's: where the record goes, whatever the worker's env
    kwargs: dict[str, Any]
    ticket: _Ticket | None
    # unique per submission: an executor that deduplicates equal calls
    # (Dask's pure=True) still runs each one
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class _Outcome:
    """What a worker sends back: which record the run ended with."""

    id: str | None  # None: no record (claim lost, or the run could not be recorded)
    status: str
    error: BaseException | None = None
    lost: bool = False


# per worker process: each experiment re-rooted at the driver's backend
_REROOTED: dict[tuple[int, type, Path], tuple[Experiment[Any, Any], Experiment[Any, Any]]] = {}


def _worker_experiment(target: Any, backend: Backend) -> Experiment[Any, Any]:
    """The experiment to run, writing where the driver's backend says."""
    from .experiment import as_experiment

    exp = as_experiment(target)
    mine = exp.backend
    if mine is backend or (type(mine) is type(backend) and mine.root == backend.root):
        return exp
    key = (id(exp), type(backend), backend.root)
    cached = _REROOTED.get(key)
    if cached is not None and cached[0] is exp:
        return cached[1]
    rooted = copy.copy(exp)
    rooted.backend = backend
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


async def _await_call(
    exp: Experiment[Any, Any], kwargs: dict[str, Any], sink: list[Observation]
) -> None:
    RECORDS.set(sink)  # this task's own context
    await call_async(exp, (), kwargs)


def _call_recorded(
    exp: Experiment[Any, Any], kwargs: dict[str, Any]
) -> tuple[Observation | None, BaseException | None]:
    """Call ``exp(**kwargs)``: ``(the observation it recorded, the exception it raised)``."""
    sink: list[Observation] = []
    token = RECORDS.set(sink)
    error: BaseException | None = None
    try:
        if exp.is_async:
            anyio.run(_await_call, exp, kwargs, sink)
        else:
            call_sync(exp, (), kwargs)
    except Exception as exc:  # recorded as failed by the run itself
        error = exc
    finally:
        RECORDS.reset(token)
    return (sink[-1] if sink else None), error


def _run_one(job: _Job) -> _Outcome:
    """Run one config in whatever process the executor chose (submitted by :func:`sweep`).

    Never raises for a failing run: the run is recorded as failed and the
    exception comes back in the outcome, so a sweep can keep going (and
    submitit's debug executor does not stop in a debugger).
    """
    exp = _worker_experiment(job.target, job.backend)
    ticket = job.ticket
    if ticket is not None and not _adopt(ticket):
        return _Outcome(None, FAILED, lost=True)
    try:
        with _heartbeat(ticket):
            observation, error = _call_recorded(exp, job.kwargs)
        status = FAILED if observation is None else observation.status
        if ticket is not None and observation is not None and status == COMPLETED:
            exp._remember(observation)  # before the claim goes: others look here
    finally:
        if ticket is not None:
            _release(ticket)
    return _Outcome(observation.id if observation else None, status, _portable(error))


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


# ---------------------------------------------------------------- the driver side


def _shippable(exp: Experiment[Any, Any]) -> Any:
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


def _load(exp: Experiment[Any, Any], id: str) -> Observation:
    """The record ``id`` a worker wrote, retrying briefly for slow shared filesystems."""
    for delay in (0.05, 0.25, 1.0, None):
        try:
            return exp.backend.load(id)
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


def _unrecorded(entry: _Entry, error: BaseException) -> Observation:
    """A stand-in for a config whose run left no record (its worker was lost)."""
    metadata = {"status": FAILED, "error": error_info(error), "recorded": False}
    return Observation("", entry.config, None, metadata)


def _raise(error: BaseException, exp: Experiment[Any, Any], observation: Observation) -> None:
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


class _Driver:
    """Claims, submits and collects the configs of one synchronous sweep."""

    def __init__(
        self,
        plan: _Plan,
        executor: Any,
        on_error: str,
        claims: bool,
        window: int | None,
        stale_after: float | None,
    ) -> None:
        self.plan = plan
        self.exp = plan.exp
        self.executor = executor
        self.on_error = on_error
        self.claims = claims
        self.window = window
        self.stale_after = stale_after
        inline = isinstance(executor, _Inline)
        self.target = self.exp if inline else _shippable(self.exp)
        self.queue: deque[_Entry] = deque(plan.todo)
        self.in_flight: dict[Any, tuple[_Entry, _Ticket | None]] = {}
        self.deferred: list[_Entry] = []
        self.next_poll = self.next_beat = 0.0
        self.poll_delay = POLL_INTERVAL

    def run(self) -> None:
        try:
            while self.queue or self.in_flight or self.deferred:
                while self.queue and (self.window is None or len(self.in_flight) < self.window):
                    self._start(self.queue.popleft())
                if self.in_flight:
                    for future in self._wait(self._timeout()):
                        self._finish(future)
                elif self.deferred:
                    time.sleep(max(0.0, self.next_poll - time.monotonic()))
                self._poll_deferred()
                self._beat()
        finally:
            self._abandon()

    def _timeout(self) -> float | None:
        wakes = []
        if self.deferred:
            wakes.append(self.next_poll)
        if self.stale_after is not None:
            wakes.append(self.next_beat)
        return max(0.0, min(wakes) - time.monotonic()) if wakes else None

    def _start(self, entry: _Entry) -> None:
        ticket = None
        if self.claims:
            ticket = _ticket(self.exp, entry, self.stale_after)
            claimed = _try_claim(ticket)
            # completed by another sweep since we listed the runs?
            found = _indexed(self.exp, entry)
            if found is not None:
                if claimed:
                    _release(ticket)
                self.plan.finish(entry, found, skipped=True)
                return
            if not claimed:
                self._defer(entry)
                return
        job = _Job(self.target, self.exp.backend, entry.kwargs, ticket)
        try:
            future = self.executor.submit(_run_one, job)
        except BaseException:
            if ticket is not None:
                _release(ticket)
            raise
        self.in_flight[future] = (entry, ticket)

    def _defer(self, entry: _Entry) -> None:
        if not self.deferred:
            self.next_poll = time.monotonic() + self.poll_delay
            self.poll_delay = min(self.poll_delay * 1.5, MAX_POLL_INTERVAL)
        self.deferred.append(entry)

    def _poll_deferred(self) -> None:
        """Look again at configs held by others: done by now, or free to claim?"""
        if not self.deferred or time.monotonic() < self.next_poll:
            return
        entries, self.deferred = self.deferred, []
        self.queue.extendleft(reversed(entries))

    def _beat(self) -> None:
        if self.stale_after is None or time.monotonic() < self.next_beat:
            return
        self.next_beat = time.monotonic() + self.stale_after / 4
        for _, ticket in self.in_flight.values():
            if ticket is not None:
                _touch(ticket)

    def _wait(self, timeout: float | None) -> list[Any]:
        futures = list(self.in_flight)
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

    def _finish(self, future: Any) -> None:
        entry, ticket = self.in_flight.pop(future)
        try:
            outcome: _Outcome = future.result()
        except Exception as exc:  # the executor lost the call (worker died, job cancelled)
            if ticket is not None:
                _release(ticket)
            if self.on_error == "raise":
                raise
            self.plan.finish(entry, _unrecorded(entry, exc))
            return
        if outcome.lost:  # another sweep took the claim over: wait for its run
            self._defer(entry)
            return
        if outcome.id is None:
            error = outcome.error or RuntimeError("the run left no record")
            observation = _unrecorded(entry, error)
        else:
            observation = _load(self.exp, outcome.id)
        self.plan.finish(entry, observation)
        if outcome.error is not None and self.on_error == "raise":
            _raise(outcome.error, self.exp, observation)

    def _abandon(self) -> None:
        """On the way out early (an error, Ctrl-C): give back the claims of calls
        that have not started, so no live process keeps holding them.

        A call that starts later anyway finds its claim gone and does not run.
        A concurrent.futures call that could not be cancelled is running (or
        queued in a process pool, which will run it): its worker releases the
        claim. Other futures are not cancelled: submitit's cancel kills running
        jobs, and a started job holds (has adopted) its claim already.
        """
        for future, (_, ticket) in self.in_flight.items():
            is_cf = isinstance(future, cf.Future)
            cancelled = is_cf and future.cancel()
            if ticket is not None and (cancelled or not is_cf):
                _release(ticket, only_unadopted=True)
        self.in_flight.clear()


def _is_done(future: Any) -> bool:
    done = getattr(future, "done", None)
    return bool(done()) if callable(done) else True


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
    from .experiment import as_experiment

    exp = as_experiment(experiment)
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
    plan = _Plan(exp, grid, skip)
    window: int | None = 1
    if executor is None:
        executor = _Inline()
    else:
        capacity = _capacity(executor)
        window = max_pending or (2 * capacity if capacity else None)
    plan.progress = _Progress(plan, progress)
    try:
        _Driver(plan, executor, on_error, skip is not None, window, stale_after).run()
    finally:
        plan.progress.close()
    return plan.observations()


# ---------------------------------------------------------------- async


async def _acall_recorded(
    exp: Experiment[Any, Any], kwargs: dict[str, Any]
) -> tuple[Observation | None, BaseException | None]:
    sink: list[Observation] = []
    token = RECORDS.set(sink)  # this task's own context
    error: BaseException | None = None
    try:
        if exp.is_async:
            await call_async(exp, (), kwargs)
        else:  # a sync experiment runs in a worker thread (which copies the context)
            await anyio.to_thread.run_sync(call_sync, exp, (), kwargs)
    except Exception as exc:
        error = exc
    finally:
        RECORDS.reset(token)
    return (sink[-1] if sink else None), error


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
    from .experiment import as_experiment

    exp = as_experiment(experiment)
    _check_options(skip, on_error, stale_after)
    if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
        raise ValueError(f"max_concurrency= takes an int >= 1, not {max_concurrency!r}.")
    plan = await anyio.to_thread.run_sync(_Plan, exp, grid, skip)
    plan.progress = _Progress(plan, progress)
    limiter = anyio.CapacityLimiter(max_concurrency)
    failures: list[BaseException] = []
    claims = skip is not None

    async def run(entry: _Entry) -> None:
        delay = POLL_INTERVAL
        while True:
            async with limiter:
                if await _arun(entry):
                    return
            await anyio.sleep(delay)  # held by another process: look again
            delay = min(delay * 1.5, MAX_POLL_INTERVAL)

    async def _arun(entry: _Entry) -> bool:
        ticket = _ticket(exp, entry, stale_after) if claims else None
        if ticket is not None:
            claimed = await anyio.to_thread.run_sync(_try_claim, ticket)
            found = await anyio.to_thread.run_sync(_indexed, exp, entry)
            if found is not None:
                if claimed:
                    await anyio.to_thread.run_sync(_release, ticket)
                plan.finish(entry, found, skipped=True)
                return True
            if not claimed:
                return False
        try:
            with _heartbeat(ticket):
                observation, error = await _acall_recorded(exp, entry.kwargs)
            if ticket is not None and observation is not None and observation.status == COMPLETED:
                await anyio.to_thread.run_sync(exp._remember, observation)
        finally:
            if ticket is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_release, ticket)
        if observation is None:
            observation = _unrecorded(entry, error or RuntimeError("the run left no record"))
        else:
            observation = await anyio.to_thread.run_sync(_load, exp, observation.id)
        plan.finish(entry, observation)
        if error is not None and on_error == "raise" and not failures:
            failures.append(error)
            group.cancel_scope.cancel()
        return True

    try:
        async with anyio.create_task_group() as group:
            for entry in plan.todo:
                group.start_soon(run, entry)
    finally:
        plan.progress.close()
    if failures:
        raise failures[0]
    return plan.observations()
