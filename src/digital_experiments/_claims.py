"""Claims: how two sweeps sharing a root avoid running one config twice.

With ``skip="completed"`` each distinct config is claimed by the driver, just
before it is submitted, with an exclusive file
``<root>/.de/sweep-claims/<config_key>`` holding the holder's host, pid and a
token (:func:`try_claim`). The worker *adopts* the claim when it starts
(:func:`adopt` rewrites the holder, same token; a job that finds another token
was superseded and does not run) and removes it when the run ends
(:func:`release`), after indexing a completed run in the cache index
(:mod:`digital_experiments._cache`), where other sweeps look for it.

A claim whose holder is known dead (same host, pid gone) is taken over; one held
by a live process or another host is waited for, and its run's record returned;
``stale_after`` lets claims that have not been touched for that long be taken
over too (holders touch theirs: :func:`touch`, :func:`heartbeat`). Creating a
claim is lock-free (exclusive create); the rare transitions that could race (a
takeover, adopting a claim whose holder is not known alive) also hold a file
lock on the config.

A :class:`Claim` travels to the worker inside the sweep's job, so it must stay
a picklable module-level class.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _layout as layout
from . import _storage as storage

# an empty claim may be one being written in place (no hard links): wait this long
_UNREADABLE_GRACE = 5.0


@dataclass(frozen=True)
class Claim:
    """A sweep's claim on one config of one root, as handed to the process that runs it."""

    root: str
    key: str  # the config's key
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    stale_after: float | None = None

    @property
    def path(self) -> str:
        return str(layout.sweep_claim(Path(self.root), self.key))

    @property
    def lock(self) -> Path:
        """Held by the rare transitions that could race: a takeover, an adoption."""
        return layout.lock(Path(self.root), f"sweep-{self.key}")


def _claim_bytes(token: str) -> bytes:
    holder = {**storage.process_info(), "token": token, "since": time.time()}
    return json.dumps(holder).encode()


def _read_claim(path: str) -> tuple[dict[str, Any] | None, float]:
    """``(holder, mtime)``; ``holder`` is ``None`` if there is no claim, ``{}`` if unreadable.

    Claims are published whole (a hard link of a finished temp file), so an
    unreadable claim is garbage, and reads as written at the epoch: stale at
    once. Only an *empty* one may be a claim being written in place, on a
    filesystem without hard links: it keeps its real age.
    """
    try:
        mtime = os.stat(path).st_mtime
        data = storage.read_bytes(path)
        holder = json.loads(data)
    except FileNotFoundError:
        return None, 0.0
    except ValueError:
        return {}, (mtime if not data else 0.0)
    return (holder, mtime) if isinstance(holder, dict) else ({}, 0.0)


def _is_mine(holder: dict[str, Any]) -> bool:
    return storage.is_current_process(holder)


def _stale(holder: dict[str, Any], mtime: float, stale_after: float | None) -> bool:
    """Whether a claim may be taken over: its holder is dead, or it was left too long."""
    age = time.time() - mtime
    if stale_after is not None and age > stale_after:
        return True
    if not holder:
        return age > _UNREADABLE_GRACE
    return storage.process_gone(holder)


def try_claim(claim: Claim) -> bool:
    """Claim the config of ``claim``, taking over a stale claim; ``False`` if held."""
    data = _claim_bytes(claim.token)
    holder, mtime = _read_claim(claim.path)  # waiting on a held claim writes nothing
    if holder is None:
        if storage.exclusive_write(claim.path, data):
            return True
        holder, mtime = _read_claim(claim.path)
    if holder is not None and not _stale(holder, mtime, claim.stale_after):
        return False
    # Taking over is rare: a lock keeps two takers (and a job adopting a claim
    # from another host) from interleaving; exclusive create still decides.
    with storage.file_lock(claim.lock):
        holder, mtime = _read_claim(claim.path)
        if holder is not None:
            if not _stale(holder, mtime, claim.stale_after):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim.path)
        return storage.exclusive_write(claim.path, data)


def adopt(claim: Claim) -> bool:
    """Make the running process the holder of ``claim``'s claim; ``False`` if it was lost."""
    holder, _ = _read_claim(claim.path)
    if not holder or holder.get("token") != claim.token:
        return False  # taken over meanwhile: someone else runs this config
    if _is_mine(holder):
        return True
    if storage.same_namespace(holder) and not storage.process_gone(holder):
        # a live holder's claim is never taken over (stale_after aside: the driver
        # touches it), so nobody else writes it now: no lock needed
        storage.atomic_write(claim.path, _claim_bytes(claim.token), fsync=False)
        return True
    # a dead holder, or another host's: a takeover may be racing us (it holds the lock)
    with storage.file_lock(claim.lock):
        holder, _ = _read_claim(claim.path)
        if not holder or holder.get("token") != claim.token:
            return False
        storage.atomic_write(claim.path, _claim_bytes(claim.token), fsync=False)
    return True


def release(claim: Claim, only_unadopted: bool = False) -> None:
    """Remove ``claim``'s claim if it is still this claim's.

    With ``only_unadopted`` the claim stays if a worker adopted it: that worker
    removes it when its run ends.
    """
    holder, _ = _read_claim(claim.path)
    if not holder or holder.get("token") != claim.token:
        return
    if only_unadopted and not _is_mine(holder):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(claim.path)


def touch(claim: Claim) -> None:
    holder, _ = _read_claim(claim.path)
    if holder and holder.get("token") == claim.token:
        with contextlib.suppress(OSError):
            os.utime(claim.path)


@contextlib.contextmanager
def heartbeat(claim: Claim | None) -> Iterator[None]:
    """Keep touching the claim while the run lasts, so ``stale_after`` never expires it."""
    if claim is None or claim.stale_after is None:
        yield
        return
    stop = threading.Event()
    interval = claim.stale_after / 4

    def beat() -> None:
        while not stop.wait(interval):
            touch(claim)

    thread = threading.Thread(target=beat, name="digital-experiments-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
