"""Backends: the :class:`Backend` base, :class:`FileBackend` (a format's records
in a store) and the registry of names ``backend=`` takes.

A format (:mod:`.formats`) only says how an :class:`Observation` becomes bytes
and back; a store (:mod:`.._store`) is the place. :class:`FileBackend` puts
the two together and owns the policy on top of the store's operations (ids,
atomic records, shared environments, listings), written once for every format
and every store.
"""

from __future__ import annotations

import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .._model import layout
from .._model.layout import is_id
from .._store import blobs
from .._store import files as storage
from .._store.base import Store
from .._store.local import LocalStore
from .._store.open import is_url, open_store
from ..errors import UnknownBackendError
from . import formats, index
from .annotations import annotated, read_annotations
from .formats import Format as Format
from .formats import yaml_text as yaml_text  # imported from here before formats had a module
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
        root_store(self).prepare()

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
        # the working folder's store walks the files: it follows a link at
        # storage/<id> itself, none below, and skips unreadable folders, so a
        # dangling or looping link cannot make this raise
        return sorted(
            layout.at(self.root, key)
            for key in working_store(self).walk(layout.artefacts_prefix(id))
        )


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


def working_store(backend: Backend) -> Store:
    """The store of ``backend``'s local working folder (``backend.root``: each run's
    ``current_dir()`` and downloaded artefacts): its root's store itself for a
    folder, a :class:`LocalStore` of the folder beside a remote store."""
    found: Store | None = backend.__dict__.get("_working")
    if found is None:
        store = root_store(backend)
        found = store if store.folder is not None else LocalStore(backend.root, fsync=False)
        backend.__dict__["_working"] = found
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
    """The names of every registered backend (each format's among them)."""
    return sorted(_ALL_BACKENDS)


FormatT = TypeVar("FormatT", bound="Format | type[Format]")


def register_format(format: FormatT) -> FormatT:
    """Register a record format, so that ``@experiment(backend=format.name)``
    keeps its runs as ``<id><suffix>`` files in any root (a folder, ``s3://``,
    ``memory://``), with the storage rules of every file backend.

    Parameters
    ----------
    format : Format or type of Format
        An instance, or a subclass (made with no arguments): it is returned
        unchanged, so this decorates a class too.

    Raises
    ------
    TypeError
        If ``format`` is no :class:`Format`, or has no usable name or suffix.

    Examples
    --------
    >>> import json
    >>> from digital_experiments import Observation
    >>> from digital_experiments.backends import Format, register_format
    >>> @register_format
    ... class CompactJSON(Format):
    ...     name, suffix = "compact-json", ".cjson"
    ...     def dumps(self, observation):
    ...         return json.dumps(observation._asdict(), separators=(",", ":")).encode()
    ...     def loads(self, data):
    ...         return Observation(**json.loads(data))
    """
    made = formats.register(format)
    _ALL_BACKENDS[made.name] = backend_for(made)
    return format


_FOR_FORMAT: dict[int, tuple[Format, type[FileBackend]]] = {}


def backend_for(format: Format) -> type[FileBackend]:
    """The :class:`FileBackend` class of ``format`` (made once per format): what
    ``backend=format.name`` instantiates, and how listings find its suffix."""
    known = _FOR_FORMAT.get(id(format))
    if known is not None and known[0] is format:
        return known[1]
    for cls in (PickleBackend, JSONBackend, YAMLBackend):
        if cls.format is format:
            return cls
    name = "".join(part.capitalize() for part in format.name.replace("_", "-").split("-"))
    made = type(
        f"{name or 'Format'}Backend",
        (FileBackend,),
        {"format": format, "__module__": __name__, "__doc__": f"Records in {format!r}."},
    )
    _FOR_FORMAT[id(format)] = (format, made)
    return made


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
    """A backend storing one file per run, ``<id><suffix>``, in a store.

    A format (:class:`~digital_experiments.backends.Format`) says how a record
    becomes bytes: pass one (or its registered name) as ``format=``, or, as in
    2.0.4, subclass and set ``suffix`` and implement :meth:`dumps` and
    :meth:`loads`. The place is ``root``: a folder, or a URL such as
    ``s3://bucket/prefix``. Either way, writes are atomic (temp file, fsync,
    rename, on a folder), ids are reserved, and identical environments are
    stored once under ``.de/environments/`` and referenced from each record.

    Parameters
    ----------
    root : pathlib.Path or str
        The experiment's folder, or the URL of its store.
    format : Format or str, optional
        The record format, or its registered name (``"pickle"``, ``"json"``,
        ``"yaml"``...); a subclass's own by default.
    """

    format: Format | None = None
    """The record format; ``None`` for a subclass with its own ``dumps`` and ``loads``."""
    suffix: str
    # "power": a final record is synced (data and folder) before the run is
    # reported complete; "process": renamed into place unsynced (see durability())
    durability: str = "power"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("format")
        if isinstance(own, Format) and "suffix" not in cls.__dict__:
            cls.suffix = own.suffix  # a class attribute: listings read it from the class

    def __init__(self, root: Path | str, format: Format | str | None = None) -> None:
        if format is not None:
            self.format = formats.named(format) if isinstance(format, str) else format
            self.suffix = self.format.suffix
        elif self.format is None and (
            type(self).dumps is FileBackend.dumps or type(self).loads is FileBackend.loads
        ):
            raise TypeError(
                f"Can't instantiate {type(self).__name__} without a format: pass "
                "format= (such as 'json'), or subclass and define suffix, dumps and loads."
            )
        if is_url(root):
            # a remote store: records go there; current_dir() and downloaded
            # artefacts live in its local working folder, which is self.root
            store = self.__dict__["_store"] = open_store(root)
            self.root = store.workdir
            working_store(self).prepare()
        else:
            super().__init__(Path(root))

    def dumps(self, observation: Observation) -> bytes:
        """Serialise ``observation`` (with the backend's format)."""
        return self.format.dumps(observation)  # type: ignore[union-attr]  # checked at __init__

    def loads(self, data: bytes) -> Observation:
        """Deserialise what :meth:`dumps` wrote."""
        return self.format.loads(data)  # type: ignore[union-attr]

    def path(self, id: str) -> Path:
        """The record's file (for a remote store: where a local copy would be)."""
        return self.root / f"{id}{self.suffix}"

    def key(self, id: str) -> str:
        """The record's key in the backend's ``store``."""
        return f"{id}{self.suffix}"

    def record(self, observation: Observation) -> None:
        data = self.dumps(self._pack(observation))
        store = root_store(self)
        store.write(f"{observation.id}{self.suffix}", data, sync=self.durability == POWER)
        unsettled: set[str] | None = self.__dict__.get("_unsettled")
        if unsettled and observation.id in unsettled:  # the run's first record, replaced
            unsettled.discard(observation.id)
            if isinstance(store, LocalStore):
                store.settle_reserved(observation.id)

    def create(self, observation: Observation) -> Observation:
        """Reserve an id for ``observation`` in the root's one id namespace and
        publish its record (atomically, like every record).

        In a folder the id is reserved by ``.de/ids/<id>``, created exclusively:
        every format, and every version since 2.0.4, reserves there, so a folder
        holding several formats still has one namespace. On a remote store (one
        format a root, no older writers) the record's key itself is created
        create-only: of any number of hosts, one gets an id, and the others take
        the next one.
        """
        store = root_store(self)
        if not isinstance(store, LocalStore):  # the policies differ, as said above
            return self._create_remote(store, observation)
        # one file created, not three: the reservation holds the record's bytes
        # and is linked into place (a record already there keeps its id)
        packed = self._pack(observation)
        id = store.create_reserved(
            observation.id, self.key, lambda id: self.dumps(packed._replace(id=id))
        )
        self.__dict__.setdefault("_unsettled", set()).add(id)
        return observation._replace(id=id)

    def _create_remote(self, store: Store, observation: Observation) -> Observation:
        id, attempt = observation.id, 0
        packed = self._pack(observation)
        while True:
            created = observation._replace(id=id)
            # the body names its process (pid, start time): no other writer's is equal
            if store.put_new(self.key(id), self.dumps(packed._replace(id=id))) is not None:
                return created
            attempt += 1
            id = storage.next_id(id, attempt)

    def load(self, id: str) -> Observation:
        data = root_store(self).read(self.key(id))  # the store refuses keys outside it
        # the file name rules listings; an explicit load of a custom name (2.0.4 allowed any) works
        return self._unpack(self.loads(data), id=id if is_id(id) else None)

    def load_from(self, path: Path, id: str) -> Observation:
        """The record of run ``id`` stored at ``path`` (such as the root's trash)."""
        path = Path(path)
        return self._unpack(self.loads(LocalStore(path.parent).read(path.name)), id=id)

    def load_key(self, key: str, id: str) -> Observation:
        """The record of run ``id`` stored at ``key`` of the backend's store (such
        as its trash); a ``FileNotFoundError`` if it is not there."""
        return self._unpack(self.loads(self.store.read(key)), id=id)

    def all_ids(self) -> list[str]:
        """The names (without suffix) of the record files in ``root``.

        The file name is the run's id, never what a record says inside. A
        foreign file such as ``notes.pkl`` is listed too, so that reading it
        warns (it is never returned as a run, and never deleted); hidden files
        are not.
        """
        suffix = self.suffix
        cut = -len(suffix)
        return [
            key[:cut]
            for key in root_store(self).list("")
            if key.endswith(suffix) and not key.startswith(".")
        ]

    def delete(self, id: str) -> None:
        """Remove the record ``id`` (not its artefacts); a linked record's link
        itself, never what it points to.

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
        root_store(self).delete(self.key(id))

    def artefacts(self, id: str) -> list[Path]:
        """The files stored for run ``id`` (``[]`` if there are none); those of a
        remote store are downloaded first (once) to its local working folder."""
        store, working = root_store(self), working_store(self)
        if working is not store and is_id(id):
            blobs.download(store, working, layout.artefacts_prefix(id))
        return super().artefacts(id)

    def keep_artefacts(self, id: str) -> None:
        """Upload run ``id``'s ``current_dir()`` to a remote store (each file once,
        under ``storage/<id>/``); in a folder the files are already in place.

        Raises
        ------
        OSError
            If a file cannot be read or uploaded (the run's record is unaffected).
        """
        store, working = root_store(self), working_store(self)
        if working is not store:
            blobs.upload(working, store, layout.artefacts_prefix(id))

    def stamps(self) -> dict[str, str | None]:
        """Each record's id (as :meth:`all_ids` lists them) and its stamp (the
        store's ``stamped()``: a folder's inode, size and times, an S3 ETag), for
        :meth:`iter_observations`' ``stamps=``."""
        suffix = self.suffix
        cut = -len(suffix)
        return {
            key[:cut]: stamp
            for key, stamp in root_store(self).stamped("")
            if key.endswith(suffix) and not key.startswith(".")
        }

    def iter_observations(
        self,
        ids: Iterable[str],
        *,
        environment: bool = True,
        stamps: Mapping[str, str | None] | None = None,
    ) -> Iterator[Observation]:
        """Load ``ids`` in order, skipping (with a warning) any unreadable record.

        A record that vanished since it was listed (deleted by a prune) is
        skipped silently. With ``environment=False`` records keep no
        ``metadata["environment"]``: faster when many runs are read and their
        environment is not needed. ``stamps``: every record of the root and its
        stamp, as :meth:`stamps` lists them; given, records are read through the
        root's read index (see the performance page).
        """
        if type(self).load is not FileBackend.load:  # a subclass reads its own way
            yield from super().iter_observations(ids)
            return
        for id, loaded in self.load_many(ids, environment=environment, stamps=stamps):
            if isinstance(loaded, Observation):
                yield loaded
            elif not isinstance(loaded, FileNotFoundError):  # gone since listed: not unreadable
                self._warn_unreadable(id, loaded)

    def load_many(
        self,
        ids: Iterable[str],
        *,
        environment: bool = True,
        stamps: Mapping[str, str | None] | None = None,
    ) -> Iterator[tuple[str, Observation | Exception]]:
        """``(id, observation)`` for each of ``ids``, in order, or ``(id, error)``
        for a record that cannot be read: a ``FileNotFoundError`` for one gone
        since it was listed, any other exception for a damaged or foreign one.
        ``environment`` and ``stamps`` as in :meth:`iter_observations`."""
        store, suffix = root_store(self), self.suffix
        ids = list(ids)
        own = type(self).loads is FileBackend.loads
        loads = self.format.loads if own else self.loads  # type: ignore[union-attr]
        marked = None
        changed = store.modified(_ANNOTATIONS)
        if len(ids) > _FEW or changed is None:
            # one listing of .de/annotations/ for the whole listing (an empty
            # folder's, or none); a few runs look for their own files
            marked = set() if changed == 0 else annotated(store)
        found: Iterable[tuple[str, Any]]
        if stamps is not None:
            objects = own and type(self.format) is formats.PickleFormat
            found = index.read(store, suffix, stamps, ids, loads, objects=objects)
        else:
            keys = [f"{id}{suffix}" for id in ids]
            decoded = index.decoded(store.read_many(keys), loads)
            found = zip(ids, (loaded for _, _, loaded in decoded), strict=True)
        for id, loaded in found:
            if isinstance(loaded, Exception):
                yield id, loaded
                continue
            try:
                yield id, self._unpack(loaded, environment, id=id, marked=marked)
            except Exception as exc:  # a foreign or malformed record
                yield id, exc

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
        written, config, _, metadata = observation
        # exact types first (one test each, on every record of a listing)
        if not (type(written) is str and type(config) is dict and type(metadata) is dict):
            for field, kind in (("id", str), ("config", dict), ("metadata", dict)):
                value = getattr(observation, field)
                if not isinstance(value, kind):
                    raise TypeError(
                        f"malformed record: {field} is {type(value).__name__} {value!r:.60}, "
                        f"not a {kind.__name__}"
                    )
        if id is not None and written != id:
            _warn_renamed(self.where, id, written, self.suffix)
            observation = observation._replace(id=id)
        store = root_store(self)
        if marked is None or observation.id in marked:
            metadata.update(self._annotations(store, observation.id, marked))
        if "environment_ref" in metadata:
            ref = metadata.pop("environment_ref")
            if environment:
                valid = isinstance(ref, str) and ref.isalnum()
                metadata["environment"] = blobs.get_environment(store, ref) if valid else None
        return stored(observation, store, self.key(observation.id))

    def annotate(self, observation: Observation, marked: set[str] | None = None) -> Observation:
        """``observation`` as loaded: a file backend's loads carry their tags and notes."""
        return observation

    def _annotations(self, store: Store, id: str, marked: set[str] | None) -> dict[str, Any]:
        """Run ``id``'s tags and notes. ``marked``: the ids that have some, as a
        listing found them. Otherwise a store that says when its annotations
        changed (a folder's mtime) has them listed again only then; another
        looks for the run's own file."""
        if marked is not None:
            return read_annotations(store, id) if id in marked else {}
        stamp = store.modified(_ANNOTATIONS)
        if stamp is None:
            return read_annotations(store, id)
        if stamp == 0:  # no annotations folder: no run has any
            return {}
        # (stamp, ids with annotations, when they were listed)
        known: tuple[int, set[str], int] | None = self.__dict__.get("_annotated")
        if known is None or known[0] != stamp:
            known = self.__dict__["_annotated"] = (stamp, annotated(store), time.time_ns())
        # a listing this close to the folder's last change may have missed a
        # change in the same mtime tick: then look for the run's file itself
        if id in known[1] or not storage.settled(stamp, now=known[2]):
            return read_annotations(store, id)
        return {}


_ANNOTATIONS = layout.internal_prefix("annotations")
_FEW = 64  # runs a listing reads before it lists all annotations at once


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

    format = formats.PICKLE


@register_backend("json")
class JSONBackend(FileBackend):
    """``<root>/<id>.json``: readable anywhere; values must be JSON-serialisable.

    numpy arrays and scalars are stored as lists and numbers; ``nan`` and
    ``inf`` as ``NaN`` and ``Infinity`` (as Python's json module reads them).
    Loading a JSON record constructs no objects: it is safe to open from
    anywhere.
    """

    format = formats.JSON


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

    format = formats.YAML
