"""Stores of many runs for the benchmarks, written directly (no call, no fsync)."""

from __future__ import annotations

import pickle
from pathlib import Path

from digital_experiments import Observation


def sweep_store(root: Path, runs: int) -> Path:
    """``runs`` completed pickle records of a two-parameter sweep under ``root``."""
    root.mkdir(parents=True)
    (root / ".de" / "ids").mkdir(parents=True)  # recorded by 3.x: its pickles are trusted
    for n in range(runs):
        id = f"2026-01-01_00-{n // 60000 % 60:02d}-{n // 1000 % 60:02d}_{n % 1000:06d}"
        observation = Observation(
            id, {"lr": n / runs, "depth": n % 7}, {"loss": 1 - n / runs}, {"status": "completed"}
        )
        (root / f"{id}.pkl").write_bytes(pickle.dumps(observation))
    return root
