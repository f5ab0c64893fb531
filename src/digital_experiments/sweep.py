"""Sweeps: run every config of a grid, on any executor (:func:`sweep`) or as
tasks of the running event loop (:func:`asweep`). See ``docs/sweeps.md``."""

from ._sweep.engine import asweep, sweep

__all__ = ["asweep", "sweep"]
