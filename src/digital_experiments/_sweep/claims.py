"""Claims: how sweeps sharing a root, on one host or many, avoid running one
config twice.

With ``skip="completed"`` each distinct config is claimed by the driver, just
before it is submitted: a :mod:`lease <digital_experiments._store.lease>` on the
config's key under ``<root>/.de/claims/<config_key>/`` (:func:`try_claim`).
Leases use create-only writes alone, so they hold across hosts on any store
where exclusive create is atomic (local disks, NFSv3+, object stores), never
relying on ``flock``. The worker *adopts* the claim when it starts (:func:`adopt`:
its heartbeat now names the worker; a job whose lease was taken over does not
run), renews it while the run lasts (:func:`heartbeat`), and gives it back when
the run ends (:func:`release`) if it still holds it: the release of a completed
run is marked with that run, and the mark is the cache index's entry for the
config (:mod:`digital_experiments._record.cache`), so a sweep run writes none of
its own. Marks outlive takeovers (:func:`~digital_experiments._store.lease.released_mark`).

A claim whose holder is known dead (this host and PID namespace, pid gone) is
taken over at once; one held by a live process of this host is waited for; one
whose holder cannot be checked (another host or PID namespace) is taken over
once it has shown no heartbeat for ``stale_after`` seconds (default
:data:`~digital_experiments._store.lease.DEFAULT_LENGTH`), as this process's own clock
measures. Holders beat every quarter of that.

A :class:`Claim` travels to the worker inside the sweep's job, so it must stay
a picklable module-level class.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from .._model import layout
from .._store import files as storage
from .._store import lease as leases
from .._store.base import Store
from .._store.lease import Lease
from .._store.open import open_store

PREFIX = layout.CLAIMS


@dataclass(frozen=True)
class Claim:
    """A sweep's claim on one config of one root, as handed to the process that runs it."""

    root: str  # a folder, or a store's URL (s3://bucket/prefix)
    key: str  # the config's key
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    stale_after: float | None = None

    @property
    def lease(self) -> Lease:
        return Lease(_store(self.root), self.key, PREFIX, self.token, self.stale_after)

    @property
    def interval(self) -> float:
        """Seconds between two heartbeats: a quarter of the lease."""
        return (self.stale_after or leases.DEFAULT_LENGTH) / 4


def _store(root: str) -> Store:
    return open_store(root, fsync=False)  # unsynced in a folder: a cache of who runs what


def try_claim(claim: Claim) -> bool:
    """Claim the config of ``claim``, taking over a stale claim; ``False`` if held."""
    return leases.acquire(claim.lease)


def adopt(claim: Claim) -> bool:
    """Make the running process the holder of ``claim``; ``False`` if it was lost."""
    return leases.beat(claim.lease, adopt=True)


def release(claim: Claim, only_unadopted: bool = False, mark: bytes = b"") -> bool:
    """Give ``claim`` back if it still holds its config, its release marked with
    ``mark`` (a completed run's :meth:`~digital_experiments._record.cache.CacheIndex.mark`);
    whether it still held it.

    With ``only_unadopted`` the claim stays if a worker adopted it: that worker
    gives it back when its run ends.
    """
    lease = claim.lease
    if only_unadopted:
        worker = leases.worker(lease)
        if worker is not None and not storage.is_current_process(worker):
            return True
    return leases.release(lease, mark)


def held(root: str) -> list[str]:
    """The config keys whose claims are held under ``root`` (none once sweeps end)."""
    return leases.held(_store(root), PREFIX)


def touch(claim: Claim) -> None:
    """Renew ``claim`` (the driver does, for calls queued but not started)."""
    leases.beat(claim.lease)


@contextlib.contextmanager
def heartbeat(claim: Claim | None) -> Iterator[None]:
    """Keep renewing the claim while the run lasts, so it never goes stale."""
    if claim is None:
        yield
        return
    with leases.kept(claim.lease, claim.interval):
        yield
