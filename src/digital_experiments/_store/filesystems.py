"""Which filesystem a local root is on, and whether sweeps on many hosts may
share it.

Claims are create-only writes (``link``, or ``O_EXCL``), which are exclusive at
the server on local disks and on NFSv3 and later, and on Lustre, CIFS/SMB,
GPFS, BeeGFS and CephFS. FUSE mounts of object stores (s3fs, goofys, rclone,
SeaweedFS's ``weed mount``) are not: measured on two mounts of one SeaweedFS,
``O_EXCL``, ``link`` and ``flock`` each let both mounts win. A root there gets
a warning pointing to ``docs/stores.md``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from .base import Store

NETWORK = frozenset({"nfs", "nfs4", "lustre", "cifs", "smb3", "smbfs", "gpfs", "beegfs", "ceph"})
"""Network filesystems whose exclusive create is decided at the server."""

_warned: set[str] = set()


def mount_of(path: str | os.PathLike[str], mountinfo: str | None = None) -> tuple[str, str] | None:
    """``(mount point, filesystem type)`` of the mount holding ``path``, from
    ``/proc/self/mountinfo`` (``None`` where there is none: not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts, after = fields.split(), rest.split()
        if len(parts) < 5 or not after:
            continue
        point = parts[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, after[0])
    return best


def kind(fstype: str) -> str:
    """``"fuse"``, ``"network"`` or ``"local"`` for a filesystem type."""
    if fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk")):
        return "fuse"
    return "network" if fstype in NETWORK else "local"


def shared(store: Store) -> bool:
    """Whether other hosts may write ``store``: a remote store, or a folder on a
    network or FUSE filesystem (asked once per folder)."""
    return store.folder is None or _on_shared_mount(os.fspath(store.folder))


@functools.lru_cache(maxsize=256)
def _on_shared_mount(folder: str) -> bool:
    mount = mount_of(folder)
    return mount is not None and kind(mount[1]) != "local"


def warn_if_unsafe(root: str | os.PathLike[str]) -> None:
    """Warn (once per mount) when ``root`` is on a FUSE mount, where create-only
    writes are not exclusive between hosts."""
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the root may not exist yet: its mount is its parent's
    found = mount_of(probe)
    if found is None or kind(found[1]) != "fuse" or found[0] in _warned:
        return
    _warned.add(found[0])
    warnings.warn(
        f"The root {os.fspath(root)!r} is on a FUSE mount ({found[1]} at {found[0]!r}): "
        "create-only writes there are not exclusive between hosts, so sweeps sharing "
        "it from several machines may run a config twice. On one machine it is fine. "
        "See docs/stores.md for the filesystems that are safe.",
        stacklevel=3,
    )
