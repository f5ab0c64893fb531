"""Cheap, cached capture of the environment a run executes in.

Everything here is captured once per process and refreshed only when it can
change: packages come from :mod:`importlib.metadata` (no ``pip freeze``
subprocess), git facts are read from the ``.git`` folder (no ``git``
subprocess) and re-read when ``HEAD`` moves. Only whether the working tree
is dirty needs ``git`` itself: see :func:`git_dirty` for when it is re-checked.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import threading
import time
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
    _DIRTY_CACHE.clear()


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
    """``{branch, commit, remote, dirty}`` of the repository around ``cwd``, else ``None``.

    Fields that do not exist yet (no commit, no ``origin`` remote) are ``None``.
    The facts are cached and re-read when ``HEAD``, its ref, ``packed-refs``
    or the config change (four ``stat`` calls per run, no reads); ``dirty``
    comes from :func:`git_dirty`.
    """
    cwd = cwd or os.getcwd()
    found = _find_git_dir(cwd)
    if found is None:
        return None
    git_dir, common = found
    cached = _GIT_CACHE.get(git_dir)
    if cached is None or _git_signatures(git_dir, common, cached[0]) != cached[1]:
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
        cached = _GIT_CACHE[git_dir] = (ref, signatures, info)
    ref, signatures, info = cached
    return {**info, "dirty": _dirty(git_dir, signatures, cwd)}


# ---------------------------------------------------------------- git dirty

#: While ``HEAD``, its ref, ``packed-refs``, the config and the index are
#: unchanged, the working tree is checked again at most once per this many
#: seconds (or 50 times the last check's duration, in big repositories).
DIRTY_RECHECK = 1.0
_clock = time.monotonic  # a module attribute so tests can move time
# git_dir -> (signatures incl. the index, checked at, valid for, answer)
_DIRTY_CACHE: dict[Path, tuple[tuple[Any, ...], float, float, bool | None]] = {}
_DIRTY_LOCK = threading.Lock()


def _index_path(git_dir: Path) -> str:
    return os.environ.get("GIT_INDEX_FILE") or os.path.join(git_dir, "index")


def _dirty(git_dir: Path, head_signatures: tuple[Any, ...], cwd: str) -> bool | None:
    # taken before the check: a change during it is seen on the next call
    signatures = (*head_signatures, _signature(_index_path(git_dir)))
    cached = _DIRTY_CACHE.get(git_dir)
    if cached is not None and cached[0] == signatures and _clock() - cached[1] < cached[2]:
        return cached[3]
    with _DIRTY_LOCK:  # threads finishing together share one subprocess
        cached = _DIRTY_CACHE.get(git_dir)
        started = _clock()
        if cached is not None and cached[0] == signatures and started - cached[1] < cached[2]:
            return cached[3]
        answer = git_dirty(cwd)
        valid_for = max(DIRTY_RECHECK, 50 * (_clock() - started))
        if len(_DIRTY_CACHE) > 64:
            _DIRTY_CACHE.clear()
        _DIRTY_CACHE[git_dir] = (signatures, started, valid_for, answer)
    return answer


def git_dirty(cwd: str | None = None) -> bool | None:
    """Whether tracked files around ``cwd`` differ from ``HEAD`` (staged or not).

    Untracked files do not count (like ``git describe --dirty``). ``None``
    when it cannot be told: ``git`` is not installed, or refuses the folder.
    This runs ``git status`` (a few milliseconds in a small repository);
    :func:`git_info` caches the answer: it checks again when ``HEAD``, its
    ref or the index change, and otherwise at most once per
    :data:`DIRTY_RECHECK` seconds, so an edit of a tracked file (which the
    index does not see) is recorded by the runs that start after that delay.
    """
    executable = shutil.which("git")
    if executable is None:
        return None
    # --no-optional-locks: never rewrite the user's index (nor wait on its lock);
    # status compares contents, so a file merely touched is not dirty
    command = [executable, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]
    try:
        proc = subprocess.run(
            command,
            cwd=cwd or os.getcwd(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


def capture() -> dict[str, Any]:
    """The whole environment: ``{system, pip_freeze, git}``."""
    environment: dict[str, Any] = {"system": system_info(), "pip_freeze": pip_freeze()}
    git = git_info()
    if git is not None:
        environment["git"] = git
    return environment
