"""Shared fixtures and helpers: every test runs in its own folder with no DE_ROOT.

Helpers used by several test files (dead pids, git repositories) live here once;
import them with ``from .conftest import ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .servers import any_store, moto, seaweedfs, server  # noqa: F401 (fixtures for every test file)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def git(repo: Path, *args: str) -> str:
    """Run a git command in ``repo`` with a clean, fixed identity; return its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_ENV)
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def make_repo(repo: Path, *, commit: bool = True, remote: str | None = None) -> None:
    """``git init`` a repository on branch main, optionally with a commit and an origin."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    if commit:
        (repo / "README").write_text("hello\n")
        git(repo, "add", "README")
        git(repo, "commit", "-q", "-m", "first")
    if remote is not None:
        git(repo, "remote", "add", "origin", remote)


class Touch:
    """Unpickles as ``Path(marker).touch()``: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def python_code(code: str, *args: object, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` to the end (output captured, exit code not checked)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in a fresh working directory, so ./experiments is private."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DE_ROOT", raising=False)
    # remote roots' working folders (current_dir() staging, downloads): private too
    monkeypatch.setenv("DE_CACHE", str(tmp_path / ".de-cache"))
    # `make mutate`: mutmut's coverage pass ("stats") counts calls in this process
    # only, and a child told "stats" fails without mutmut's config: children run
    # the unmutated code then (they still run each mutant in the later passes)
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        monkeypatch.delenv("MUTANT_UNDER_TEST")
    main = sys.modules["__main__"]
    if "mutmut" in getattr(main, "__file__", ""):
        # spawned pool workers would re-run mutmut's script, which needs its
        # config in the (now private) working directory
        monkeypatch.delattr(main, "__file__")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every @pytest.mark.anyio test on asyncio and on trio."""
    return str(request.param)


# Property and fuzz tests (tests/test_properties.py, tests/test_fuzz_readers.py):
# bounded example counts, so `make test` grows by seconds, and no deadline (a
# wall-clock limit per example fails on a busy machine and proves nothing).
# HYPOTHESIS_PROFILE=thorough explores more; `make mutate` uses "mutate" (few,
# fixed examples: each mutant sees the same inputs).
try:
    from hypothesis import HealthCheck, settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # hypothesis is a dev extra
    pass
else:
    # each test runs in its own tmp_path: keep the example database in the checkout
    set_hypothesis_home_dir(Path(__file__).parent.parent / ".hypothesis")
    _RELAXED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    settings.register_profile(
        "default", max_examples=60, deadline=None, suppress_health_check=_RELAXED
    )
    settings.register_profile(
        "thorough", max_examples=2000, deadline=None, suppress_health_check=_RELAXED
    )
    settings.register_profile(
        "mutate",
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=_RELAXED,
    )
    settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE")
        or ("mutate" if "MUTANT_UNDER_TEST" in os.environ else "default")
    )


def examples(n: int) -> int:
    """``n`` examples under the default profile, scaled like the loaded one
    (``@settings(max_examples=examples(40))``: "thorough" runs ~33 times as many)."""
    try:
        from hypothesis import settings
    except ImportError:
        return n
    return max(3, n * settings.default.max_examples // 60)
