"""Callbacks that add metadata to every run, plus the user-facing hooks.

Callbacks keep no per-run state on ``self``: one callback object serves every
concurrent run of its experiment, so state lives in the run's context.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import Token
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .._runs.context import (
    Run,
    active_run,
    begin_hand_timing,
    current_dir,
    current_run,
    end_hand_timing,
    enter,
    leave,
    timing_entry,
)
from .._runs.observation import COMPLETED, Observation
from . import environment
from .code import code_identity


class Callback:
    """Hooks into the life of an experiment; override any of the methods.

    Keep per-run state in ``current_run().callback_state(self)`` rather than
    on ``self``: one callback object serves concurrent runs.
    """

    def setup(self, function: Callable[..., Any]) -> None:
        """Called once, when the experiment is created."""

    def start(self, id: str, config: dict[str, Any]) -> None:
        """Called at the start of each run, inside the run's context."""

    def end(self, observation: Observation) -> None:
        """Called at the end of each run; may add to ``observation.metadata``."""


def _state(callback: Callback) -> dict[str, Any]:
    """Scratch space of ``callback`` for the current run.

    Outside of a run (a callback driven by hand) it falls back to the object.
    """
    run = active_run()
    if run is not None:
        return run.callback_state(callback)
    state: dict[str, Any] = callback.__dict__.setdefault("_manual_state", {})
    return state


def _environment(observation: Observation) -> dict[str, Any]:
    env = observation.metadata.get("environment")
    if not isinstance(env, dict):
        env = observation.metadata["environment"] = {}
    return env


class GlobalStateNotifier(Callback):
    """Makes a run current between :meth:`start` and :meth:`end`.

    ``@experiment`` sets the run context itself; this callback is for code
    that drives callbacks by hand, as 2.0.4 allowed.

    Parameters
    ----------
    root : pathlib.Path
        The experiment's folder.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tokens = threading.local()

    def start(self, id: str, config: dict[str, Any]) -> None:
        stack = self._tokens.__dict__.setdefault("stack", [])
        stack.append(enter(Run(id, self.root)))

    def end(self, observation: Observation) -> None:
        stack: list[Token[Run | None]] = self._tokens.__dict__.get("stack", [])
        if stack:
            leave(stack.pop())

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]


_PREFIX = "[digital-experiments]"


def _short(text: str, width: int = 100) -> str:
    """``text`` on one line and at most ``width`` characters: its start and end."""
    text = text.replace("\n", "\\n")
    if len(text) <= width:
        return text
    half = (width - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


class Logging(Callback):
    """Prints one short line when each run starts and one when it ends (when ``verbose``).

    A completed run prints its result, a failed or interrupted one its
    exception's type and message. Long values are shortened to their start
    and end.

    Parameters
    ----------
    verbose : bool
        Whether to print anything.

    Examples
    --------
    >>> from digital_experiments import Logging, Observation
    >>> log = Logging()
    >>> log.start("2026-01-01_00-00-00_000000", {"x": 3})
    [digital-experiments] starting experiment 2026-01-01_00-00-00_000000 with config {'x': 3}
    >>> log.end(Observation("2026-01-01_00-00-00_000000", {"x": 3}, 9, {}))
    [digital-experiments] finished experiment 2026-01-01_00-00-00_000000 with result 9
    """

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"{_PREFIX} {text}", flush=True)

    def start(self, id: str, config: dict[str, Any]) -> None:
        self._say(f"starting experiment {id} with config {_short(repr(config))}")

    def end(self, observation: Observation) -> None:
        status = observation.metadata.get("status", COMPLETED)
        if status == COMPLETED:
            result = _short(repr(observation.result))
            self._say(f"finished experiment {observation.id} with result {result}")
            return
        error = observation.metadata.get("error")
        if isinstance(error, dict) and error.get("type"):
            message = str(error.get("message") or "")
            cause = f"{error['type']}: {message}" if message else str(error["type"])
            self._say(f"experiment {observation.id} {status}: {_short(cause)}")
        else:
            self._say(f"experiment {observation.id} {status}")

    def cache_hit(self, observation: Observation) -> None:
        """Say that the stored result of run ``observation.id`` was returned.

        Called instead of :meth:`start` and :meth:`end` when ``cache=True``
        finds the config already completed, so nothing ran.

        Parameters
        ----------
        observation : Observation
            The stored run whose result was returned.

        Examples
        --------
        >>> from digital_experiments import Logging, Observation
        >>> Logging().cache_hit(Observation("2026-01-01_00-00-00_000000", {"x": 3}, 9, {}))
        [digital-experiments] returned the stored result of run 2026-01-01_00-00-00_000000: 9
        """
        result = _short(repr(observation.result))
        self._say(f"returned the stored result of run {observation.id}: {result}")


class CodeVersioning(Callback):
    """Records the function's source in ``metadata["code"]`` (``None`` if unknown).

    A function without source also gets ``metadata["code_hash"]``, a digest of
    its code object (see ``digital_experiments.util.code_identity``).
    """

    code: str | None = None
    identity: dict[str, str | None] = {"code": None}  # noqa: RUF012 - replaced in setup

    def setup(self, function: Callable[..., Any]) -> None:
        self.identity = code_identity(function)
        self.code = self.identity["code"]

    def end(self, observation: Observation) -> None:
        observation.metadata.update(self.identity)


class GitInfo(Callback):
    """Records ``{branch, commit, remote, dirty}`` in ``metadata["environment"]["git"]``."""

    def end(self, observation: Observation) -> None:
        git = environment.git_info()
        if git is not None:
            _environment(observation)["git"] = git


class PipFreeze(Callback):
    """Records installed packages, as ``pip freeze`` lists them, in
    ``metadata["environment"]["pip_freeze"]``."""

    def end(self, observation: Observation) -> None:
        _environment(observation)["pip_freeze"] = environment.pip_freeze()


class SystemInfo(Callback):
    """Records platform facts in ``metadata["environment"]["system"]``."""

    def end(self, observation: Observation) -> None:
        _environment(observation)["system"] = environment.system_info()


class Timing(Callback):
    """Records ``metadata["timing"]``: ``{start, end, duration}`` of the run.

    When the run used :func:`time_block`, the blocks are stored by name and the
    run's own timing moves to ``"total"``. Driven by hand outside any run
    (``start`` … ``end``), :func:`time_block` records into it in between.
    """

    def start(self, id: str, config: dict[str, Any]) -> None:
        state = _state(self)
        state["wall"], state["clock"] = datetime.now(), time.perf_counter()
        if active_run() is None:  # driven by hand: time_block still needs a home
            state["by_hand"] = begin_hand_timing(id)

    def end(self, observation: Observation) -> None:
        state = _state(self)
        if "clock" not in state:
            return
        total = timing_entry(state.pop("clock"), state.pop("wall"), datetime.now())
        by_hand = state.pop("by_hand", None)
        run: Run | None
        if by_hand is not None:
            run, token = by_hand
            end_hand_timing(token)
        else:
            run = active_run()
        blocks: dict[str, Any] = {}
        if run is not None:
            with run.lock:
                blocks = dict(run.timing)
        if blocks:
            blocks["total"] = total
            observation.metadata["timing"] = blocks
        else:
            observation.metadata["timing"] = total


class _StdoutRouter(io.TextIOBase):
    """Stands in for ``sys.stdout``: writes through, and also to the sinks of
    the run active in the writing thread or task."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        written = self.inner.write(text)
        run = active_run()
        if run is not None:
            for sink in list(run.sinks):
                sink.write(text)
        return written

    def flush(self) -> None:
        self.inner.flush()
        run = active_run()
        if run is not None:
            for sink in list(run.sinks):
                sink.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_ROUTER_LOCK = threading.Lock()
_ROUTER_USERS = 0


def _route_stdout() -> None:
    global _ROUTER_USERS
    with _ROUTER_LOCK:
        _ROUTER_USERS += 1
        if not isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = _StdoutRouter(sys.stdout)


def _unroute_stdout() -> None:
    global _ROUTER_USERS
    with _ROUTER_LOCK:
        _ROUTER_USERS = max(0, _ROUTER_USERS - 1)
        if _ROUTER_USERS == 0 and isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = sys.stdout.inner


class SaveLogs(Callback):
    """Saves what each run prints to ``<artefacts>/<name>`` (and still prints it).

    Runs sharing a process (threads, tasks) each get their own log.

    Parameters
    ----------
    name : str
        The log file's name in the run's artefact folder.

    Examples
    --------
    >>> from digital_experiments import experiment, SaveLogs
    >>> @experiment(callbacks=[SaveLogs("log.txt")])
    ... def example():
    ...     print("hello")
    """

    def __init__(self, name: str = "logs.txt") -> None:
        self.name = name

    def start(self, id: str, config: dict[str, Any]) -> None:
        run = current_run("SaveLogs")
        sink = open(current_dir() / self.name, "w", encoding="utf-8")  # noqa: SIM115
        _state(self)["sink"] = sink
        with run.lock:
            run.sinks.append(sink)
        _route_stdout()

    def end(self, observation: Observation) -> None:
        sink = _state(self).pop("sink", None)
        if sink is None:
            return
        run = current_run("SaveLogs")
        with run.lock:
            run.sinks.remove(sink)
        sink.close()
        _unroute_stdout()


# the start hooks that never wait on anything (no hook, a line printed, a clock
# read): an async run calls them on the event loop, not in a worker thread
_QUICK_STARTS = frozenset({Callback.start, Logging.start, Timing.start})


def start_quickly(callbacks: Iterable[Callback]) -> bool:
    """Whether every one of ``callbacks`` starts without blocking (see above)."""
    return all(type(callback).start in _QUICK_STARTS for callback in callbacks)
