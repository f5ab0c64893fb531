"""A call creates one file for its ``running`` record, not three: the id's
reservation is written with the record's bytes and hard-linked into place
(``files.create_reserved``), and emptied once the final record replaces it."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from digital_experiments import experiment
from digital_experiments._model import layout
from digital_experiments._store import files

FIRST = "2026-01-01_00-00-00_000000"


def _create(root: Path, first: str = FIRST, data: bytes = b"record") -> str:
    return files.create_reserved(
        root, first, lambda id: os.path.join(root, f"{id}.pkl"), lambda id: data + id.encode()
    )


def test_the_record_appears_whole_and_its_id_stays_reserved(tmp_path: Path) -> None:
    id = _create(tmp_path)
    record = tmp_path / f"{id}.pkl"
    reservation = layout.reserved_ids(tmp_path) / id
    assert record.read_bytes() == b"record" + id.encode()
    assert os.path.samefile(record, reservation)  # one file, two names
    # the final record replaces the running one; the reservation then empties
    files.atomic_write(record, b"final", fsync=False)
    files.settle_reserved(tmp_path, id)
    assert record.read_bytes() == b"final"
    assert reservation.exists()
    assert reservation.stat().st_size == 0
    assert _create(tmp_path) > id  # a reserved id is never given again


def test_a_record_an_older_version_wrote_keeps_its_id(tmp_path: Path) -> None:
    """2.0.4 reserved nothing: a record already at the id is left alone, the next id taken."""
    first = files.new_id()  # after every id this process reserved: it is tried first
    (tmp_path / f"{first}.pkl").write_bytes(b"2.0.4's")
    id = _create(tmp_path, first)
    assert id > first
    assert (tmp_path / f"{first}.pkl").read_bytes() == b"2.0.4's"
    assert (layout.reserved_ids(tmp_path) / first).stat().st_size == 0  # reserved, holding nothing
    assert (tmp_path / f"{id}.pkl").read_bytes() == b"record" + id.encode()


@pytest.mark.parametrize("refusal", [errno.EPERM, errno.EIO])  # FAT; a FUSE mount
def test_without_hard_links_the_record_is_written_by_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    """A filesystem that refuses links (FAT, weed mount's EIO) still gets the record."""
    refused = []

    def no_link(source: str, target: str) -> None:
        refused.append(target)
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(files.os, "link", no_link)
    id = _create(tmp_path)
    assert refused == [os.path.join(tmp_path, f"{id}.pkl")]  # the link was tried
    assert (tmp_path / f"{id}.pkl").read_bytes() == b"record" + id.encode()
    assert (layout.reserved_ids(tmp_path) / id).stat().st_size == 0


def test_a_disk_that_fails_the_rename_too_raises_and_the_id_stays_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "link", full)
    monkeypatch.setattr(files, "atomic_write", full)
    with pytest.raises(OSError, match="No space"):
        _create(tmp_path)
    (reserved,) = layout.reserved_ids(tmp_path).iterdir()
    assert reserved.stat().st_size == 0
    assert [p.name for p in tmp_path.iterdir()] == [".de"]  # no record, no temp file


CHILD = """
import sys
from digital_experiments import experiment

@experiment(root=sys.argv[1])
def f(x):
    return x

f(1)
"""


def test_a_kill_before_the_link_leaves_no_record(tmp_path: Path) -> None:
    """Killed with the reservation written but not linked: no record is visible, the
    id stays reserved, and the next run records normally."""
    root = tmp_path / "runs"
    env = {**os.environ, "DE_FAULTS": "create_reserved.written=kill"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, timeout=120)
    assert done.returncode == -9  # the kill landed at the point
    (reserved,) = layout.reserved_ids(root).iterdir()
    assert reserved.stat().st_size > 0  # the bytes were written: the point came after
    assert [p.name for p in root.iterdir()] == [".de"]

    @experiment(root=root)
    def f(x: int) -> int:
        return x

    assert f(2) == 2
    (run,) = f.observations()
    assert run.id != reserved.name


def test_a_call_leaves_one_record_and_an_empty_reservation(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f(x: int) -> int:
        return x

    f(1)
    (run,) = f.observations()
    record = tmp_path / f"{run.id}.pkl"
    reservation = layout.reserved_ids(tmp_path) / run.id
    assert pickle.loads(record.read_bytes()).result == 1
    assert reservation.stat().st_size == 0
    assert not os.path.samefile(record, reservation)  # the final record replaced the first
