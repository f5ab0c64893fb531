"""Record formats: the :class:`Backend` base, the ``pickle``, ``json`` and
``yaml`` backends and the registry (:func:`register_backend`)."""

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
)

__all__ = [
    "Backend",
    "FileBackend",
    "JSONBackend",
    "PickleBackend",
    "YAMLBackend",
    "available_backends",
    "backend_class",
    "instantiate_backend",
    "register_backend",
]
