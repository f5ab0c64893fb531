"""Record formats: a registry plus the ``pickle``, ``json`` and ``yaml`` backends.

A format only says how an :class:`Observation` becomes bytes and back;
:class:`FileBackend` owns the safety (claims, temp files, fsync, rename) so no
format can get it wrong.
"""

from __future__ import annotations

import json
import os
import pickle
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from . import storage
from .core import Backend, Observation
from .errors import UnknownBackendError

__all__ = [
    "Backend",
    "FileBackend",
    "JSONBackend",
    "PickleBackend",
    "YAMLBackend",
    "available_backends",
    "instantiate_backend",
    "register_backend",
]

# The registry: name -> Backend subclass. Kept under its 2.0.4 name.
_ALL_BACKENDS: dict[str, type[Backend]] = {}

B = TypeVar("B", bound=type[Backend])


def register_backend(name: str) -> Callable[[B], B]:
    """Register a :class:`Backend` subclass under ``name``.

    Parameters
    ----------
    name : str
        What users pass as ``@experiment(backend=name)``.

    Examples
    --------
    >>> from digital_experiments import Backend, register_backend
    >>> @register_backend("memory")
    ... class MemoryBackend(Backend):
    ...     store = {}
    ...     def record(self, observation):
    ...         self.store[observation.id] = observation
    ...     def load(self, id):
    ...         return self.store[id]
    ...     def all_ids(self):
    ...         return list(self.store)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"Backend names are non-empty strings, not {name!r}.")

    def decorator(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(
                f"@register_backend({name!r}) decorates Backend subclasses, "
                f"not {cls!r}. Subclass digital_experiments.Backend."
            )
        _ALL_BACKENDS[name] = cls
        return cls

    return decorator


def available_backends() -> list[str]:
    """The names of every registered backend."""
    return sorted(_ALL_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``."""
    try:
        return _ALL_BACKENDS[name]
    except (KeyError, TypeError):
        raise UnknownBackendError(
            f"Unknown backend {name!r}. Available: {', '.join(available_backends())}. "
            'Register your own with @register_backend("name").'
        ) from None


def instantiate_backend(name: str, root: Path) -> Backend:
    """Create the backend registered as ``name`` for ``root``."""
    return backend_class(name)(Path(root))


class FileBackend(Backend):
    """A backend storing one file per run: ``<root>/<id><suffix>``.

    Subclasses set ``suffix`` and implement :meth:`dumps` and :meth:`loads`.
    Writes are atomic (temp file, fsync, rename), ids are claimed with an
    exclusive link, and identical environments are stored once under
    ``<root>/.de/environments/`` and referenced from each record.
    """

    suffix: ClassVar[str]

    @abstractmethod
    def dumps(self, observation: Observation) -> bytes:
        """Serialise ``observation``."""

    @abstractmethod
    def loads(self, data: bytes) -> Observation:
        """Deserialise what :meth:`dumps` wrote."""

    def path(self, id: str) -> Path:
        return self.root / f"{id}{self.suffix}"

    def record(self, observation: Observation) -> None:
        data = self.dumps(self._pack(observation))
        storage.atomic_write(self.path(observation.id), data, fsync=True)

    def claim(self, observation: Observation) -> Observation:
        packed = self._pack(observation)

        def encode(id: str) -> bytes:
            return self.dumps(packed._replace(id=id))

        id = storage.claim(self.root, self.suffix, observation.id, encode)
        return observation._replace(id=id)

    def load(self, id: str) -> Observation:
        return self._unpack(self.loads(self.path(id).read_bytes()))

    def all_ids(self) -> list[str]:
        ids = []
        try:
            entries = os.scandir(self.root)
        except FileNotFoundError:
            return []
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    if storage.is_temp(name):
                        storage.remove_stale_temp(self.root, name)
                    continue
                if name.endswith(self.suffix):
                    ids.append(name[: -len(self.suffix)])
        return ids

    def delete(self, id: str) -> None:
        self.path(id).unlink(missing_ok=True)

    def iter_observations(self, ids: Iterable[str]) -> Iterator[Observation]:
        for observation in super().iter_observations(ids):
            if isinstance(observation, Observation):
                yield observation

    def _pack(self, observation: Observation) -> Observation:
        environment = observation.metadata.get("environment")
        if not isinstance(environment, dict):
            return observation
        metadata = dict(observation.metadata)
        del metadata["environment"]
        metadata["environment_ref"] = storage.put_environment(self.root, environment)
        return observation._replace(metadata=metadata)

    def _unpack(self, observation: Any) -> Observation:
        if not isinstance(observation, Observation):
            raise TypeError(f"not an Observation record: {type(observation).__name__}")
        metadata = observation.metadata
        if isinstance(metadata, dict) and "environment_ref" in metadata:
            ref = metadata.pop("environment_ref")
            metadata["environment"] = storage.get_environment(self.root, ref)
        return observation


@register_backend("pickle")
class PickleBackend(FileBackend):
    """The default: ``<root>/<id>.pkl``; configs and results may be any picklable object."""

    suffix = ".pkl"

    def dumps(self, observation: Observation) -> bytes:
        return pickle.dumps(observation, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Observation:
        return pickle.loads(data)  # type: ignore[no-any-return]


@register_backend("json")
class JSONBackend(FileBackend):
    """``<root>/<id>.json``: readable anywhere; values must be JSON-serialisable."""

    suffix = ".json"

    def dumps(self, observation: Observation) -> bytes:
        return json.dumps(observation._asdict(), indent=2, allow_nan=True).encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**json.loads(data))


class _Dumper(getattr(yaml, "CDumper", yaml.Dumper)):  # type: ignore[misc]
    """Our own dumper: multi-line strings as blocks, without touching PyYAML's globals."""


def _represent_str(dumper: yaml.Dumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data.strip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)
_Loader: Any = getattr(yaml, "CLoader", yaml.Loader)


@register_backend("yaml")
class YAMLBackend(FileBackend):
    """``<root>/<id>.yaml``: human-friendly; values must be YAML-representable.

    Records are read with PyYAML's full loader (as 2.0.4 did): read only
    records you trust, as with pickle.
    """

    suffix = ".yaml"

    def dumps(self, observation: Observation) -> bytes:
        text = yaml.dump(observation._asdict(), Dumper=_Dumper, indent=2, sort_keys=False)
        return text.encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**yaml.load(data, Loader=_Loader))  # full loader on purpose: see docstring
