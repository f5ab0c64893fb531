"""Claims: how two sweeps sharing a root avoid running one config twice.

With ``skip="completed"`` each distinct config is claimed by the driver, just
before it is submitted, with an exclusive file
``<root>/.de/sweep-claims/<config_key>`` holding the holder's host, pid and a
token (:func:`try_claim`, with a :class:`Ticket` from :func:`new_ticket`). The
worker *adopts* the claim when it starts (:func:`adopt` rewrites the holder,
same token; a job that finds another token was superseded and does not run) and
removes it when the run ends (:func:`release`), after indexing a completed run
under ``<root>/.de/cache/<config_key>``, where other sweeps look for it
(:func:`indexed`).

A claim whose holder is known dead (same host, pid gone) is taken over; one held
by a live process or another host is waited for, and its run's record returned;
``stale_after`` lets claims that have not been touched for that long be taken
over too (holders touch theirs: :func:`touch`, :func:`heartbeat`). Creating a
claim is lock-free (exclusive create); the rare transitions that could race (a
takeover, adopting a claim whose holder is not known alive) also hold a file
lock on the config.

A :class:`Ticket` travels to the worker inside the sweep's job, so it must stay
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .core import Observation
from .keys import same_code
from .runs import COMPLETED

if TYPE_CHECKING:
    from .experiment import Experiment
    from .plan import Entry

CLAIMS = "sweep-claims"
# an empty claim may be one being written in place (no hard links): wait this long
_UNREADABLE_GRACE = 5.0


@dataclass(frozen=True)
class Ticket:
    """A config's claim, as handed to the process that runs it."""

    path: str
    token: str
    stale_after: float | None = None


def new_ticket(exp: Experiment[Any, Any], entry: Entry, stale_after: float | None) -> Ticket:
    path = storage.internal_dir(exp.root, CLAIMS, entry.key or "")
    return Ticket(str(path), uuid.uuid4().hex, stale_after)


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


def _lock_path(ticket: Ticket) -> Path:
    path = Path(ticket.path)
    return path.parent.parent / "locks" / f"sweep-{path.name}.lock"


def try_claim(ticket: Ticket) -> bool:
    """Claim the config of ``ticket``, taking over a stale claim; ``False`` if held."""
    data = _claim_bytes(ticket.token)
    holder, mtime = _read_claim(ticket.path)  # waiting on a held claim writes nothing
    if holder is None:
        if storage.exclusive_write(ticket.path, data):
            return True
        holder, mtime = _read_claim(ticket.path)
    if holder is not None and not _stale(holder, mtime, ticket.stale_after):
        return False
    # Taking over is rare: a lock keeps two takers (and a job adopting a claim
    # from another host) from interleaving; exclusive create still decides.
    with storage.file_lock(_lock_path(ticket)):
        holder, mtime = _read_claim(ticket.path)
        if holder is not None:
            if not _stale(holder, mtime, ticket.stale_after):
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ticket.path)
        return storage.exclusive_write(ticket.path, data)


def adopt(ticket: Ticket) -> bool:
    """Make the running process the holder of ``ticket``'s claim; ``False`` if it was lost."""
    holder, _ = _read_claim(ticket.path)
    if not holder or holder.get("token") != ticket.token:
        return False  # taken over meanwhile: someone else runs this config
    if _is_mine(holder):
        return True
    if storage.same_namespace(holder) and not storage.process_gone(holder):
        # a live holder's claim is never taken over (stale_after aside: the driver
        # touches it), so nobody else writes it now: no lock needed
        storage.atomic_write(ticket.path, _claim_bytes(ticket.token), fsync=False)
        return True
    # a dead holder, or another host's: a takeover may be racing us (it holds the lock)
    with storage.file_lock(_lock_path(ticket)):
        holder, _ = _read_claim(ticket.path)
        if not holder or holder.get("token") != ticket.token:
            return False
        storage.atomic_write(ticket.path, _claim_bytes(ticket.token), fsync=False)
    return True


def release(ticket: Ticket, only_unadopted: bool = False) -> None:
    """Remove ``ticket``'s claim if it is still this ticket's.

    With ``only_unadopted`` the claim stays if a worker adopted it: that worker
    removes it when its run ends.
    """
    holder, _ = _read_claim(ticket.path)
    if not holder or holder.get("token") != ticket.token:
        return
    if only_unadopted and not _is_mine(holder):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ticket.path)


def touch(ticket: Ticket) -> None:
    holder, _ = _read_claim(ticket.path)
    if holder and holder.get("token") == ticket.token:
        with contextlib.suppress(OSError):
            os.utime(ticket.path)


@contextlib.contextmanager
def heartbeat(ticket: Ticket | None) -> Iterator[None]:
    """Keep touching the claim while the run lasts, so ``stale_after`` never expires it."""
    if ticket is None or ticket.stale_after is None:
        yield
        return
    stop = threading.Event()
    interval = ticket.stale_after / 4

    def beat() -> None:
        while not stop.wait(interval):
            touch(ticket)

    thread = threading.Thread(target=beat, name="digital-experiments-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def indexed(exp: Experiment[Any, Any], entry: Entry) -> Observation | None:
    """The completed run of ``entry`` that another sweep indexed, if any."""
    try:
        id = storage.internal_dir(exp.root, "cache", entry.key or "").read_text()
    except OSError:
        return None
    try:
        observation = exp.backend.load(id)
    except Exception:
        return None
    if observation.metadata.get("status", COMPLETED) == COMPLETED and same_code(
        observation.metadata, exp.code_identity
    ):
        return observation
    return None
