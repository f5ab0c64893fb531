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


def _module_of(path: Path) -> str:
    """``path``'s dotted name inside the package (``_store.files``)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` (``_store.files``) is a module or package of ours."""
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: Path, package: str = "") -> list[str]:
    """``module._name`` reads and ``from ..module import _name`` imports in ``path``
    (whose package, inside ours, is ``package``), where ``module`` is another module
    of ours."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.stem
    base = package.split(".") if package else []
    modules: dict[str, str] = {}  # local name -> module of this package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            up = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                name = ".".join(filter(None, [source, alias.name]))
                if _is_module(name):  # from .._store import files as storage
                    modules[alias.asname or alias.name] = name
                elif _private(alias.name) and (here, alias.name) not in ALLOWED:
                    found.append(f"{here}: from {source} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.append(f"{here}: {modules[node.value.id]}.{node.attr}")
    return found


def test_the_check_finds_a_private_use(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from .._store import files as storage\nfrom .run import _Call\n"
        "from ..x.y import _z\nstorage._identity()\n"
    )
    assert private_uses(planted, "_record") == [
        "planted: from _record.run import _Call",
        "planted: from x.y import _z",
        "planted: _store.files._identity",
    ]


_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "static" not in p.parts)


@pytest.mark.parametrize("path", _MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    package = (
        _module_of(path).rpartition(".")[0] if path.name != "__init__.py" else _module_of(path)
    )
    assert private_uses(path, package) == []


# ---------------------------------------------------------------- the disk, below the stores

_OS = {"open", "scandir", "listdir", "rename", "replace", "unlink", "remove", "mkdir"}
_OS |= {"makedirs", "stat", "lstat", "rmdir", "link", "symlink", "fsync", "utime", "walk"}
_OS_PATH = {"exists", "lexists", "isdir", "isfile", "islink", "getmtime", "getsize"}
_PATHS = {"read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "iterdir"}
_PATHS |= {"rglob", "glob", "unlink", "rename", "touch", "rmdir", "exists", "is_dir"}
_PATHS |= {"is_file", "stat", "resolve"}
_SHUTIL = {"rmtree", "move", "copy", "copy2", "copyfile", "copytree"}

# What reaches the disk by itself, and why. Everything else goes through a Store.
# The list only shrinks: a module that stops touching the disk must leave it.
DISK = {
    "_store/local.py": "the folder store itself",
    "_store/filesystems.py": "reads /proc/self/mountinfo",
    "_store/files.py": "atomic writes, id reservations and file locks under the folder store",
    "_store/faults.py": "fault-injection points write their signal file",
    "_record/environment.py": "reads the environment: git, packages, the system",
    "_record/callbacks.py": "a Logging callback's log file, where the user asks",
    "_runs/context.py": "makes the run's current_dir() (a store's working folder)",
    "cli.py": "export --output writes where the user asks",
    "_experiment.py": "checks that a folder root is not a file",
    "_sweep/engine.py": "makes the working folder a sweep's worker records into",
    "_read/roots.py": "walks a local folder with one scandir (a bucket asks its store)",
    "_read/query.py": "a whole id in a folder: one lstat instead of a listing",
    "_runs/metrics.py": "appends points to the run's local file (a bucket gets it whole)",
    "_read/trash.py": "a folder's trash renames whole folders (a bucket copies objects)",
    "ui/_app.py": "serves artefact files from the (working) folder",
    "ui/_index.py": "watches a folder by mtimes and inodes (a bucket: by versions)",
}


def disk_calls(path: Path) -> list[str]:
    """The calls in ``path`` that reach the disk without a store."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.add("open()")
        if not isinstance(func, ast.Attribute):
            continue
        owner = func.value
        if isinstance(owner, ast.Name) and owner.id == "shutil" and func.attr in _SHUTIL:
            found.add(f"shutil.{func.attr}")
        elif isinstance(owner, ast.Name) and owner.id == "os" and func.attr in _OS:
            found.add(f"os.{func.attr}")
        elif (
            isinstance(owner, ast.Attribute)
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "os"
            and owner.attr == "path"
        ):
            if func.attr in _OS_PATH:
                found.add(f"os.path.{func.attr}")
        elif func.attr in _PATHS and not (isinstance(owner, ast.Name) and owner.id == "store"):
            found.add(f".{func.attr}()")
    return sorted(found)


def test_the_disk_check_finds_each_kind_of_call(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os, shutil\nopen('x')\nos.rename('a', 'b')\nos.path.exists('c')\n"
        "shutil.rmtree('d')\nPath('e').read_text()\nstore.read('f')\n'g'.replace('h', 'i')\n"
    )
    assert disk_calls(planted) == [
        ".read_text()",
        "open()",
        "os.path.exists",
        "os.rename",
        "shutil.rmtree",
    ]


def test_only_the_listed_modules_reach_the_disk_without_a_store() -> None:
    touching = {
        path.relative_to(PACKAGE).as_posix(): calls
        for path in sorted(PACKAGE.rglob("*.py"))
        if (calls := disk_calls(path))
    }
    unlisted = {name: calls for name, calls in touching.items() if name not in DISK}
    assert unlisted == {}, "reach the disk through a Store, or say why in DISK"
    assert sorted(set(DISK) - set(touching)) == [], "no longer touches the disk: unlist it"
