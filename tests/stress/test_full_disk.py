"""A really full disk: a small tmpfs mounted for the test (needs root, as CI runs)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from digital_experiments import query

from ..conftest import python_code

FILLS_THE_DISK = """
import sys
from digital_experiments import StorageError, experiment

@experiment(root=sys.argv[1])
def big():
    return b"x" * 2_000_000  # more than the 1 MB disk holds

try:
    big()
except StorageError as error:
    print(len(error.result))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_ends_failed_and_returns_the_result(small_disk: Path) -> None:
    """On a full disk the run ends `failed` (not `running`) and StorageError carries the result."""
    root = small_disk / "runs"
    done = python_code(FILLS_THE_DISK, root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2000000"
    (run,) = query.load(root, status="all")
    assert run.status == "failed"
    assert "No space left on device" in run.metadata["error"]["message"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
