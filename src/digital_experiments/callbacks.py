"""Callbacks: hooks around every run (:class:`Callback`) and the built-in ones.

A callback keeps per-run state in ``current_run().callback_state(self)``, never
on ``self``: one callback object serves concurrent runs.
"""

from ._record.callbacks import (
    Callback,
    CodeVersioning,
    GitInfo,
    GlobalStateNotifier,
    Logging,
    PipFreeze,
    SaveLogs,
    SystemInfo,
    Timing,
)
from ._runs.context import Run, current_dir, current_id, current_run, time_block

__all__ = [
    "Callback",
    "CodeVersioning",
    "GitInfo",
    "GlobalStateNotifier",
    "Logging",
    "PipFreeze",
    "Run",
    "SaveLogs",
    "SystemInfo",
    "Timing",
    "current_dir",
    "current_id",
    "current_run",
    "time_block",
]
