"""The cache index: which run completed a config with the current code.

``<root>/.de/cache/<key>`` holds the id of a completed run of the config whose
key (a digest of the config and the code, :func:`digital_experiments._keys.config_key`)
is ``<key>``. ``cache=True`` calls and sweeps write it and read it; records stay
the truth, so every hit is checked against the record it points to, and runs
made before the index existed are found by one scan per process.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _keys as keys
from . import _layout as layout
from ._backends import Backend
from ._query import select
from ._records import Observation, is_completed
from ._trash import load_even_deleted


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

    def remember(self, observation: Observation) -> None:
        """Index ``observation``, a completed run (no fsync: the index is a cache)."""
        key = self.key(observation.config)
        self.backend.store.put(layout.cache_key(key), observation.id.encode(), sync=False)
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
        ids = self._indexed(key)
        if self._scanned is None:
            self._scanned = {
                self.key(o.config): o.id
                for o in select(self.backend, code=self.code, environment=False)
            }
        if key in self._scanned:
            ids.append(self._scanned[key])
        for observation in self.backend.iter_observations(ids):
            if (
                is_completed(observation)
                and keys.same_config(observation.config, config)
                and keys.same_code(observation.metadata, self.code)
            ):
                return observation
        return None

    def _indexed(self, key: str) -> list[str]:
        try:
            return [self.backend.store.read(layout.cache_key(key)).decode()]
        except (OSError, UnicodeDecodeError):
            return []

    def _load(self, ids: list[str], deleted_since: float | None) -> Observation | None:
        for id in ids:
            try:  # deleted since: it still ran, a sweep need not run it again
                observation = load_even_deleted(self.backend, id, deleted_since)
            except Exception:  # gone, or unreadable: the index only saves a scan
                continue
            if is_completed(observation):
                return observation
        return None
