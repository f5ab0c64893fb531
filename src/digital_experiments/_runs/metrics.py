"""Metrics over steps: :func:`log` inside a run, and reading them back.

Each run's points live in ``<root>/.de/metrics/<id>.jsonl``, one JSON array
``[step, name, value, time]`` per line. :func:`log` only appends to a buffer
in memory; the buffer is written (one ``write`` of whole lines, ``O_APPEND``)
when a second has passed since the last write, when a propagated call ends
and, synced to disk, when the run ends. So a crash loses at most the last
second of points and never tears a line another writer wrote: appends are of
whole lines, each append starts on a fresh line (so the torn line of a writer
killed mid-write never fuses with the next writer's), and a reader skips torn,
blank and ill-shaped lines. Several processes of one run (through
:class:`~digital_experiments.propagate`) append to the same file.

On a remote store (``s3://``) the file is written the same way in the run's
local working folder and uploaded, whole, every :data:`UPLOAD_EVERY` seconds
while points come in (so other hosts see a running run's curves) and when the
run ends. Points logged by propagated calls in other processes stay in their
own working folders.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._model import layout
from .._store import files as storage
from .._store.base import Missing, Store
from .context import Run, current_run

if TYPE_CHECKING:
    import pandas as pd

FLUSH_EVERY = 1.0  # seconds: how much a crash may lose
UPLOAD_EVERY = 10.0  # seconds between two uploads of a running run's points to a remote store
COLUMNS = ("step", "name", "value", "time")


class _Buffer:
    """The points logged in one run by this process, not yet written."""

    def __init__(self, path: Path, store: Store | None = None, key: str = "") -> None:
        self.path = path
        self.store, self.key = store, key  # a remote store to upload the file to, now and then
        self.lock = threading.Lock()
        self.points: list[tuple[int, str, float, float]] = []
        self.steps: dict[str, int] = {}  # the next default step of each name
        self.written = self.uploaded = time.time()

    def add(self, step: int | None, values: dict[str, Any], now: float) -> bool:
        """Buffer ``values``; whether a second has passed since the last write."""
        with self.lock:
            steps, points = self.steps, self.points
            for name, value in values.items():
                at = steps.get(name, 0) if step is None else step
                steps[name] = at + 1
                points.append((at, name, value, now))
            return now - self.written >= FLUSH_EVERY

    def write(self, sync: bool) -> None:
        with self.lock:
            points, self.points = self.points, []
            self.written = time.time()
            if not points and not sync:
                return
            _append(self.path, _encode(points), sync)
            if self.store is not None and not sync and self.written - self.uploaded >= UPLOAD_EVERY:
                self.uploaded = self.written
                # a progress report only: the upload when the run ends is the one that counts
                with contextlib.suppress(OSError):
                    self.store.put(self.key, self.path.read_bytes())


_NAMES: dict[str, str] = {}  # metric name -> its JSON text
_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as json writes them


def _encode(points: list[tuple[int, str, float, float]]) -> bytes:
    """JSON lines ``[step, name, value, time]``, built directly (json.dumps per point
    would double the cost of log())."""
    lines = []
    for step, name, value, when in points:
        text = _NAMES.get(name)
        if text is None:
            text = _NAMES[name] = json.dumps(name)
        number = repr(value)
        if number[-1] in "fn":  # nan, inf, -inf
            number = _SPECIAL[number]
        lines.append(f"[{step}, {text}, {number}, {when!r}]\n")
    # each write starts on a fresh line: a writer killed mid-line (whose torn line
    # the reader skips) never fuses with this one; the reader skips blank lines
    return ("\n" + "".join(lines)).encode() if lines else b""


def _append(path: Path, data: bytes, sync: bool) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the first points of this root
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


_REMOTE: dict[str, Store] = {}  # run id -> the remote store its points go to, while it runs


def attach(run: Run, store: Store) -> None:
    """Upload run ``run``'s points to ``store`` while it runs, if it is remote."""
    if store.folder is None:
        _REMOTE[run.id] = store


def _buffer(run: Run) -> _Buffer:
    with run.lock:
        buffer: _Buffer | None = run.points
        if buffer is not None:
            return buffer
        path, store = layout.metrics(run.root, run.id), _REMOTE.get(run.id)
        buffer = run.points = _Buffer(path, store, layout.metrics_key(run.id))
    run.on_leave(functools.partial(buffer.write, True))
    return buffer


def log(step: int | None = None, **values: Any) -> None:
    """Record metric values of the current run, such as a loss per epoch.

    Parameters
    ----------
    step : int, optional
        The step the values belong to. Default: for each name, one more than
        the last step logged for it in this process (``0`` first).
    **values : float
        Metric names and their values (numbers).

    Raises
    ------
    NoExperimentRunning
        Outside a run. Inside a pool worker, wrap the function with
        :class:`~digital_experiments.propagate`.
    TypeError
        If a value is not a number, or ``step`` is not an int.

    Examples
    --------
    >>> from digital_experiments import experiment, log
    >>> @experiment
    ... def train(epochs=3):
    ...     for epoch in range(epochs):
    ...         log(loss=1 / (epoch + 1), accuracy=epoch / epochs)
    ...     return "done"
    """
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"log(step=...) takes an int, not {step!r}.")
    for name, value in values.items():
        kind = type(value)
        if kind is float or kind is int:
            continue  # the common case, checked cheaply
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"Metric {name!r} is {value!r}: log() records numbers (int or float). "
                "Store other values in the result, or as an artefact in current_dir()."
            )
        values[name] = _number(value)
    run = current_run("log()")
    buffer = run.points or _buffer(run)
    if buffer.add(step, values, time.time()):
        buffer.write(sync=False)


def _number(value: Any) -> float | int:
    if isinstance(value, int):
        return int(value)  # an IntEnum's repr is no JSON number
    return float(value)  # numpy scalars become Python numbers


def finish(run: Run, store: Store, sync: bool = True) -> None:
    """Write the run's remaining points (and sync them): the run is ending. On a
    remote ``store``, upload the file."""
    _REMOTE.pop(run.id, None)
    buffer: _Buffer | None = run.points
    if buffer is not None:
        buffer.write(sync=sync)
        if store.folder is None:
            with open(buffer.path, "rb") as file:
                store.put(layout.metrics_key(run.id), file.read())


def read(store: Store, id: str) -> list[tuple[int, str, float, float]]:
    """The points of run ``id``, in the order they were written (``[]`` if none)."""
    try:
        lines = store.read(layout.metrics_key(id)).splitlines()
    except Missing:
        return []
    except OSError:  # no permission: no points to show
        return []
    points = []
    for line in lines:
        try:
            point = json.loads(line)
        # a torn line (a writer killed mid-write; the rest is intact), bad UTF-8, or
        # nesting past json's limit (RecursionError): not a point
        except (ValueError, RecursionError):
            continue
        if _is_point(point):
            points.append(tuple(point))
    return points


def _is_point(point: Any) -> bool:
    """Whether a parsed line is ``[step, name, value, time]`` with the right types
    (a damaged file may hold any JSON: ``null``, ``1``, ``["a", "loss", 1, 2]``)."""
    if not isinstance(point, list) or len(point) != 4:
        return False
    step, name, value, when = point
    return (
        type(step) is int
        and isinstance(name, str)
        and type(value) in (int, float)
        and type(when) in (int, float)
    )


_LOGGED: dict[Path, tuple[int, frozenset[str]]] = {}  # folder -> (its mtime, ids)


def logged(store: Store) -> frozenset[str]:
    """The ids of the runs of ``store`` that logged metrics. In a folder: one stat
    of the metrics folder, listed again when it changed (a run's first points), or
    when its last change was too recent to be sure a next one moves its mtime."""
    prefix = layout.internal_prefix("metrics")
    if store.folder is None:
        start, end = len(prefix), -len(".jsonl")
        return frozenset(k[start:end] for k in store.list(prefix) if k.endswith(".jsonl"))
    folder = layout.internal(store.folder, "metrics")
    try:
        stamp = os.stat(folder).st_mtime_ns
    except OSError:
        return frozenset()
    known = _LOGGED.get(folder)
    if known is None or known[0] != stamp:
        ids = frozenset(n[: -len(".jsonl")] for n in os.listdir(folder) if n.endswith(".jsonl"))
        known = (stamp, ids)
        # kept only once the mtime is old enough that a later first point moves it
        # (a run whose file appears in the same mtime tick would be missed)
        if storage.settled(stamp):
            _LOGGED[folder] = known
    return known[1]


def summary(store: Store, id: str, how: str) -> dict[str, float]:
    """``{name: value}``: each metric's ``last``, ``min`` or ``max`` value."""
    found: dict[str, float] = {}
    if how == "last":
        latest: dict[str, int] = {}
        for step, name, value, _ in read(store, id):
            if step >= latest.get(name, step):
                latest[name] = step
                found[name] = value
        return found
    pick = min if how == "min" else max
    for _, name, value, _ in read(store, id):
        if isinstance(value, float) and math.isnan(value):
            continue
        found[name] = pick(found[name], value) if name in found else value
    return found


def frame(store: Store, id: str) -> pd.DataFrame:
    """The points of run ``id`` as a long DataFrame: ``step, name, value, time``."""
    import pandas as pd  # heavy: imported only when needed

    points: pd.DataFrame = pd.DataFrame(read(store, id), columns=list(COLUMNS))
    return points
