"""Roots on a real FUSE mount: two ``weed mount`` of one SeaweedFS filer, as two
hosts would mount it. Create-only writes are not exclusive between such mounts,
so a root there warns (docs/stores.md); it is treated as shared (heartbeats,
leases), and what one mount records the other reads."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from digital_experiments import experiment
from digital_experiments._store import LocalStore, filesystems

from .servers import _tool, running

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0 or sys.platform != "linux",
    reason="FUSE mounts need /dev/fuse and root (Linux)",
)

DEADLINE = 60.0  # for a mount to appear, and for one mount to see the other's files


@contextlib.contextmanager
def weed_mount(filer: str, folder: Path, log: Path) -> Iterator[Path]:
    """``folder`` mounted from the filer's ``/shared``, until the block ends."""
    folder.mkdir(parents=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_tool("weed"), "mount", f"-filer={filer}", f"-dir={folder}", "-filer.path=/shared"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while (filesystems.mount_of(folder) or ("", ""))[0] != str(folder):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{folder} never mounted: {log.read_text()}"
            time.sleep(0.05)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two mounts of one filer folder: what two hosts sharing a root see."""
    with (
        running("seaweedfs", tmp_path / "server") as server,
        weed_mount(server.filer, tmp_path / "a", tmp_path / "a.log") as a,
        weed_mount(server.filer, tmp_path / "b", tmp_path / "b.log") as b,
    ):
        yield a, b


def square(x: int) -> int:
    return x * x


def test_a_root_on_a_real_fuse_mount_warns_and_counts_as_shared(
    mounts: tuple[Path, Path],
) -> None:
    a, _ = mounts
    point, fstype = filesystems.mount_of(a / "runs") or ("", "")
    assert (point, filesystems.kind(fstype)) == (str(a), "fuse")
    with pytest.warns(UserWarning, match=r"FUSE mount .* not exclusive between hosts"):
        experiment(root=a / "runs")(square)
    assert filesystems.shared(LocalStore(a / "runs"))


READ = """
import json, sys, time
from digital_experiments import query
deadline = time.monotonic() + float(sys.argv[2])
while True:  # another mount sees new files after its metadata catches up
    runs = query.load(sys.argv[1])
    if len(runs) == 2 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(json.dumps(sorted((run.config["x"], run.result, run.status) for run in runs)))
"""


def test_what_one_mount_records_the_other_reads(mounts: tuple[Path, Path]) -> None:
    a, b = mounts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the FUSE warning, tested above
        f = experiment(root=a / "runs")(square)
    assert [f(2), f(3)] == [4, 9]
    done = subprocess.run(
        [sys.executable, "-c", READ, str(b / "runs"), str(DEADLINE)],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[[2, 4, "completed"], [3, 9, "completed"]]'
