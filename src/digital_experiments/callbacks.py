"""Callbacks that add metadata to every run, plus the user-facing hooks.

Callbacks keep no per-run state on ``self``: one callback object serves every
concurrent run of its experiment, so state lives in the run's context.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable
from contextvars import Token
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import environment
from .context import (
    Run,
    active_run,
    current_dir,
    current_id,
    current_run,
    enter,
    leave,
    time_block,
    timing_entry,
)
from .core import Callback, Observation
from .util import source_code

__all__ = [
    "Callback",
    "CodeVersioning",
    "GitInfo",
    "GlobalStateNotifier",
    "Logging",
    "PipFreeze",
    "SaveLogs",
    "SystemInfo",
    "Timing",
    "current_dir",
    "current_id",
    "time_block",
]


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


class Logging(Callback):
    """Prints a line when each run starts and ends (when ``verbose``).

    Parameters
    ----------
    verbose : bool
        Whether to print anything.
    """

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose

    def start(self, id: str, config: dict[str, Any]) -> None:
        if self.verbose:
            print(f"[digital-experiments] run {id} started with {config}")

    def end(self, observation: Observation) -> None:
        if not self.verbose:
            return
        text = repr(observation.result)
        if len(text) > 100:
            text = f"{text[:48]}...{text[-48:]}"
        status = observation.metadata.get("status", "completed")
        print(f"[digital-experiments] run {observation.id} {status}: {text}")


class CodeVersioning(Callback):
    """Records the function's source in ``metadata["code"]`` (``None`` if unknown)."""

    code: str | None = None

    def setup(self, function: Callable[..., Any]) -> None:
        self.code = source_code(function)

    def end(self, observation: Observation) -> None:
        observation.metadata["code"] = self.code


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
    run's own timing moves to ``"total"``.
    """

    def start(self, id: str, config: dict[str, Any]) -> None:
        state = _state(self)
        state["wall"], state["clock"] = datetime.now(), time.perf_counter()

    def end(self, observation: Observation) -> None:
        state = _state(self)
        if "clock" not in state:
            return
        total = timing_entry(state.pop("clock"), state.pop("wall"), datetime.now())
        run = active_run()
        blocks = dict(run.timing) if run is not None else {}
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
