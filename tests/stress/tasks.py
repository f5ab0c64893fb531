"""Plain module-level helpers that threads and pool workers import by reference.

No experiment is defined here, so importing this module writes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from digital_experiments import current_dir, current_id, time_block


def save(name: str, text: str) -> tuple[str, int]:
    """Write ``text`` to ``name`` in the current run's folder; return (path, pid)."""
    path = current_dir() / name
    path.write_text(text)
    return str(path), os.getpid()


def whoami() -> tuple[str, str, int]:
    """The current run's id and folder, and the pid of the caller."""
    return current_id(), str(current_dir()), os.getpid()


def timed_sleep(name: str, seconds: float) -> None:
    """Sleep inside ``time_block(name)`` of the current run."""
    with time_block(name):
        time.sleep(seconds)


def append_line(path: str | Path, line: str) -> None:
    """Append one line with ``O_APPEND``: atomic across processes for short lines."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
