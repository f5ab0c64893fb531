"""Which store a root is: a local folder, an ``s3://bucket/prefix`` URL, or (for
tests) ``memory://name``: a :class:`~.memory.MemoryStore` that lives as long as
the process, shared by its threads and tasks, never seen by another process."""

from __future__ import annotations

import os
import re
import threading

from .base import Store
from .local import LocalStore

_REMOTE: dict[str, Store] = {}  # url -> store: one client (or memory) per root and process
_LOCK = threading.Lock()

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a URL (``s3://...``) rather than a folder."""
    return isinstance(root, str) and _SCHEME.match(root) is not None


def open_store(root: str | os.PathLike[str], *, fsync: bool = True) -> Store:
    """The store of ``root``: an :class:`~.s3.S3Store` for ``s3://bucket/prefix``,
    a :class:`LocalStore` for a folder.

    Raises
    ------
    ValueError
        For a URL of another scheme (``gs://``, ``http://``...).
    """
    if is_url(root):
        text = str(root)
        if text.startswith("s3://"):
            from .s3 import S3Store  # boto3 is loaded only for S3 roots

            with _LOCK:
                found = _REMOTE.get(text)
                if found is None:
                    found = _REMOTE[text] = S3Store(text)
            return found
        if text.startswith("memory://"):
            from .memory import MemoryStore

            url = text.rstrip("/")
            with _LOCK:
                found = _REMOTE.get(url)
                if found is None:
                    found = _REMOTE[url] = MemoryStore(url[len("memory://") :])
            return found
        scheme = text.partition("://")[0]
        raise ValueError(
            f"{text!r}: {scheme}:// roots are not supported. Use a folder, or "
            "s3://bucket/prefix (any S3-compatible server, with AWS_ENDPOINT_URL)."
        )
    return LocalStore(root, fsync=fsync)
