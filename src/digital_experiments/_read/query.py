"""Reading stored runs: selecting, sorting and flattening them (the public
surface, with examples, is :mod:`digital_experiments.query`)."""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._model import keys
from .._model.keys import same_code
from .._model.layout import is_id
from .._runs.backends import Backend, FileBackend, root_store
from .._runs.index import paused_gc
from .._runs.metrics import logged as logged_metrics
from .._runs.metrics import summary as metric_summary
from .._runs.observation import (
    COMPLETED,
    STATUSES,
    Observation,
    Observations,
    notes_of,
    status_of,
    store_of,
    tags_of,
)
from .._store import files as storage
from .._store.base import Store
from ..errors import DigitalExperimentsError
from .roots import open_root

if TYPE_CHECKING:
    import pandas as pd

    from .._model.where import Where as CompiledWhere


Status = str | Collection[str]
Since = str | datetime | date
Where = str | Mapping[str, Any] | Callable[[Observation], bool]
METRIC_SUMMARIES = ("last", "min", "max")
# the first name of every field a where= or sort= may use
NAMESPACES = ("id", "status", "config", "result", "tags", "notes", "metrics", "metadata")


class _AnyCode:
    def __repr__(self) -> str:
        return "ANY_CODE"


ANY_CODE: Any = _AnyCode()
"""``select(code=ANY_CODE)`` keeps runs of every version of the code."""


class InvalidSince(DigitalExperimentsError, ValueError):
    """A ``since=`` value that is not a time."""


_ID_PREFIX = re.compile(r"\d{4}(-\d{2}(-\d{2}_\d{2}(-\d{2}(-\d{2}(_\d{1,6})?)?)?)?)?")
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?"
)
_SMALLEST_ID = "2000-01-01_00-00-00_000000"


def since_floor(since: Since) -> str:
    """The smallest id a run started at or after ``since`` can have.

    Ids are UTC. ``since`` is one of:

    * a :class:`~datetime.datetime` (naive means local time) or a
      :class:`~datetime.date` (local midnight);
    * an ISO time with a space or ``T``: ``"2026-11-28"``, ``"2026-11-28 23:59"``
      (the form of ``metadata["timing"]["start"]``), ``"2026-11-28T23:59:30+01:00"``;
      local time unless it carries a UTC offset (or ``Z``);
    * an id or a prefix of one, compared as it is (so in UTC):
      ``"2026-11-28_12"``, ``"2026-11-28_12-30-00_000000"``.

    Raises
    ------
    InvalidSince
        For anything else, such as ``"yesterday"`` (a :class:`ValueError`).

    Examples
    --------
    >>> since_floor("2026-11-28_12")
    '2026-11-28_12'
    """
    if isinstance(since, datetime):
        return storage.new_id(since)
    if isinstance(since, date):
        return storage.new_id(datetime.combine(since, time()))
    if isinstance(since, str):
        text = since.strip()
        if _ISO_TIME.fullmatch(text):
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                return storage.new_id(when)
        elif _ID_PREFIX.fullmatch(text):
            try:  # the smallest id with this prefix must be a real time
                datetime.strptime(text + _SMALLEST_ID[len(text) :], storage.ID_FORMAT)
            except ValueError:
                pass
            else:
                return text
    raise InvalidSince(
        f"since={since!r} is not a time. Pass a datetime or date, an ISO time such as "
        "'2026-11-28 23:59' or '2026-11-28T23:59:30+01:00' (local time unless it has "
        "an offset), or a prefix of a run id (UTC) such as '2026-11-28_12'."
    )


def select(
    backend: Backend,
    *,
    code: Any = ANY_CODE,
    status: Status = COMPLETED,
    where: Where | None = None,
    since: Since | None = None,
    limit: int | None = None,
    sort: str | None = None,
    environment: bool = True,
) -> Observations:
    """The runs stored in ``backend`` that match every filter, oldest first.

    Ids are filtered (``since``) before any record is read, and with ``limit``
    records are read newest first until enough match.

    Parameters
    ----------
    backend : Backend
        Where the runs are stored.
    code : str or None, optional
        Keep only runs recorded with this source code (default: any code).
    status, where, since, limit, sort
        As in :meth:`Experiment.observations
        <digital_experiments.Experiment.observations>`.
    environment : bool
        Attach the shared environment to ``metadata["environment"]``. Leaving
        it out makes reading many runs faster when it is not needed.
    """
    wanted = _statuses(status)
    if isinstance(where, str) or sort is not None:
        text = where if isinstance(where, str) else None
        found = select(
            backend,
            code=code,
            status=status,
            where=None if text is not None else where,
            since=since,
            environment=environment,
        )
        names = [k.strip().lstrip("-") for k in (sort or "").split(",")]
        if text is not None:
            from .._model.where import compile_where  # the where= parser: on first use

            expression = compile_where(text)
            names += expression.fields
        table = rows(found, "last" if _names_metrics(names) else None)
        kept = range(len(found)) if text is None else matching(table, expression)
        found = Observations(found[i] for i in kept)
        return _ordered(found, sort, limit, [table[i] for i in kept])
    keep = _predicate(where)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit!r}.")
    floor = None if since is None else since_floor(since)
    # a whole listing reads through the root's index, checked by each record's
    # stamp; a limited one reads the few newest records it needs
    stamps = None
    if isinstance(backend, FileBackend) and limit is None:
        with paused_gc():  # see below
            stamps = backend.stamps()
    ids = sorted(backend.all_ids() if stamps is None else stamps)
    if floor is not None:
        ids = ids[bisect.bisect_left(ids, floor) :]
    if limit is not None:
        if limit == 0:
            return Observations()
        ids.reverse()
    if isinstance(backend, FileBackend):
        records = backend.iter_observations(ids, environment=environment, stamps=stamps)
    else:
        records = backend.iter_observations(ids)
    found = Observations()
    # all at once, with the cyclic collector paused: it would scan every record
    # built so far again and again (most of a large listing's time)
    with paused_gc():
        for observation in records:
            if code is not ANY_CODE and not same_code(observation.metadata, code):
                continue
            if wanted is not None and status_of(observation) not in wanted:
                continue
            if keep is not None and not keep(observation):
                continue
            found.append(observation)
            if limit is not None and len(found) >= limit:
                break
    if limit is not None:
        found.reverse()
    return found


def fields(
    observation: Observation,
    metrics: str | None = None,
    *,
    metadata: bool = True,
    logged: Collection[str] | None = None,
) -> dict[str, Any]:
    """The flat fields of a run that ``where=``, ``sort=`` and ``columns=`` name:
    ``id``, ``status``, ``config.*``, ``result`` (or ``result.*``), ``tags.*``,
    ``notes``, ``metadata.*`` (its environment and code left out; none without
    ``metadata``) and, with ``metrics``, each metric's ``last``, ``min`` or ``max``
    value as ``metrics.*``. ``logged``: the ids of the runs with metrics, when the
    caller knows them (see :func:`rows`)."""
    row: dict[str, Any] = {"id": observation.id, "status": status_of(observation)}
    _flatten_into(row, observation.config, "config", ".")
    if isinstance(observation.result, dict):
        _flatten_into(row, observation.result, "result", ".")
    else:
        row["result"] = observation.result
    extra = observation.metadata
    _flatten_into(row, tags_of(observation), "tags", ".")
    notes = notes_of(observation)
    if notes:
        row["notes"] = "\n".join(notes)
    if metrics is not None and (logged is None or observation.id in logged):
        _flatten_into(row, metrics_of(observation, metrics), "metrics", ".")
    if metadata:
        rest = {k: v for k, v in extra.items() if k not in _NOT_FIELDS}
        _flatten_into(row, rest, "metadata", ".")
    return row


def rows(
    observations: Sequence[Observation], metrics: str | None = None, *, metadata: bool = True
) -> list[dict[str, Any]]:
    """The :func:`fields` of every observation; the runs that logged metrics are
    listed once per folder rather than looked for one by one."""
    found: dict[Store | None, Collection[str]] = {}
    table = []
    for observation in observations:
        store = store_of(observation)
        if metrics is not None and store not in found:
            found[store] = logged_metrics(store) if store is not None else ()
        logged = found.get(store) if metrics is not None else None
        table.append(fields(observation, metrics, metadata=metadata, logged=logged))
    return table


def matching(table: Sequence[Mapping[str, Any]], where: str | CompiledWhere) -> list[int]:
    """The positions of the rows of ``table`` (flat fields) that ``where`` keeps.

    A run without a field the query names fails every comparison on it.

    Raises
    ------
    ValueError
        For a syntax error, or a field that no run could have (see :func:`open_namespaces`).
    """
    from .._model.where import compile_where

    expression = compile_where(where) if isinstance(where, str) else where
    known = _known(table)
    expression.check_fields(known, open_namespaces(known))
    return [i for i, row in enumerate(table) if expression(row)]


def open_namespaces(known: Collection[str]) -> list[str]:
    """The namespaces whose fields are taken on trust: any run may lack them.

    ``tags``, ``metrics`` and ``metadata`` vary from run to run (a tag nobody set
    yet, a metric some runs log), so a name below them is never an error: a run
    without it matches nothing and sorts last. ``config`` and ``result`` are
    checked against the fields the runs have (``config.lrr`` when ``config.lr``
    is known is a typo), unless no run has any field below them (no run, or
    only failed runs with no result): then they are open too.
    """
    opened = ["tags", "metrics", "metadata"]
    for namespace in ("config", "result"):
        below = namespace + "."
        if not any(name.startswith(below) for name in known):
            opened.append(namespace)
    return opened


_NOT_FIELDS = frozenset({"environment", "code", "tags", "notes"})


def metrics_of(observation: Observation, how: str = "last") -> dict[str, Any]:
    """Each metric of the run summarised: its ``last``, ``min`` or ``max`` value."""
    if how not in METRIC_SUMMARIES:
        raise ValueError(f"metrics= takes 'last', 'min' or 'max', not {how!r}.")
    store = store_of(observation)
    return metric_summary(store, observation.id, how) if store is not None else {}


def _names_metrics(names: Collection[str]) -> bool:
    return any(name == "metrics" or name.startswith("metrics.") for name in names)


def _known(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    known = set(NAMESPACES)
    for row in rows:
        known.update(row)
    return known


def _ordered(
    found: Observations, sort: str | None, limit: int | None, table: list[dict[str, Any]]
) -> Observations:
    """``found`` (whose fields are ``table``) in ``sort`` order, cut to ``limit``."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit!r}.")
    if sort is None:
        if limit is None:
            return found
        return Observations(found[len(found) - limit :] if limit else [])
    ordered = Observations(found[i] for i in sort_order(table, sort))
    return ordered if limit is None else Observations(ordered[:limit])


def sort_order(rows: Sequence[Mapping[str, Any]], sort: str) -> list[int]:
    """The positions of ``rows`` (flat fields) in ``sort`` order, such as
    ``"-result.loss,config.lr"`` (``-``: descending; missing values last,
    whatever the direction).

    Raises
    ------
    ValueError
        For a field that no run could have, as for :func:`matching`.
    """
    keys = [key.strip() for key in sort.split(",") if key.strip()]
    if not keys:
        raise ValueError(f"sort= names a field such as '-result.loss', not {sort!r}.")
    known = _known(rows)
    opened = tuple(f"{namespace}." for namespace in open_namespaces(known))
    order = list(range(len(rows)))
    for key in reversed(keys):  # stable sorts, last key first
        name, descending = key.lstrip("-"), key.startswith("-")
        if not name.startswith(opened) and not any(
            name == k or k.startswith(name + ".") for k in known
        ):
            from .._model.where import suggestion

            raise ValueError(
                f"sort={sort!r}: unknown field {name!r}. Known fields: "
                f"{', '.join(sorted(known)[:30])}{suggestion(name, known)}"
            )
        order = _sorted_by(order, [row.get(name) for row in rows], descending)
    return order


def _sorted_by(order: list[int], values: list[Any], descending: bool) -> list[int]:
    """``order`` sorted by ``values`` (missing ones last, whatever the direction)."""
    present = [i for i in order if values[i] is not None]
    missing = [i for i in order if values[i] is None]
    try:
        present.sort(key=lambda i: values[i], reverse=descending)
    except TypeError:  # mixed types: numbers before text, each in order
        present.sort(key=lambda i: _mixed(values[i]), reverse=descending)
    return present + missing


def _mixed(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, repr(value))


def _statuses(status: Status) -> frozenset[str] | None:
    names = {status} if isinstance(status, str) else set(status)
    if "all" in names:
        return None
    unknown = names - set(STATUSES)
    if unknown:
        raise ValueError(
            f"Unknown status {sorted(unknown)[0]!r}. Use one of "
            f"{', '.join(STATUSES)}, a collection of them, or 'all'."
        )
    return frozenset(names)


def _predicate(where: Where | None) -> Callable[[Observation], bool] | None:
    if where is None or callable(where):
        return where
    if not isinstance(where, Mapping):
        raise TypeError(
            f"where= takes a mapping such as {{'lr': 0.1}} or a callable, not {where!r}."
        )
    items = list(where.items())

    def keep(observation: Observation) -> bool:
        for key, wanted in items:
            if key not in observation.config:
                return False
            value = observation.config[key]
            if not (wanted(value) if callable(wanted) else _matches(value, wanted)):
                return False
        return True

    return keep


def _matches(value: Any, wanted: Any) -> bool:
    """``value == wanted`` for plain values; numpy arrays and the like by content."""
    if keys.is_numpy(value) or keys.is_numpy(wanted):
        return keys.same_config(value, wanted)
    try:
        equal = value == wanted
    except Exception:  # a value whose == raises: compare by content
        return keys.same_config(value, wanted)
    return equal if isinstance(equal, bool) else keys.same_config(value, wanted)


# ---------------------------------------------------------------- ids and their prefixes


class NoSuchRun(DigitalExperimentsError, ValueError):
    """An id, or id prefix, that names no run, or several (``matches``)."""

    def __init__(self, message: str, id: str, root: Path, matches: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.id, self.root, self.matches = id, root, list(matches)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.id, self.root, self.matches))


def find_id(backend: Backend, id: str, ids: Collection[str] | None = None) -> str:
    """The id of the run ``id`` names: ``id`` itself, or the one id it begins.

    Parameters
    ----------
    backend : Backend
        Where the runs are.
    id : str
        An id, or a prefix of one such as ``"2026-11-28_13-47"``.
    ids : collection of str, optional
        The ids to look among (default: every run of ``backend``; pass the
        trash's ids to find a deleted run).

    Raises
    ------
    NoSuchRun
        If no run has that id or prefix, or several do (a ``ValueError``).
    """
    if not isinstance(id, str):
        raise TypeError(f"A run id is a str such as {_EXAMPLE_ID!r}, not {id!r}.")
    if ids is None and isinstance(backend, FileBackend) and is_id(id) and _exists(backend, id):
        return id  # a whole id: no need to list the folder
    known = backend.all_ids() if ids is None else ids
    if id and id in known:
        return id
    matches = sorted(i for i in known if id and i.startswith(id))
    if len(matches) == 1:
        return matches[0]
    where = backend.where
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise NoSuchRun(
            f"{id!r} matches {len(matches)} runs in {where!r} ({shown}): give more of the id.",
            id,
            backend.root,
            matches,
        )
    raise NoSuchRun(
        f"No run {id!r} in {where!r}: give a run's id, such as {_EXAMPLE_ID!r}, or the "
        "beginning of one.",
        id,
        backend.root,
    )


_EXAMPLE_ID = "2026-01-01_12-00-00_000000"


def _exists(backend: FileBackend, id: str) -> bool:
    """Whether run ``id``'s record is there (a link counts, even a dangling one)."""
    if root_store(backend).folder is None:
        return root_store(backend).version(backend.key(id)) is not None
    return os.path.lexists(backend.path(id))


def load(
    root: str | os.PathLike[str],
    *,
    status: Status = COMPLETED,
    where: Where | None = None,
    since: Since | None = None,
    limit: int | None = None,
    sort: str | None = None,
    backend: str | None = None,
) -> Observations:
    """The runs stored in the experiment folder ``root``, oldest first.

    Like :meth:`Experiment.observations <digital_experiments.Experiment.observations>`
    with ``current_code_only=False``, without needing the function.

    Parameters
    ----------
    root : str or pathlib.Path
        An experiment folder, such as ``experiments/<function name>``.
    status, where, since, limit, sort
        As in :meth:`Experiment.observations <digital_experiments.Experiment.observations>`.
    backend : str, optional
        The record format, when the folder holds several (see :func:`open_root`).

    Examples
    --------
    >>> from digital_experiments import query
    >>> failed = query.load("experiments/train", status="failed")  # doctest: +SKIP
    """
    return select(
        open_root(root, backend), status=status, where=where, since=since, limit=limit, sort=sort
    )


# ---------------------------------------------------------------- tables


def to_dataframe(
    observations: Sequence[Observation],
    include_metadata: bool = False,
    sep: str = ".",
    *,
    metrics: str | None = None,
    columns: Sequence[str] | None = None,
    with_status: bool = False,
) -> pd.DataFrame:
    """``observations`` as a flat :class:`pandas.DataFrame`, one row per run.

    The columns of 2.0.4's table, ``pandas.json_normalize([o._asdict() for o in
    observations], sep=sep)``, built faster and in the same order; then
    ``metrics.<name>`` columns with ``metrics`` (``"last"``, ``"min"`` or
    ``"max"``), and ``tags.<name>`` and ``notes`` (the notes of a run joined by
    newlines) when some run has them, named as queries name them (they are not
    repeated among the ``metadata.*`` columns). ``with_status`` adds a
    ``status`` column after ``id``. ``columns`` keeps only those columns, in
    that order (a prefix such as ``config`` keeps all of its columns).

    Examples
    --------
    >>> from digital_experiments import query
    >>> runs = query.load("experiments/train", status="all")  # doctest: +SKIP
    >>> query.to_dataframe(runs, with_status=True)  # doctest: +SKIP
                               id     status  result.loss  config.lr  tags.best
    0  2026-11-28_12-00-00_000000  completed          0.2        0.1       True
    1  2026-11-28_12-00-05_000000     failed          NaN        5.0        NaN
    """
    import pandas as pd  # heavy: imported only when needed

    rows = []
    with paused_gc():  # as in select: many rows built at once
        for observation in observations:
            row = observation._asdict()
            if include_metadata:
                row["metadata"] = _metadata_columns(observation.metadata)
            else:
                del row["metadata"]
            if metrics is not None:
                row["metrics"] = metrics_of(observation, metrics)
            flat = _flatten(row, sep)
            if with_status:
                flat = {"id": flat.pop("id"), "status": status_of(observation), **flat}
            _flatten_into(flat, tags_of(observation), "tags", sep)
            notes = notes_of(observation)
            if notes:
                flat["notes"] = "\n".join(notes)
            rows.append(flat)
        frame: pd.DataFrame = pd.DataFrame(rows) if rows else pd.DataFrame()
    if columns is not None:
        frame = frame[select_columns(list(frame.columns), columns, sep)]
    return frame


def _metadata_columns(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata a table shows as ``metadata.*``: tags and notes have columns of
    their own (``tags.*``, ``notes``), unless they have a shape no tag or note has."""
    rest = dict(metadata)
    if isinstance(rest.get("tags"), dict):
        del rest["tags"]
    if isinstance(rest.get("notes"), (str, list, tuple)):
        del rest["notes"]
    return rest


def shows_status(status: Status) -> bool:
    """Whether a table of the runs ``status=`` selects needs a ``status`` column:
    always, but when it selects completed runs only (the default, 2.0.4's table)."""
    return _statuses(status) != frozenset({COMPLETED})


def select_columns(available: list[str], wanted: Sequence[str], sep: str = ".") -> list[str]:
    """The columns of ``available`` that ``wanted`` names (exactly, or as a prefix).

    Raises
    ------
    ValueError
        For a name that matches no column.
    """
    chosen: list[str] = []
    for name in wanted:
        matched = [c for c in available if c == name or c.startswith(name + sep)]
        if not matched:
            raise ValueError(f"Unknown column {name!r}. Columns: {', '.join(available[:40])}")
        chosen.extend(c for c in matched if c not in chosen)
    return chosen


def _flatten(row: dict[str, Any], sep: str) -> dict[str, Any]:
    # pandas' json_normalize order: top-level plain values first, then nested
    # dicts depth first; an empty dict leaves no column
    flat = {key: value for key, value in row.items() if not isinstance(value, dict)}
    for key, value in row.items():
        if isinstance(value, dict):
            _flatten_into(flat, value, str(key), sep)
    return flat


def _flatten_into(flat: dict[str, Any], nested: dict[Any, Any], prefix: str, sep: str) -> None:
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}"
        if isinstance(value, dict):
            _flatten_into(flat, value, name, sep)
        else:
            flat[name] = value
