"""The cache index: which run completed a config with the current code.

``<root>/.de/cache/<key>`` holds the id of a completed run of the config whose
key (a digest of the config and the code, :func:`digital_experiments._model.keys.config_key`)
is ``<key>``; ``cache=True`` calls write it. A sweep writes no entry of its own:
the mark its claim on ``<key>`` is released with names the run that completed
the config (:meth:`CacheIndex.mark`), and the index reads both. Records stay
the truth, so every hit is checked against the record it points to, and runs
made before the index existed are found by one scan per process.

One caller at a time runs a config (:meth:`CacheIndex.exclusive`): a file lock
orders the callers of one host (threads, tasks and processes; waiters wake at
once), and where other hosts may share the root (an ``s3://`` root, a folder on
a network or FUSE filesystem) the holder of that lock also takes the config's
:mod:`lease <digital_experiments._store.lease>` under ``.de/leases/``, which create-only
writes make exclusive across hosts. A waiter for the lease polls the index
meanwhile, so the run another host completes is a hit as soon as it is indexed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._model import keys, layout
from .._read.query import select
from .._read.trash import load_even_deleted
from .._runs.backends import Backend, root_store
from .._runs.observation import Observation, is_completed
from .._store import LocalStore, Store, filesystems
from .._store import files as storage
from .._store import lease as leases
from .._store.lease import Lease

if TYPE_CHECKING:
    pass

LEASES = ".de/leases/"  # one per config being run by a cache=True call on a shared root
_LONGEST_WAIT = 1.0  # seconds between two looks of a caller waiting for another host


class CacheIndex:
    """The cache index of one experiment's ``backend``, for code ``code``."""

    def __init__(self, backend: Backend, code: dict[str, Any]) -> None:
        self.backend = backend
        self.code = code
        self._scanned: dict[str, str] | None = None  # key -> id, from one scan

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scanned": None}

    def key(self, config: Mapping[str, Any]) -> str:
        """A digest of ``config`` and the code, the same in every process."""
        return keys.config_key(self.code, config)

    def lock_path(self, config: Mapping[str, Any]) -> Path:
        """The lock that lets one process at a time run ``config``."""
        return layout.lock(self.backend.root, self.key(config))

    def shared(self) -> bool:
        """Whether other hosts may share the root: a remote store, or a folder on a
        network or FUSE filesystem."""
        return filesystems.shared(root_store(self.backend))

    def lease(self, config: Mapping[str, Any]) -> Lease:
        """The lease that lets one host at a time run ``config``."""
        store: Store = root_store(self.backend)
        if store.folder is not None:  # unsynced: it says who runs what, nothing more
            store = LocalStore(store.folder, fsync=False)
        return Lease(store, self.key(config), LEASES)

    @contextlib.contextmanager
    def exclusive(self, config: Mapping[str, Any]) -> Iterator[Observation | None]:
        """Wait until this caller alone may run ``config``; what it finds then: the
        run another caller completed meanwhile, or ``None`` (run it, inside the block)."""
        with storage.file_lock(self.lock_path(config)):
            if not self.shared():
                yield self.lookup(config)
                return
            lease, delay = self.lease(config), 0.01
            while not leases.acquire(lease):
                hit = self.lookup(config)
                if hit is not None:
                    yield hit
                    return
                time.sleep(delay)  # another host runs it: look again, less often
                delay = min(delay * 2, _LONGEST_WAIT)
            try:
                with leases.kept(lease, leases.DEFAULT_LENGTH / 4):
                    yield self.lookup(config)
            finally:
                leases.release(lease)

    @contextlib.asynccontextmanager
    async def aexclusive(self, config: Mapping[str, Any]) -> AsyncIterator[Observation | None]:
        """:meth:`exclusive` for a task: every wait polls, so no worker thread is
        pinned by a waiting task; a cancel while a try is in a worker thread gives
        back what that try took."""
        import anyio.to_thread  # anyio loads with the first async call: import stays light

        lock = await anyio.to_thread.run_sync(storage.make_lock, self.lock_path(config))
        await _poll(lambda: storage.try_acquire(lock), lock.release)
        try:
            if not await anyio.to_thread.run_sync(self.shared):
                yield await anyio.to_thread.run_sync(self.lookup, config)
                return
            lease = self.lease(config)
            hit = await _poll(
                lambda: leases.acquire(lease),
                lambda: leases.release(lease),
                lambda: self.lookup(config),
            )
            if hit is not None:  # another host completed it meanwhile
                yield hit
                return
            try:
                with leases.kept(lease, leases.DEFAULT_LENGTH / 4):
                    yield await anyio.to_thread.run_sync(self.lookup, config)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(leases.release, lease)
        finally:
            lock.release()

    def remember(self, observation: Observation) -> None:
        """Index ``observation``, a completed run (no fsync: the index is a cache)."""
        key = self.key(observation.config)
        root_store(self.backend).put(layout.cache_key(key), observation.id.encode(), sync=False)
        if self._scanned is not None:
            self._scanned[key] = observation.id

    def find(self, key: str, deleted_since: float | None = None) -> Observation | None:
        """The completed run the index holds for ``key``, if its record agrees (a sweep
        asks: a run deleted at or after ``deleted_since``, while the sweep ran, still
        counts, from the trash; one deleted before is gone)."""
        found = self._load(self._indexed(key), deleted_since)
        return found if found is not None and keys.same_code(found.metadata, self.code) else None

    def lookup(self, config: Mapping[str, Any]) -> Observation | None:
        """A completed run of ``config`` with the current code: indexed, or found
        by the first lookup's scan of the runs (those made before the index)."""
        key = self.key(config)
        if self._scanned is None:
            self._scanned = {
                self.key(o.config): o.id
                for o in select(self.backend, code=self.code, environment=False)
            }
        scanned = [self._scanned[key]] if key in self._scanned else []
        # one by one: a hit on the entry reads no sweep claim
        for id in itertools.chain(self._indexed(key), scanned):
            for observation in self.backend.iter_observations([id]):
                if (
                    is_completed(observation)
                    and keys.same_config(observation.config, config)
                    and keys.same_code(observation.metadata, self.code)
                ):
                    return observation
        return None

    def mark(self, observation: Observation) -> bytes:
        """What a sweep's claim on ``observation``'s config is released with, once
        the run completed it: the index's entry for the config."""
        return json.dumps({"id": observation.id}).encode()

    def _indexed(self, key: str) -> Iterator[str]:
        """The runs the index names for ``key``, as they are asked for: its entry,
        then the run the config's released sweep claim names (read only when the
        entry did not do)."""
        store = root_store(self.backend)
        try:
            entry: str | None = store.read(layout.cache_key(key)).decode()
        except (OSError, UnicodeDecodeError):
            entry = None
        if entry is not None:
            yield entry
        try:
            mark = leases.released_mark(Lease(store, key, layout.CLAIMS))
            named = json.loads(mark)["id"] if mark else None
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            named = None  # a mark of another shape names nothing
        if isinstance(named, str) and layout.is_id(named) and named != entry:
            yield named

    def _load(self, ids: Iterable[str], deleted_since: float | None) -> Observation | None:
        for id in ids:
            try:  # deleted since: it still ran, a sweep need not run it again
                observation = load_even_deleted(self.backend, id, deleted_since)
            except Exception:  # gone, or unreadable: the index only saves a scan
                continue
            if is_completed(observation):
                return observation
        return None


async def _poll(
    take: Callable[[], bool],
    give_back: Callable[[], object],
    look: Callable[[], Observation | None] | None = None,
) -> Observation | None:
    """Try ``take`` in a worker thread until it succeeds (``None``), calling
    ``look`` (in a worker thread too) after each failed try, until it finds a hit
    (returned: then nothing is taken).

    Without ``look`` the holder is on this host (a file lock, freed at once), so
    tries stay frequent (at most 0.05 s apart); with it, another host holds a
    lease for a whole run, so they space out to ``_LONGEST_WAIT``.

    A blocking take would pin one worker thread per waiting task, starving the
    run that holds the lock of the threads it needs to finish (and trips
    filelock's deadlock check when a reused thread still has another task's
    hold registered).
    """
    import anyio.to_thread

    delay = 0.001
    while True:
        attempt = _Attempt(take, give_back)
        try:
            if await anyio.to_thread.run_sync(attempt):
                return None
            hit = None if look is None else await anyio.to_thread.run_sync(look)
        except BaseException:
            attempt.abandon()
            raise
        if hit is not None:
            return hit
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05 if look is None else _LONGEST_WAIT)


class _Attempt:
    """One try at taking a lock or lease in a worker thread.

    A native asyncio cancel can land while the try runs (anyio cannot shield
    against it); :meth:`abandon` then gives back what the try takes.
    """

    def __init__(self, take: Callable[[], bool], give_back: Callable[[], object]) -> None:
        self.take, self.give_back = take, give_back
        self.guard = threading.Lock()
        self.done = self.taken = self.abandoned = False

    def __call__(self) -> bool:
        taken = self.take()
        with self.guard:
            self.done, self.taken = True, taken
            if taken and self.abandoned:
                self.give_back()
                self.taken = False
                return False
        return taken

    def abandon(self) -> None:
        with self.guard:
            self.abandoned = True
            if self.done and self.taken:  # taken, but the caller is gone: give it back
                self.give_back()
                self.taken = False
