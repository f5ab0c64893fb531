"""The life of one call: claim, run, publish.

The blocking steps are methods of :class:`Call`; a sync call runs them inline
and an async call runs them in a worker thread (``anyio.to_thread``), so both
colours share one implementation and the event loop never blocks on disk.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import signals, storage
from .backends import FileBackend, PickleBackend
from .callbacks import Logging
from .context import TIME_FORMAT, Run, activate, enter, leave
from .core import Backend, Callback, Observation
from .errors import CallbackError, StorageError, UnstorableValueError

if TYPE_CHECKING:
    from filelock import FileLock

    from .experiment import Experiment

RUNNING, COMPLETED, FAILED, INTERRUPTED, ABANDONED = (
    "running",
    "completed",
    "failed",
    "interrupted",
    "abandoned",
)
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, ABANDONED)

# A sweep sets this to a list to learn which record a call ends with (runs
# started in its context append their final observation; the outer run's comes
# last, after any nested run's). A cache hit appends the stored observation.
RECORDS: ContextVar[list[Observation] | None] = ContextVar(
    "digital_experiments_records", default=None
)


def report(observation: Observation) -> Observation:
    """Append ``observation`` to the :data:`RECORDS` list of this context, if any."""
    sink = RECORDS.get()
    if sink is not None:
        sink.append(observation)
    return observation


def status_of(exc: BaseException, cancelled: type[BaseException] | None = None) -> str:
    """``interrupted`` for Ctrl-C, exits and cancellation; ``failed`` otherwise."""
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)
    if cancelled is not None:
        interrupts += (cancelled,)
    return INTERRUPTED if isinstance(exc, interrupts) else FAILED


def error_info(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Call:
    """One call of an experiment, from claim to published record.

    Only the process that claimed the run publishes it: a child forked inside
    the run that exits never rewrites its parent's record.
    """

    def __init__(self, experiment: Experiment[Any, Any], config: dict[str, Any]) -> None:
        self.experiment = experiment
        self.config = config  # as passed: the function receives these very objects
        self.snapshot: dict[str, Any] = config  # as recorded: taken before the function runs
        self.run: Run
        self.owner = 0  # the pid that claimed the run
        self._lock = threading.Lock()
        self._claimed = False
        self._orphaned: BaseException | None = None

    # -- the blocking steps

    def claim(self) -> Run:
        """Snapshot the config, claim a unique id and publish the ``running`` record.

        Raises
        ------
        UnstorableValueError
            If the backend cannot store the config (nothing is written).
        StorageError
            If the record cannot be written.
        """
        exp = self.experiment
        self.snapshot = snapshot(exp.backend, self.config)
        started = datetime.now()
        metadata = {
            "status": RUNNING,
            **exp.code_identity,
            "process": storage.process_info(),
            "timing": {"start": started.strftime(TIME_FORMAT)},
        }
        observation = Observation(storage.new_id(started), self.snapshot, None, metadata)
        try:
            observation = exp.backend.claim(observation)
        except OSError as exc:
            raise StorageError(
                f"Could not create a record in {str(exp.backend.root)!r}: {exc}. "
                "Check that the folder is writable, or pass another root=."
            ) from exc
        self.run = Run(observation.id, exp.backend.root, exp.name)
        self.owner = os.getpid()
        with self._lock:
            self._claimed, orphaned = True, self._orphaned
        if orphaned is not None:
            self._interrupt(orphaned)
        return self.run

    def orphan(self, exc: BaseException) -> None:
        """The async caller was cancelled (``exc``) while :meth:`claim` ran in its thread.

        A worker thread cannot be stopped, so the claim may still land; record
        that run as interrupted rather than leave it ``running`` for ever.
        """
        with self._lock:
            claimed, self._orphaned = self._claimed, exc
        if claimed:  # in a thread: the caller is an event loop
            threading.Thread(target=self._interrupt, args=(exc,)).start()

    def _interrupt(self, exc: BaseException) -> None:
        with activate(self.run):
            self.fail(exc, INTERRUPTED)

    def start(self) -> None:
        for callback in self.experiment.callbacks:
            callback.start(self.run.id, self.config)

    def complete(self, result: Any) -> Any:
        """Run the ``end`` callbacks and publish the ``completed`` record.

        Whatever goes wrong here, the record ends ``completed`` or ``failed`` and
        the exception raised carries ``result``.
        """
        if os.getpid() != self.owner:
            return result  # a forked child: its parent publishes the run
        observation = Observation(self.run.id, self.snapshot, result, {"status": COMPLETED})
        failure = self._end_callbacks(observation)
        if failure is not None:
            callback, exc = failure
            error = CallbackError(
                f"Callback {callback!r} raised {exc!r} after run {self.run.id!r} of "
                f"{self.experiment.name} completed. The run is recorded as failed; its "
                "result is kept on this error's .result. Fix the callback, or remove it.",
                result,
            )
            error.__cause__ = exc
            self._record_failure(observation, error)
            raise error
        self._publish(observation, result)
        report(observation)
        if self.experiment.cache:
            self._index(observation)
        return result

    def fail(self, exc: BaseException, status: str) -> None:
        """Record the run as ``failed`` or ``interrupted``; never raises."""
        if os.getpid() != self.owner:
            return  # a forked child: its parent publishes the run
        observation = Observation(
            self.run.id, self.snapshot, None, {"status": status, "error": error_info(exc)}
        )
        failure = self._end_callbacks(observation)
        if failure is not None:  # must not hide the run's own exception
            callback, cb_exc = failure
            warnings.warn(
                f"Callback {callback!r} failed while recording run {self.run.id!r}: {cb_exc!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        self._write_final(observation)
        report(observation)

    # -- helpers

    def _end_callbacks(self, observation: Observation) -> tuple[Callback, Exception] | None:
        """Call every ``end`` callback (in reverse); the first that raised, and how."""
        failure = None
        for callback in reversed(self.experiment.callbacks):
            try:
                callback.end(observation)
            except Exception as exc:
                failure = failure or (callback, exc)
        return failure

    def _publish(self, observation: Observation, result: Any) -> None:
        exp = self.experiment
        error: StorageError | UnstorableValueError
        try:
            exp.backend.record(observation)
            return
        except OSError as exc:
            error = StorageError(
                f"Could not write the record of run {observation.id!r} to "
                f"{str(exp.backend.root)!r}: {exc}. The result is kept on this "
                "error's .result.",
                result,
            )
            cause: Exception = exc
        except Exception as exc:
            field = self._unstorable_field(observation)
            error = UnstorableValueError(
                f"The {type(exp.backend).__name__} cannot store {field} of run "
                f"{observation.id!r} ({exc}). {_storable_hint(exp.backend)} The result "
                "is kept on this error's .result.",
                field,
                result,
            )
            cause = exc
        error.__cause__ = cause
        failed = observation._replace(result=None)
        failed.metadata.update(status=FAILED, error=error_info(error))
        self._write_final(failed)
        report(failed)
        raise error

    def _record_failure(self, observation: Observation, error: BaseException) -> None:
        failed = observation._replace(metadata={**observation.metadata})
        failed.metadata.update(status=FAILED, error=error_info(error))
        self._write_final(failed)
        report(failed)

    def _write_final(self, observation: Observation) -> None:
        """Publish a final record, however much of it can be stored; never raises.

        Values the backend rejects become their repr; where even that cannot be
        written (a full disk) the result is left out, as the smallest record.
        """
        backend = self.experiment.backend
        problem: Exception | None = None
        for make in (_as_is, self._storable, self._storable_without_result):
            try:
                backend.record(make(observation))
                return
            except Exception as exc:
                problem = problem or exc
        warnings.warn(
            f"Could not record the end of run {observation.id!r} in "
            f"{str(backend.root)!r} ({problem!r}); it stays 'running' until this "
            "process exits, then reads as 'abandoned'.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _index(self, observation: Observation) -> None:
        try:
            self.experiment._remember(observation)
        except OSError as exc:  # the index only saves a scan: never lose the result over it
            warnings.warn(
                f"Could not index run {observation.id!r} for cache=True ({exc}). The run "
                "is recorded; later calls find it by reading the runs instead.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _storable(self, observation: Observation) -> Observation:
        """``observation`` with every value the backend rejects replaced by its repr."""
        config = {
            k: v if self._storable_value(v) else repr(v) for k, v in observation.config.items()
        }
        result = observation.result if self._storable_value(observation.result) else None
        metadata = {
            k: v if self._storable_value(v) else repr(v) for k, v in observation.metadata.items()
        }
        return Observation(observation.id, config, result, metadata)

    def _storable_without_result(self, observation: Observation) -> Observation:
        return self._storable(observation._replace(result=None))

    def _storable_value(self, value: Any) -> bool:
        return storable(self.experiment.backend, value)

    def _unstorable_field(self, observation: Observation) -> str:
        for key, value in observation.config.items():
            if not self._storable_value(value):
                return f"config.{key}"
        if not self._storable_value(observation.result):
            return "result"
        for key, value in observation.metadata.items():
            if not self._storable_value(value):
                return f"metadata.{key}"
        return "the record"


def _as_is(observation: Observation) -> Observation:
    return observation


def storable(backend: Backend, value: Any) -> bool:
    """Whether ``backend`` can store ``value`` (always ``True`` for non-file backends)."""
    if not isinstance(backend, FileBackend):
        return True  # nothing to probe with: assume the best
    try:
        backend.dumps(Observation("probe", {"value": value}, None, {}))
    except Exception:
        return False
    return True


def _storable_hint(backend: Backend) -> str:
    if isinstance(backend, PickleBackend):
        return (
            "Use values pickle can store: module-level functions and classes, not "
            "lambdas, local classes, open files, locks or generators."
        )
    return "Use values this format can store, or use @experiment(backend='pickle')."


def snapshot(backend: Backend, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as it will be recorded, copied now so the function cannot change it.

    A file backend round-trips it through its own format (so the record holds
    exactly what was passed, and an unstorable value is refused before the
    function runs); other backends get a deep copy.

    Raises
    ------
    UnstorableValueError
        If ``backend`` cannot store a value of ``config``.
    """
    if not isinstance(backend, FileBackend):
        try:
            return copy.deepcopy(config)
        except Exception:  # an uncopyable value: record it as it is at the end
            return config
    try:
        return backend.loads(backend.dumps(Observation("", config, None, {}))).config
    except Exception as exc:
        field = next(
            (f"config.{k}" for k, v in config.items() if not storable(backend, v)), "config"
        )
        value = config.get(field.removeprefix("config."), config)
        raise UnstorableValueError(
            f"The {type(backend).__name__} cannot store {field} = {_short(value)} ({exc}), "
            f"so the run was not started. {_storable_hint(backend)}",
            field,
        ) from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-15:]}"


def _hit(experiment: Experiment[Any, Any], hit: Observation) -> Any:
    """The result of a cache hit, announced by a verbose ``Logging`` callback."""
    for callback in experiment.callbacks:
        if isinstance(callback, Logging):
            callback.cache_hit(hit)
    return report(hit).result


def call_sync(
    experiment: Experiment[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run and record one synchronous call."""
    config = experiment.bind(args, kwargs)
    if not experiment.cache:
        return _execute(experiment, config, args, kwargs)
    hit = experiment._lookup(config)
    if hit is not None:
        return _hit(experiment, hit)
    with storage.file_lock(experiment._cache_lock_path(config)):
        hit = experiment._lookup(config)
        if hit is not None:
            return _hit(experiment, hit)
        return _execute(experiment, config, args, kwargs)


def _execute(
    experiment: Experiment[Any, Any],
    config: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    call = Call(experiment, config)
    token = None
    with signals.sigterm_interrupts():
        try:
            with signals.held():  # a signal now must not leave the claim unrecorded
                token = enter(call.claim())
            call.start()
            result = experiment.function(*args, **kwargs)
        except BaseException as exc:
            if token is not None:
                with signals.held():
                    call.fail(exc, status_of(exc))
            raise
        else:
            with signals.held():
                return call.complete(result)
        finally:
            if token is not None:
                leave(token)


async def call_async(
    experiment: Experiment[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run and record one call of an ``async`` experiment."""
    config = experiment.bind(args, kwargs)
    if not experiment.cache:
        return await _execute_async(experiment, config, args, kwargs)
    hit = await anyio.to_thread.run_sync(experiment._lookup, config)
    if hit is not None:
        return _hit(experiment, hit)
    lock = await anyio.to_thread.run_sync(storage.make_lock, experiment._cache_lock_path(config))
    await _acquire_async(lock)
    try:
        hit = await anyio.to_thread.run_sync(experiment._lookup, config)
        if hit is not None:
            return _hit(experiment, hit)
        return await _execute_async(experiment, config, args, kwargs)
    finally:
        lock.release()


async def _acquire_async(lock: FileLock) -> None:
    """Wait for ``lock`` by polling, never by blocking a worker thread.

    A blocking acquire would pin one worker thread per waiting task, starving
    the run that holds the lock of the threads it needs to finish, and trips
    filelock's deadlock check when a reused worker thread still has another
    task's hold registered.
    """
    delay = 0.001
    while True:
        attempt = _Attempt(lock)
        try:
            if await anyio.to_thread.run_sync(attempt):
                return
        except BaseException:
            attempt.abandon()
            raise
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)


class _Attempt:
    """One non-blocking try at a lock in a worker thread.

    A native asyncio cancel can land while the try runs (anyio cannot shield
    against it); :meth:`abandon` then gives back the hold the try takes.
    """

    def __init__(self, lock: FileLock) -> None:
        self.lock = lock
        self.guard = threading.Lock()
        self.done = self.abandoned = False

    def __call__(self) -> bool:
        acquired = storage.try_acquire(self.lock)
        with self.guard:
            self.done = True
            if acquired and self.abandoned:
                self.lock.release()
                return False
        return acquired

    def abandon(self) -> None:
        with self.guard:
            self.abandoned = True
            if self.done and self.lock.is_locked:
                self.lock.release()


async def _execute_async(
    experiment: Experiment[Any, Any],
    config: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    call = Call(experiment, config)
    scope = anyio.CancelScope()  # SIGTERM cancels it: the run is then recorded interrupted
    with _sigterm_cancels(scope):
        try:
            run = await anyio.to_thread.run_sync(call.claim)
        except BaseException as exc:  # a native asyncio cancel is not shielded
            call.orphan(exc)
            raise
        cancelled = anyio.get_cancelled_exc_class()
        token = enter(run)
        try:
            try:
                await anyio.to_thread.run_sync(call.start)
                with scope:
                    result = await experiment.function(*args, **kwargs)
                if scope.cancelled_caught:
                    raise signals.Terminated()
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(call.fail, exc, status_of(exc, cancelled))
                raise
            with anyio.CancelScope(shield=True):
                result = await anyio.to_thread.run_sync(call.complete, result)
        finally:
            leave(token)
    if signals.terminating():  # SIGTERM came while the record was being finished
        raise signals.Terminated()
    return result


@contextlib.contextmanager
def _sigterm_cancels(scope: anyio.CancelScope) -> Iterator[None]:
    """While the body runs, SIGTERM cancels ``scope`` (runs on the main thread's loop only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    native: Any = anyio.lowlevel.current_token().native_token
    # asyncio's loop and trio's token each offer one call that is safe from a signal handler
    schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
    with signals.cancel_on_sigterm(lambda: schedule(scope.cancel)):
        yield
