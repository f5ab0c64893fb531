"""Blobs: environments stored once per root, and a run's artefacts between a
remote store and its local working folder.

An environment is ``.de/environments/<digest>.json``, on any store. A blob's
name is the digest of its bytes, so concurrent writers of one blob write the
same bytes, and a reader can tell a damaged blob from a good one.

Artefacts are the files of ``storage/<id>/``: a run writes them in a local
folder (its ``current_dir()``), which a remote store's root gets by
:func:`upload`, and a reader by :func:`download`. The local folder is passed as
its store (a ``LocalStore``), so nothing here touches a disk itself.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

from .._model import layout
from . import files as storage
from .base import Missing, Store

# (store url, digest) of blobs this process wrote or checked, and of blobs read
_KNOWN: set[tuple[str, str]] = set()
_CACHE: dict[tuple[str, str], Any] = {}
_WARNED: set[tuple[str, str]] = set()  # one warning per blob and process


def _intact(data: bytes, digest: str) -> bool:
    """Whether ``data`` is the blob named ``digest``: its hash is the name."""
    return hashlib.sha256(data).hexdigest()[:32] == digest


def put_environment(store: Store, environment: dict[str, Any]) -> str:
    """Store ``environment`` once under ``.de/environments`` and return its digest.

    The first store of a blob in a process reads back a blob already there and
    rewrites it if it is damaged; later stores of a folder's blob only check it
    still exists (one ``stat``: a deleted blob is written again), and a remote
    store's are trusted for the process's life (a request per run would double
    the cost of a call).
    """
    digest, text = storage.environment_digest(environment)
    known = (store.url, digest)
    key = layout.environment_key(digest)
    if known in _KNOWN:
        if store.folder is None or store.version(key) is not None:
            return digest
        _KNOWN.discard(known)
    if text is None:
        text = json.dumps(environment, sort_keys=True, default=repr)
    data = text.encode()
    found = store.get_or_none(key)
    if found is None or not _intact(found[0], digest):
        # the same digest always means the same bytes: any writer may replace it
        store.put(key, data)
        _CACHE.pop(known, None)
    _KNOWN.add(known)
    return digest


def get_environment(store: Store, digest: str) -> Any:
    """Load an environment stored by :func:`put_environment` (cached).

    Every observation of the same environment gets the same read-only object
    (copying it into each one cost a third of reading 100,000 runs): editing it
    raises ``TypeError``; ``thaw()`` gives a copy to edit. A missing or damaged
    blob gives ``None`` and a warning naming it (once per blob).
    """
    known = (store.url, digest)
    if known not in _CACHE:
        key = layout.environment_key(digest)
        try:
            data = store.read(key)
            if not _intact(data, digest):
                raise ValueError("its content does not match its name")
            _CACHE[known] = storage.freeze(json.loads(data))
        except (OSError, ValueError) as exc:
            # not cached: the next writer of this environment repairs the blob
            if known not in _WARNED:
                _WARNED.add(known)
                problem = "missing" if isinstance(exc, Missing) else "corrupt"
                where = str(layout.at(store.folder, key)) if store.folder else f"{store.url}/{key}"
                warnings.warn(
                    f"Environment blob {where!r} is {problem} ({exc}); the "
                    "runs that refer to it show metadata['environment'] as None. The next "
                    "run in the same environment writes it again.",
                    stacklevel=2,
                )
            return None
    return _CACHE[known]


# ---------------------------------------------------------------- artefacts


def upload(local: Store, store: Store, prefix: str) -> None:
    """Copy each file under ``prefix`` of ``local`` (a working folder's store) to
    the same key of ``store``, in key order.

    Raises
    ------
    OSError
        If a file cannot be read or uploaded (what was copied stays).
    """
    for key in sorted(local.walk(prefix)):
        store.put(key, local.read(key))


def download(store: Store, local: Store, prefix: str) -> None:
    """Copy each object under ``prefix`` of ``store`` that ``local`` (a working
    folder's store) lacks to the same key there: once, so a file edited locally
    is kept, and a reader never sees half a file (each is written by rename)."""
    for key in store.walk(prefix):
        if not local.has(key):
            local.write(key, store.read(key), sync=False)  # a cache of the store's copy
