"""Record formats: a registry plus the ``pickle``, ``json`` and ``yaml`` backends.

A format only says how an :class:`Observation` becomes bytes and back;
:class:`FileBackend` owns the safety (id reservations, temp files, fsync, rename) so no
format can get it wrong.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .._model import keys, layout
from .._model.layout import is_id
from .._store import blobs
from .._store import files as storage
from .._store.base import Store, checked
from .._store.local import LocalStore
from .._store.open import is_url, open_store
from ..errors import UnknownBackendError
from .annotations import annotated, read_annotations
from .observation import Observation, stored


class Backend(ABC):
    """Stores and loads :class:`Observation` objects under ``root``.

    Subclasses implement :meth:`record`, :meth:`load` and :meth:`all_ids`
    (the 2.0.4 contract). File-based formats should subclass
    :class:`digital_experiments.backends.FileBackend` instead, which adds
    atomic writes, id reservations and shared environments for free.

    Parameters
    ----------
    root : pathlib.Path
        The experiment's folder.
    """

    def __init__(self, root: Path) -> None:
        if is_url(root):
            raise ValueError(
                f"{type(self).__name__} keeps runs in a folder, so it cannot record into "
                f"{root!r}. Use a file format (backend='pickle', 'json' or 'yaml', or a "
                "FileBackend subclass) for s3:// roots."
            )
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    @property
    def store(self) -> Store:
        """Where this backend's runs are kept (its root's folder, for a custom backend)."""
        return root_store(self)

    @property
    def where(self) -> str:
        """Where the runs are, as messages name it (a folder, or ``s3://bucket/prefix``)."""
        return root_store(self).url

    def keep_artefacts(self, id: str) -> None:
        """Keep run ``id``'s artefacts where its records are (a remote store uploads
        its working folder's ``storage/<id>/``); nothing to do in a folder."""
        return None

    @abstractmethod
    def record(self, observation: Observation) -> None:
        """Store ``observation``, replacing any record with the same id."""

    @abstractmethod
    def load(self, id: str) -> Observation:
        """Load the observation with id ``id``.

        Raises
        ------
        FileNotFoundError
            If there is no run ``id`` (listings then skip it as deleted since it
            was listed). Any other exception means an unreadable record: listings
            skip it with a warning.
        """

    @abstractmethod
    def all_ids(self) -> list[str]:
        """Every id stored under ``root``."""

    def create(self, observation: Observation) -> Observation:
        """Store ``observation`` as a new run, under a unique id.

        The default reserves the id with an exclusive marker file under
        ``<root>/.de/ids/`` and then calls :meth:`record`. Returns the
        observation with the id it got (which may differ on a clash).
        """
        if type(self).claim is not Backend.claim:  # a 3.x subclass overrides the old name
            return self.claim(observation)
        return self._reserve_and_record(observation)

    def claim(self, observation: Observation) -> Observation:
        """Deprecated (3.x) name of :meth:`create`."""
        warnings.warn("Backend.claim() is now Backend.create().", DeprecationWarning, stacklevel=2)
        return self._reserve_and_record(observation)

    def _reserve_and_record(self, observation: Observation) -> Observation:
        created = observation._replace(id=storage.reserve_id(self.root, observation.id))
        self.record(created)
        return created

    def delete(self, id: str) -> None:
        """Remove the record ``id`` (not its artefacts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete records.")

    def iter_observations(self, ids: Iterable[str]) -> Iterator[Observation]:
        """Load ``ids`` in order, skipping (with a warning) any unreadable record,
        each with its tags and notes (:meth:`annotate`)."""
        marked = annotated(root_store(self))  # one listing of .de/annotations/
        for id in ids:
            try:
                yield self.annotate(self.load(id), marked)
            except FileNotFoundError:  # deleted since it was listed: not unreadable
                continue
            except Exception as exc:  # a foreign or torn file must not stop a listing
                warnings.warn(
                    f"Skipping unreadable record {id!r} in {self.where!r}: {exc!r}",
                    stacklevel=3,
                )

    def annotate(self, observation: Observation, marked: set[str] | None = None) -> Observation:
        """``observation`` with its tags and notes, which live beside the records
        (``.de/annotations/``) whatever the format: a custom backend keeps them
        without storing them itself. ``marked``: the ids known to have some. It
        is marked as read from this root's store, where its metrics are
        (``Observation.metrics()``)."""
        store = root_store(self)
        if marked is None or observation.id in marked:
            found = read_annotations(store, observation.id)
            if found:
                observation = observation._replace(metadata={**observation.metadata, **found})
        return stored(observation, store)

    def load_all(self) -> list[Observation]:
        """Every readable observation, sorted by id."""
        return list(self.iter_observations(sorted(self.all_ids())))

    def artefacts(self, id: str) -> list[Path]:
        """The files stored for run ``id`` (``[]`` if there are none).

        ``<root>/storage/<id>`` may be a symbolic link (a run folder moved
        elsewhere and linked back): its files are listed under the link's path.
        Links to folders further down are not followed.

        Raises
        ------
        ValueError
            If ``id`` would point outside the experiment's storage folder.
        """
        if not id or id in (".", "..") or Path(id).name != id or "\0" in id or "\\" in id:
            raise ValueError(
                f"Invalid run id {id!r}: ids are plain names such as "
                "'2026-01-01_12-00-00_000000', not paths."
            )
        directory = layout.artefacts(self.root, id)
        found: list[Path] = []
        # os.walk ignores unreadable folders (onerror) and never follows links
        # below the top, so a dangling or looping link cannot make this raise
        for folder, _, files in os.walk(directory, onerror=lambda _: None):
            for name in files:
                path = Path(folder, name)
                if path.is_file():
                    found.append(path)
        return sorted(found)


POWER, PROCESS = "power", "process"
DURABILITIES = (POWER, PROCESS)


def root_store(backend: Backend) -> Store:
    """The store of ``backend``'s root. Internal code asks this, never
    ``backend.store``: a custom backend written for 2.0.4 may have its own
    attribute of that name (a dict of runs, say)."""
    found: Store | None = backend.__dict__.get("_store")
    if found is None:
        found = backend.__dict__["_store"] = LocalStore(backend.root)
    return found


def durability(level: str | None = None) -> str:
    """``level``, else ``$DE_DURABILITY``, else ``"power"``, checked.

    ``"power"``: a completed run survives a power cut (its record and folder are
    synced before the call returns). ``"process"``: records are still published
    by an atomic rename, so a completed run survives any crash of the process
    (``kill -9`` included) and no record is ever torn, but a power cut may lose
    the last runs; calls skip the wait for the disk.

    Raises
    ------
    ValueError
        For any other level.
    """
    source = "durability="
    if level is None:
        level, source = os.environ.get("DE_DURABILITY") or POWER, "$DE_DURABILITY"
    if level not in DURABILITIES:
        raise ValueError(
            f"{source} {level!r} is not a durability level: use 'power' (a completed run "
            "survives a power cut; the default) or 'process' (it survives any crash of "
            "the process, and calls do not wait for the disk)."
        )
    return level


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


def instantiate_backend(name: str, root: Path | str) -> Backend:
    """Create the backend registered as ``name`` for ``root`` (a folder, or a
    URL such as ``s3://bucket/prefix`` for a file format)."""
    return backend_class(name)(root if is_url(root) else Path(root))  # type: ignore[arg-type]


class FileBackend(Backend):
    """A backend storing one file per run: ``<root>/<id><suffix>``.

    Subclasses set ``suffix`` and implement :meth:`dumps` and :meth:`loads`.
    Writes are atomic (temp file, fsync, rename), ids are reserved with an
    exclusive link, and identical environments are stored once under
    ``<root>/.de/environments/`` and referenced from each record.
    """

    suffix: ClassVar[str]
    # "power": a final record is synced (data and folder) before the run is
    # reported complete; "process": renamed into place unsynced (see durability())
    durability: str = "power"
    _remote = False  # records in a remote store (set by __init__): its hot paths branch once

    def __init__(self, root: Path | str) -> None:
        if is_url(root):
            # a remote store: records go there; current_dir() and downloaded
            # artefacts live in its local working folder, which is self.root
            store = self.__dict__["_store"] = open_store(root)
            self.root = store.workdir
            self.root.mkdir(parents=True, exist_ok=True)
            self._remote = True
        else:
            super().__init__(Path(root))
            self._remote = False

    @abstractmethod
    def dumps(self, observation: Observation) -> bytes:
        """Serialise ``observation``."""

    @abstractmethod
    def loads(self, data: bytes) -> Observation:
        """Deserialise what :meth:`dumps` wrote."""

    def path(self, id: str) -> Path:
        """The record's file (for a remote store: where a local copy would be)."""
        return self.root / f"{id}{self.suffix}"

    def key(self, id: str) -> str:
        """The record's key in the backend's ``store``."""
        return f"{id}{self.suffix}"

    def record(self, observation: Observation) -> None:
        data = self.dumps(self._pack(observation))
        if self._remote:
            self.store.put(self.key(observation.id), data)
            return
        target = os.path.join(self.root, f"{observation.id}{self.suffix}")  # no Path: hot path
        storage.atomic_write(target, data, fsync=self.durability == POWER)

    def create(self, observation: Observation) -> Observation:
        """Reserve an id for ``observation`` in the root's one id namespace and
        publish its record (temp file + rename, like every record).

        On a remote store the record's key itself is created create-only: of
        any number of hosts, one gets an id, and the others take the next one.
        """
        if self._remote:
            return self._create_remote(observation)
        id = storage.reserve_id(self.root, observation.id)
        while os.path.lexists(self.path(id)):  # an older version's record
            id = storage.reserve_id(self.root, id)
        created = observation._replace(id=id)
        data = self.dumps(self._pack(created))
        storage.atomic_write(os.path.join(self.root, f"{id}{self.suffix}"), data, fsync=False)
        return created

    def _create_remote(self, observation: Observation) -> Observation:
        id, attempt = observation.id, 0
        packed = self._pack(observation)
        while True:
            created = observation._replace(id=id)
            # the body names its process (pid, start time): no other writer's is equal
            if self.store.put_new(self.key(id), self.dumps(packed._replace(id=id))) is not None:
                return created
            attempt += 1
            id = storage.next_id(id, attempt)

    def load(self, id: str) -> Observation:
        if self._remote:
            data = self.store.read(self.key(id))  # the store refuses keys outside it
        else:
            data = storage.read_bytes(os.path.join(self.root, f"{id}{self.suffix}"))
        # the file name rules listings; an explicit load of a custom name (2.0.4 allowed any) works
        return self._unpack(self.loads(data), id=id if is_id(id) else None)

    def load_from(self, path: Path, id: str) -> Observation:
        """The record of run ``id`` stored at ``path`` (such as the root's trash)."""
        return self._unpack(self.loads(storage.read_bytes(os.fspath(path))), id=id)

    def load_key(self, key: str, id: str) -> Observation:
        """The record of run ``id`` stored at ``key`` of the backend's store (such
        as its trash); a ``FileNotFoundError`` if it is not there."""
        return self._unpack(self.loads(self.store.read(key)), id=id)

    def all_ids(self) -> list[str]:
        """The names (without suffix) of the record files in ``root``.

        The file name is the run's id, never what a record says inside. A
        foreign file such as ``notes.pkl`` is listed too, so that reading it
        warns (it is never returned as a run, and never deleted).
        """
        suffix = self.suffix
        if self._remote:
            return [k[: -len(suffix)] for k in self.store.list("") if k.endswith(suffix)]
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
                if name.endswith(suffix):
                    ids.append(name[: -len(suffix)])
        return ids

    def delete(self, id: str) -> None:
        """Remove the record ``id`` (not its artefacts).

        Raises
        ------
        ValueError
            If ``id`` is not an id such as ``'2026-01-01_12-00-00_000000'``
            (a path, or anything else that could name a file outside ``root``).
        """
        if not is_id(id):
            raise ValueError(
                f"Invalid run id {id!r}: ids look like '2026-01-01_12-00-00_000000'. "
                "Delete records by the ids all_ids() lists."
            )
        if self._remote:
            self.store.delete(self.key(id))
            return
        # unlinks a symlinked record itself, never what it points to
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, f"{id}{self.suffix}"))

    def artefacts(self, id: str) -> list[Path]:
        """The files stored for run ``id`` (``[]`` if there are none); those of a
        remote store are downloaded first (once) to its local working folder."""
        if self._remote and is_id(id):
            self._download(id)
        return super().artefacts(id)

    def _download(self, id: str) -> None:
        prefix = layout.artefacts_prefix(id)
        for key in self.store.walk(prefix):
            target = layout.at(self.root, checked(key))
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.atomic_write(target, self.store.read(key), fsync=False)

    def keep_artefacts(self, id: str) -> None:
        """Upload run ``id``'s ``current_dir()`` to a remote store (each file once,
        under ``storage/<id>/``); in a folder the files are already in place.

        Raises
        ------
        OSError
            If a file cannot be read or uploaded (the run's record is unaffected).
        """
        if not self._remote:
            return
        folder = layout.artefacts(self.root, id)
        prefix = layout.artefacts_prefix(id)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.store.put(prefix + path.relative_to(folder).as_posix(), path.read_bytes())

    def iter_observations(
        self, ids: Iterable[str], *, environment: bool = True
    ) -> Iterator[Observation]:
        """Load ``ids`` in order, skipping (with a warning) any unreadable record.

        A record that vanished since it was listed (deleted by a prune) is
        skipped silently. With ``environment=False`` records keep no
        ``metadata["environment"]``: faster when many runs are read and their
        environment is not needed.
        """
        if type(self).load is not FileBackend.load:  # a subclass reads its own way
            yield from super().iter_observations(ids)
            return
        if self._remote:
            yield from self._iter_remote(list(ids), environment)
            return
        prefix, suffix = os.path.join(self.root, ""), self.suffix
        for id in ids:
            try:
                data = storage.read_bytes(f"{prefix}{id}{suffix}")
            except FileNotFoundError:
                continue  # deleted after it was listed: gone, not unreadable
            except Exception as exc:  # a foreign or torn file must not stop a listing
                self._warn_unreadable(id, exc)
                continue
            try:
                observation = self._unpack(self.loads(data), environment, id=id)
            except Exception as exc:
                self._warn_unreadable(id, exc)
                continue
            yield observation

    def _iter_remote(self, ids: list[str], environment: bool) -> Iterator[Observation]:
        """Fetch the records in parallel, in order; annotations are listed once."""
        marked = annotated(self.store)
        keys = [self.key(id) for id in ids]
        for id, (_, found) in zip(ids, self.store.get_many(keys), strict=True):
            if found is None:
                continue  # deleted after it was listed
            try:
                observation = self._unpack(self.loads(found[0]), environment, id=id, marked=marked)
            except Exception as exc:
                self._warn_unreadable(id, exc)
                continue
            yield observation

    def _warn_unreadable(self, id: str, exc: Exception) -> None:
        warnings.warn(
            f"Skipping unreadable record {id!r} in {self.where!r}: {exc!r}",
            stacklevel=4,
        )

    def _pack(self, observation: Observation) -> Observation:
        environment = observation.metadata.get("environment")
        if not isinstance(environment, dict):
            return observation
        metadata = dict(observation.metadata)
        del metadata["environment"]
        metadata["environment_ref"] = blobs.put_environment(self.store, environment)
        return observation._replace(metadata=metadata)

    def _unpack(
        self,
        loaded: Any,
        environment: bool = True,
        *,
        id: str | None = None,
        marked: set[str] | None = None,
    ) -> Observation:
        """Check a loaded record and attach its environment.

        ``id`` is the file name's id: it wins over the id written inside (with a
        warning, once per file), so a copied record never lists twice.
        ``marked``: the ids with tags or notes, when a listing knows them.

        Raises
        ------
        TypeError
            If the record is not an :class:`Observation` with a ``str`` id and
            ``dict`` config and metadata, or its file is not named by an id:
            listings skip it with a warning.
        """
        if not isinstance(loaded, Observation):
            raise TypeError(f"not an Observation record: {type(loaded).__name__}")
        if id is not None and not is_id(id):
            raise TypeError(
                f"{id + self.suffix!r} is not named by a run id such as "
                "'2026-01-01_12-00-00_000000'; rename it to list it as a run"
            )
        observation: Observation = loaded
        for field, kind in (("id", str), ("config", dict), ("metadata", dict)):
            value = getattr(observation, field)
            if not isinstance(value, kind):
                raise TypeError(
                    f"malformed record: {field} is {type(value).__name__} {value!r:.60}, "
                    f"not a {kind.__name__}"
                )
        if id is not None and observation.id != id:
            _warn_renamed(self.where, id, observation.id, self.suffix)
            observation = observation._replace(id=id)
        metadata = observation.metadata
        metadata.update(self._annotations(observation.id, marked))
        if "environment_ref" in metadata:
            ref = metadata.pop("environment_ref")
            if environment:
                valid = isinstance(ref, str) and ref.isalnum()
                metadata["environment"] = blobs.get_environment(self.store, ref) if valid else None
        return stored(observation, self.store, self.key(observation.id))

    def annotate(self, observation: Observation, marked: set[str] | None = None) -> Observation:
        """``observation`` as loaded: a file backend's loads carry their tags and notes."""
        return observation

    def _annotations(self, id: str, marked: set[str] | None = None) -> dict[str, Any]:
        """Run ``id``'s tags and notes. A folder's are listed again only when it
        changed; a remote store's are listed once per listing (``marked``), or
        looked for one by one."""
        if self._remote:
            if marked is not None and id not in marked:
                return {}
            return read_annotations(self.store, id)
        folder = self.__dict__.get("_annotations_folder")
        if folder is None:  # a str, made once: a Path per load costs more than the stat
            folder = self._annotations_folder = os.fspath(layout.internal(self.root, "annotations"))
        try:
            stamp = os.stat(folder).st_mtime_ns
        except OSError:
            return {}
        # (folder mtime, ids with annotations, when they were listed)
        known: tuple[int, set[str], int] | None = getattr(self, "_annotated", None)
        if known is None or known[0] != stamp:
            known = self._annotated = (stamp, annotated(self.store), time.time_ns())
        # a listing this close to the folder's last change may have missed a
        # change in the same mtime tick: then look for the run's file itself
        if id in known[1] or not storage.settled(stamp, now=known[2]):
            return read_annotations(self.store, id)
        return {}


_RENAMED_WARNED: set[tuple[str, str, str]] = set()


def _warn_renamed(root: str, id: str, written: str, suffix: str) -> None:
    """Say once per file that a record's name and the id inside it disagree."""
    key = (root, id, written)
    if key in _RENAMED_WARNED:
        return
    _RENAMED_WARNED.add(key)
    warnings.warn(
        f"Record {id + suffix!r} in {root!r} holds the id {written!r}: "
        f"using its file name's id {id!r}. Rename the file to change a run's id.",
        stacklevel=5,
    )


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
    """``<root>/<id>.json``: readable anywhere; values must be JSON-serialisable.

    numpy arrays and scalars are stored as lists and numbers; ``nan`` and
    ``inf`` as ``NaN`` and ``Infinity`` (as Python's json module reads them).
    Loading a JSON record constructs no objects: it is safe to open from
    anywhere.
    """

    suffix = ".json"

    def dumps(self, observation: Observation) -> bytes:
        text = json.dumps(observation._asdict(), indent=2, allow_nan=True, default=_json_default)
        return text.encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**json.loads(data))


def _json_default(value: Any) -> Any:
    """numpy arrays and scalars as lists and numbers; anything else is refused."""
    if keys.is_numpy(value):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


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
    """``value`` as readable YAML, written as the ``yaml`` backend writes records."""
    yaml, dumper, _ = _yaml()
    text: str = yaml.dump(
        value, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return text


_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"


@register_backend("yaml")
class YAMLBackend(FileBackend):
    """``<root>/<id>.yaml``: human-friendly; values must be safe-YAML representable.

    Stores what safe YAML does (dicts, lists, strings, numbers, booleans,
    ``None``, bytes, dates, sets) plus tuples and numpy values (as lists and
    numbers); other values are refused, as with JSON. Records are read with
    a safe loader that constructs no arbitrary objects (only tuples), so they
    are safe to open from anywhere; a record holding other Python tags is
    skipped with a warning.
    """

    suffix = ".yaml"

    def dumps(self, observation: Observation) -> bytes:
        yaml, dumper, _ = _yaml()
        text: str = yaml.dump(observation._asdict(), Dumper=dumper, indent=2, sort_keys=False)
        return text.encode()

    def loads(self, data: bytes) -> Observation:
        yaml, _, loader = _yaml()
        return Observation(**yaml.load(data, Loader=loader))  # a safe loader: see _yaml
