"""Comparing runs and calling a recorded config again.

:func:`compare` puts side by side only the fields where runs differ: config,
result, tags, the last value of each metric, and what they ran with (a digest
of the code, package versions, git state). :func:`call_arguments` turns a
recorded config back into the arguments of a call, and :func:`call_text` into
a call to paste, ``train(lr=0.1, epochs=10)``.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._query import fields
from ._records import Observation

if TYPE_CHECKING:
    import pandas as pd

_MISSING = "—"  # shown where a run has no such field


def comparable(observation: Observation) -> dict[str, Any]:
    """The fields of ``observation`` that :func:`compare` looks at."""
    row = {
        name: value
        for name, value in fields(observation, "last").items()
        if not name.startswith("metadata.") and name != "id"
    }
    metadata = observation.metadata
    code = metadata.get("code")
    if isinstance(code, str):
        row["code"] = hashlib.sha256(code.encode()).hexdigest()[:12]
    elif metadata.get("code_hash"):
        row["code"] = str(metadata["code_hash"])[:12]
    environment = metadata.get("environment")
    if isinstance(environment, dict):
        for line in str(environment.get("pip_freeze") or "").splitlines():
            name, _, version = line.partition("==")
            if version:
                row[f"packages.{name}"] = version
        git = environment.get("git")
        if isinstance(git, dict):
            for key in ("commit", "branch", "dirty", "remote"):
                if key in git:
                    row[f"git.{key}"] = git[key]
    return row


def compare(observations: Sequence[Observation]) -> pd.DataFrame:
    """A DataFrame of the fields that differ between ``observations`` (rows: fields,
    columns: run ids); a field one run lacks shows as ``—``."""
    import pandas as pd  # heavy: imported only when needed

    if len(observations) < 2:
        raise ValueError("compare() takes two runs or more.")
    rows = [comparable(o) for o in observations]
    names: list[str] = []
    for row in rows:
        names.extend(name for name in row if name not in names)
    differing = [name for name in names if _differs([row.get(name, _MISSING) for row in rows])]
    table = {
        o.id: [row.get(name, _MISSING) for name in differing]
        for o, row in zip(observations, rows, strict=True)
    }
    frame: pd.DataFrame = pd.DataFrame(table, index=pd.Index(differing, name="field"))
    return frame


def _differs(values: list[Any]) -> bool:
    first = repr(values[0])
    return any(repr(value) != first for value in values[1:])


def call_arguments(
    function: Callable[..., Any], config: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The ``(args, kwargs)`` that call ``function`` with a recorded ``config``.

    Raises
    ------
    ValueError
        If ``function`` takes ``self`` (a method cannot be called again without
        its object) or ``config`` lacks one of its parameters.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name not in config:
            if name in ("self", "cls"):
                raise ValueError(f"{function.__name__} is a method: call it on its object.")
            if parameter.default is inspect.Parameter.empty and parameter.kind not in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            ):
                raise ValueError(f"The recorded config has no value for {name!r}.")
            continue
        value = config[name]
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(value)
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[name] = value
    return tuple(args), kwargs


def keywords(config: Mapping[str, Any]) -> str:
    """``config`` as keyword arguments: ``lr=0.1, epochs=10``."""
    return ", ".join(f"{key}={value!r}" for key, value in config.items())


def call_text(name: str, config: Mapping[str, Any]) -> str:
    """A call of ``name`` with ``config``, ready to paste: ``train(lr=0.1, epochs=10)``."""
    return f"{name}({keywords(config)})"
