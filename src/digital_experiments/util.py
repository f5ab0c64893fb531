"""Small helpers kept at their 2.0.4 import paths."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .context import artefact_location

__all__ = ["artefact_location", "complete_config", "source_code"]


def complete_config(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Every argument of the call ``func(*args, **kwargs)``, defaults included.

    Raises
    ------
    TypeError
        If the arguments do not fit ``func``'s signature.
    """
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def source_code(function: Callable[..., Any]) -> str | None:
    """The source of ``function``, or ``None`` where Python cannot find it.

    Functions typed into a REPL or ``python -c`` have no source file; their
    runs are still recorded, with ``metadata["code"]`` set to ``None``.
    """
    function = inspect.unwrap(function)
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None
