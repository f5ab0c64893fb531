"""Liveness across PID namespaces: containers that share a hostname but not their pids.

A run started in another PID namespace (``unshare --pid``, as Docker with
``--uts=host`` or Kubernetes with ``hostNetwork`` do) has a pid that means
nothing here: it must read as alive, and its files must never be removed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from digital_experiments import query
from digital_experiments._store import files as storage
from digital_experiments.cli import main as cli

from .conftest import driver_env

# A pid no process of this namespace can have (above pid_max): proof that only
# the namespace, not luck, keeps the run alive.
INNER_PID = 100_000

IN_NAMESPACE = """
import os, sys
from digital_experiments import experiment
from digital_experiments._store import files as storage

@experiment(root=sys.argv[1])
def wait():
    temp = storage._temp_path(os.path.join(sys.argv[1], "big.pkl"))
    with open(temp, "wb") as file:  # a large record being written, as far as anyone can tell
        file.write(b"partial")
    print(os.getpid(), os.path.basename(temp), flush=True)
    sys.stdin.read()  # until the test is done

wait()
"""


@pytest.fixture
def run_in_another_namespace(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    """A live run in a new PID namespace: ``(root, its pid there, its temp file's name)``."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to make a PID namespace")
    root = tmp_path / "runs"
    script = f'echo {INNER_PID - 1} > /proc/sys/kernel/ns_last_pid; "{sys.executable}" -c "$0" "$1"'
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script, IN_NAMESPACE, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=driver_env(root),
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        _, stderr = process.communicate(timeout=60)
        if "Operation not permitted" in stderr:
            pytest.skip(f"cannot make a PID namespace here: {stderr.strip()}")
        raise AssertionError(stderr)
    pid, temp = line.split()
    try:
        yield root, int(pid), temp
    finally:
        process.communicate(input="", timeout=60)


def test_a_live_run_in_another_pid_namespace_reads_running(
    run_in_another_namespace: tuple[Path, int, str],
) -> None:
    """Its pid does not exist here, yet the run is `running`, not `abandoned`."""
    root, pid, _ = run_in_another_namespace
    assert pid == INNER_PID
    assert not storage.pid_alive(pid)  # 3.0.0 took it for dead
    (run,) = query.load(root, status="all")
    assert run.metadata["process"]["pidns"] != storage.process_info()["pidns"]
    assert run.status == "running"
    assert query.load(root, status="abandoned") == []


def test_prune_abandoned_leaves_a_live_run_of_another_namespace(
    run_in_another_namespace: tuple[Path, int, str],
) -> None:
    """`prune --status abandoned` does not delete another container's live run."""
    root, _, _ = run_in_another_namespace
    assert cli(["prune", str(root), "--status", "abandoned", "--yes"]) == 0
    assert len(query.load(root, status="all")) == 1


def test_listing_keeps_the_temp_files_of_another_namespace(
    run_in_another_namespace: tuple[Path, int, str],
) -> None:
    """A listing never removes a temp file whose writer lives in another PID namespace."""
    root, _, temp = run_in_another_namespace
    query.load(root, status="all")
    assert (root / temp).exists()


def test_temp_files_of_a_host_whose_name_extends_ours_are_kept(tmp_path: Path) -> None:
    """Host `vm` never removes host `vm-4242`'s temp files (names parse unambiguously)."""
    for name in (
        f"{storage.TEMP_PREFIX}{storage.HOST}-4242-1-abcdef-x.pkl",  # host "<ours>-4242"?
        f"{storage.TEMP_PREFIX}{storage.HOST}-999999-abcdef-x.pkl",  # a 3.0.0 name
    ):
        (tmp_path / name).write_bytes(b"partial")
        storage.remove_stale_temp(tmp_path, name)
        assert (tmp_path / name).exists(), name


def test_a_sweep_never_takes_over_the_claim_of_another_namespace(
    run_in_another_namespace: tuple[Path, int, str], tmp_path: Path
) -> None:
    """A sweep claim held by a live process of another PID namespace is not taken over."""
    from digital_experiments._store import lease as leases
    from digital_experiments._sweep import claims

    (run,) = query.load(run_in_another_namespace[0], status="all")
    theirs = claims.Claim(str(tmp_path), "key", "theirs").lease
    body = {"token": "theirs", "generation": 0, "holder": run.metadata["process"]}
    assert theirs.store.put_new(theirs.generation_key(0), json.dumps(body).encode())
    claim = claims.Claim(str(tmp_path), "key", "mine")
    assert not claims.try_claim(claim)
    assert leases.holds(theirs)
