"""The read index (``.de/index/``): listings served from segments, never stale.

Each test checks what a listing returns against the records themselves, and
that the path it meant to test ran (records really read from a segment, a
segment really published, merged or ignored). Records count as settled at
once here (``RECENT_NS`` is patched), except where the racy rule is tested.
"""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import experiment
from digital_experiments._runs import index
from digital_experiments._store import files
from digital_experiments._store.local import LocalStore

from .conftest import Touch
from .servers import use_server

RUNS = index.MIN_NEW + 8  # enough for a listing to publish a segment


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as older than the racy window (so it may be indexed)."""
    monkeypatch.setattr(files, "RECENT_NS", -1)


def _record(root: Path, runs: int = RUNS, backend: str = "pickle") -> Any:
    @experiment(root=root, backend=backend)
    def square(x: int) -> dict[str, int]:
        return {"y": x * x}

    for x in range(runs):
        square(x)
    return square


def _segments(root: Path, ext: str = "pkl") -> list[Path]:
    folder = root / ".de" / "index" / ext
    return sorted(folder.glob("seg-*")) if folder.is_dir() else []


class _Reads:
    """Counts the record files read (by name) while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, suffix: str = ".pkl") -> None:
        self.names: list[str] = []
        real = files.read_bytes

        def counting(path: str) -> bytes:
            if path.endswith(suffix) and "/.de/" not in path:
                self.names.append(os.path.basename(path))
            return real(path)

        monkeypatch.setattr(files, "read_bytes", counting)


def _results(function: Any) -> dict[str, Any]:
    return {run.id: run.result for run in function.observations()}


def test_a_second_listing_reads_no_record(
    tmp_path: Path, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    square = _record(tmp_path / "runs")
    first = square.observations()
    assert len(_segments(tmp_path / "runs")) == 1
    reads = _Reads(monkeypatch)
    second = square.observations()
    assert reads.names == []  # every record came from the segment
    assert second == first
    assert [run.metadata.get("environment") is not None for run in second] == [True] * RUNS
    assert [run.result for run in second] == [{"y": x * x} for x in range(RUNS)]


def test_a_rewritten_record_is_read_again(
    tmp_path: Path, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """running → final (a rename: a new inode), as every writer publishes."""
    square = _record(tmp_path / "runs")
    runs = square.observations()
    target = runs[3]
    square.backend.record(target._replace(result={"y": -1}))
    reads = _Reads(monkeypatch)
    assert _results(square)[target.id] == {"y": -1}
    assert reads.names == [f"{target.id}.pkl"]


@pytest.mark.parametrize("how", ["in place", "unlink and create"])
def test_an_edit_that_keeps_size_and_mtime_is_seen(tmp_path: Path, settled: None, how: str) -> None:
    """An editor writing in place, or tar unpacking over a record, with the old
    mtime put back and the same size: only the ctime (and inode) tell."""
    square = _record(tmp_path / "runs", backend="json")
    runs = square.observations()
    assert _segments(tmp_path / "runs", "json")
    target = runs[5]
    path = tmp_path / "runs" / f"{target.id}.json"
    before = path.stat()
    text = path.read_text()
    edited = text.replace('"y": 25', '"y": 26')
    assert edited != text
    assert len(edited) == len(text)
    if how == "in place":
        with open(path, "r+") as file:
            file.write(edited)
    else:
        path.unlink()
        path.write_text(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert path.stat().st_size == before.st_size
    assert _results(square)[target.id] == {"y": 26}


def test_added_and_deleted_records_are_listed_as_they_are(tmp_path: Path, settled: None) -> None:
    square = _record(tmp_path / "runs")
    runs = square.observations()
    (tmp_path / "runs" / f"{runs[0].id}.pkl").unlink()
    square(1000)
    now = square.observations()
    assert runs[0].id not in {run.id for run in now}
    assert [run.result for run in now][-1] == {"y": 1000 * 1000}
    assert len(now) == RUNS


def test_fresh_records_are_never_indexed(tmp_path: Path) -> None:
    """git's racy rule: a file changed in its mtime's last tick gets no stamp, so a
    rewrite in the same tick cannot hide behind an equal stamp."""
    square = _record(tmp_path / "runs")
    assert {stamp for _, stamp in LocalStore(tmp_path / "runs").stamped("")} == {None}
    square.observations()
    assert _segments(tmp_path / "runs") == []


def test_the_index_deleted_mid_listing(
    tmp_path: Path, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process removes ``.de/index`` between the listing of the segments
    and their reading: the records are read instead."""
    square = _record(tmp_path / "runs")
    expected = _results(square)
    real = LocalStore.list
    removed = []

    def list_then_remove(self: LocalStore, prefix: str = "", start_after: str | None = None):  # type: ignore[no-untyped-def]
        keys = list(real(self, prefix, start_after))
        if prefix.startswith(".de/index/") and keys:
            for segment in _segments(tmp_path / "runs"):
                segment.unlink()
                removed.append(segment)
        return iter(keys)

    monkeypatch.setattr(LocalStore, "list", list_then_remove)
    reads = _Reads(monkeypatch)
    assert _results(square) == expected
    assert removed
    assert len(reads.names) == RUNS


def test_garbage_segments_are_ignored_and_kept(tmp_path: Path, settled: None) -> None:
    square = _record(tmp_path / "runs")
    expected = _results(square)
    (good,) = _segments(tmp_path / "runs")
    folder = good.parent
    planted = {
        "seg-0-random": os.urandom(4096),
        "seg-1-truncated": good.read_bytes()[: good.stat().st_size // 2],
        "seg-2-empty": b"",
        "seg-3-wrong-shape": index.OBJECTS + pickle.dumps(["not", "entries"]),
    }
    for name, data in planted.items():
        (folder / name).write_bytes(data)
    assert _results(square) == expected
    for name, data in planted.items():
        assert (folder / name).read_bytes() == data  # nothing of the user's is deleted


def test_a_json_root_never_unpickles_its_index(tmp_path: Path, settled: None) -> None:
    root = tmp_path / "runs"
    square = _record(root, backend="json")
    expected = _results(square)
    assert _segments(root, "json")[0].read_bytes().startswith(index.BYTES)
    marker = tmp_path / "unpickled"
    entries: Any = ([square.observations()[0].id], ["x"], [(Touch(marker), {}, {}, {})])
    (root / ".de" / "index" / "json" / "seg-9").write_bytes(index.OBJECTS + pickle.dumps(entries))
    assert _results(square) == expected
    assert not marker.exists()


def test_records_without_an_index_list_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root written before the index existed (no ``.de/index``), or whose index
    is deleted between listings: the same runs, and the index is rebuilt."""
    square = _record(tmp_path / "runs")
    files_before = _results(square)  # all too fresh to index: read from the files
    assert _segments(tmp_path / "runs") == []
    monkeypatch.setattr(files, "RECENT_NS", -1)
    assert _results(square) == files_before
    assert _segments(tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / ".de" / "index")
    assert _results(square) == files_before
    assert _segments(tmp_path / "runs")  # built again


@pytest.mark.parametrize("kind", ["memory", "seaweedfs", "moto"])
def test_every_store_rereads_a_rewritten_record(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond a folder, a record's stamp is the store's version (an S3 ETag from
    the listing, the memory store's write counter): the second listing reads only
    the record rewritten since the first."""
    if kind == "memory":
        root = f"memory://{uuid.uuid4().hex}"
    else:
        root = f"{use_server(kind, request, monkeypatch).url()}/runs"
    square = _record(root)  # type: ignore[arg-type]
    runs = square.observations()
    store = square.backend.store
    assert list(store.list(index.prefix(".pkl")))  # a segment was published
    square.backend.record(runs[2]._replace(result={"y": -1}))
    read: list[str] = []
    real = type(store).read_many

    def counting(self: Any, keys: Any) -> Any:
        keys = list(keys)
        read.extend(key for key in keys if not key.startswith(".de/"))
        return real(self, keys)

    monkeypatch.setattr(type(store), "read_many", counting)
    again = square.observations()
    assert read == [f"{runs[2].id}.pkl"]
    assert [run.result for run in again] == [
        {"y": -1} if i == 2 else {"y": i * i} for i in range(RUNS)
    ]


def test_segments_are_merged_past_the_limit(tmp_path: Path, settled: None) -> None:
    root = tmp_path / "runs"
    square = _record(root)
    square.observations()
    published = 1
    while published < index.MAX_SEGMENTS:
        for x in range(index.MIN_NEW):
            square(10_000 + published * 100 + x)
        square.observations()
        published += 1
    assert len(_segments(root)) == index.MAX_SEGMENTS
    square(99_999)
    runs = square.observations()  # the ninth would-be segment: all merged into one
    assert len(_segments(root)) == 1
    assert len(runs) == RUNS + (index.MAX_SEGMENTS - 1) * index.MIN_NEW + 1
    assert _results(square) == {run.id: run.result for run in runs}


def test_a_root_the_reader_cannot_write_still_lists(
    tmp_path: Path, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    square = _record(tmp_path / "runs")

    def refuse(self: LocalStore, key: str, data: bytes, *, sync: bool = True) -> str:
        raise PermissionError(13, "Permission denied", key)

    monkeypatch.setattr(LocalStore, "put", refuse)
    assert [run.result for run in square.observations()] == [{"y": x * x} for x in range(RUNS)]
    assert _segments(tmp_path / "runs") == []


def test_a_limited_listing_leaves_the_index_alone(tmp_path: Path, settled: None) -> None:
    square = _record(tmp_path / "runs")
    assert len(square.observations(limit=3)) == 3
    assert _segments(tmp_path / "runs") == []


# -- kill -9 of readers mid-write (real processes, stopped at fault points)

_LIST = """
import sys
from digital_experiments._store import files
files.RECENT_NS = -1
from digital_experiments.query import load
print(len(load(sys.argv[1])))
"""


def _list_in_a_process(root: Path, faults: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DE_FAULTS": faults}
    return subprocess.run(
        [sys.executable, "-c", _LIST, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_a_reader_killed_while_publishing_a_segment(tmp_path: Path, settled: None) -> None:
    root = tmp_path / "runs"
    square = _record(root)
    killed = _list_in_a_process(root, "atomic_write.before-rename=kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = root / ".de" / "index" / "pkl"
    assert [p.name for p in folder.iterdir() if files.is_temp(p.name)]  # it died mid-write
    assert _segments(root) == []
    assert [run.result for run in square.observations()] == [{"y": x * x} for x in range(RUNS)]
    assert not [p.name for p in folder.iterdir() if files.is_temp(p.name)]  # cleaned
    assert len(_segments(root)) == 1


def test_a_compactor_killed_between_merge_and_delete(tmp_path: Path, settled: None) -> None:
    """The merged segment is published, the old ones are still there: entries
    twice, every listing right, and the next compaction tidies up."""
    root = tmp_path / "runs"
    square = _record(root)
    square.observations()
    for n in range(1, index.MAX_SEGMENTS):
        for x in range(index.MIN_NEW):
            square(10_000 + n * 100 + x)
        square.observations()
    assert len(_segments(root)) == index.MAX_SEGMENTS
    # read from the records (a limited listing leaves the index alone)
    expected = {run.id: run.result for run in square.observations(limit=10**6)}
    killed = _list_in_a_process(root, "index.forget=kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_segments(root)) == index.MAX_SEGMENTS + 1  # merged, nothing forgotten yet
    assert _results(square) == expected  # merges again (past the limit) and forgets
    assert len(_segments(root)) == 1
    assert _results(square) == expected


def test_paused_gc_restores_the_collector() -> None:
    assert gc.isenabled()
    with index.paused_gc():
        assert not gc.isenabled()
        with index.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder still holds it
    assert gc.isenabled()
    gc.disable()
    try:
        with index.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
