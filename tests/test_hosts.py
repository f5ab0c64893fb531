"""Leases across hosts that cannot see each other's pids, on a real S3 server.

Each host is a process in its own UTS and PID namespaces (``unshare --uts --pid
--fork --mount-proc``, as root), with its own hostname, talking to the loopback
SeaweedFS. A host killed with SIGKILL while holding a lease is taken over by
another host once the lease has shown no heartbeat for its length, on the
taker's own clock; a host frozen (SIGSTOP) past its lease is taken over and,
once resumed, finds it no longer holds the lease and publishes nothing.

The hosts synchronise with the test through files (``ready``, ``go``) and their
output, never sleeps; the only waits are polls with generous deadlines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digital_experiments._store import lease as leases
from digital_experiments._store.lease import Lease
from digital_experiments._store.s3 import S3Store

from .servers import Server

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="hosts are PID namespaces: unshare needs root (CI runs as root)",
)

LENGTH = 1.0  # the lease length: short, so the taker's wait is short
DEADLINE = 180.0
UNSHARE = ["unshare", "--uts", "--pid", "--fork", "--mount-proc"]

HOST = """
import json, os, socket, sys, threading
from pathlib import Path
socket.sethostname(sys.argv[1])  # before the library reads the host name
from digital_experiments._store import lease as leases
from digital_experiments._store.lease import Lease
from digital_experiments._store.s3 import S3Store

name, url, folder, role = sys.argv[1:5]
folder = Path(folder)
lease = Lease(S3Store(url), "config-1", token=name, length={length})
if role == "holder":
    assert leases.acquire(lease)
    leases.beat(lease, adopt=True)

    def beats():  # as a sweep's worker renews its claim: only a kill or a freeze stops it
        while not (folder / "go").exists() and leases.beat(lease):
            threading.Event().wait({length} / 4)

    threading.Thread(target=beats, daemon=True).start()
    (folder / f"{{name}}.ready").write_text("held")
    # hold until told to publish: the test kills or freezes this host meanwhile
    while not (folder / "go").exists():
        threading.Event().wait(0.05)
    if leases.holds(lease):
        (folder / "published").write_text(name)
        print("published")
    else:
        print("lost")
else:
    # another host: take the lease over once it is stale on this host's clock
    while not leases.acquire(lease):
        threading.Event().wait(0.05)
    (folder / "published").write_text(name)
    print("took", leases.generations(lease))
"""


def _host(name: str, role: str, server: Server, url: str, folder: Path) -> subprocess.Popen[str]:
    code = HOST.format(length=LENGTH)
    env = {**os.environ, **server.env()}
    return subprocess.Popen(
        [*UNSHARE, sys.executable, "-c", code, name, url, str(folder), role],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the test signals the whole host
    )


def _wait_for(path: Path, host: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        assert host.poll() is None, host.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)  # polling a file another process writes


def _take_over(server: Server, url: str, folder: Path) -> None:
    """Another host takes the lease over (once stale on its clock) and publishes."""
    taker = _host("host-b", "taker", server, url, folder)
    out, err = taker.communicate(timeout=DEADLINE)
    assert taker.returncode == 0, err
    assert out.split()[0] == "took"


def test_a_host_killed_holding_a_lease_is_taken_over_by_another(
    seaweedfs: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = seaweedfs.url()
    holder = _host("host-a", "holder", seaweedfs, url, tmp_path)
    _wait_for(tmp_path / "host-a.ready", holder)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.communicate()
    assert holder.returncode == -signal.SIGKILL
    _take_over(seaweedfs, url, tmp_path)
    assert (tmp_path / "published").read_text() == "host-b"
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    lease = Lease(S3Store(url), "config-1", token="host-b")
    assert leases.holds(lease)
    assert leases.generations(lease) == [1]  # host-a's generation 0 taken over and tidied


def test_a_host_frozen_past_its_lease_publishes_nothing_over_the_new_holder(
    seaweedfs: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = seaweedfs.url()
    holder = _host("host-a", "holder", seaweedfs, url, tmp_path)
    _wait_for(tmp_path / "host-a.ready", holder)
    os.killpg(holder.pid, signal.SIGSTOP)  # frozen: no heartbeat, no progress
    try:
        _take_over(seaweedfs, url, tmp_path)
    finally:
        os.killpg(holder.pid, signal.SIGCONT)
    (tmp_path / "go").write_text("")  # resumed: it now tries to publish
    out, err = holder.communicate(timeout=DEADLINE)
    assert holder.returncode == 0, err
    assert out.strip() == "lost"
    assert (tmp_path / "published").read_text() == "host-b"
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    assert leases.holds(Lease(S3Store(url), "config-1", token="host-b"))
