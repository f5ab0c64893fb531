"""Leases: a hold on one key that many hosts agree on, over any :class:`Store`.

A lease lives under ``<prefix><key>/`` as *generations*: objects named
``0000000000``, ``0000000001``... each created create-only
(:meth:`Store.put_new`), so whatever the store (a local folder, NFS, an object
store) exactly one writer gets a given generation. The holder is the writer of
the highest generation; its body carries the holder's random *token*, so a
holder recognises its own generation even if the bytes of another's look alike
(an S3 ETag is a content hash: the same bytes bring an old ETag back).

- **Taking over** a stale (or released) lease writes generation ``g + 1``: two
  takers race for one name, one wins. The winner then removes the generations
  below, but not their release marks; a released lease keeps its last
  generation, marked ``<g>.released``, so generations only grow and a name is
  never won twice.
- **Release marks** carry what the guarded work left (:func:`release`'s
  ``mark``: a sweep's claim names the run that completed its config) and
  outlive takeovers, so a taker that looks right after taking over still finds
  it (:func:`released_mark`: the latest mark that is not empty).
- **Staleness** is judged on the observer's own monotonic clock, never on
  another host's wall clock: a lease is stale when its generation and its
  heartbeat's version have not changed for one lease length *while this
  observer watched*. A holder on this host and PID namespace whose process is
  gone is stale at once; a live one on this host is never stale unless the
  lease has a length.
- **Heartbeats** (:func:`beat`) rewrite ``<gen>.beat``; they carry liveness,
  not ownership, so a plain put does.
- **Before publishing** what the lease guarded, a holder checks :func:`holds`,
  or releases with a mark (:func:`release` says whether its token still held):
  a holder that was frozen past its lease and taken over finds a higher
  generation, and publishes nothing over the new holder.
- **A lost answer** (a create whose reply said "exists" although it was ours, as
  a retried request can) is settled by reading the object back: the token says.

So each guarded piece of work *completes* once; it *runs* more than once only
after a takeover.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import files as storage
from .base import Store

DEFAULT_LENGTH = 60.0
"""Seconds without a heartbeat after which a lease held where no pid can be
checked (another host, another PID namespace) is stale."""

_WIDTH = 10  # digits of a generation's name: they sort as numbers


@dataclass(frozen=True)
class Lease:
    """The lease on ``key`` under ``prefix`` of ``store``, as held by ``token``.

    ``length`` is the lease length in seconds (a sweep's ``stale_after``);
    ``None`` uses :data:`DEFAULT_LENGTH` for holders whose pid cannot be
    checked, and waits for live holders on this host.
    """

    store: Store
    key: str
    prefix: str = ".de/leases/"
    token: str = field(default_factory=lambda: os.urandom(16).hex())
    length: float | None = None

    @property
    def folder(self) -> str:
        return f"{self.prefix}{self.key}/"

    def generation_key(self, generation: int) -> str:
        return f"{self.folder}{generation:0{_WIDTH}d}"


class Observer:
    """What this process saw of other holders' leases, and since when (on its
    own monotonic clock: ``clock`` is injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[Any, float]] = {}

    def unchanged_for(self, lease: Lease, state: Any) -> float:
        """How long ``state`` of ``lease`` has been seen unchanged (0 the first time)."""
        where = (lease.store.url, lease.folder)
        now = self.clock()
        seen = self._seen.get(where)
        if seen is None or seen[0] != state:
            self._seen[where] = (state, now)
            return 0.0
        return now - seen[1]


OBSERVER = Observer()


def _body(lease: Lease, generation: int) -> bytes:
    holder = {"token": lease.token, "generation": generation, "holder": storage.process_info()}
    return json.dumps(holder, sort_keys=True).encode()


def _read(store: Store, key: str) -> tuple[dict[str, Any], str] | None:
    """``(body, version)`` of ``key``. An empty body reads as ``{}`` (it may be being
    written in place, on a filesystem without hard links); any other unreadable one
    as ``{"garbage": True}`` (leases are published whole, so nobody holds it)."""
    found = store.get_or_none(key)
    if found is None:
        return None
    try:
        body = json.loads(found[0]) if found[0] else {}
    except (ValueError, RecursionError):  # RecursionError: nested past json's limit
        body = None
    return (body if isinstance(body, dict) else {"garbage": True}), found[1]


def _beat(lease: Lease, generation: int) -> tuple[dict[str, Any] | None, str | None]:
    """``(the process the heartbeat names, its version)``, ``None`` for each if there
    is none."""
    found = _read(lease.store, f"{lease.generation_key(generation)}.beat")
    if found is None:
        return None, None
    holder = found[0].get("holder")
    return (holder if isinstance(holder, dict) else None), found[1]


def generations(lease: Lease) -> list[int]:
    """The generations present, lowest first."""
    found = []
    for key in lease.store.list(lease.folder):
        name = key.rpartition("/")[2]
        if len(name) == _WIDTH and name.isdigit():
            found.append(int(name))
    return sorted(found)


def _current(lease: Lease) -> tuple[int, dict[str, Any], str] | None:
    """``(generation, body, version)`` of the highest generation, if any."""
    for generation in reversed(generations(lease)):
        found = _read(lease.store, lease.generation_key(generation))
        if found is not None:  # a generation removed since the listing: look lower
            return generation, found[0], found[1]
    return None


def _released(lease: Lease, generation: int) -> bool:
    return lease.store.version(f"{lease.generation_key(generation)}.released") is not None


def holds(lease: Lease) -> bool:
    """Whether ``lease``'s token holds the highest generation (and has not released it)."""
    current = _current(lease)
    return (
        current is not None
        and current[1].get("token") == lease.token
        and not _released(lease, current[0])
    )


def _create(lease: Lease, generation: int) -> bool:
    key, data = lease.generation_key(generation), _body(lease, generation)
    created = lease.store.put_new(key, data)
    if created is None:  # another writer's, or ours with a lost answer: the token says
        created = lease.store.settle_new(key, data)
    return created is not None


def acquire(lease: Lease, observer: Observer | None = None) -> bool:
    """Take ``lease`` if it is free, released or stale; whether this token now holds it.

    Generations only grow (a released lease keeps its last one, marked
    released), so a taker that judged an old generation stale long ago can
    never win a name another writer has moved past.
    """
    current = _current(lease)
    if current is None:
        taken = 0
    else:
        generation, body, version = current
        released = _released(lease, generation)
        if body.get("token") == lease.token and not released:
            return True
        watcher = observer if observer is not None else OBSERVER  # read now: tests swap it
        if not released and not stale(lease, generation, body, version, watcher):
            return False
        taken = generation + 1
    if not _create(lease, taken):
        return False  # another taker won this generation
    if not holds(lease):  # a lower name re-created after a tidy-up: not the top
        _remove(lease, taken)
        return False
    if taken:  # tidy: only the top generation holds; release marks stay (below)
        for generation in generations(lease):
            if generation < taken:
                _remove(lease, generation, keep_mark=True)
    return True


def stale(
    lease: Lease,
    generation: int,
    body: dict[str, Any],
    version: str,
    observer: Observer = OBSERVER,
) -> bool:
    """Whether the holder of ``generation`` may be taken over."""
    if body.get("garbage"):
        return True
    holder, beaten = _beat(lease, generation)
    holder = holder or body.get("holder")
    if storage.same_namespace(holder):
        if storage.process_gone(holder):
            return True
        if lease.length is None:
            return False  # a live holder on this host: wait for it
    length = lease.length if lease.length is not None else DEFAULT_LENGTH
    return observer.unchanged_for(lease, (generation, version, beaten)) >= length


def held(store: Store, prefix: str) -> list[str]:
    """The keys under ``prefix`` whose lease is held (not released)."""
    return [k for k in store.folders(prefix) if holds_any(Lease(store, k, prefix))]


def holds_any(lease: Lease) -> bool:
    """Whether anyone holds ``lease``: it has a generation not released."""
    current = _current(lease)
    return current is not None and not _released(lease, current[0])


def beat(lease: Lease, adopt: bool = False) -> bool:
    """Renew ``lease``; whether it is still held. With ``adopt`` the heartbeat
    names this process as the one running the guarded work (a sweep's worker);
    otherwise it keeps naming whoever it named."""
    current = _current(lease)
    if current is None or current[1].get("token") != lease.token:
        return False
    if _released(lease, current[0]):
        return False  # given back (a sweep stopping): not to be run any more
    # the adopter stays named when the driver renews; a fresh nonce changes the
    # version on every store (an S3 ETag is a digest of the bytes)
    holder = None if adopt else _beat(lease, current[0])[0]
    body = {"token": lease.token, "holder": holder or storage.process_info()}
    body["nonce"] = os.urandom(16).hex()
    key = f"{lease.generation_key(current[0])}.beat"
    lease.store.put(key, json.dumps(body, sort_keys=True).encode())
    return True


def worker(lease: Lease) -> dict[str, Any] | None:
    """The process the heartbeat names (the adopter), if there is a heartbeat."""
    current = _current(lease)
    return _beat(lease, current[0])[0] if current is not None else None


def release(lease: Lease, mark: bytes = b"") -> bool:
    """Give ``lease`` back if its token still holds it: its generation stays,
    marked released, so the next holder writes the one after it. The mark holds
    ``mark`` (what the guarded work left: a sweep's claim names the run that
    completed its config). Whether the token still held it."""
    current = _current(lease)
    if current is None or current[1].get("token") != lease.token:
        return False
    lease.store.put(f"{lease.generation_key(current[0])}.released", mark)
    return True


def released_mark(lease: Lease) -> bytes | None:
    """The latest mark ``lease`` was released with (:func:`release`'s ``mark``,
    an empty one skipped), even when a newer generation holds it now: a takeover
    keeps the marks below it. ``None`` if there is none. One listing, and one
    read a mark."""
    marks = [key for key in lease.store.list(lease.folder) if key.endswith(".released")]
    for key in sorted(marks, key=_generation_of, reverse=True):
        found = lease.store.get_or_none(key)
        if found is not None and found[0]:  # gone since the listing, or empty: look lower
            return found[0]
    return None


def _generation_of(mark: str) -> int:
    name = mark.rpartition("/")[2].removesuffix(".released")
    return int(name) if len(name) == _WIDTH and name.isdigit() else -1


def _remove(lease: Lease, generation: int, keep_mark: bool = False) -> None:
    """Remove ``generation`` and its heartbeat; with ``keep_mark``, not its release
    mark (a takeover's tidy-up: what the work it guarded left, a completed run,
    must outlive the takeover, or a taker that looks for it right after taking
    over finds nothing and runs the work again)."""
    key = lease.generation_key(generation)
    for suffix in (".beat", "") if keep_mark else (".beat", ".released", ""):
        lease.store.delete(key + suffix)


@contextlib.contextmanager
def kept(lease: Lease, interval: float) -> Iterator[None]:
    """Renew ``lease`` every ``interval`` seconds while the block runs, so observers
    on other hosts never find it stale. One thread a process renews every kept
    lease (a sweep keeps one a run: a thread each cost more than the run); once
    the block has left, no renewal of this lease is under way or to come."""
    entry = _KEEPER.add(lease, interval)
    try:
        yield
    finally:
        _KEEPER.remove(entry)


class _Keeper:
    """The process's renewer: the leases kept now, each with when it is due."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.due: dict[int, tuple[Lease, float, float]] = {}  # entry -> lease, interval, when
        self.entries = 0
        self.beating: set[int] = set()  # entries being renewed now, outside the lock
        self.wake = math.inf  # when the renewer wakes next (monotonic)
        self.thread: threading.Thread | None = None

    def add(self, lease: Lease, interval: float) -> int:
        with self.condition:
            self.entries += 1
            when = time.monotonic() + interval
            self.due[self.entries] = (lease, interval, when)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="digital-experiments-lease", daemon=True
                )
                self.thread.start()
            elif when < self.wake:  # woken only when it must renew sooner
                self.condition.notify()
            return self.entries

    def remove(self, entry: int) -> None:
        # a renewal of this entry in flight is waited for, and none comes after
        with self.condition:
            while entry in self.beating:
                self.condition.wait()
            self.due.pop(entry, None)

    def _run(self) -> None:
        condition = self.condition
        with condition:
            while True:
                now = time.monotonic()
                late = [(e, lease, i) for e, (lease, i, when) in self.due.items() if when <= now]
                if late:
                    # renewed outside the lock: a slow store (a request that hangs)
                    # never holds up the runs starting or ending meanwhile
                    self.beating.update(entry for entry, _, _ in late)
                    condition.release()
                    try:
                        for _, lease, _ in late:
                            with contextlib.suppress(OSError):  # a store hiccup: the next beat
                                beat(lease)
                    finally:
                        condition.acquire()
                    for entry, lease, interval in late:
                        self.beating.discard(entry)
                        if entry in self.due:
                            self.due[entry] = (lease, interval, time.monotonic() + interval)
                    condition.notify_all()  # the removers waiting for these renewals
                self.wake = min((when for _, _, when in self.due.values()), default=math.inf)
                left = self.wake - time.monotonic()
                condition.wait(None if self.wake == math.inf else max(0.0, left))

    def forked(self) -> None:
        """In a forked child: the parent's leases are not the child's to renew, and
        its renewer thread is not there."""
        self.condition = threading.Condition()
        self.due = {}
        self.beating = set()
        self.wake = math.inf
        self.thread = None


_KEEPER = _Keeper()
os.register_at_fork(after_in_child=_KEEPER.forked)
