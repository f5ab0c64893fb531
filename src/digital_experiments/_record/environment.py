"""Cheap, cached capture of the environment a run executes in.

Everything here is captured once per process and refreshed only when it can
change: packages come from :mod:`importlib.metadata` (no ``pip freeze``
subprocess), git facts are read from the ``.git`` folder (no ``git``
subprocess) and re-read when ``HEAD`` moves. Only whether the working tree
is dirty needs ``git`` itself: see :func:`git_dirty` for when it is re-checked.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


def _freeze_skipped() -> frozenset[str]:
    # what pip freeze leaves out by default (the build tools only before 3.12)
    skipped = {"pip", "python", "wsgiref", "argparse"}
    if sys.version_info < (3, 12):
        skipped |= {"setuptools", "distribute", "wheel"}
    return frozenset(skipped)


@functools.lru_cache(maxsize=1)
def _platform_facts() -> tuple[tuple[str, str], ...]:
    import platform  # platform and subprocess load when a run first asks: import stays light

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


# (the lines, and the git repositories of editable installs with their signatures)
_PACKAGES: tuple[str, tuple[tuple[Path, Path, str | None, tuple[Any, ...]], ...]] | None = None


def pip_freeze() -> str:
    """Installed distributions with the lines ``pip freeze`` prints for them.

    ``name==version``, or where PEP 610's ``direct_url.json`` says the package
    came from a URL, folder, wheel or VCS, ``name @ <url>``; editable installs
    in a git checkout are ``-e git+<remote>@<commit>#egg=<name>``. Read once
    per process, and again when the HEAD of an editable install's repository
    moves.
    """
    global _PACKAGES
    packages = _PACKAGES
    if packages is None or any(
        _git_signatures(git_dir, common, ref) != signatures
        for git_dir, common, ref, signatures in packages[1]
    ):
        with _LOCK:
            _PACKAGES = packages = _read_packages()
    return packages[0]


def _read_packages(
    path: list[str] | None = None,
) -> tuple[str, tuple[tuple[Path, Path, str | None, tuple[Any, ...]], ...]]:
    from importlib import metadata  # imported on first use: slow to import

    skipped = _freeze_skipped()
    seen: dict[str, tuple[str, str]] = {}
    watched: list[tuple[Path, Path, str | None, tuple[Any, ...]]] = []
    dists = metadata.distributions() if path is None else metadata.distributions(path=path)
    for dist in dists:
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue  # first on sys.path wins, as for imports
        seen[key] = (name, _freeze_line(dist, name, watched))
    lines = [
        line
        for key, (name, line) in sorted(seen.items(), key=lambda item: item[1][0].lower())
        if key not in skipped
    ]
    return "\n".join(lines), tuple(watched)


def _name_version(name: str, version: str) -> str:
    normal = _normal_version(version)
    return f"{name}=={normal}" if normal is not None else f"{name}==={version}"


def _freeze_line(dist: Any, name: str, watched: list[Any]) -> str:
    version = dist.version or ""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        direct = None
    url = direct.get("url") if isinstance(direct, dict) else None
    if not isinstance(url, str):  # no (valid) PEP 610 record: an index install
        return _name_version(name, version)
    assert isinstance(direct, dict)
    dir_info, vcs_info = direct.get("dir_info"), direct.get("vcs_info")
    archive_info = direct.get("archive_info")
    if isinstance(dir_info, dict) and dir_info.get("editable") is True:
        return _editable_line(name, version, url, watched)
    fragments = []
    if isinstance(vcs_info, dict):
        line = f"{name} @ {vcs_info.get('vcs')}+{url}@{vcs_info.get('commit_id')}"
    else:
        line = f"{name} @ {url}"
        if isinstance(archive_info, dict):
            hashes = archive_info.get("hashes")
            if isinstance(hashes, dict) and hashes:
                fragments.append("{}={}".format(*next(iter(hashes.items()))))
            elif isinstance(archive_info.get("hash"), str):
                fragments.append(archive_info["hash"])
    if isinstance(direct.get("subdirectory"), str):
        fragments.append(f"subdirectory={direct['subdirectory']}")
    return line + ("#" + "&".join(fragments) if fragments else "")


def _editable_line(name: str, version: str, url: str, watched: list[Any]) -> str:
    location = os.path.normcase(os.path.abspath(_url_to_path(url)))
    display = _name_version(name, version)
    found = _find_git_dir(location)
    if found is None:
        return f"# Editable install with no version control ({display})\n-e {location}"
    git_dir, common = found
    facts, ref, signatures = _head_facts(git_dir, common)
    watched.append((git_dir, common, ref, signatures))
    remote = facts["any_remote"]
    if remote is None:
        return f"# Editable Git install with no remote ({display})\n-e {location}"
    pip_url = _pip_remote_url(remote)
    if pip_url is None:
        return (
            f"# Editable Git install ({display}) with either a deleted local remote or "
            f"invalid URI:\n# '{remote}'\n-e {location}"
        )
    if facts["commit"] is None:
        return f"## !! Could not determine repository location\n-e {location}"
    requirement = f"-e git+{pip_url}@{facts['commit']}#egg={name.replace('-', '_')}"
    subdirectory = _subdirectory(location, git_dir.parent)
    return requirement + (f"&subdirectory={subdirectory}" if subdirectory else "")


def _url_to_path(url: str) -> str:
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    parts = urlsplit(url)
    netloc = "" if parts.netloc in ("", "localhost") else parts.netloc
    return url2pathname(netloc + parts.path)


_SCP_LIKE = re.compile(r"^(\w+@)?([^/:]+):(\w[^:]*)$")


def _pip_remote_url(remote: str) -> str | None:
    """The remote as pip writes it: a URL, ``file://`` for a local path, ``ssh://``
    for ``user@host:path``; ``None`` when it is none of these."""
    if re.match(r"\w+://", remote):
        return remote
    if os.path.exists(remote):
        return Path(remote).absolute().as_uri()
    scp = _SCP_LIKE.match(remote)
    return scp.expand(r"ssh://\1\2/\3") if scp else None


def _subdirectory(location: str, repo_root: Path) -> str | None:
    project = location
    while not any(os.path.isfile(os.path.join(project, f)) for f in ("pyproject.toml", "setup.py")):
        parent = os.path.dirname(project)
        if parent == project:
            return None
        project = parent
    if os.path.samefile(repo_root, project):
        return None
    return os.path.relpath(project, repo_root)


# PEP 440's version pattern: a valid version prints in its normal form, as pip does
_VERSION = re.compile(
    r"""v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc"}


def _normal_version(version: str) -> str | None:
    match = _VERSION.fullmatch(version.strip())
    if match is None:
        return None
    part = match.group
    text = f"{int(part('epoch'))}!" if part("epoch") and int(part("epoch")) else ""
    text += ".".join(str(int(n)) for n in part("release").split("."))
    if part("pre_l"):
        text += _PRE.get(part("pre_l").lower(), "rc") + str(int(part("pre_n") or 0))
    if part("post_n1") or part("post_l"):
        text += f".post{int(part('post_n1') or part('post_n2') or 0)}"
    if part("dev_l"):
        text += f".dev{int(part('dev_n') or 0)}"
    if part("local"):
        pieces = re.split(r"[-_.]", part("local"))
        text += "+" + ".".join(str(int(p)) if p.isdigit() else p.lower() for p in pieces)
    return text


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


def _remote_urls(common: Path) -> dict[str, str]:
    """``{remote name: url}`` from the repository's config, in file order."""
    config = _read(common / "config") or ""
    urls: dict[str, str] = {}
    remote: str | None = None
    for raw in config.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = re.fullmatch(r'\[remote\s+"(.*)"\]', line)
            remote = section.group(1) if section else None
        elif remote is not None and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key.lower() == "url":
                urls.setdefault(remote, value)
    return urls


def _signature(path: str) -> tuple[int, int, int]:
    # git rewrites files by lock-and-rename, so a change shows in the inode too
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# git_dir -> (HEAD's ref, signatures of the files read, the facts)
_GIT_CACHE: dict[Path, tuple[str | None, tuple[Any, ...], dict[str, Any]]] = {}


def _git_signatures(git_dir: Path, common: Path, ref: str | None) -> tuple[Any, ...]:
    return (
        _signature(os.path.join(git_dir, "HEAD")),
        _signature(os.path.join(common, ref)) if ref else None,
        _signature(os.path.join(common, "packed-refs")),
        _signature(os.path.join(common, "config")),
    )


def _head_facts(git_dir: Path, common: Path) -> tuple[dict[str, Any], str | None, tuple[Any, ...]]:
    """``({branch, commit, remote, any_remote}, HEAD's ref, signatures)``, cached
    until ``HEAD``, its ref, ``packed-refs`` or the config change."""
    cached = _GIT_CACHE.get(git_dir)
    if cached is not None and _git_signatures(git_dir, common, cached[0]) == cached[1]:
        return cached[2], cached[0], cached[1]
    head = _read(git_dir / "HEAD") or ""
    ref = head[len("ref:") :].strip() if head.startswith("ref:") else None
    # signatures before the reads: a change during them is seen on the next call
    signatures = _git_signatures(git_dir, common, ref)
    commit: str | None
    if ref is None:  # detached HEAD holds the commit itself
        branch, commit = "HEAD", head or None
    else:
        branch, commit = ref.removeprefix("refs/heads/"), _resolve_ref(common, ref)
    remotes = _remote_urls(common)
    info = {
        "branch": branch,
        "commit": commit,
        "remote": remotes.get("origin"),
        # pip names an editable checkout by origin, else the first remote
        "any_remote": remotes.get("origin", next(iter(remotes.values()), None)),
    }
    if len(_GIT_CACHE) > 64:
        _GIT_CACHE.clear()
    _GIT_CACHE[git_dir] = (ref, signatures, info)
    return info, ref, signatures


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
    if not os.path.isfile(git_dir / "HEAD"):
        return None
    facts, _, signatures = _head_facts(git_dir, common)
    return {
        "branch": facts["branch"],
        "commit": facts["commit"],
        "remote": facts["remote"],
        "dirty": _dirty(git_dir, signatures, cwd),
    }


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
    import shutil
    import subprocess

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
