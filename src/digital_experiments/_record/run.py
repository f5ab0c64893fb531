"""One call of an experiment: bind, [cache], begin, run, end, publish.

:class:`Recorder` is the recording half of an experiment: the function, where
its records go, its callbacks and its cache index. :meth:`Recorder.record` (and
:meth:`Recorder.arecord` for ``async`` functions) makes one call and returns the
:class:`Observation` it ended with and the exception the function raised, so a
caller (the decorated function, a sweep's worker) learns both without any side
channel. The blocking steps are methods of :class:`_Call`; a sync call runs them
inline and an async call runs them in a worker thread (``anyio.to_thread``), so
both colours share them and the event loop never blocks on disk.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._runs import heartbeats, metrics
from .._runs.backends import POWER, Backend, FileBackend, PickleBackend, root_store
from .._runs.context import TIME_FORMAT, Run, activate, enter, leave
from .._runs.observation import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    Observation,
    ending,
    error_info,
)
from .._store import files as storage
from .._store import filesystems
from .._store.base import StoreError
from ..errors import CallbackError, StorageError, UnstorableValueError
from . import signals
from .cache import CacheIndex
from .callbacks import Callback, Logging, start_quickly
from .code import bind, code_identity

if TYPE_CHECKING:
    import anyio

# what a call ends with: the record (None if the run could not begin) and the
# exception the call raised, if any
Ending = tuple[Observation | None, Exception | None]


class Recorder:
    """How the calls of one function are recorded.

    Parameters
    ----------
    function : callable
        The function to record (sync or ``async``).
    backend : Backend
        Where records go.
    callbacks : list of Callback
        Called around every run, ``start`` in order and ``end`` in reverse.
    cache : bool
        Return stored results of configs already run with the current code.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        backend: Backend,
        callbacks: list[Callback],
        cache: bool = False,
    ) -> None:
        self.function = function
        self.backend = backend
        self.callbacks = list(callbacks)
        self.cache = cache
        self.name: str = function.__name__
        # metadata["code"] (the source, or None) and, without source, "code_hash"
        self.code_identity = code_identity(function)
        self.code = self.code_identity["code"]
        self.is_async = inspect.iscoroutinefunction(function)
        self._index = CacheIndex(backend, self.code_identity)
        self._skips_first = _is_method(function)
        self._signature: inspect.Signature | None = None  # built on first call

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_signature": None}

    @property
    def root(self) -> Path:
        """The experiment's folder."""
        return self.backend.root

    @property
    def index(self) -> CacheIndex:
        """The cache index of ``backend`` (which code may replace)."""
        if self._index.backend is not self.backend:
            self._index = CacheIndex(self.backend, self.code_identity)
        return self._index

    def rooted(self, backend: Backend) -> Recorder:
        """A copy of this recorder that writes to ``backend``."""
        copied = copy.copy(self)
        copied.backend = backend
        return copied

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The complete config of a call: every argument, defaults applied.

        Raises
        ------
        TypeError
            If the arguments do not fit the function's signature.
        """
        signature = self.__dict__.get("_signature")
        if signature is None:
            signature = self._signature = inspect.signature(self.function)
        try:
            config = bind(signature, args, kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}{signature}: {exc}") from None
        if self._skips_first and config:
            del config[next(iter(config))]  # a method's self is not config
        return config

    def config_key(self, config: Mapping[str, Any]) -> str:
        """A digest of ``config`` and the current code, the same in every process."""
        return self.index.key(config)

    # -- one call

    def record(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], extra: Mapping[str, Any] | None = None
    ) -> Ending:
        """Make and record one call of a sync function.

        Returns the run's final observation (a cache hit's stored one) and the
        exception the call raised; Ctrl-C, exits and SIGTERM propagate. ``extra``
        is added to the run's metadata (such as ``rerun_of``).
        """
        config = self.bind(args, kwargs)
        if not self.cache:
            return self._execute(config, args, kwargs, extra)
        hit = self.index.lookup(config)
        if hit is None:
            with self.index.exclusive(config) as hit:
                if hit is None:
                    return self._execute(config, args, kwargs, extra)
        return self._hit(hit), None

    async def arecord(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        extra: Mapping[str, Any] | None = None,
        then: Callable[[Ending], object] | None = None,
    ) -> Ending:
        """:meth:`record` for an ``async`` function; cancellation propagates.

        ``then`` is called with the ending in the worker thread that published
        the final record, right after it (a sweep gives its claim back there:
        one trip fewer); not for a cache hit, a run that could not begin, or a
        cancelled one. What it raises propagates.
        """
        import anyio.to_thread  # anyio loads with the first async call: import stays light

        config = self.bind(args, kwargs)
        if not self.cache:
            return await self._execute_async(config, args, kwargs, extra, then)
        hit = await anyio.to_thread.run_sync(self.index.lookup, config)
        if hit is None:
            async with self.index.aexclusive(config) as hit:
                if hit is None:
                    return await self._execute_async(config, args, kwargs, extra, then)
        return self._hit(hit), None

    def _hit(self, hit: Observation) -> Observation:
        """A cache hit, announced by a verbose ``Logging`` callback."""
        for callback in self.callbacks:
            if isinstance(callback, Logging):
                callback.cache_hit(hit)
        return hit

    def _execute(
        self,
        config: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        extra: Mapping[str, Any] | None,
    ) -> Ending:
        call = _Call(self, config, extra)
        token = None
        with signals.sigterm_interrupts():
            try:
                with signals.held():  # a signal now must not leave the run unrecorded
                    token = enter(call.begin())
                call.start()
                result = self.function(*args, **kwargs)
                with signals.held():
                    call.complete(result)
            except BaseException as exc:
                if token is not None and call.final is None:
                    with signals.held():
                        call.fail(exc, ending(exc))
                if not isinstance(exc, Exception):
                    raise
                return call.final, exc
            finally:
                if token is not None:
                    leave(token)
        return call.final, None

    async def _execute_async(
        self,
        config: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        extra: Mapping[str, Any] | None,
        then: Callable[[Ending], object] | None = None,
    ) -> Ending:
        import anyio.to_thread

        call = _Call(self, config, extra)

        def fail(exc: BaseException, status: str) -> None:
            call.fail(exc, status)
            if then is not None and isinstance(exc, Exception):
                then((call.final, exc))

        def complete(result: Any) -> Exception | None:
            error = None
            try:
                call.complete(result)
            except Exception as exc:  # the run's own error (a callback, storage)
                error = exc
            if then is not None:
                then((call.final, error))
            return error

        scope = anyio.CancelScope()  # SIGTERM cancels it: the run is then recorded interrupted
        error: Exception | None = None
        with _sigterm_cancels(scope):
            try:
                run = await anyio.to_thread.run_sync(call.begin)
            except BaseException as exc:  # a native asyncio cancel is not shielded
                call.orphan(exc)
                if not isinstance(exc, Exception):
                    raise
                return None, exc
            cancelled = anyio.get_cancelled_exc_class()
            token = enter(run)
            try:
                try:
                    if start_quickly(self.callbacks):  # no trip to a worker thread for them
                        call.start()
                    else:  # a user's hook may block: off the event loop
                        await anyio.to_thread.run_sync(call.start)
                    with scope:
                        result = await self.function(*args, **kwargs)
                    if scope.cancelled_caught:
                        raise signals.Terminated()
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(fail, exc, ending(exc, cancelled))
                    if not isinstance(exc, Exception):
                        raise
                    error = exc
                else:
                    with anyio.CancelScope(shield=True):
                        error = await anyio.to_thread.run_sync(complete, result)
            finally:
                leave(token)
        if signals.terminating():  # SIGTERM came while the record was being finished
            raise signals.Terminated()
        return call.final, error


def as_recorder(obj: Any) -> Recorder:
    """The recorder behind a decorated function (or ``obj`` itself)."""
    if isinstance(obj, Recorder):
        return obj
    found = getattr(obj, "experiment", None)
    if isinstance(found, Recorder):
        return found
    raise TypeError(
        f"Expected a function decorated with @experiment, not {obj!r}. "
        "Decorate it with @digital_experiments.experiment first."
    )


def _is_method(function: Callable[..., Any]) -> bool:
    """Whether ``function`` is defined in a class body and takes ``self``/``cls``."""
    parts = function.__qualname__.split(".")
    if len(parts) < 2 or parts[-2] == "<locals>":
        return False
    params = list(inspect.signature(function).parameters)
    return bool(params) and params[0] in ("self", "cls")


class _Call:
    """One call of an experiment, from its ``running`` record to its final one.

    Only the process that began the run publishes it: a child forked inside
    the run that exits never rewrites its parent's record.
    """

    def __init__(
        self, recorder: Recorder, config: dict[str, Any], extra: Mapping[str, Any] | None = None
    ) -> None:
        self.recorder = recorder
        self.extra = dict(extra or {})
        self.config = config  # as passed: the function receives these very objects
        self.snapshot: dict[str, Any] = config  # as recorded: taken before the function runs
        self.run: Run
        self.owner = 0  # the pid that began the run
        self._lock = threading.Lock()
        self._begun = False
        self._orphaned: BaseException | None = None
        self.final: Observation | None = None  # the record the run ended with

    # -- the blocking steps

    def begin(self) -> Run:
        """Snapshot the config, reserve a unique id and publish the ``running`` record.

        Raises
        ------
        UnstorableValueError
            If the backend cannot store the config (nothing is written).
        StorageError
            If the record cannot be written.
        """
        exp = self.recorder
        self.snapshot = snapshot(exp.backend, self.config)
        started = datetime.now()
        metadata = {
            **self.extra,
            "status": RUNNING,
            **exp.code_identity,
            "process": storage.process_info(),
            "timing": {"start": started.strftime(TIME_FORMAT)},
        }
        observation = Observation(storage.new_id(started), self.snapshot, None, metadata)
        try:
            observation = exp.backend.create(observation)
        except StoreError as exc:  # its message names the setting to fix
            raise StorageError(f"Could not create a record: {exc}") from exc
        except OSError as exc:
            raise StorageError(
                f"Could not create a record in {exp.backend.where!r}: {exc}. "
                "Check that the folder is writable, or pass another root=."
            ) from exc
        self.run = Run(observation.id, exp.backend.root)
        store = root_store(exp.backend)
        metrics.attach(self.run, store)
        if filesystems.shared(store):  # other hosts read its liveness from heartbeats
            heartbeats.start(store, observation.id)
        self.owner = os.getpid()
        with self._lock:
            self._begun, orphaned = True, self._orphaned
        if orphaned is not None:
            self._interrupt(orphaned)
        return self.run

    def orphan(self, exc: BaseException) -> None:
        """The async caller was cancelled (``exc``) while :meth:`begin` ran in its thread.

        A worker thread cannot be stopped, so the run may still begin; record
        that run as interrupted rather than leave it ``running`` for ever.
        """
        with self._lock:
            begun, self._orphaned = self._begun, exc
        if begun:  # in a thread: the caller is an event loop
            threading.Thread(target=self._interrupt, args=(exc,)).start()

    def _interrupt(self, exc: BaseException) -> None:
        with activate(self.run):
            self.fail(exc, INTERRUPTED)

    def start(self) -> None:
        for callback in self.recorder.callbacks:
            callback.start(self.run.id, self.config)

    def complete(self, result: Any) -> None:
        """Run the ``end`` callbacks and publish the ``completed`` record.

        Whatever goes wrong here, the record ends ``completed`` or ``failed`` and
        the exception raised carries ``result``.
        """
        observation = Observation(
            self.run.id, self.snapshot, result, {**self.extra, "status": COMPLETED}
        )
        if os.getpid() != self.owner:
            self.final = observation  # a forked child: its parent publishes the run
            return
        self._keep_outputs()
        failure = self._end_callbacks(observation)
        if failure is not None:
            callback, exc = failure
            error = CallbackError(
                f"Callback {callback!r} raised {exc!r} after run {self.run.id!r} of "
                f"{self.recorder.name} completed. The run is recorded as failed; its "
                "result is kept on this error's .result. Fix the callback, or remove it.",
                result,
            )
            error.__cause__ = exc
            self._record_failure(observation, error)
            raise error
        self._publish(observation, result)
        self.final = observation
        if self.recorder.cache:
            self._index(observation)

    def fail(self, exc: BaseException, status: str) -> None:
        """Record the run as ``failed`` or ``interrupted``; never raises."""
        if os.getpid() != self.owner:
            return  # a forked child: its parent publishes the run
        observation = Observation(
            self.run.id,
            self.snapshot,
            None,
            {**self.extra, "status": status, "error": error_info(exc)},
        )
        self._keep_outputs()
        failure = self._end_callbacks(observation)
        if failure is not None:  # must not hide the run's own exception
            callback, cb_exc = failure
            warnings.warn(
                f"Callback {callback!r} failed while recording run {self.run.id!r}: {cb_exc!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        self._write_final(observation)

    # -- helpers

    def _keep_outputs(self) -> None:
        """Write the run's last metrics, and keep its artefacts with its records (a
        remote store uploads them): before the final record, so whoever reads it
        finds both. A failure warns; the run's result is never lost to it."""
        backend = self.recorder.backend
        sync = not isinstance(backend, FileBackend) or backend.durability == POWER
        heartbeats.stop(root_store(backend), self.run.id)
        self._warn_if_lost("metrics", metrics.finish, self.run, root_store(backend), sync)
        self._warn_if_lost("artefacts", backend.keep_artefacts, self.run.id)

    def _warn_if_lost(self, what: str, keep: Callable[..., None], *args: Any) -> None:
        try:
            keep(*args)
        except OSError as exc:  # the points or files are lost, never the run
            warnings.warn(
                f"Could not keep the {what} of run {self.run.id!r} in "
                f"{self.recorder.backend.where!r}: {exc}",
                RuntimeWarning,
                stacklevel=4,
            )

    def _end_callbacks(self, observation: Observation) -> tuple[Callback, Exception] | None:
        """Call every ``end`` callback (in reverse); the first that raised, and how."""
        failure = None
        for callback in reversed(self.recorder.callbacks):
            try:
                callback.end(observation)
            except Exception as exc:
                failure = failure or (callback, exc)
        return failure

    def _publish(self, observation: Observation, result: Any) -> None:
        exp = self.recorder
        error: StorageError | UnstorableValueError
        try:
            exp.backend.record(observation)
            return
        except OSError as exc:
            error = StorageError(
                f"Could not write the record of run {observation.id!r} to "
                f"{exp.backend.where!r}: {exc}. The result is kept on this "
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
        raise error

    def _record_failure(self, observation: Observation, error: BaseException) -> None:
        failed = observation._replace(metadata={**observation.metadata})
        failed.metadata.update(status=FAILED, error=error_info(error))
        self._write_final(failed)

    def _write_final(self, observation: Observation) -> None:
        """Publish a final record, however much of it can be stored; never raises.

        Values the backend rejects become their repr; where even that cannot be
        written (a full disk) the result is left out, as the smallest record.
        """
        backend = self.recorder.backend
        self.final = observation
        problem: Exception | None = None
        for make in (_as_is, self._storable, self._storable_without_result):
            try:
                backend.record(make(observation))
                return
            except Exception as exc:
                problem = problem or exc
        warnings.warn(
            f"Could not record the end of run {observation.id!r} in "
            f"{backend.where!r} ({problem!r}); it stays 'running' until this "
            "process exits, then reads as 'abandoned'.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _index(self, observation: Observation) -> None:
        try:
            self.recorder.index.remember(observation)
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
        return storable(self.recorder.backend, value)

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


@contextlib.contextmanager
def _sigterm_cancels(scope: anyio.CancelScope) -> Iterator[None]:
    """While the body runs, SIGTERM cancels ``scope`` (runs on the main thread's loop only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import anyio.lowlevel

    native: Any = anyio.lowlevel.current_token().native_token
    # asyncio's loop and trio's token each offer one call that is safe from a signal handler
    schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
    with signals.cancel_on_sigterm(lambda: schedule(scope.cancel)):
        yield
