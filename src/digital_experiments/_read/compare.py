"""Comparing runs and calling a recorded config again.

:func:`compare` puts side by side only the fields where runs differ: config,
result, tags, the last value of each metric, and what they ran with (a digest
of the code, package versions, git state). :func:`call_arguments` turns a
recorded config back into the arguments of a call, and :func:`call_text` into
a call to paste, ``train(lr=0.1, epochs=10)``.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from keyword import iskeyword
from typing import TYPE_CHECKING, Any

from .._runs.observation import Observation
from .query import fields

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

    Every kind of parameter is handled: positional-only ones are passed by
    position, ``*args`` unpacked after the parameters before it (then passed by
    position too), ``**kwargs`` merged into the keywords.

    Raises
    ------
    ValueError
        If ``function`` takes ``self`` (a method cannot be called again without
        its object) or ``config`` lacks one of its parameters.
    """
    return _arguments(inspect.signature(function), config, function.__name__)


def _arguments(
    signature: inspect.Signature, config: Mapping[str, Any], name: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call of ``signature`` that binds exactly ``config`` (defaults filled)."""
    parameters = list(signature.parameters.values())
    rest = next((p for p in parameters if p.kind is _VAR_POSITIONAL), None)
    extra = tuple(config.get(rest.name) or ()) if rest is not None else ()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in parameters:
        kind, present = parameter.kind, parameter.name in config
        if not present and kind not in (_VAR_POSITIONAL, _VAR_KEYWORD):
            if parameter.name in ("self", "cls"):
                raise ValueError(f"{name} is a method: call it on its object.")
            if parameter.default is inspect.Parameter.empty:
                raise ValueError(f"The recorded config has no value for {parameter.name!r}.")
        if kind is _VAR_POSITIONAL:
            args.extend(extra)
        elif kind is _VAR_KEYWORD:
            options = config.get(parameter.name) or {}
            if not isinstance(options, Mapping):
                raise ValueError(f"The recorded **{parameter.name} is not a mapping: {options!r}.")
            kwargs.update(options)
        elif kind is inspect.Parameter.POSITIONAL_ONLY or (
            # before a non-empty *args, a parameter can only be given by position
            kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and extra
        ):
            args.append(config[parameter.name] if present else parameter.default)
        elif present:
            kwargs[parameter.name] = config[parameter.name]
    return tuple(args), kwargs


_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


def keywords(config: Mapping[str, Any]) -> str:
    """``config`` as keyword arguments: ``lr=0.1, epochs=10``; a key that is not a
    Python name goes in ``**{...}``, so pasted text never runs what a key says."""
    plain = [f"{key}={value!r}" for key, value in config.items() if _is_name(key)]
    odd = {key: value for key, value in config.items() if not _is_name(key)}
    return ", ".join([*plain, f"**{odd!r}"] if odd else plain)


def call_text(name: str, config: Mapping[str, Any], code: object = None) -> str:
    """A call of ``name`` with ``config``, ready to paste: ``train(lr=0.1, epochs=10)``.

    With the function's recorded source ``code``, the call binds exactly the
    recorded config for every kind of parameter (positional-only, ``*args``,
    ``**kwargs``); the source is only parsed, never run. Without it, every value
    is passed by keyword. Only values are printed (as their ``repr``), never a
    key or a name as code: see :func:`keywords`.
    """
    callee = name if _is_name(name) else "function"
    signature = _signature_in(code, name) if isinstance(code, str) else None
    if signature is None:
        return f"{callee}({keywords(config)})"
    try:
        args, kwargs = _arguments(signature, config, name)
    except ValueError:
        return f"{callee}({keywords(config)})"
    if any(value is _HAS_DEFAULT for value in args):
        raise ValueError(
            f"The recorded config of {name} lacks a positional parameter that has a "
            "default: no call can be printed that binds exactly this config."
        )
    parts = [repr(value) for value in args]
    if kwargs:
        parts.append(keywords(kwargs))
    return f"{callee}({', '.join(parts)})"


def _is_name(key: object) -> bool:
    return isinstance(key, str) and key.isidentifier() and not iskeyword(key)


def _signature_in(code: str, name: str) -> inspect.Signature | None:
    """The parameters (kinds, and whether each has a default) of the function
    ``name`` defined in ``code``, found by parsing: nothing in ``code`` runs."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    defined = [
        node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    found = [node for node in defined if node.name == name] or defined[:1]
    if not found:
        return None
    spec = found[0].args
    Kind = inspect.Parameter
    positional = [*spec.posonlyargs, *spec.args]
    defaulted = {a.arg for a in positional[len(positional) - len(spec.defaults) :]}
    keyword_only = zip(spec.kwonlyargs, spec.kw_defaults, strict=True)
    defaulted |= {a.arg for a, d in keyword_only if d is not None}
    parameters = []
    for group, kind in (
        (spec.posonlyargs, Kind.POSITIONAL_ONLY),
        (spec.args, Kind.POSITIONAL_OR_KEYWORD),
        ([spec.vararg] if spec.vararg else [], Kind.VAR_POSITIONAL),
        (spec.kwonlyargs, Kind.KEYWORD_ONLY),
        ([spec.kwarg] if spec.kwarg else [], Kind.VAR_KEYWORD),
    ):
        for arg in group:
            # a default's source is never printed: a stand-in marks that one exists
            default = _HAS_DEFAULT if arg.arg in defaulted else Kind.empty
            parameters.append(Kind(arg.arg, kind, default=default))
    try:
        return inspect.Signature(parameters)
    except ValueError:  # duplicate names and the like: not a function Python accepts
        return None


_HAS_DEFAULT: Any = object()
