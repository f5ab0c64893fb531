"""What a run leaves behind: its :class:`Observation` and its status.

Statuses are plain strings in every record (so any format, and 2.0.4, can read
them); this module names them once and is the one place that reads them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

from .._store import files as storage
from .._store import filesystems
from .._store.base import Store
from . import heartbeats, metrics

if TYPE_CHECKING:
    import pandas as pd

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
ABANDONED = "abandoned"  # never written: a running record whose process is gone
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, ABANDONED)


class Observation(NamedTuple):
    """One recorded call of an experiment.

    Parameters
    ----------
    id : str
        The run's unique id, ``YYYY-MM-DD_HH-MM-SS_ffffff``.
    config : dict
        Every argument of the call, defaults included.
    result : Any
        What the function returned (``None`` for a run that did not complete).
    metadata : dict
        ``status``, ``timing``, ``environment``, ``code`` and anything callbacks add.

    Examples
    --------
    >>> Observation("2026-01-01_00-00-00_000000", {"x": 2}, 4, {})
    Observation(2026-01-01_00-00-00_000000, {'x': 2} → 4)
    """

    id: str
    config: dict[str, Any]
    result: Any
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        return f"Observation({self.id}, {self.config} → {self.result})"

    def _repr_html_(self) -> str:
        return html_table([self])

    def metrics(self) -> pd.DataFrame:
        """The metrics this run logged, as a long DataFrame: ``step, name, value, time``.

        Raises
        ------
        ValueError
            If the observation was not loaded from a root (it has no store).
        """
        store = store_of(self)
        if store is None:
            raise ValueError(
                f"Run {self.id!r} was not loaded from an experiment folder, so its "
                "metrics cannot be found: load it with observations() or query.load()."
            )
        return metrics.frame(store, self.id)

    @property
    def status(self) -> str:
        """The run's status; records of 2.0.4 carry none and were completed.

        A ``running`` record whose process is gone reads as ``abandoned``, as
        it does for ``observations(status=...)``.
        """
        return status_of(self)


# Pickle records name the class by this path, as 2.0.4 and 3.x wrote it: keep it,
# so every version reads every other's records.
Observation.__module__ = "digital_experiments.core"


class _Stored(Observation):
    """An observation loaded from a root, whose store it remembers (for :meth:`metrics`).

    Equal to, and shown like, the plain :class:`Observation` with its fields.
    """

    def __reduce__(self) -> tuple[Any, ...]:  # crosses processes as a plain one
        return (Observation, tuple(self))


def stored(observation: Observation, store: Store, key: str | None = None) -> Observation:
    """``observation`` marked as loaded from ``store`` (its record at ``key``)."""
    marked = tuple.__new__(_Stored, observation)  # skips the named fields' __new__
    marked.__dict__["store"] = store
    marked.__dict__["key"] = key
    return marked


def store_of(observation: Observation) -> Store | None:
    """The store ``observation`` was loaded from, if it was."""
    store: Store | None = getattr(observation, "__dict__", {}).get("store")
    return store


def status_of(observation: Observation) -> str:
    """The run's status: 2.0.4's records carry none and were completed, and a
    ``running`` record whose process is gone reads as ``abandoned``: known dead on
    this host, or silent too long on a root other hosts share (its heartbeats)."""
    status = str(observation.metadata.get("status", COMPLETED))
    if status == RUNNING:
        process = observation.metadata.get("process")
        if storage.process_gone(process) or _silent(observation, process):
            return ABANDONED
    return status


def _silent(observation: Observation, process: Any) -> bool:
    """Whether a running run whose process this host cannot check has given no
    sign of life for :data:`~._heartbeats.ABANDONED_AFTER` seconds."""
    if storage.same_namespace(process):
        return False  # the kernel was asked
    store = store_of(observation)
    if store is None or not filesystems.shared(store):
        return False  # no heartbeats there: nothing can tell
    key = getattr(observation, "__dict__", {}).get("key")
    silent = heartbeats.silent_for(store, observation.id, key)
    return silent is not None and silent > heartbeats.ABANDONED_AFTER


def tags_of(observation: Observation) -> dict[Any, Any]:
    """The run's tags: ``metadata["tags"]`` when it is a dict. Anything else (a user's
    callback may put anything in metadata) is left out, with a warning."""
    tags = observation.metadata.get("tags")
    if tags is None or isinstance(tags, dict):
        return tags or {}
    _warn_shape(observation, "tags", tags, "a dict of names and values")
    return {}


def notes_of(observation: Observation) -> list[str]:
    """The run's notes: ``metadata["notes"]`` as a list of texts (one text is one
    note). Anything else is left out, with a warning."""
    notes = observation.metadata.get("notes")
    if notes is None or notes == []:
        return []
    if isinstance(notes, str):
        return [notes]
    if isinstance(notes, (list, tuple)):
        return [str(note) for note in notes]
    _warn_shape(observation, "notes", notes, "a list of texts")
    return []


_SHAPES_WARNED: set[tuple[str, str, str]] = set()


def _warn_shape(observation: Observation, key: str, value: Any, wanted: str) -> None:
    """Say once per run and field that a record's metadata has an unusable shape."""
    store = store_of(observation)
    where = store.url if store is not None else ""
    if (where, observation.id, key) in _SHAPES_WARNED:
        return
    _SHAPES_WARNED.add((where, observation.id, key))
    warnings.warn(
        f"Run {observation.id!r} has metadata[{key!r}] = {value!r:.60}, not {wanted}: "
        f"left out of its {key}. Tag runs with tag() to give them tags that show.",
        stacklevel=3,
    )


def is_completed(observation: Observation) -> bool:
    """Whether ``observation`` completed (cheaper than :func:`status_of`: no liveness check)."""
    return bool(observation.metadata.get("status", COMPLETED) == COMPLETED)


def ending(exc: BaseException, cancelled: type[BaseException] | None = None) -> str:
    """The status a run ends with when ``exc`` stops it: ``interrupted`` for
    Ctrl-C, exits and cancellation (``cancelled``), ``failed`` otherwise."""
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)
    if cancelled is not None:
        interrupts += (cancelled,)
    return INTERRUPTED if isinstance(exc, interrupts) else FAILED


def _traceback() -> Any:
    import traceback  # failed runs only: it loads textwrap and linecache

    return traceback


def error_info(exc: BaseException) -> dict[str, str]:
    """What a record keeps of the exception that ended its run."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(_traceback().format_exception(exc)),
    }


class Observations(list[Observation]):
    """A list of observations that shows as a table in a notebook."""

    def _repr_html_(self) -> str:
        return html_table(self)


COLOURS = {
    RUNNING: "#1f6feb",
    COMPLETED: "#1a7f37",
    FAILED: "#cf222e",
    INTERRUPTED: "#9a6700",
    ABANDONED: "#6e7781",
}


def html_table(observations: list[Observation], limit: int = 200) -> str:
    """Observations as an HTML table (id, status, config, result), statuses coloured."""
    import html  # notebooks only: not loaded by every import

    rows = []
    for observation in observations[:limit]:
        status = status_of(observation)
        colour = COLOURS.get(status, "inherit")
        cells = [
            f"<td><code>{html.escape(observation.id)}</code></td>",
            f'<td style="color:{colour};font-weight:bold">{html.escape(status)}</td>',
            f"<td>{html.escape(_short(observation.config))}</td>",
            f"<td>{html.escape(_short(observation.result))}</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = len(observations) - limit
    if more > 0:
        rows.append(f'<tr><td colspan="4">... and {more} more</td></tr>')
    head = "<tr><th>id</th><th>status</th><th>config</th><th>result</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _short(value: Any, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
