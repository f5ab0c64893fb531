"""Where everything of an experiment lives on disk: the one module that knows the layout.

::

    <root>/<id>.<ext>                      one record per run (ext from the backend)
    <root>/storage/<id>/                   the run's artefacts (its current_dir())
    <root>/.de/ids/<id>                    reserved ids, one namespace per root
    <root>/.de/environments/<digest>.json  environments shared by many records
    <root>/.de/cache/<key>                 the id of a completed run of config key <key>
    <root>/.de/claims/<key>/<generation>   which process runs config key <key> in a sweep
                                           (<generation>.released: the run it completed)
    <root>/.de/locks/<name>.lock           inter-process locks
    <root>/.de/metrics/<id>.jsonl          metrics logged by run <id>
    <root>/.de/annotations/<id>.json       tags and notes of run <id>
    <root>/.de/trash/<id>/                 a deleted run: record, artefacts, metrics, notes

Ids look like ``YYYY-MM-DD_HH-MM-SS_ffffff`` (UTC), 2.0.4's shape.
"""

from __future__ import annotations

import re
from pathlib import Path

INTERNAL = ".de"
ARTEFACTS = "storage"

ID_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}")
"""A whole id: digits and separators only, so never a path."""


def is_id(name: object) -> bool:
    """Whether ``name`` is a run id (and so a safe file name: no separator, no ``..``)."""
    return isinstance(name, str) and ID_PATTERN.fullmatch(name) is not None


# Every place is a key first (relative, "/"-separated, the same on every store);
# a folder's path for it is at(root, key).


def at(root: Path, key: str) -> Path:
    """The path of ``key`` in the folder ``root``."""
    return Path(root).joinpath(*key.split("/"))


def internal_prefix(name: str) -> str:
    """The prefix of the ``.de/<name>/`` folder: ``metrics``, ``annotations``..."""
    return f"{INTERNAL}/{name}/"


def artefacts_prefix(id: str) -> str:
    return f"{ARTEFACTS}/{id}/"


def environment_key(digest: str) -> str:
    return f"{internal_prefix('environments')}{digest}.json"


CLAIMS = internal_prefix("claims")  # 3.4's one-file claims lived in .de/sweep-claims/


def cache_key(key: str) -> str:
    return f"{internal_prefix('cache')}{key}"


def metrics_key(id: str) -> str:
    return f"{internal_prefix('metrics')}{id}.jsonl"


def annotations_key(id: str) -> str:
    return f"{internal_prefix('annotations')}{id}.json"


def heartbeat_key(id: str) -> str:
    """Renewed while run ``id`` runs on a root other hosts share."""
    return f"{internal_prefix('heartbeats')}{id}"


def trash_prefix(id: str) -> str:
    """Where run ``id``'s record, metrics and annotations go when it is deleted."""
    return f"{internal_prefix('trash')}{id}/"


def artefacts_trash_prefix(id: str) -> str:
    """Where run ``id``'s artefacts go when it is deleted: inside ``storage``, so a
    folder's rename moves them even when ``storage`` is a link to another disk."""
    return f"{ARTEFACTS}/.trash/{id}/"


def internal(root: Path, *parts: str) -> Path:
    """A path under the experiment's hidden ``.de`` folder."""
    return Path(root).joinpath(INTERNAL, *parts)


def artefacts(root: Path, id: str) -> Path:
    """The folder of run ``id``'s artefacts."""
    return Path(root) / ARTEFACTS / id


def reserved_ids(root: Path) -> Path:
    return internal(root, "ids")


def lock(root: Path, name: str) -> Path:
    return internal(root, "locks", f"{name}.lock")


def metrics(root: Path, id: str) -> Path:
    return at(root, metrics_key(id))


def annotation_file(root: Path, id: str) -> Path:
    return at(root, annotations_key(id))


def trash(root: Path, id: str = "") -> Path:
    return internal(root, "trash", id) if id else internal(root, "trash")
