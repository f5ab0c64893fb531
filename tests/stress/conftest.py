"""Fixtures of the stress suite: subprocess drivers and readers of a root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import experiment
from digital_experiments.core import Backend

REPO = Path(__file__).resolve().parents[2]


def driver_env(root: Path) -> dict[str, str]:
    """The environment of a driver: this repo importable, records under ``root``."""
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    env["DE_STRESS_ROOT"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_example(folder: Path, name: str, timeout: float = 120) -> str:
    """Run ``examples/<name>`` from ``folder`` (where it was copied) and return its stdout."""
    done = subprocess.run(
        [sys.executable, name],
        cwd=folder,
        env=driver_env(folder / "unused"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def last_json(stdout: str) -> Any:
    """The JSON line a driver prints last (runs may print before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    """The ``$DE_STRESS_ROOT`` of this test's drivers."""
    return tmp_path / "runs"


@pytest.fixture
def start_driver(runs_root: Path, tmp_path: Path) -> Callable[..., subprocess.Popen[str]]:
    """Start ``python -m tests.stress.drivers MODE ARGS`` without waiting."""

    def start(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.stress.drivers", *map(str, args)],
            cwd=tmp_path,
            env={**driver_env(runs_root), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


@pytest.fixture
def run_driver(start_driver: Callable[..., subprocess.Popen[str]]) -> Callable[..., Any]:
    """Run a driver to the end and return the JSON it printed last."""

    def run(*args: object, timeout: float = 120) -> Any:
        process = start_driver(*args)
        stdout, stderr = process.communicate(timeout=timeout)
        assert process.returncode == 0, stderr
        return last_json(stdout)

    return run


def reader(root: Path, backend: str = "pickle") -> Any:
    """A decorated stand-in whose queries read the records under ``root``."""

    @experiment(root=root, backend=backend)
    def read() -> None: ...

    return read


def backend_of(function: Any) -> Backend:
    backend: Backend = function.backend
    return backend
