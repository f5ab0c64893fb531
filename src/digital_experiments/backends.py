"""Record formats and backends: the :class:`Backend` base, :class:`FileBackend`
(a :class:`Format`'s records in a store), the ``pickle``, ``json`` and ``yaml``
backends and the registry (:func:`register_backend`, :func:`register_format`)."""

from ._runs.backends import _ALL_BACKENDS as _ALL_BACKENDS  # 2.0.4's registry, for code reading it
from ._runs.backends import (
    Backend,
    FileBackend,
    JSONBackend,
    PickleBackend,
    YAMLBackend,
    available_backends,
    backend_class,
    instantiate_backend,
    register_backend,
    register_format,
)
from ._runs.formats import Format

__all__ = [
    "Backend",
    "FileBackend",
    "Format",
    "JSONBackend",
    "PickleBackend",
    "YAMLBackend",
    "available_backends",
    "backend_class",
    "instantiate_backend",
    "register_backend",
    "register_format",
]
