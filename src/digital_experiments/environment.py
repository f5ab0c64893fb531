"""Cheap, cached capture of the environment a run executes in.

Everything here is captured once per process and refreshed only when it can
change: packages come from :mod:`importlib.metadata` (no ``pip freeze``
subprocess), git facts are read from the ``.git`` folder (no ``git``
subprocess) and re-read when ``HEAD`` moves.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import threading
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()
# pip freeze leaves these out by default; so do we, to give the same lines
_FREEZE_EXCLUDED = {"pip", "setuptools", "wheel", "distribute"}


@functools.lru_cache(maxsize=1)
def _platform_facts() -> tuple[tuple[str, str], ...]:
    return (
        ("platform", platform.platform()),
        ("machine", platform.machine()),
        ("processor", platform.processor()),
        ("system", platform.system()),
        ("python_version", platform.python_version()),
    )


def system_info() -> dict[str, Any]:
    """Platform facts (cached) and the working directory (read each call)."""
    return {**dict(_platform_facts()), "pwd": os.getcwd()}


_PACKAGES: str | None = None


def pip_freeze() -> str:
    """Installed distributions as ``name==version`` lines, like ``pip freeze``."""
    global _PACKAGES
    if _PACKAGES is None:
        with _LOCK:
            if _PACKAGES is None:
                _PACKAGES = _read_packages()
    return _PACKAGES


def _read_packages() -> str:
    from importlib import metadata  # imported on first use: slow to import

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in _FREEZE_EXCLUDED or key in seen:
            continue  # first on sys.path wins, as for imports
        seen[key] = f"{name}=={dist.version}"
    return "\n".join(seen[key] for key in sorted(seen))


def refresh() -> None:
    """Forget cached facts (after installing packages mid-session, say)."""
    global _PACKAGES
    _PACKAGES = None
    _platform_facts.cache_clear()
    _find_git_dir.cache_clear()
    _GIT_CACHE.clear()


# ---------------------------------------------------------------- git


@functools.lru_cache(maxsize=64)
def _find_git_dir(cwd: str) -> tuple[Path, Path] | None:
    """``(git_dir, common_dir)`` for the repository containing ``cwd``."""
    if os.environ.get("GIT_DIR"):
        git_dir = Path(os.environ["GIT_DIR"]).absolute()
        return (git_dir, git_dir) if git_dir.is_dir() else None
    for folder in (Path(cwd), *Path(cwd).parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git, _common_dir(dot_git)
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                git_dir = (folder / text[len("gitdir:") :].strip()).resolve()
                return git_dir, _common_dir(git_dir)
    return None


def _common_dir(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    if common.is_file():
        return (git_dir / common.read_text().strip()).resolve()
    return git_dir


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _resolve_ref(common: Path, ref: str) -> str | None:
    loose = _read(common / ref)
    if loose:
        return loose
    packed = _read(common / "packed-refs") or ""
    for line in packed.splitlines():
        if line.endswith(" " + ref) and not line.startswith(("#", "^")):
            return line.split(" ", 1)[0]
    return None


def _origin_url(common: Path) -> str | None:
    config = _read(common / "config") or ""
    in_origin = False
    for raw in config.splitlines():
        line = raw.strip()
        if line.startswith("["):
            in_origin = re.fullmatch(r'\[remote\s+"origin"\]', line) is not None
        elif in_origin and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key.lower() == "url":
                return value
    return None


def _signature(path: str) -> tuple[int, int, int]:
    # git rewrites files by lock-and-rename, so a change shows in the inode too
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# git_dir -> (HEAD's ref, signatures of the files read, the answer)
_GIT_CACHE: dict[Path, tuple[str | None, tuple[Any, ...], dict[str, Any]]] = {}


def _git_signatures(git_dir: Path, common: Path, ref: str | None) -> tuple[Any, ...]:
    return (
        _signature(os.path.join(git_dir, "HEAD")),
        _signature(os.path.join(common, ref)) if ref else None,
        _signature(os.path.join(common, "packed-refs")),
        _signature(os.path.join(common, "config")),
    )


def git_info(cwd: str | None = None) -> dict[str, Any] | None:
    """``{branch, commit, remote}`` of the repository around ``cwd``, else ``None``.

    Fields that do not exist yet (no commit, no ``origin`` remote) are ``None``.
    The answer is cached and re-read when ``HEAD``, its ref, ``packed-refs``
    or the config change (four ``stat`` calls per run, no reads).
    """
    found = _find_git_dir(cwd or os.getcwd())
    if found is None:
        return None
    git_dir, common = found
    cached = _GIT_CACHE.get(git_dir)
    if cached is not None and _git_signatures(git_dir, common, cached[0]) == cached[1]:
        return dict(cached[2])
    head = _read(git_dir / "HEAD")
    if head is None:
        return None
    ref = head[len("ref:") :].strip() if head.startswith("ref:") else None
    # signatures before the reads: a change during them is seen on the next call
    signatures = _git_signatures(git_dir, common, ref)
    commit: str | None
    if ref is None:  # detached HEAD holds the commit itself
        branch, commit = "HEAD", head
    else:
        branch, commit = ref.removeprefix("refs/heads/"), _resolve_ref(common, ref)
    info = {"branch": branch, "commit": commit, "remote": _origin_url(common)}
    if len(_GIT_CACHE) > 64:
        _GIT_CACHE.clear()
    _GIT_CACHE[git_dir] = (ref, signatures, info)
    return dict(info)


def capture() -> dict[str, Any]:
    """The whole environment: ``{system, pip_freeze, git}``."""
    environment: dict[str, Any] = {"system": system_info(), "pip_freeze": pip_freeze()}
    git = git_info()
    if git is not None:
        environment["git"] = git
    return environment
