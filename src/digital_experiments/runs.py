"""The life of one call: claim, run, publish.

The blocking steps are methods of :class:`Call`; a sync call runs them inline
and an async call runs them in a worker thread (``anyio.to_thread``), so both
colours share one implementation and the event loop never blocks on disk.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from . import storage
from .backends import FileBackend
from .context import TIME_FORMAT, Run, activate, enter, leave
from .core import Observation
from .errors import StorageError, UnstorableValueError

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


class Terminated(SystemExit):
    """SIGTERM arrived during a run in the main thread; exits with code 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` so the run is recorded as interrupted.

    Only in the main thread, and only where nobody else handles SIGTERM.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    """One call of an experiment, from claim to published record."""

    def __init__(self, experiment: Experiment[Any, Any], config: dict[str, Any]) -> None:
        self.experiment = experiment
        self.config = config
        self.run: Run
        self._lock = threading.Lock()
        self._claimed = False
        self._orphaned: BaseException | None = None

    # -- the blocking steps

    def claim(self) -> Run:
        """Claim a unique id and publish the ``running`` record."""
        exp = self.experiment
        started = datetime.now()
        metadata = {
            "status": RUNNING,
            **exp.code_identity,
            "process": storage.process_info(),
            "timing": {"start": started.strftime(TIME_FORMAT)},
        }
        observation = Observation(storage.new_id(started), self.config, None, metadata)
        try:
            observation = exp.backend.claim(observation)
        except OSError as exc:
            raise StorageError(
                f"Could not create a record in {str(exp.backend.root)!r}: {exc}. "
                "Check that the folder is writable, or pass another root=."
            ) from exc
        except Exception:  # the config cannot be stored: keep a readable stand-in
            observation = exp.backend.claim(self._storable(observation))
        self.run = Run(observation.id, exp.backend.root, exp.name)
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
        """Run the ``end`` callbacks and publish the ``completed`` record."""
        observation = Observation(self.run.id, self.config, result, {"status": COMPLETED})
        for callback in reversed(self.experiment.callbacks):
            callback.end(observation)
        self._publish(observation, result)
        report(observation)
        if self.experiment.cache:
            self.experiment._remember(observation)
        return result

    def fail(self, exc: BaseException, status: str) -> None:
        """Record the run as ``failed`` or ``interrupted``; never raises."""
        observation = Observation(
            self.run.id, self.config, None, {"status": status, "error": error_info(exc)}
        )
        for callback in reversed(self.experiment.callbacks):
            try:
                callback.end(observation)
            except Exception as cb_exc:  # must not hide the run's own exception
                warnings.warn(
                    f"Callback {callback!r} failed while recording run {self.run.id!r}: {cb_exc!r}",
                    stacklevel=2,
                )
        try:
            self._write(observation)
        except Exception as write_exc:
            warnings.warn(
                f"Could not record failed run {self.run.id!r}: {write_exc!r}",
                stacklevel=2,
            )
        report(observation)

    # -- helpers

    def _publish(self, observation: Observation, result: Any) -> None:
        exp = self.experiment
        try:
            exp.backend.record(observation)
        except OSError as exc:
            raise StorageError(
                f"Could not write the record of run {observation.id!r} to "
                f"{str(exp.backend.root)!r}: {exc}. The result is kept on this "
                "error's .result.",
                result,
            ) from exc
        except Exception as exc:
            field = self._unstorable_field(observation)
            error = UnstorableValueError(
                f"The {type(exp.backend).__name__} cannot store {field} of run "
                f"{observation.id!r} ({exc}). Return storable values, or use "
                "@experiment(backend='pickle'); the result is kept on this "
                "error's .result.",
                field,
                result,
            )
            error.__cause__ = exc
            failed = observation._replace(result=None)
            failed.metadata.update(status=FAILED, error=error_info(error))
            self._write(failed)
            raise error from exc

    def _write(self, observation: Observation) -> None:
        try:
            self.experiment.backend.record(observation)
        except OSError:
            raise
        except Exception:
            self.experiment.backend.record(self._storable(observation))

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

    def _storable_value(self, value: Any) -> bool:
        backend = self.experiment.backend
        if not isinstance(backend, FileBackend):
            return True  # nothing to probe with: assume the best
        try:
            backend.dumps(Observation("probe", {"value": value}, None, {}))
        except Exception:
            return False
        return True

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


def call_sync(
    experiment: Experiment[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run and record one synchronous call."""
    config = experiment.bind(args, kwargs)
    if not experiment.cache:
        return _execute(experiment, config, args, kwargs)
    hit = experiment._lookup(config)
    if hit is not None:
        return report(hit).result
    with storage.file_lock(experiment._cache_lock_path(config)):
        hit = experiment._lookup(config)
        if hit is not None:
            return report(hit).result
        return _execute(experiment, config, args, kwargs)


def _execute(
    experiment: Experiment[Any, Any],
    config: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    call = Call(experiment, config)
    token = enter(call.claim())
    try:
        with sigterm_as_exit():
            call.start()
            result = experiment.function(*args, **kwargs)
    except BaseException as exc:
        call.fail(exc, status_of(exc))
        raise
    else:
        return call.complete(result)
    finally:
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
        return report(hit).result
    lock = await anyio.to_thread.run_sync(storage.make_lock, experiment._cache_lock_path(config))
    await _acquire_async(lock)
    try:
        hit = await anyio.to_thread.run_sync(experiment._lookup, config)
        if hit is not None:
            return report(hit).result
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
    try:
        run = await anyio.to_thread.run_sync(call.claim)
    except BaseException as exc:  # a native asyncio cancel is not shielded
        call.orphan(exc)
        raise
    cancelled = anyio.get_cancelled_exc_class()
    token = enter(run)
    try:
        await anyio.to_thread.run_sync(call.start)
        result = await experiment.function(*args, **kwargs)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(call.fail, exc, status_of(exc, cancelled))
        raise
    else:
        with anyio.CancelScope(shield=True):
            return await anyio.to_thread.run_sync(call.complete, result)
    finally:
        leave(token)
