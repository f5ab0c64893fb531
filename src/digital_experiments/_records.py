"""What a run leaves behind: its :class:`Observation` and its status.

Statuses are plain strings in every record (so any format, and 2.0.4, can read
them); this module names them once and is the one place that reads them.
"""

from __future__ import annotations

import traceback
from typing import Any, NamedTuple

from . import _storage as storage

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

    @property
    def status(self) -> str:
        """The run's status; records of 2.0.4 carry none and were completed.

        A ``running`` record whose process is gone reads as ``abandoned``, as
        it does for ``observations(status=...)``.
        """
        return status_of(self)


def status_of(observation: Observation) -> str:
    """The run's status: 2.0.4's records carry none and were completed, and a
    ``running`` record whose process is gone reads as ``abandoned``."""
    status = str(observation.metadata.get("status", COMPLETED))
    if status == RUNNING and storage.process_gone(observation.metadata.get("process")):
        return ABANDONED
    return status


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


def error_info(exc: BaseException) -> dict[str, str]:
    """What a record keeps of the exception that ended its run."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
