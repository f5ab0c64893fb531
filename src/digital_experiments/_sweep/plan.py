"""The plan of a sweep: which configs it runs, and how far it has got.

A sweep first turns its grid (a dict of lists, or an iterable of config dicts)
into call keyword arguments and checks their names against the function
(:func:`grid_configs`, :func:`_check_names`), so a typo fails before anything
runs. :class:`Plan` then binds each config and merges repeats into one
:class:`Entry` per distinct config (with ``skip="completed"``);
:meth:`Plan.resume` sets aside the configs that already completed with the
current code: that is how calling the same sweep again after a crash or Ctrl-C
runs only what is missing. A plan keeps every config's observation in grid
order, and the counts :class:`Progress` shows.

Nothing here reads or writes a file: the engine in
:mod:`digital_experiments._sweep.engine` does.
"""

from __future__ import annotations

import inspect
import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._record.run import Recorder
from .._runs.observation import Observation, is_completed


def dimensions(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A dict grid's values per parameter, checked: each must be a non-string iterable."""
    checked = {}
    for name, dimension in grid.items():
        if isinstance(dimension, (str, bytes)) or not isinstance(dimension, Iterable):
            raise TypeError(
                f"grid[{name!r}] is {dimension!r}: a dict grid maps each parameter "
                f"to a list of values, such as {{{name!r}: [{dimension!r}]}}."
            )
        checked[name] = list(dimension)
    return checked


def combinations(dimensions: Mapping[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of the values of ``dimensions``, in grid order."""
    names = list(dimensions)
    for point in itertools.product(*dimensions.values()):
        yield dict(zip(names, point, strict=True))


def grid_configs(grid: Any) -> list[dict[str, Any]]:
    """The call keyword arguments of every point of ``grid``, in grid order."""
    if isinstance(grid, Mapping):
        return list(combinations(dimensions(grid)))
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(
            "grid= takes a dict of lists (every combination is run) or an iterable "
            f"of config dicts, not {grid!r}."
        )
    configs = []
    for index, config in enumerate(grid):
        if not isinstance(config, Mapping):
            raise TypeError(
                f"Config {index} of the grid is {config!r}: an iterable grid holds "
                "dicts such as {'lr': 0.1}."
            )
        configs.append(dict(config))
    return configs


def _check_names(exp: Recorder, configs: list[dict[str, Any]]) -> None:
    parameters = inspect.signature(exp.function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    names = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    known = set(names)
    for index, config in enumerate(configs):
        for key in config:
            if key not in known:
                raise TypeError(
                    f"Unknown parameter {key!r} in config {index} of the grid: "
                    f"{exp.name} takes {', '.join(names) or 'no parameters'}."
                )


@dataclass(eq=False)
class Entry:
    """One distinct config of a sweep and where it sits in the grid."""

    kwargs: dict[str, Any]  # as given: what the call receives
    config: dict[str, Any]  # bound, defaults applied: what is recorded
    key: str | None  # config_key (only when configs are skipped or claimed)
    positions: list[int] = field(default_factory=list)


class Plan:
    """The configs of one sweep: validated, deduplicated, and their outcomes."""

    def __init__(self, exp: Recorder, grid: Any, skip: str | None) -> None:
        self.name = exp.name
        configs = grid_configs(grid)
        _check_names(exp, configs)
        self.results: list[Observation | None] = [None] * len(configs)
        self.todo: list[Entry] = []
        by_key: dict[str, Entry] = {}
        for position, kwargs in enumerate(configs):
            try:
                config = exp.bind((), kwargs)
            except TypeError as exc:
                raise TypeError(f"Config {position} of the grid, {kwargs!r}: {exc}") from None
            if skip is None:  # every listed config runs, repeats included
                self.todo.append(Entry(kwargs, config, None, [position]))
                continue
            key = exp.config_key(config)
            if key not in by_key:
                by_key[key] = Entry(kwargs, config, key)
                self.todo.append(by_key[key])
            by_key[key].positions.append(position)
        self.total = len(self.todo)
        self.done = self.failed = self.skipped = 0

    def resume(self, completed: Iterable[Observation], key: Callable[[Observation], str]) -> None:
        """Set aside the configs that ``completed`` (runs with the current code,
        oldest first; ``key`` gives a run's config key) already ran: their
        latest run is their observation."""
        latest = {key(o): o for o in completed}
        todo = []
        for entry in self.todo:
            found = latest.get(entry.key) if entry.key is not None else None
            if found is None:
                todo.append(entry)
            else:
                self._fill(entry, found)
                self.skipped += 1
        self.todo = todo

    def _fill(self, entry: Entry, observation: Observation) -> None:
        for position in entry.positions:
            self.results[position] = observation

    def finish(self, entry: Entry, observation: Observation, skipped: bool = False) -> None:
        self._fill(entry, observation)
        if skipped:
            self.skipped += 1
        elif is_completed(observation):
            self.done += 1
        else:
            self.failed += 1

    def observations(self) -> list[Observation]:
        missing = [i for i, o in enumerate(self.results) if o is None]
        assert not missing, f"sweep finished without an observation for configs {missing}"
        return self.results  # type: ignore[return-value]


class Progress:
    """A tqdm bar: done / failed / skipped and an ETA. On stderr when it is a
    terminal; in a Jupyter notebook, tqdm's notebook bar."""

    def __init__(self, plan: Plan, enabled: bool) -> None:
        self.bar: Any = None
        stream = sys.stderr
        if not enabled:
            return
        if in_notebook():
            with warnings.catch_warnings():  # tqdm warns when ipywidgets is missing
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm
        elif stream is not None and _isatty(stream):
            from tqdm import tqdm  # imported only when a bar is shown
        else:
            return
        self.bar = tqdm(
            total=plan.total,
            initial=plan.skipped,
            desc=plan.name,
            unit="run",
            file=stream,
            dynamic_ncols=True,
        )
        self._postfix(plan)

    def _postfix(self, plan: Plan) -> None:
        self.bar.set_postfix(
            done=plan.done, failed=plan.failed, skipped=plan.skipped, refresh=False
        )

    def update(self, plan: Plan) -> None:
        if self.bar is not None:
            self._postfix(plan)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return type(shell).__name__ == "ZMQInteractiveShell"
