"""Small helpers kept at their 2.0.4 import paths."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._model import keys


def complete_config(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Every argument of the call ``func(*args, **kwargs)``, defaults included.

    Raises
    ------
    TypeError
        If the arguments do not fit ``func``'s signature.
    """
    return bind(inspect.signature(func), args, kwargs)


def bind(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The arguments of a call to a function of ``signature``, defaults applied."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def source_code(function: Callable[..., Any]) -> str | None:
    """The source of ``function``, or ``None`` where Python cannot find it.

    Functions typed into a REPL or ``python -c`` have no source file; their
    runs are still recorded, with ``metadata["code"]`` set to ``None`` and
    ``metadata["code_hash"]`` telling versions apart (see :func:`code_identity`).
    """
    function = inspect.unwrap(function)
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None


def code_identity(function: Callable[..., Any]) -> dict[str, str | None]:
    """The code fields recorded in each run's metadata, identifying this version.

    ``{"code": source}`` when Python finds the source; otherwise (a function
    defined in a REPL, ``python -c``, ``python -`` or ``exec``)
    ``{"code": None, "code_hash": code_hash(function)}``, so a changed body is
    still a different version for the cache and ``current_code_only``.
    """
    try:
        return dict(_IDENTITIES[function])
    except (KeyError, TypeError):  # not seen yet, or not weakly referenceable
        pass
    source = source_code(function)
    identity: dict[str, str | None] = {"code": source}
    if source is None:
        identity["code_hash"] = code_hash(function)
    with contextlib.suppress(TypeError):
        _IDENTITIES[function] = identity
    return dict(identity)


# each function's source is read once per process, however many ask
_IDENTITIES: weakref.WeakKeyDictionary[Callable[..., Any], dict[str, str | None]] = (
    weakref.WeakKeyDictionary()
)


def code_hash(function: Callable[..., Any]) -> str:
    """A hex digest of ``function``'s code object, defaults and keyword defaults.

    The code object is taken with its bytecode, constants (nested functions
    and classes included, recursively), names, variable names and flags, but
    not its file name or line numbers. The digest changes with the Python
    version (bytecode does) and ignores values captured in closures and globals.
    """
    function = inspect.unwrap(function)
    parts: list[Any] = [list(sys.version_info[:2]), type(function).__qualname__]
    if isinstance(function, functools.partial):
        parts += [code_hash(function.func), function.args, function.keywords]
        return hashlib.sha256(keys.canonical(parts)).hexdigest()
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):  # a callable object: its __call__ runs
        call = vars(type(function)).get("__call__")
        code = getattr(call, "__code__", None)
    if isinstance(code, types.CodeType):
        parts.append(_code_parts(code))
    else:  # a builtin
        parts.append(getattr(function, "__qualname__", None))
    parts.append(getattr(function, "__defaults__", None))
    parts.append(getattr(function, "__kwdefaults__", None))
    return hashlib.sha256(keys.canonical(parts)).hexdigest()


def _code_parts(code: types.CodeType) -> list[Any]:
    consts = [
        _code_parts(const) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    ]
    return [
        code.co_name,
        code.co_code,
        consts,
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        list(code.co_cellvars),
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    ]
