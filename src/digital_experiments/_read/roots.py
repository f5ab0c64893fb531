"""Roots without their function: what a folder or an ``s3://`` prefix holds.

A root is a folder (``experiments/train``) or a URL (``s3://bucket/prefix/train``);
the command line and :func:`~digital_experiments.query.load` open either. A
folder (or prefix) of experiments holds one experiment per name, as ``$DE_ROOT``
does. Everything here asks the root's :class:`~._store.Store`, except the walk of
a local folder, which keeps ``os.scandir`` (one system call for the whole folder).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .._model import layout
from .._model.layout import is_id
from .._runs.backends import FileBackend, available_backends, backend_class
from .._store import Store, is_url, open_store
from ..errors import DigitalExperimentsError

Root = Path | str
"""A root as the readers name it: a folder's path, or an ``s3://`` URL."""


class NoSuchRoot(DigitalExperimentsError, FileNotFoundError):
    """The folder given as an experiment root does not exist."""


def located(root: str | os.PathLike[str]) -> Root:
    """``root`` as messages name it: a URL as given (without a trailing ``/``), a
    folder made absolute."""
    if is_url(root):
        return str(root).rstrip("/")
    return Path(root).expanduser().absolute()


def name_of(root: str | os.PathLike[str]) -> str:
    """The last part of ``root``: its experiment's name."""
    if is_url(root):
        return str(root).rstrip("/").rpartition("/")[2]
    return Path(root).name


def inside(root: Root, name: str) -> Root:
    """The root ``name`` inside the folder (or prefix) of experiments ``root``."""
    return f"{str(root).rstrip('/')}/{name}" if is_url(root) else Path(root) / name


def _store(root: str | os.PathLike[str]) -> Store:
    return open_store(root)


def exists(root: Root) -> bool:
    """Whether ``root`` is a folder, or a prefix with anything under it.

    Raises
    ------
    StoreError
        If the server cannot be asked (the message names the setting to fix).
    """
    if not is_url(root):
        return Path(root).is_dir()
    store = _store(root)  # a listing fails as check() would, naming the setting
    return next(store.list(""), None) is not None or next(store.folders(""), None) is not None


def open_root(root: str | os.PathLike[str], backend: str | None = None) -> FileBackend:
    """The file backend of the experiment folder (or ``s3://`` prefix) ``root``.

    The format is found from the suffix of the records (``.pkl``, ``.json``,
    ``.yaml``, or that of any registered :class:`~digital_experiments.backends.FileBackend`);
    pass ``backend`` to choose it when a folder holds several.

    Raises
    ------
    NoSuchRoot
        If ``root`` is not a folder (or nothing is under the prefix).
    ValueError
        If the folder holds records of several formats and ``backend`` is not given.
    OSError
        If the server of an ``s3://`` root cannot be asked (a ``StoreError``
        naming the setting to fix).
    """
    place = located(root)
    if not exists(place):
        example = (
            "s3://bucket/prefix/<function name>" if is_url(place) else "experiments/<function name>"
        )
        raise NoSuchRoot(
            f"No experiment folder at {str(place)!r}. Pass the folder holding the "
            f"records, such as {example}."
        )
    formats = _file_formats()
    if backend is not None:
        if backend not in formats:
            raise ValueError(
                f"Unknown file backend {backend!r}. Available: {', '.join(sorted(formats))}."
            )
        return formats[backend](place)
    found = record_formats(place)
    if len(found) > 1:
        counts = ", ".join(f"{count} {name}" for name, count in found.most_common())
        raise ValueError(
            f"{str(place)!r} holds records of several formats ({counts}). Choose one with backend=."
        )
    name = next(iter(found), "pickle")
    return formats[name](place)


def _file_formats() -> dict[str, type[FileBackend]]:
    classes = {name: backend_class(name) for name in available_backends()}
    return {
        name: cls
        for name, cls in classes.items()
        if isinstance(cls, type) and issubclass(cls, FileBackend) and hasattr(cls, "suffix")
    }


def record_formats(folder: str | os.PathLike[str]) -> Counter[str]:
    """How many records of each format (``pickle``, ``json``...) ``folder`` holds.

    Only files named ``<id><suffix>`` count, as in :meth:`FileBackend.all_ids
    <digital_experiments.backends.FileBackend.all_ids>`.
    """
    by_suffix = {cls.suffix: name for name, cls in _file_formats().items()}
    found: Counter[str] = Counter()
    for name in _names(folder):
        stem, suffix = os.path.splitext(name)
        if suffix in by_suffix and is_id(stem):
            found[by_suffix[suffix]] += 1
    return found


def _names(folder: str | os.PathLike[str]) -> list[str]:
    """The names directly in ``folder`` (its objects' keys, for a prefix)."""
    if is_url(folder):
        return list(_store(folder).list(""))
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries]


# formats whose loading constructs no objects: safe to open from anywhere
SAFE_SUFFIXES = (".json", ".yaml")


def recorded_here(folder: str | os.PathLike[str]) -> bool:
    """Whether digital-experiments 3.x recorded runs in ``folder``: it reserved their
    ids in ``.de/ids/`` (in a bucket, where a record's key is its id, it stored
    their environments in ``.de/environments/``). Other bookkeeping (tags, notes,
    trash, locks) creates ``.de/`` too, so ``.de/`` alone proves nothing."""
    if is_url(folder):
        return next(_store(folder).list(layout.internal_prefix("environments")), None) is not None
    return layout.reserved_ids(Path(folder)).is_dir()


def trust_refusal(backend: FileBackend, trust: bool = False) -> str | None:
    """Why the records of ``backend`` must not be loaded, or ``None`` if they may.

    JSON and YAML records construct no objects and always may; pickle records
    (and any other format) only in a folder digital-experiments 3.x recorded
    (:func:`recorded_here`), or with ``trust``, since unpickling runs code.
    """
    if trust or backend.suffix in SAFE_SUFFIXES:
        return None
    if recorded_here(backend.where) or not backend.all_ids():
        return None
    mark = ".de/environments/" if is_url(backend.where) else ".de/ids/"
    return (
        f"{backend.where!r} holds {backend.suffix} records that digital-experiments "
        f"3.x did not record (it has no {mark}), and loading a pickle runs any "
        "code it contains. If you trust where this folder came from, pass --trust "
        "(trust=True)."
    )


def is_experiment_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is an experiment's folder: it holds records or ``.de/``."""
    try:
        if is_url(folder):
            return layout.INTERNAL in _store(folder).folders("") or bool(record_formats(folder))
        return layout.internal(Path(folder)).is_dir() or bool(record_formats(folder))
    except OSError:
        return False


def experiment_folders(folder: str | os.PathLike[str]) -> list[Root]:
    """The experiment folders directly inside ``folder``, by name.

    ``folder`` is a folder of experiments, such as ``$DE_ROOT`` or
    ``./experiments`` (each experiment writes to ``<folder>/<function name>``),
    or an ``s3://`` prefix of them.
    """
    if is_url(folder):
        names = list(_store(folder).folders(""))
    else:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries if entry.is_dir())
    place: Root = str(folder) if is_url(folder) else Path(folder)
    found = [inside(place, name) for name in names if not name.startswith(".")]
    return [root for root in found if is_experiment_folder(root)]
