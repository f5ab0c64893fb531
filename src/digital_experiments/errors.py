"""Exceptions raised by digital-experiments.

Every exception subclasses :class:`DigitalExperimentsError` *and* the builtin
that callers already catch, so ``except RuntimeError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class DigitalExperimentsError(Exception):
    """Base class of every error raised by digital-experiments."""


class NoExperimentRunning(DigitalExperimentsError, RuntimeError):
    """Raised by :func:`~digital_experiments.current_id` and friends outside of a run."""

    def __init__(self, what: str = "this function") -> None:
        super().__init__(
            f"No experiment running: {what} only works inside a call of an "
            "@experiment-decorated function. To use it in another thread or "
            "process, wrap the callable with digital_experiments.propagate(fn)."
        )
        self.what = what

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what,))


class UnknownBackendError(DigitalExperimentsError, ValueError):
    """Raised when ``backend=`` names no registered backend."""


class UnstorableValueError(DigitalExperimentsError, TypeError):
    """The backend could not serialise a run's config or result.

    The run itself finished: its value is kept on ``result`` so nothing is
    lost, and the attempt is recorded with status ``failed``.

    Attributes
    ----------
    field : str
        ``"config"``, ``"config.<name>"``, ``"result"`` or ``"metadata"``.
    result : Any
        The value the experiment returned.
    """

    def __init__(self, message: str, field: str, result: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.field, self.result))


class _CarriesResult(DigitalExperimentsError):
    """An error raised after the run returned: its value is kept on ``result``."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.result))


class StorageError(_CarriesResult, OSError):
    """Writing a record failed (disk full, permissions, ...).

    The run's return value is kept on ``result``.
    """


class CallbackError(_CarriesResult, RuntimeError):
    """A callback's ``end`` raised after the run itself completed.

    The run is recorded ``failed`` (with the callback's error) and its return
    value is kept on ``result``; the callback's exception is ``__cause__``.
    """


class InvalidRootError(DigitalExperimentsError, ValueError):
    """``root=`` is not a folder this library can store runs in."""


class RunningError(DigitalExperimentsError, ValueError):
    """A run cannot be deleted while it runs (wait for it, or stop it)."""


class TrashError(DigitalExperimentsError, OSError):
    """A run could not be moved to the trash; nothing of it was moved."""


def __getattr__(name: str) -> Any:
    # 3.x exported LockTimeoutError, but no lock ever timed out: locks wait for
    # their holder, and a holder killed with -9 frees them
    if name == "LockTimeoutError":
        import warnings

        warnings.warn(
            "LockTimeoutError is gone: no lock times out. Catch TimeoutError if you must.",
            DeprecationWarning,
            stacklevel=2,
        )
        return TimeoutError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
