"""Record formats: how an :class:`Observation` becomes bytes and back, by name.

A format knows nothing of places: :class:`~digital_experiments.backends.FileBackend`
writes its bytes to a store (a folder, a bucket) with the safety every format
shares (id reservations, temp files, fsync, rename). ``backend="pickle"``,
``"json"`` and ``"yaml"`` (2.0.4's names) name the three built in here;
:func:`register` adds more.
"""

from __future__ import annotations

import functools
import json
import pickle
from abc import ABC, abstractmethod
from typing import Any

from .._model import keys
from ..errors import UnknownBackendError
from .observation import Observation


class Format(ABC):
    """How records are written: ``name``, file ``suffix``, and the two conversions.

    Subclasses set ``name`` (what ``@experiment(backend=name)`` says) and
    ``suffix`` (``".cjson"``: a record is ``<id><suffix>``), and implement
    :meth:`dumps` and :meth:`loads`. Register one with
    :func:`~digital_experiments.backends.register_format`.
    """

    name: str
    suffix: str

    @abstractmethod
    def dumps(self, observation: Observation) -> bytes:
        """``observation`` as bytes."""

    @abstractmethod
    def loads(self, data: bytes) -> Observation:
        """The observation :meth:`dumps` wrote as ``data``.

        Raises
        ------
        Exception
            Anything, for bytes that are no record of this format: a listing
            skips that record with a warning.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, suffix={self.suffix!r})"


class PickleFormat(Format):
    """``.pkl``: any picklable config and result. Loading one runs code: open only
    records you trust. The class path of :class:`Observation` in the bytes is
    ``digital_experiments.core.Observation``, which 2.0.4 and every 3.x read."""

    name, suffix = "pickle", ".pkl"

    def dumps(self, observation: Observation) -> bytes:
        return pickle.dumps(observation, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Observation:
        return pickle.loads(data)  # type: ignore[no-any-return]


class JSONFormat(Format):
    """``.json``: numpy values as lists and numbers, ``nan``/``inf`` as ``NaN``/``Infinity``;
    loading constructs no objects."""

    name, suffix = "json", ".json"

    def dumps(self, observation: Observation) -> bytes:
        text = json.dumps(observation._asdict(), indent=2, allow_nan=True, default=_json_default)
        return text.encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**json.loads(data))


class YAMLFormat(Format):
    """``.yaml``: safe YAML plus tuples and numpy values; loading constructs no
    objects but tuples (see :func:`_yaml`)."""

    name, suffix = "yaml", ".yaml"

    def dumps(self, observation: Observation) -> bytes:
        yaml, dumper, _ = _yaml()
        text: str = yaml.dump(observation._asdict(), Dumper=dumper, indent=2, sort_keys=False)
        return text.encode()

    def loads(self, data: bytes) -> Observation:
        yaml, _, loader = _yaml()
        return Observation(**yaml.load(data, Loader=loader))  # a safe loader: see _yaml


def _json_default(value: Any) -> Any:
    """numpy arrays and scalars as lists and numbers; anything else is refused."""
    if keys.is_numpy(value):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"


@functools.cache
def _yaml() -> tuple[Any, Any, Any]:
    """``(yaml, Dumper, Loader)``, imported on first use: PyYAML is slow to import.

    Both are PyYAML's safe classes (the C ones where available) extended with
    exactly what records need: tuples (``!!python/tuple``, as 2.0.4 wrote
    them), numpy values written as lists and numbers, and subclasses of
    dict, list, tuple, str, int and float written as their plain values (as
    JSON writes them). Anything else is refused when writing, and no object
    is ever constructed when reading.
    """
    import yaml

    class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        """Safe YAML plus tuples; multi-line strings as blocks; PyYAML's globals untouched."""

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        """Safe YAML plus ``!!python/tuple``."""

    def represent_str(dumper: Any, data: str) -> Any:
        style = "|" if "\n" in data.strip("\n") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    def represent_tuple(dumper: Any, data: tuple[Any, ...]) -> Any:
        return dumper.represent_sequence(_TUPLE_TAG, data)

    def represent_other(dumper: Any, data: Any) -> Any:
        value = keys.plain(data)  # numpy values, and subclasses of plain types
        if value is not data:
            return dumper.represent_data(value)
        raise yaml.representer.RepresenterError(
            f"cannot represent an object of type {type(data).__name__} in safe YAML: {data!r}"
        )

    def construct_tuple(loader: Any, node: Any) -> tuple[Any, ...]:
        return tuple(loader.construct_sequence(node))

    Dumper.add_representer(str, represent_str)
    Dumper.add_representer(tuple, represent_tuple)
    Dumper.add_representer(None, represent_other)
    Loader.add_constructor(_TUPLE_TAG, construct_tuple)
    return yaml, Dumper, Loader


def yaml_text(value: Any) -> str:
    """``value`` as readable YAML, written as the ``yaml`` format writes records."""
    yaml, dumper, _ = _yaml()
    text: str = yaml.dump(
        value, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return text


# ---------------------------------------------------------------- the registry

PICKLE, JSON, YAML = PickleFormat(), JSONFormat(), YAMLFormat()
_FORMATS: dict[str, Format] = {f.name: f for f in (PICKLE, JSON, YAML)}


def register(format: Format | type[Format]) -> Format:
    """Register ``format`` (an instance, or a subclass made with no arguments)
    under its ``name``, replacing any format of that name; the instance registered.

    Raises
    ------
    TypeError
        If it is no :class:`Format`, or its name or suffix is not a usable string.
    """
    made = format() if isinstance(format, type) and issubclass(format, Format) else format
    if not isinstance(made, Format):
        raise TypeError(
            f"register_format takes a Format (subclass digital_experiments.backends.Format), "
            f"not {format!r}."
        )
    name, suffix = getattr(made, "name", None), getattr(made, "suffix", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{made!r}: a format's name is a non-empty string, not {name!r}.")
    # a record is the flat key <id><suffix>: no folder, nothing an id could end with
    if not (isinstance(suffix, str) and len(suffix) > 1 and suffix.startswith(".")) or (
        "/" in suffix or "\\" in suffix or "\0" in suffix
    ):
        raise TypeError(
            f"{type(made).__name__}: a format's suffix is a file extension such as "
            f"'.cjson', not {suffix!r}."
        )
    _FORMATS[name] = made
    return made


def named(name: str) -> Format:
    """The format registered as ``name``.

    Raises
    ------
    UnknownBackendError
        If there is none (the message lists those there are).
    """
    try:
        return _FORMATS[name]
    except (KeyError, TypeError):
        raise UnknownBackendError(
            f"Unknown format {name!r}. Available: {', '.join(names())}. "
            "Register your own with register_format()."
        ) from None


def names() -> list[str]:
    """The names of every registered format, sorted."""
    return sorted(_FORMATS)
