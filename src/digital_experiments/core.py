"""The base types: :class:`Observation`, :class:`Backend`, :class:`Callback`
and :class:`Controller` (import paths as in digital-experiments 2.0.4)."""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import storage
from .context import artefact_location

if TYPE_CHECKING:
    from .experiment import Experiment


class Observation(NamedTuple):
    """One recorded call of an experiment.

    Parameters
    ----------
    id : str
        The run's unique id, ``YYYY-MM-DD_HH-MM-SS_ffffff``.
    config : dict
        Every argument of the call, defaults included.
    result : Any
        What the function returned (``None`` for a run that did not complete).
    metadata : dict
        ``status``, ``timing``, ``environment``, ``code`` and anything callbacks add.

    Examples
    --------
    >>> Observation("2026-01-01_00-00-00_000000", {"x": 2}, 4, {})
    Observation(2026-01-01_00-00-00_000000, {'x': 2} → 4)
    """

    id: str
    config: dict[str, Any]
    result: Any
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        return f"Observation({self.id}, {self.config} → {self.result})"

    @property
    def status(self) -> str:
        """The run's status; records of 2.0.4 carry none and were completed.

        A ``running`` record whose process is gone reads as ``abandoned``, as
        it does for ``observations(status=...)``.
        """
        status = str(self.metadata.get("status", "completed"))
        if status == "running" and storage.process_gone(self.metadata.get("process")):
            return "abandoned"
        return status


class Backend(ABC):
    """Stores and loads :class:`Observation` objects under ``root``.

    Subclasses implement :meth:`record`, :meth:`load` and :meth:`all_ids`
    (the 2.0.4 contract). File-based formats should subclass
    :class:`digital_experiments.backends.FileBackend` instead, which adds
    atomic writes, id claims and shared environments for free.

    Parameters
    ----------
    root : pathlib.Path
        The experiment's folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @abstractmethod
    def record(self, observation: Observation) -> None:
        """Store ``observation``, replacing any record with the same id."""

    @abstractmethod
    def load(self, id: str) -> Observation:
        """Load the observation with id ``id``."""

    @abstractmethod
    def all_ids(self) -> list[str]:
        """Every id stored under ``root``."""

    def claim(self, observation: Observation) -> Observation:
        """Reserve a unique id for ``observation`` and store it.

        The default claims the id with an exclusive marker file under
        ``<root>/.de/ids/`` and then calls :meth:`record`. Returns the
        observation with the id it got (which may differ on a clash).
        """
        claimed = observation._replace(id=storage.claim_id(self.root, observation.id))
        self.record(claimed)
        return claimed

    def delete(self, id: str) -> None:
        """Remove the record ``id`` (not its artefacts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete records.")

    def iter_observations(self, ids: Iterable[str]) -> Iterator[Observation]:
        """Load ``ids`` in order, skipping (with a warning) any unreadable record."""
        for id in ids:
            try:
                yield self.load(id)
            except FileNotFoundError:  # deleted since it was listed: not unreadable
                continue
            except Exception as exc:  # a foreign or torn file must not stop a listing
                warnings.warn(
                    f"Skipping unreadable record {id!r} in {str(self.root)!r}: {exc!r}",
                    stacklevel=3,
                )

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
        directory = artefact_location(self.root, id)
        found: list[Path] = []
        # os.walk ignores unreadable folders (onerror) and never follows links
        # below the top, so a dangling or looping link cannot make this raise
        for folder, _, files in os.walk(directory, onerror=lambda _: None):
            for name in files:
                path = Path(folder, name)
                if path.is_file():
                    found.append(path)
        return sorted(found)


class Callback:
    """Hooks into the life of an experiment; override any of the methods.

    Keep per-run state in ``current_run().callback_state(self)`` rather than
    on ``self``: one callback object serves concurrent runs.
    """

    def setup(self, function: Callable[..., Any]) -> None:
        """Called once, when the experiment is created."""

    def start(self, id: str, config: dict[str, Any]) -> None:
        """Called at the start of each run, inside the run's context."""

    def end(self, observation: Observation) -> None:
        """Called at the end of each run; may add to ``observation.metadata``."""


class Controller(ABC):
    """Suggests configs to run next and runs them.

    Subclasses implement :meth:`suggest`.
    """

    @abstractmethod
    def suggest(self, experiment: Experiment[Any, Any]) -> dict[str, Any] | None:
        """The next config to run, or ``None`` when there is nothing left."""

    def suggest_many(self, experiment: Experiment[Any, Any], n: int) -> list[dict[str, Any]]:
        """Up to ``n`` configs to run as one parallel batch.

        The default asks :meth:`suggest` ``n`` times; controllers whose
        suggestions depend on what has run (like :class:`GridSearch`) override it.
        """
        configs = []
        for _ in range(n):
            config = self.suggest(experiment)
            if config is None:
                break
            configs.append(config)
        return configs

    def control(
        self,
        experiment: Experiment[Any, Any] | Callable[..., Any],
        n: int = 1,
        executor: Any = None,
        **overloads: Any,
    ) -> list[Observation] | None:
        """Run up to ``n`` suggested configs of ``experiment``.

        Parameters
        ----------
        experiment : Experiment or decorated function
            What to run.
        n : int
            How many configs to run at most.
        executor : optional
            Anything with ``submit(fn, *args)`` (a process pool, Dask,
            submitit): the configs are suggested as one batch and run in
            parallel through :meth:`Experiment.sweep
            <digital_experiments.Experiment.sweep>`, whose
            observations are returned. Without it, configs run one by one
            (each suggestion sees the previous results) and ``None`` is returned.
        overloads
            Extra keyword arguments passed to every call.
        """
        from .experiment import as_experiment

        exp = as_experiment(experiment)
        if executor is not None:
            configs = [{**c, **overloads} for c in self.suggest_many(exp, n)]
            return exp.sweep(configs, executor=executor)
        for _ in range(n):
            config = self.suggest(exp)
            if config is None:
                break
            exp(**{**config, **overloads})
        return None


def __getattr__(name: str) -> Any:
    # 2.0.4 defined Experiment here; it lives in .experiment now (no import cycle)
    if name == "Experiment":
        from .experiment import Experiment

        return Experiment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
