"""The trash on a bucket survives ``kill -9`` between an object's copy and its delete.

A child process deletes (or restores) a run on the real S3 server (SeaweedFS),
paused by the fault point ``trash.copied`` at its N-th object: copied to the
other place, not yet deleted from this one. The test kills it there with
SIGKILL, then checks that every object of the run is in place, in the trash, or
both (never neither), and that the next delete (or restore) finishes the move,
leaving each object exactly once, in the right place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digital_experiments import current_dir, experiment, log
from digital_experiments._read import trash
from digital_experiments._store.s3 import S3Store
from digital_experiments.experiment import ExperimentFunction

from .servers import Server

pytest.importorskip("boto3")

DEADLINE = 120.0  # only a bound on a hang: the test synchronises on the signal file

CHILD = """
import sys
from digital_experiments import experiment

def plain(x):
    return x

url, action, id = sys.argv[1:4]
getattr(experiment(root=url)(plain), action)(id)
print("finished")  # never, when the fault point pauses it
"""


def square(x: int) -> dict[str, int]:
    (current_dir() / "out.txt").write_text(f"x={x}")
    (current_dir() / "deep").mkdir()
    (current_dir() / "deep" / "more.bin").write_bytes(bytes([x % 256]) * 3)
    log(loss=1.0 / (x + 1))
    return {"y": x * x}


def _objects(id: str) -> dict[str, str]:
    """``{in place: in the trash}`` for every object of a tagged run of ``square``."""
    return {
        f"{id}.pkl": f".de/trash/{id}/{id}.pkl",
        f".de/metrics/{id}.jsonl": f".de/trash/{id}/metrics.jsonl",
        f".de/annotations/{id}.json": f".de/trash/{id}/annotations.json",
        f"storage/{id}/out.txt": f"storage/.trash/{id}/out.txt",
        f"storage/{id}/deep/more.bin": f"storage/.trash/{id}/deep/more.bin",
    }


def _of_run(url: str, id: str) -> set[str]:
    return {key for key in S3Store(url).walk("") if id in key}


def _kill_at(server: Server, url: str, action: str, id: str, nth: int, tmp_path: Path) -> str:
    """Run ``action`` (delete or restore) of run ``id`` in a child paused at its
    ``nth`` copied object, SIGKILL it there; the key it had copied, not deleted."""
    signal_file = tmp_path / f"{action}-{nth}.signal"
    env = {
        **os.environ,
        **server.env(),
        "DE_CACHE": str(tmp_path / "child-cache"),
        "DE_FAULTS": f"{trash.COPIED}=pause@{nth}",
        "DE_FAULTS_SIGNAL": str(signal_file),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, action, id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        # the point writes its line, then blocks: a whole line means it is there
        while not (signal_file.exists() and signal_file.read_text().endswith("\n")):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the fault point"
            time.sleep(0.01)  # polling a file the child writes
    finally:
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    assert "finished" not in out
    name, source = signal_file.read_text().split()
    assert name == trash.COPIED
    return source


def _check_nothing_lost(url: str, id: str, copied: str) -> None:
    """Each object of run ``id`` in place, in the trash, or both; ``copied`` in both."""
    found = _of_run(url, id)
    for here, there in _objects(id).items():
        assert here in found or there in found, f"{here} is neither in place nor in the trash"
    both = {key for pair in _objects(id).items() if set(pair) <= found for key in pair}
    assert copied in both  # the kill landed between the copy and the delete


def _tagged_run(url: str) -> tuple[ExperimentFunction[[int], dict[str, int]], str]:
    run = experiment(root=url)(square)
    run(4)
    (id,) = [o.id for o in run.observations()]
    run.tag(id, best=True)
    assert _of_run(url, id) == set(_objects(id))  # every object the test follows, no more
    return run, id


@pytest.mark.parametrize("nth", [1, 4], ids=["the-record", "an-artefact"])
def test_a_delete_killed_between_copy_and_delete_is_finished_by_the_next(
    server: Server, tmp_path: Path, nth: int
) -> None:
    url = server.url()
    run, id = _tagged_run(url)
    copied = _kill_at(server, url, "delete", id, nth, tmp_path)
    if nth == 1:
        assert copied == f"{id}.pkl"  # the record moves first
    _check_nothing_lost(url, id, copied)

    assert run.delete(id) == [id]
    # each object once, in the trash
    assert _of_run(url, id) == {*_objects(id).values(), f".de/trash/{id}/{trash.DELETED}"}
    assert run.observations() == []
    assert run.trash() == [id]
    back = run.restore(id)
    assert back.result == {"y": 16}
    assert back.metadata["tags"] == {"best": True}
    assert _of_run(url, id) == set(_objects(id))


@pytest.mark.parametrize("nth", [2, 5], ids=["a-part", "the-record"])
def test_a_restore_killed_between_copy_and_delete_is_finished_by_the_next(
    server: Server, tmp_path: Path, nth: int
) -> None:
    url = server.url()
    run, id = _tagged_run(url)
    assert run.delete(id) == [id]
    copied = _kill_at(server, url, "restore", id, nth, tmp_path)
    if nth == 5:
        assert copied == f".de/trash/{id}/{id}.pkl"  # the record moves back last
    _check_nothing_lost(url, id, copied)

    back = run.restore(id)
    assert back.id == id
    assert back.result == {"y": 16}
    assert _of_run(url, id) == set(_objects(id))  # each object once, in place
    assert run.trash() == []
    (listed,) = run.observations()
    assert listed.metadata["tags"] == {"best": True}
    assert list(listed.metrics()["value"]) == [0.2]
    assert sorted(p.name for p in run.artefacts(id)) == ["more.bin", "out.txt"]
