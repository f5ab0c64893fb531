"""Which filesystem a root is on: network filesystems are safe for sweeps on
many hosts, FUSE mounts of object stores are not and get a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from digital_experiments import experiment
from digital_experiments._store import filesystems

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:40 / /shared rw - nfs4 server:/export rw
31 30 0:41 / /shared/bucket rw - fuse.s3fs s3fs rw
32 22 0:42 / /mnt/my\\040disk rw - xfs /dev/sdb rw
33 22 0:43 / /scratch rw - lustre 10.0.0.1@tcp:/fs rw
"""


@pytest.mark.parametrize(
    ("path", "mount"),
    [
        ("/home/me/runs", ("/", "ext4")),
        ("/shared/team/runs", ("/shared", "nfs4")),
        ("/shared/bucket/runs", ("/shared/bucket", "fuse.s3fs")),  # the deepest mount wins
        ("/shared/bucketeer", ("/shared", "nfs4")),  # a name prefix is not a mount
        ("/mnt/my disk/x", ("/mnt/my disk", "xfs")),
        ("/scratch", ("/scratch", "lustre")),
    ],
)
def test_the_mount_of_a_path_is_its_deepest_mount(path: str, mount: tuple[str, str]) -> None:
    assert filesystems.mount_of(path, MOUNTINFO) == mount


def test_the_mount_of_a_real_tmpfs_is_found() -> None:
    found = filesystems.mount_of("/dev/shm")
    assert found is not None
    assert found[1] == "tmpfs"


@pytest.mark.parametrize(
    ("fstype", "kind"),
    [
        ("fuse.s3fs", "fuse"),
        ("fuse", "fuse"),
        ("fuseblk", "fuse"),
        ("nfs4", "network"),
        ("lustre", "network"),
        ("cifs", "network"),
        ("ext4", "local"),
        ("tmpfs", "local"),
    ],
)
def test_filesystems_are_told_apart(fstype: str, kind: str) -> None:
    assert filesystems.kind(fstype) == kind


def test_a_root_on_a_fuse_mount_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystems, "_warned", set())
    monkeypatch.setattr(filesystems, "mount_of", lambda path: ("/mnt/bucket", "fuse.s3fs"))
    with pytest.warns(UserWarning, match=r"FUSE mount \(fuse.s3fs at '/mnt/bucket'\)"):

        @experiment(root=tmp_path / "a")
        def first(x: int) -> int:
            return x

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same mount again: no second warning

        @experiment(root=tmp_path / "b")
        def second(x: int) -> int:
            return x


def test_a_root_on_a_local_or_network_filesystem_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filesystems, "_warned", set())
    for fstype in ("ext4", "nfs4"):
        monkeypatch.setattr(filesystems, "mount_of", lambda path, t=fstype: ("/x", t))
        with warnings.catch_warnings():
            warnings.simplefilter("error")

            @experiment(root=tmp_path / fstype)
            def run(x: int) -> int:
                return x
