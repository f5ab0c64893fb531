"""Controllers that choose which configs to run: grid and random search."""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, Union, runtime_checkable

from ._experiment import Experiment, as_experiment
from ._model.keys import canonical
from ._runs.observation import Observation
from ._sweep.plan import combinations


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


def _identity(config: Mapping[str, Any]) -> bytes:
    return canonical(dict(config))


class RandomSearch(Controller):
    """Suggests configs drawn at random from each dimension.

    Parameters
    ----------
    **dimensions : sequence or distribution
        Per parameter, a sequence to choose from or anything with an
        ``rvs()`` method (such as a ``scipy.stats`` distribution).

    Raises
    ------
    TypeError
        If a dimension is neither a sequence nor has ``rvs()``.

    Examples
    --------
    >>> from digital_experiments.controllers import RandomSearch
    >>> search = RandomSearch(lr=[0.1, 0.01], layers=range(1, 4))
    >>> sorted(search.suggest(None))
    ['layers', 'lr']
    """

    @runtime_checkable
    class RVS(Protocol):
        """Anything with an ``rvs()`` method, like scipy.stats distributions."""

        def rvs(self, *args: Any, **kwargs: Any) -> Any: ...

    RandomDimension = Union[Sequence[Any], RVS]  # noqa: UP007 - runtime alias, py3.10

    def __init__(self, **dimensions: RandomSearch.RandomDimension) -> None:
        for name, dim in dimensions.items():
            if isinstance(dim, (str, bytes)) or not (
                isinstance(dim, Sequence) or callable(getattr(dim, "rvs", None))
            ):
                raise TypeError(
                    f"RandomSearch dimension {name!r} is {dim!r}: give a sequence "
                    "of values (list, tuple, range) or an object with .rvs(), "
                    "such as a scipy.stats distribution."
                )
        self.dimensions = dimensions

    def suggest(self, experiment: Experiment[Any, Any] | None) -> dict[str, Any]:
        return {name: self._draw(dim) for name, dim in self.dimensions.items()}

    @staticmethod
    def _draw(dim: RandomSearch.RandomDimension) -> Any:
        if isinstance(dim, Sequence):
            return random.choice(dim)
        return dim.rvs()


class GridSearch(Controller):
    """Suggests the points of a grid not yet run, in grid order.

    A point counts as run when a completed run (with the current code) has
    those values, whatever the values of parameters outside the grid.

    Parameters
    ----------
    **dimensions : iterable
        Per parameter, the values to try.

    Raises
    ------
    TypeError
        If a dimension is not iterable (or is a string).

    Examples
    --------
    >>> from digital_experiments.controllers import GridSearch
    >>> GridSearch(a=[0, 1], b=range(2)).size
    4
    """

    def __init__(self, **dimensions: Iterable[Any]) -> None:
        for name, dim in dimensions.items():
            if isinstance(dim, (str, bytes)) or not isinstance(dim, Iterable):
                raise TypeError(
                    f"GridSearch dimension {name!r} is {dim!r}: give an iterable "
                    "of values such as a list or a range."
                )
        self.dimensions = {name: list(dim) for name, dim in dimensions.items()}

    @property
    def size(self) -> int:
        """How many points the grid has."""
        count = 1
        for values in self.dimensions.values():
            count *= len(values)
        return count

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every point of the grid, in order."""
        return combinations(self.dimensions)

    def _grid_iter(self) -> Iterator[dict[str, Any]]:
        # 2.0.4's name for grid(); code written for it (and its tests) calls it
        return self.grid()

    def _untried(self, experiment: Experiment[Any, Any]) -> Iterator[dict[str, Any]]:
        names = list(self.dimensions)
        done = {
            _identity({k: o.config.get(k) for k in names})
            for o in experiment.observations()
            if all(k in o.config for k in names)
        }
        return (point for point in self.grid() if _identity(point) not in done)

    def suggest(self, experiment: Experiment[Any, Any]) -> dict[str, Any] | None:
        return next(self._untried(experiment), None)

    def suggest_many(self, experiment: Experiment[Any, Any], n: int) -> list[dict[str, Any]]:
        untried = self._untried(experiment)
        return list(itertools.islice(untried, n))
