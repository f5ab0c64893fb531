"""The current run: one :class:`contextvars.ContextVar`, never global state.

The run is set when a call starts, in whatever thread, task or process executes
it, and reset by token when it ends, so concurrent tasks and threads each see
their own run and nested experiments restore their parent's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, ParamSpec, TextIO, TypeVar

from .._model import layout
from ..errors import NoExperimentRunning

P = ParamSpec("P")
R = TypeVar("R")

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(eq=False)
class Run:
    """Everything that belongs to one running call of an experiment.

    Mutable on purpose: a copied context (``asyncio.to_thread``) shares the
    same object, so timing blocks and log sinks added there reach the run.
    """

    id: str
    root: Path
    timing: dict[str, dict[str, Any]] = field(default_factory=dict)
    sinks: list[TextIO] = field(default_factory=list)
    state: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    leaving: list[Callable[[], None]] = field(default_factory=list)
    points: Any = None  # the metrics logged and not yet written (digital_experiments._runs.metrics)

    @property
    def directory(self) -> Path:
        return layout.artefacts(self.root, self.id)

    def callback_state(self, callback: object) -> dict[str, Any]:
        """Per-run scratch space for ``callback`` (callbacks keep no run state)."""
        with self.lock:
            return self.state.setdefault(id(callback), {})

    def on_leave(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` whenever a propagated call of this run ends (in its process)."""
        with self.lock:
            self.leaving.append(flush)

    def flush(self) -> None:
        with self.lock:
            flushes = list(self.leaving)
        for flush in flushes:
            flush()

    def __getstate__(self) -> dict[str, Any]:
        return {"id": self.id, "root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["id"], state["root"])  # type: ignore[misc]


_RUN: ContextVar[Run | None] = ContextVar("digital_experiments_run", default=None)


def current_run(what: str = "this function") -> Run:
    """The active :class:`Run`, or :class:`NoExperimentRunning`."""
    run = _RUN.get()
    if run is None:
        raise NoExperimentRunning(what)
    return run


def active_run() -> Run | None:
    """The active :class:`Run`, or ``None`` outside of a run."""
    return _RUN.get()


@contextlib.contextmanager
def activate(run: Run | None) -> Iterator[None]:
    """Make ``run`` current for the body, restoring the previous run after."""
    token = _RUN.set(run)
    try:
        yield
    finally:
        _RUN.reset(token)


# Where time_block records outside any run while a Timing callback is driven
# by hand (``Timing().start(...)``, as 2.0.4 allowed). Separate from _RUN so
# that current_id()/current_dir() still say no experiment is running.
_TIMED_BY_HAND: ContextVar[Run | None] = ContextVar(
    "digital_experiments_timed_by_hand", default=None
)


def begin_hand_timing(id: str) -> tuple[Run, Token[Run | None]]:
    """Let :func:`time_block` record outside a run until :func:`end_hand_timing`.

    Returns the stand-in run that collects the blocks and the token to end it.
    """
    run = Run(id, Path())
    return run, _TIMED_BY_HAND.set(run)


def end_hand_timing(token: Token[Run | None]) -> None:
    """Undo the matching :func:`begin_hand_timing`."""
    # Ended in another context than it began (or twice): nothing to restore here.
    with contextlib.suppress(ValueError, RuntimeError):
        _TIMED_BY_HAND.reset(token)


def enter(run: Run | None) -> Token[Run | None]:
    """Set ``run`` as current; pair with :func:`leave` in a ``finally``."""
    return _RUN.set(run)


def leave(token: Token[Run | None]) -> None:
    """Undo the matching :func:`enter`."""
    _RUN.reset(token)


def current_id() -> str:
    """The id of the experiment run executing the caller.

    Returns
    -------
    str
        An id of the form ``YYYY-MM-DD_HH-MM-SS_ffffff``.

    Raises
    ------
    RuntimeError
        Outside of a run (:class:`~digital_experiments.errors.NoExperimentRunning`).

    Examples
    --------
    >>> from digital_experiments import experiment, current_id
    >>> @experiment
    ... def example():
    ...     return current_id()
    >>> example()  # doctest: +SKIP
    '2026-11-28_12-00-00_000000'
    """
    return current_run("current_id()").id


def current_dir() -> Path:
    """The artefact folder of the current run, ``<root>/storage/<id>/``.

    The folder is created on first use. It is right in every thread, task and
    process that executes the run (see :func:`propagate` for pools).

    Examples
    --------
    >>> from digital_experiments import experiment, current_dir
    >>> @experiment
    ... def example():
    ...     (current_dir() / "results.txt").write_text("hello")
    """
    directory = current_run("current_dir()").directory
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def timing_entry(start: float, start_wall: datetime, end_wall: datetime) -> dict[str, Any]:
    """A ``{start, end, duration}`` block; duration from a monotonic clock."""
    return {
        "start": start_wall.strftime(TIME_FORMAT),
        "end": end_wall.strftime(TIME_FORMAT),
        "duration": time.perf_counter() - start,
    }


@contextlib.contextmanager
def time_block(name: str) -> Iterator[None]:
    """Time the body and store it in ``metadata["timing"][name]`` of the run.

    The run's own timing then moves to ``metadata["timing"]["total"]``.

    Parameters
    ----------
    name : str
        The key of the block in ``metadata["timing"]``.

    Examples
    --------
    >>> import time
    >>> from digital_experiments import experiment, time_block
    >>> @experiment
    ... def example():
    ...     with time_block("sleep"):
    ...         time.sleep(0.01)
    """
    run = _RUN.get() or _TIMED_BY_HAND.get()
    if run is None:
        raise NoExperimentRunning("time_block()")
    start_wall, start = datetime.now(), time.perf_counter()
    try:
        yield
    finally:
        entry = timing_entry(start, start_wall, datetime.now())
        with run.lock:
            run.timing[name] = entry


class propagate(Generic[P, R]):  # lower case: used like a function
    """Wrap ``fn`` so it runs inside the current experiment run, anywhere.

    ``concurrent.futures`` executors do not copy context variables and
    processes never do, so work submitted from inside a run would otherwise
    not know it. The wrapper is picklable when ``fn`` is, and re-enters the
    run (its id and root) in whatever thread or process calls it.

    Parameters
    ----------
    fn : callable
        The callable to run inside the current run.

    Raises
    ------
    RuntimeError
        If called outside of a run.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from digital_experiments import experiment, current_dir, propagate
    >>> def save(text):
    ...     (current_dir() / "out.txt").write_text(text)
    >>> @experiment
    ... def example():
    ...     with ThreadPoolExecutor() as pool:
    ...         pool.submit(propagate(save), "hello").result()
    """

    def __init__(self, fn: Callable[P, R]) -> None:
        self.fn = fn
        self.run = current_run("propagate()")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        token = _RUN.set(self.run)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _RUN.reset(token)
            self.run.flush()  # what it logged is written before its process moves on

    def __repr__(self) -> str:
        return f"propagate({self.fn!r}, run={self.run.id!r})"
