"""A filesystem without hard links (FAT, some network mounts): records stay atomic.

The child refuses ``os.link`` as such filesystems do (EPERM), writes 1 MB
records, and pauses at the moment a file is published: the open of a final
record name for writing (never done: that would be an in-place write), or the
rename of a finished temp file into place. It is killed there with SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from digital_experiments import query

from .conftest import driver_env

NO_LINKS = """
import errno, os, sys
from digital_experiments import experiment

root, pause_after = sys.argv[1], int(sys.argv[2])
refused = []

def link(src, dst, **kwargs):
    refused.append(dst)
    raise OSError(errno.EPERM, "Operation not permitted", dst)

def pause(what):
    print(what, len(refused), flush=True)
    sys.stdin.read()  # killed here

real_open, real_replace = os.open, os.replace
writes = 0

def watched_open(path, flags, *args, **kwargs):
    name = os.path.basename(os.fspath(path))
    if flags & os.O_WRONLY and name.endswith(".pkl") and not name.startswith("."):
        fd = real_open(path, flags, *args, **kwargs)
        pause(f"in-place {name}")
        return fd
    return real_open(path, flags, *args, **kwargs)

def watched_replace(src, dst, **kwargs):
    global writes
    if os.fspath(dst).endswith(".pkl"):
        writes += 1
        if writes > pause_after:
            pause(f"rename {os.path.basename(os.fspath(src))}")
    return real_replace(src, dst, **kwargs)

os.link, os.open, os.replace = link, watched_open, watched_replace

@experiment(root=root)
def big(i):
    return bytes(1_000_000)

for i in range(100):
    big(i)
"""


def test_kill_9_while_publishing_without_hard_links_tears_nothing(tmp_path: Path) -> None:
    """Killed at the publish step on a link-less filesystem: no torn or empty record, ever."""
    root = tmp_path / "runs"
    paused_at = []
    for pause_after in range(6):  # the running record, the completed one, and on
        process = subprocess.Popen(
            [sys.executable, "-c", NO_LINKS, str(root), str(pause_after)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=driver_env(root),
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.communicate(timeout=60)[1]
        paused_at.append(line.split()[0])
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        records = sorted(p for p in root.glob("*.pkl") if not p.name.startswith("."))
        assert all(path.stat().st_size > 0 for path in records), "an empty record was published"
        runs = query.load(root, status="all")  # warns (and the test fails) on a torn record
        assert len(runs) == len(records)
        assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
    assert set(paused_at) == {"rename"}  # every record was published by rename, none in place
