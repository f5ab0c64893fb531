"""SIGTERM and Ctrl-C around runs: every run ends in a final state.

Only the main thread receives signals, so everything here acts there alone.

* While a run executes, SIGTERM interrupts it: a sync run gets
  :class:`Terminated` (a ``SystemExit`` with code 143) raised into its body, an
  async run on the main thread's event loop is cancelled. Either way the run is
  recorded ``interrupted`` and the process then exits with 143. Our handler is
  installed only where nobody else handles SIGTERM, and removed only if it is
  still the one installed (a handler the user sets inside a run stays).
* While a run begins or its record is finished (end callbacks, publishing),
  SIGTERM and Ctrl-C are held and delivered once the record is written, so a
  signal never leaves a record ``running`` in a live process.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "cancel_on_sigterm", "held", "sigterm_interrupts", "terminating"]

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Terminated(SystemExit):
    """SIGTERM arrived during a run; the process exits with code 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


# Main-thread state (signal handlers run there, between bytecodes).
_users = 0  # runs relying on our SIGTERM handler
_previous: Handler = signal.SIG_DFL  # what our handler replaced
_cancellers: dict[int, Callable[[], None]] = {}  # async runs to cancel on SIGTERM
_holding = 0  # nested `held()` blocks
_pending: list[int] = []  # signals that arrived while held
_terminating = False  # SIGTERM arrived while async runs were registered


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminating
    if _holding:
        _pending.append(signum)
        return
    if _cancellers:
        _terminating = True
        for cancel in list(_cancellers.values()):
            cancel()
        return
    raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)


def _enter() -> bool:
    """Count one more run relying on our handler; ``False`` if someone else handles SIGTERM."""
    global _users, _previous
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        _users += 1
        return True
    if current is not signal.SIG_DFL:
        return False
    _previous = current
    signal.signal(signal.SIGTERM, _on_sigterm)
    _users = 1
    return True


def _exit() -> None:
    global _users
    _users -= 1
    # undo only our own change: a handler installed meanwhile stays
    if _users == 0 and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """For the body, SIGTERM raises :class:`Terminated` (main thread, default handler only)."""
    if not _in_main_thread() or not _enter():
        yield
        return
    try:
        yield
    finally:
        _exit()


@contextlib.contextmanager
def cancel_on_sigterm(cancel: Callable[[], None]) -> Iterator[None]:
    """For the body, SIGTERM calls ``cancel`` (which must be signal-safe) instead of raising.

    For async runs: ``cancel`` schedules the cancellation of the run's scope on
    its event loop; :func:`terminating` then tells the run why it was cancelled.
    """
    if not _in_main_thread() or not _enter():
        yield
        return
    key = id(cancel)
    _cancellers[key] = cancel
    try:
        yield
    finally:
        del _cancellers[key]
        _exit()


def terminating() -> bool:
    """Whether SIGTERM cancelled the async runs of this process."""
    return _terminating


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGTERM and Ctrl-C for the body (main thread only); deliver them after.

    A held SIGTERM raises :class:`Terminated` (or cancels async runs) and a held
    Ctrl-C raises ``KeyboardInterrupt`` when the outermost block ends.
    """
    global _holding
    if not _in_main_thread():
        yield
        return
    own_sigint = _holding == 0 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own_sigint:
        signal.signal(signal.SIGINT, _on_sigint)
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if own_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if _holding == 0 and _pending:
            _deliver()


def _deliver() -> None:
    signals = set(_pending)
    _pending.clear()
    if signal.SIGTERM in signals:
        _on_sigterm(signal.SIGTERM, None)
    if signal.SIGINT in signals:
        raise KeyboardInterrupt
