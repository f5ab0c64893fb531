"""``@experiment`` and :class:`Experiment`: recording calls and querying runs."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from ._model.keys import same_code
from ._model.layout import is_id
from ._read import trash as trashcan
from ._read.query import (
    ANY_CODE,
    NoSuchRun,
    Since,
    Status,
    Where,
    find_id,
    select,
    shows_status,
    to_dataframe,
)
from ._record.callbacks import (
    Callback,
    CodeVersioning,
    GitInfo,
    Logging,
    PipFreeze,
    SystemInfo,
    Timing,
)
from ._record.run import Ending, Recorder, as_recorder
from ._runs import annotations as marks
from ._runs.backends import Backend, FileBackend, instantiate_backend, root_store
from ._runs.backends import durability as resolve_durability
from ._runs.observation import COMPLETED, Observation, Observations
from ._store import filesystems
from ._store.open import is_url
from .errors import InvalidRootError

if TYPE_CHECKING:
    import pandas as pd

ID_EXAMPLE = "2026-01-01_12-00-00_000000"
LAMBDA = (lambda: None).__name__  # "<lambda>"
P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Experiment(Recorder, Generic[P, R]):
    """A function whose every call is recorded, and the runs it recorded.

    ``@experiment`` builds one of these and returns a plain function that
    calls it (so the result pickles by reference and binds as a method); the
    function carries :meth:`observations`, :meth:`to_dataframe`,
    :meth:`artefacts`, :meth:`sweep` and :meth:`asweep` of its experiment.
    How one call is recorded, and the parameters, are those of the ``Recorder``
    this class extends (``digital_experiments._record.run``, see ``docs/architecture.md``).
    """

    function: Callable[P, R]

    def __repr__(self) -> str:
        return f"Experiment({self.name})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.is_async:
            return _result_async(self, args, kwargs)  # type: ignore[return-value]
        return _result(self, args, kwargs)  # type: ignore[no-any-return]

    # -- queries

    def observations(
        self,
        current_code_only: bool = True,
        *,
        status: Status = COMPLETED,
        where: Where | None = None,
        since: Since | None = None,
        limit: int | None = None,
        sort: str | None = None,
    ) -> Observations:
        """The recorded runs of this experiment, oldest first.

        Parameters
        ----------
        current_code_only : bool
            Only runs recorded with the function's current source code.
        status : str or collection of str
            ``"completed"`` (default), ``"failed"``, ``"interrupted"``,
            ``"running"``, ``"abandoned"`` (running, but its process is gone),
            a collection of these, or ``"all"``.
        where : str, mapping or callable, optional
            A query such as ``'config.lr < 0.01 and result.loss <= 0.2 and
            tags.best == true'`` (the language of ``docs/queries.md``; an unknown
            field or a syntax error is a ``ValueError`` pointing at the spot);
            ``{"lr": 0.1}`` keeps runs whose config has those values (a
            callable value is used as a predicate on the config value); a
            callable receives each :class:`Observation` and returns a bool.
        since : datetime, date or str, optional
            Only runs started at or after this time: a ``datetime`` or ``date``
            (naive ones are local time), an ISO string such as
            ``"2026-11-28 23:59"`` or ``"2026-11-28T23:59+01:00"``, or an id prefix
            such as ``"2026-11-28_12"`` (ids are in UTC); see
            :func:`digital_experiments.query.since_floor`. Filtered on the id,
            before any record is loaded.
        limit : int, optional
            Only the most recent ``limit`` matching runs (still oldest first);
            with ``sort``, the first ``limit`` in that order.
        sort : str, optional
            Order by these fields, such as ``"-result.loss"`` (``-``: descending)
            or ``"config.lr,-result.acc"``; runs without the field come last.

        Returns
        -------
        list of Observation

        Examples
        --------
        >>> @experiment
        ... def add(a, b=2):
        ...     return a + b
        >>> add(1)  # doctest: +SKIP
        3
        >>> add.observations()  # doctest: +SKIP
        [Observation(2026-11-28_12-00-00_000000, {'a': 1, 'b': 2} → 3)]
        """
        code = self.code_identity if current_code_only else ANY_CODE
        return select(
            self.backend,
            code=code,
            status=status,
            where=where,
            since=since,
            limit=limit,
            sort=sort,
        )

    def to_dataframe(
        self,
        current_code_only: bool = True,
        include_metadata: bool = False,
        normalising_sep: str = ".",
        metrics: str | None = None,
        columns: Sequence[str] | None = None,
        **filters: Any,
    ) -> pd.DataFrame:
        """The runs as a flat :class:`pandas.DataFrame`, one row per run.

        Nested dicts are flattened into columns such as ``config.lr``: the
        columns of 2.0.4 (``id``, ``result`` or ``result.*``, ``config.*``), then
        ``tags.<name>`` and ``notes`` when some run has them. With a ``status=``
        other than the default ``"completed"``, a ``status`` column follows
        ``id``, so the rows that failed show.

        Parameters
        ----------
        current_code_only : bool
            As in :meth:`observations`.
        include_metadata : bool
            Add ``metadata.*`` columns.
        normalising_sep : str
            Joins nested keys in column names.
        metrics : str, optional
            ``"last"``, ``"min"`` or ``"max"``: add a ``metrics.<name>`` column
            per metric the runs logged (see :func:`~digital_experiments.log`).
        columns : list of str, optional
            Keep only these columns, in this order (``"config"`` keeps every
            ``config.*`` column; ``"status"`` is there whatever ``status=``).
        **filters
            ``status``, ``where``, ``since``, ``limit`` and ``sort``, as in
            :meth:`observations`.

        Examples
        --------
        >>> add.to_dataframe()  # doctest: +SKIP
                                   id  result  config.a  config.b
        0  2026-11-28_12-00-00_000000       3         1         2
        >>> add.to_dataframe(status="all")  # doctest: +SKIP
                                   id     status  result  config.a  config.b
        0  2026-11-28_12-00-00_000000  completed     3.0         1         2
        1  2026-11-28_12-00-01_000000     failed     NaN       "x"         2
        """
        code = self.code_identity if current_code_only else ANY_CODE
        # without metadata columns (or a where= that may read it) the shared
        # environment is never looked at: do not attach it to every run
        environment = include_metadata or callable(filters.get("where"))
        observations = select(self.backend, code=code, environment=environment, **filters)
        with_status = shows_status(filters.get("status", COMPLETED)) or "status" in (columns or ())
        return to_dataframe(
            observations,
            include_metadata,
            normalising_sep,
            metrics=metrics,
            columns=columns,
            with_status=with_status,
        )

    def artefacts(self, id: str) -> list[Path]:
        """The files the run ``id`` (or an unambiguous prefix of it) wrote to its
        :func:`current_dir`.

        Returns ``[]`` for a run with no artefacts or an unknown id.

        Raises
        ------
        ValueError
            If ``id`` is a path (such as ``"../.."``) rather than an id, or the
            beginning of several runs' ids.
        """
        try:
            id = self._find(id)
        except NoSuchRun as exc:
            if exc.matches:
                raise
        return self.backend.artefacts(id)

    # -- looking back

    def compare(self, *ids: str) -> pd.DataFrame:
        """The fields that differ between runs ``ids``, side by side (one column per run).

        Config, result, tags, the last value of each metric, and the code (as a
        digest), packages and git state they ran with. Each id may be the
        beginning of one, as on the command line (``"2026-11-28_13-47"``).

        Raises
        ------
        ValueError
            For fewer than two ids, or an id (or prefix) naming no run or several.
        """
        from ._read.compare import compare  # pandas and inspect's helpers: on first use

        return compare(self._load_each(ids))

    def rerun(self, id: str, check_code: bool = True) -> Observation:
        """Call the function again with the config run ``id`` (or an unambiguous
        prefix of it) recorded; the new run.

        The new record's metadata says ``rerun_of: id``. The call raises what
        the function raises, as any call does.

        Raises
        ------
        ValueError
            If the code differs from the one run ``id`` ran with (pass
            ``check_code=False`` to rerun anyway), or the function is a method.
        """
        id = self._find(id)
        (old,) = self._load_each([id])
        if check_code and not same_code(old.metadata, self.code_identity):
            raise ValueError(
                f"Run {id!r} of {self.name} ran other code than the function has now, so a "
                "rerun would not reproduce it. Pass check_code=False to rerun it anyway."
            )
        from ._read.compare import call_arguments

        args, kwargs = call_arguments(self.function, old.config)
        return _unwrap(self.record(args, kwargs, extra={"rerun_of": id}))

    def _load_each(self, ids: Iterable[str]) -> list[Observation]:
        found = []
        for given in ids:
            id = self._find(given)
            try:
                found.append(self.backend.annotate(self.backend.load(id)))
            except FileNotFoundError:  # deleted since it was found
                raise ValueError(f"No run {given!r} in {self.backend.where!r}.") from None
        return found

    def _find(self, id: str, ids: Iterable[str] | None = None) -> str:
        """The run id ``id`` names: itself, or the one id it begins (as the CLI)."""
        return find_id(self.backend, id, None if ids is None else list(ids))

    # -- tags, notes and deletion

    def tag(self, id: str, **values: Any) -> dict[str, Any]:
        """Set tags of run ``id`` (``None`` removes one); its tags now.

        ``id`` may be the beginning of a run's id, as on the command line
        (``train.tag("2026-11-28_13-47", best=True)``), if only one run's id
        begins so. Tags appear in ``metadata["tags"]`` and can be queried
        (``where='tags.best == true'``). Records stay as written: tags are
        stored beside them, and concurrent taggers never lose each other's tags.

        Raises
        ------
        ValueError
            If ``id`` names no run, or begins several runs' ids.
        """
        id = self._find(id)
        return marks.tag(root_store(self.backend), id, values, self._record_key(id))

    def note(self, id: str, text: str) -> list[str]:
        """Add a note to run ``id`` (or an unambiguous prefix of it); its notes now
        (in ``metadata["notes"]``)."""
        id = self._find(id)
        return marks.note(root_store(self.backend), id, text, self._record_key(id))

    def delete(self, *ids: str) -> list[str]:
        """Move runs ``ids`` (record, artefacts, metrics, tags) to the root's trash.

        Each id may be the beginning of one run's id. Returns the ids that were
        deleted (an id naming no run is skipped).

        Raises
        ------
        ValueError
            If a run is ``running`` in a live process, or an id begins several
            runs' ids (then nothing is deleted).
        """
        found = []
        for id in ids:
            try:
                found.append(self._find(id))
            except NoSuchRun as exc:
                if exc.matches:
                    raise
                if is_id(id):  # perhaps half deleted: the trash finishes it, or skips it
                    found.append(id)
        return [id for id in dict.fromkeys(found) if trashcan.delete(self.backend, id)]

    def restore(self, id: str) -> Observation:
        """Move run ``id`` (or an unambiguous prefix of it) back from the trash.

        Raises
        ------
        FileNotFoundError
            If the trash holds no such run.
        ValueError
            If ``id`` begins the ids of several runs in the trash.
        """
        try:
            id = self._find(id, trashcan.trashed(self.backend))
        except NoSuchRun as exc:
            if exc.matches:
                raise
            if not is_id(id):
                raise FileNotFoundError(
                    f"No run {id!r} in the trash of {self.backend.where!r}: see trash()."
                ) from None
        return trashcan.restore(self.backend, id)

    def trash(self) -> list[str]:
        """The ids of the runs in the trash."""
        return trashcan.trashed(self.backend)

    def purge(self) -> int:
        """Empty the trash for good; how many runs were in it."""
        return trashcan.purge(self.backend)

    def _record_key(self, id: str) -> str | None:
        """Run ``id``'s record's key in the store (``None`` for a backend without files)."""
        if not is_id(id):
            raise ValueError(
                f"No run {id!r} in {self.backend.where!r}: ids look like {ID_EXAMPLE!r}."
            )
        return self.backend.key(id) if isinstance(self.backend, FileBackend) else None

    # -- sweeps (see digital_experiments.sweep)

    def sweep(self, grid: Any, **options: Any) -> list[Observation]:
        """Run every config of ``grid``; see :func:`digital_experiments.sweep.sweep`."""
        from ._sweep.engine import sweep  # the engine loads on first use: import stays light

        return sweep(self, grid, **options)

    async def asweep(self, grid: Any, **options: Any) -> list[Observation]:
        """Run every config of ``grid`` concurrently; see
        :func:`digital_experiments.sweep.asweep`."""
        from ._sweep.engine import asweep

        return await asweep(self, grid, **options)


def resolve_root(root: str | os.PathLike[str] | None, name: str) -> Path | str:
    """``root`` if given, else ``$DE_ROOT/<name>``, else ``./experiments/<name>``.

    A folder comes back as an absolute :class:`~pathlib.Path`; an
    ``s3://bucket/prefix`` root as its URL (a ``str``).

    Raises
    ------
    InvalidRootError
        If the root is a URL of another kind, names no valid bucket, or is an
        existing file.
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root= takes a str or pathlib.Path, not {root!r}.")
        text = os.fsdecode(os.fspath(root))
        if is_url(text):
            return _remote(text, "root=")
        path = Path(text)
    else:
        base = os.environ.get("DE_ROOT")
        if base and is_url(base):
            return _remote(f"{base.rstrip('/')}/{name}", "$DE_ROOT")
        path = (Path(base) if base else Path("experiments")) / name
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise InvalidRootError(
            f"The experiment root {str(path)!r} is a file, not a folder. Pass root= a "
            "folder (it is created if missing)."
        )
    filesystems.warn_if_unsafe(path)
    return path


def _remote(url: str, where: str) -> str:
    """``url``, checked: an ``s3://bucket/prefix`` root (no request is made), or a
    ``memory://name`` one (tests: it lives in this process only)."""
    if url.startswith("memory://") and len(url.rstrip("/")) > len("memory://"):
        return url.rstrip("/")
    if not url.startswith("s3://"):
        raise InvalidRootError(
            f"{where} {url!r} is a URL of a kind runs cannot be recorded in: use a folder, "
            "or s3://bucket/prefix (AWS S3, or any S3-compatible server with "
            "AWS_ENDPOINT_URL; see docs/stores.md)."
        )
    try:
        from ._store.s3 import parse as parse_s3  # boto3's module: only for s3:// roots

        bucket, prefix = parse_s3(url)
    except ValueError as exc:
        raise InvalidRootError(f"{where} {exc}") from None
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


# ---------------------------------------------------------------- the decorator


class ExperimentFunction(Protocol[P, R_co]):
    """What ``@experiment`` returns: the function, plus the experiment's queries."""

    experiment: Experiment[Any, Any]
    backend: Backend
    callbacks: list[Callback]
    cache: bool

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def observations(
        self,
        current_code_only: bool = True,
        *,
        status: Status = ...,
        where: Where | None = ...,
        since: Since | None = ...,
        limit: int | None = ...,
        sort: str | None = ...,
    ) -> Observations: ...
    def to_dataframe(
        self,
        current_code_only: bool = True,
        include_metadata: bool = False,
        normalising_sep: str = ".",
        metrics: str | None = None,
        columns: Sequence[str] | None = None,
        **filters: Any,
    ) -> pd.DataFrame: ...
    def artefacts(self, id: str) -> list[Path]: ...
    def compare(self, *ids: str) -> pd.DataFrame: ...
    def rerun(self, id: str, check_code: bool = True) -> Observation: ...
    def tag(self, id: str, **values: Any) -> dict[str, Any]: ...
    def note(self, id: str, text: str) -> list[str]: ...
    def delete(self, *ids: str) -> list[str]: ...
    def restore(self, id: str) -> Observation: ...
    def trash(self) -> list[str]: ...
    def purge(self) -> int: ...
    def sweep(self, grid: Any, **options: Any) -> list[Observation]: ...
    async def asweep(self, grid: Any, **options: Any) -> list[Observation]: ...


def _unwrap(ending: Ending) -> Observation:
    """The record a call ended with, or what the call raised, raised again."""
    observation, error = ending
    if error is not None:
        try:
            raise error
        finally:
            del error  # no cycle through this frame
    assert observation is not None  # a call that raised nothing has a record
    return observation


def _result(recorder: Recorder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Record one call and return its result, or raise what the call raised."""
    return _unwrap(recorder.record(args, kwargs)).result


async def _result_async(recorder: Recorder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _unwrap(await recorder.arecord(args, kwargs)).result


def _wrap(exp: Experiment[P, R]) -> ExperimentFunction[P, R]:
    # A plain function, not an object: it pickles by reference (the module
    # attribute *is* this function) and binds as a method. Its body calls only
    # module-level functions so cloudpickle can ship it from __main__.
    wrapper: Any
    if exp.is_async:

        @functools.wraps(exp.function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await _result_async(exp, args, kwargs)

    else:

        @functools.wraps(exp.function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _result(exp, args, kwargs)

    wrapper.experiment = exp
    wrapper.backend = exp.backend
    wrapper.callbacks = exp.callbacks
    wrapper.cache = exp.cache
    for name in METHODS:
        setattr(wrapper, name, getattr(exp, name))
    return wrapper  # type: ignore[no-any-return]


# what the decorated function offers of its experiment
METHODS = (
    "observations",
    "to_dataframe",
    "artefacts",
    "compare",
    "rerun",
    "tag",
    "note",
    "delete",
    "restore",
    "trash",
    "purge",
    "sweep",
    "asweep",
)


@overload
def experiment(function: Callable[P, R]) -> ExperimentFunction[P, R]: ...


@overload
def experiment(
    function: None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    backend: str | Backend = "pickle",
    cache: bool = False,
    callbacks: Iterable[Callback] | None = None,
    durability: str | None = None,
) -> Callable[[Callable[P, R]], ExperimentFunction[P, R]]: ...


def experiment(
    function: Callable[P, R] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    backend: str | Backend = "pickle",
    cache: bool = False,
    callbacks: Iterable[Callback] | None = None,
    durability: str | None = None,
) -> ExperimentFunction[P, R] | Callable[[Callable[P, R]], ExperimentFunction[P, R]]:
    """Record every call of the decorated function.

    Works on plain and ``async`` functions and on methods. Each call is stored
    as one record, ``<root>/<id>.pkl`` by default, with its config, result,
    timing, code, git state and environment.

    Parameters
    ----------
    function : callable
        The function to record (when used as a bare ``@experiment``).
    root : str or pathlib.Path, optional
        The experiment's folder. Default: ``$DE_ROOT/<name>`` if ``DE_ROOT``
        is set, else ``./experiments/<name>``.
    verbose : bool
        Print a line when each run starts and ends.
    backend : str or Backend
        ``"pickle"`` (default), ``"json"``, ``"yaml"``, a name registered with
        :func:`register_backend`, or a :class:`Backend` instance.
    cache : bool
        Return the stored result for a config already completed with the
        current code instead of running it again (race-free across processes).
    callbacks : list of Callback, optional
        Extra callbacks, run after the built-in ones.
    durability : str, optional
        ``"power"`` (default): a completed run survives a power cut; each call
        waits for the disk. ``"process"``: a completed run survives any crash of
        the process (``kill -9`` included), never a torn record, but a power cut
        may lose the last runs; calls do not wait for the disk. Default:
        ``$DE_DURABILITY``, else ``"power"``. See ``docs/performance.md``.

    Returns
    -------
    function
        The function, recording each call, with ``observations()``,
        ``to_dataframe()``, ``artefacts(id)``, ``sweep()`` and ``asweep()``.

    Examples
    --------
    >>> from digital_experiments import experiment
    >>> @experiment
    ... def add(a, b=2):
    ...     return a + b
    >>> @experiment(root="my-runs", backend="json", cache=True)
    ... def mul(a, b):
    ...     return a * b
    """
    if function is None:
        return functools.partial(  # type: ignore[return-value]
            experiment,
            root=root,
            verbose=verbose,
            backend=backend,
            cache=cache,
            callbacks=callbacks,
            durability=durability,
        )
    level = resolve_durability(durability)  # a bad level fails at decoration
    return _wrap(_build(function, root, verbose, backend, cache, callbacks, level))


def _build(
    function: Callable[P, R],
    root: str | os.PathLike[str] | None,
    verbose: bool,
    backend: str | Backend,
    cache: bool,
    callbacks: Iterable[Callback] | None,
    durability: str = "power",
) -> Experiment[P, R]:
    if not callable(function):
        raise TypeError(f"@experiment decorates functions, not {function!r}.")
    name = getattr(function, "__name__", None)
    # a lambda is recorded under "<lambda>", as 2.0.4 did: every lambda shares that
    # folder, and each keeps to its own runs by its code
    if not isinstance(name, str) or not (name.isidentifier() or name == LAMBDA):
        raise TypeError(
            f"@experiment records named functions, and {function!r} has no usable "
            "__name__ (a functools.partial or a callable object). Define a "
            "function with def that calls it, and decorate that."
        )
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(
            f"@experiment cannot record generator function {name!r}: its body "
            "runs after the call returns. Return a list instead."
        )
    extra = list(callbacks or [])
    for callback in extra:
        if not isinstance(callback, Callback):
            raise TypeError(
                f"callbacks= takes Callback instances, not {callback!r}. "
                "Subclass digital_experiments.Callback."
            )
    store = (
        backend
        if isinstance(backend, Backend)
        else instantiate_backend(backend, resolve_root(root, name))
    )
    if isinstance(store, FileBackend):
        store.durability = durability
    # start in this order, end in reverse: Timing wraps the call most tightly
    all_callbacks: list[Callback] = [
        Logging(verbose),
        CodeVersioning(),
        GitInfo(),
        PipFreeze(),
        SystemInfo(),
        *extra,
        Timing(),
    ]
    for callback in all_callbacks:
        callback.setup(function)
    return Experiment(function, store, all_callbacks, cache)


def as_experiment(obj: Any) -> Experiment[Any, Any]:
    """The :class:`Experiment` behind a decorated function (or ``obj`` itself)."""
    found = as_recorder(obj)
    if not isinstance(found, Experiment):
        raise TypeError(f"Expected an Experiment, not {found!r}.")
    return found
