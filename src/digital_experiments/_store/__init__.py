"""Stores: the places runs are kept, behind one small interface (:class:`Store`).

A store knows places, not policy: it gets, creates (exactly one writer wins),
swaps (compare-and-swap on a version), puts, lists and deletes objects named by
``/``-separated keys. Claims, the trash, the cache index and metrics are written
once, above, on these primitives (as joblib's ``StoreBackendMixin`` sits on its
own few). :func:`open_store` picks the store for a root: a local folder, or an
``s3://bucket/prefix`` URL. Beside the stores live the mechanisms every layer
above shares: ``files`` (atomic writes, id reservations, file locks, process
identity under a folder), ``lease`` (a key held by one holder, renewed by
compare-and-swap), ``blobs`` (a run's artefact folder on a store) and ``faults``
(the points tests stop a process at).
"""

from __future__ import annotations

from .base import Missing, Store, StoreError
from .local import LocalStore
from .open import is_url, open_store

__all__ = ["LocalStore", "MemoryStore", "Missing", "Store", "StoreError", "is_url", "open_store"]


def __getattr__(name: str) -> object:
    if name == "MemoryStore":  # for tests: not loaded by every import
        from .memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
