"""The shape of the package: layers hold (import-linter, in ``make test``), and no
module reaches into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import digital_experiments

PACKAGE = Path(digital_experiments.__file__).parent
# 2.0.4's registry name, re-exported by the public backends module for old code
ALLOWED = {("backends", "_ALL_BACKENDS")}


def private_uses(path: Path) -> list[str]:
    """``module._name`` reads and ``from .module import _name`` imports in ``path``,
    where ``module`` is another module of the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.stem
    modules: dict[str, str] = {}  # local name -> module of this package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                if node.module is None:  # from . import _storage as storage
                    modules[alias.asname or alias.name] = alias.name
                elif alias.name.startswith("_") and (here, alias.name) not in ALLOWED:
                    found.append(f"{here}: from .{node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{here}: {modules[node.value.id]}.{node.attr}")
    return found


def test_the_check_finds_a_private_use(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from . import _storage as storage\nfrom ._run import _Call\nstorage._identity()\n"
    )
    assert private_uses(planted) == [
        "planted: from ._run import _Call",
        "planted: _storage._identity",
    ]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    assert private_uses(path) == []
