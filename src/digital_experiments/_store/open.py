"""Which store a root is: a local folder, or an ``s3://bucket/prefix`` URL."""

from __future__ import annotations

import os
import re
import threading

from .base import Store
from .local import LocalStore

_REMOTE: dict[str, Store] = {}  # url -> store: one client per remote root and process
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
        scheme = text.partition("://")[0]
        raise ValueError(
            f"{text!r}: {scheme}:// roots are not supported. Use a folder, or "
            "s3://bucket/prefix (any S3-compatible server, with AWS_ENDPOINT_URL)."
        )
    return LocalStore(root, fsync=fsync)
