"""Cheap, cached environment capture: packages, system facts and git state."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digital_experiments import environment, experiment

from .conftest import git, make_repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder to become a git repository, made the working directory."""
    monkeypatch.delenv("GIT_DIR", raising=False)
    path = tmp_path / "repo"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def recorded_git(tmp_path: Path) -> dict[str, object] | None:
    """Run a fresh experiment and return the git facts it recorded (None if absent)."""

    @experiment(root=tmp_path / "runs")
    def f() -> int:
        return 1

    f()
    (observation,) = f.observations(limit=1)
    json.dumps(observation._asdict())  # still plain data
    git_info = observation.metadata["environment"].get("git")
    assert git_info is None or isinstance(git_info, dict)
    return git_info


# ---------------------------------------------------------------- git


def test_git_repo_with_commit_and_remote(repo: Path, tmp_path: Path) -> None:
    """In a repository the run records its branch, HEAD commit and origin url."""
    make_repo(repo, remote="https://example.com/team/project.git")
    assert recorded_git(tmp_path) == {
        "branch": "main",
        "commit": git(repo, "rev-parse", "HEAD"),
        "remote": "https://example.com/team/project.git",
    }


def test_git_repo_found_from_a_subfolder(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository is found from any folder inside it."""
    make_repo(repo)
    (repo / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(repo / "deep" / "er")
    info = recorded_git(tmp_path)
    assert info is not None
    assert info["commit"] == git(repo, "rev-parse", "HEAD")


def test_git_repo_without_commit(repo: Path, tmp_path: Path) -> None:
    """A repository with no commit yet records its branch and commit None, and still records."""
    make_repo(repo, commit=False)
    assert recorded_git(tmp_path) == {"branch": "main", "commit": None, "remote": None}


def test_git_repo_without_remote(repo: Path, tmp_path: Path) -> None:
    """A repository without an origin remote records remote None."""
    make_repo(repo)
    info = recorded_git(tmp_path)
    assert info == {"branch": "main", "commit": git(repo, "rev-parse", "HEAD"), "remote": None}


def test_not_a_git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any repository the environment has no git key, and the run records."""
    monkeypatch.delenv("GIT_DIR", raising=False)
    here = Path.cwd()
    assert not any((folder / ".git").exists() for folder in (here, *here.parents)), (
        "precondition: the test folder must not be inside a git repository"
    )
    assert environment.git_info() is None
    assert recorded_git(tmp_path) is None


def test_detached_head(repo: Path, tmp_path: Path) -> None:
    """A detached HEAD records branch ``HEAD`` and the checked-out commit."""
    make_repo(repo)
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    git(repo, "checkout", "-q", "--detach", first)
    info = recorded_git(tmp_path)
    assert info == {"branch": "HEAD", "commit": first, "remote": None}


def test_packed_refs_are_read(repo: Path, tmp_path: Path) -> None:
    """After ``git pack-refs`` the commit is still found."""
    make_repo(repo, remote="git@example.com:p.git")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    info = recorded_git(tmp_path)
    assert info is not None
    assert info["commit"] == git(repo, "rev-parse", "HEAD")
    assert info["remote"] == "git@example.com:p.git"


def test_git_info_refreshes_when_head_moves(repo: Path, tmp_path: Path) -> None:
    """Git facts are cached, yet the next run after a new commit records the new commit."""
    make_repo(repo)
    first = git(repo, "rev-parse", "HEAD")

    @experiment(root=tmp_path / "runs")
    def f(x: int) -> int:
        return x

    f(1)
    assert environment.git_info() == environment.git_info()
    (repo / "README").write_text("changed\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    assert second != first
    f(2)
    git(repo, "checkout", "-q", "-b", "feature")
    f(3)
    commits = [o.metadata["environment"]["git"] for o in f.observations()]
    assert [(c["branch"], c["commit"]) for c in commits] == [
        ("main", first),
        ("main", second),
        ("feature", second),
    ]


def test_git_info_returns_a_copy(repo: Path) -> None:
    """Editing the returned dict does not change the cached facts."""
    make_repo(repo)
    info = environment.git_info()
    assert info is not None
    info["commit"] = "edited"
    assert environment.git_info() != info


# ---------------------------------------------------------------- packages and system


def test_pip_freeze_lines_are_sorted_name_version() -> None:
    """``pip_freeze()`` gives ``name==version`` lines, sorted by normalised name, no duplicates."""
    lines = environment.pip_freeze().splitlines()
    assert lines
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", line) for line in lines)

    def key(line: str) -> str:
        return re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()

    keys = [key(line) for line in lines]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert "pip" not in keys


def test_pip_freeze_matches_pip() -> None:
    """The package list equals ``pip freeze`` for every normally installed package."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    )
    theirs = {
        line
        for line in proc.stdout.splitlines()
        if "==" in line and not line.startswith(("-e ", "#"))
    }
    ours = set(environment.pip_freeze().splitlines())
    assert theirs, "pip freeze listed nothing"
    assert theirs <= ours
    # anything extra must be an editable or direct-url install, which pip writes differently
    extra = {line.split("==")[0].lower() for line in ours - theirs}
    assert extra <= {
        re.sub(r"[-_.]+", "-", name).lower() for name in re.findall(r"\((\S+?)==", proc.stdout)
    } | {line.split(" @ ")[0].lower() for line in proc.stdout.splitlines() if " @ " in line} | {
        re.sub(r"[-_.]+", "-", name).lower() for name in re.findall(r"#egg=([\w.-]+)", proc.stdout)
    }


def test_pip_freeze_is_cached_until_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package list is read once per process; ``refresh()`` forgets it."""
    calls: list[int] = []
    real = environment._read_packages

    def counting() -> str:
        calls.append(1)
        return real()

    monkeypatch.setattr(environment, "_read_packages", counting)
    environment.refresh()
    first = environment.pip_freeze()
    assert environment.pip_freeze() == first
    assert len(calls) == 1
    environment.refresh()
    environment.pip_freeze()
    assert len(calls) == 2


def test_system_info_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """System facts are the platform's; ``pwd`` is read at each call."""
    info = environment.system_info()
    assert set(info) == {"platform", "machine", "processor", "system", "python_version", "pwd"}
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert environment.system_info()["pwd"] == str(tmp_path / "other")


def test_capture_has_every_part(repo: Path) -> None:
    """``capture()`` returns system, pip_freeze and (in a repository) git."""
    make_repo(repo)
    assert set(environment.capture()) == {"system", "pip_freeze", "git"}


def test_identical_environments_are_stored_once(tmp_path: Path) -> None:
    """Ten runs in the same environment share one environment blob."""

    @experiment(root=tmp_path / "runs")
    def f(x: int) -> int:
        return x

    for i in range(10):
        f(i)
    assert len(list((tmp_path / "runs" / ".de" / "environments").iterdir())) == 1


def test_changed_environment_gets_a_new_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run in a different working directory stores a second environment blob."""

    @experiment(root=tmp_path / "runs")
    def f(x: int) -> int:
        return x

    f(1)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    f(2)
    assert len(list((tmp_path / "runs" / ".de" / "environments").iterdir())) == 2
    pwds = [o.metadata["environment"]["system"]["pwd"] for o in f.observations()]
    assert pwds == [str(tmp_path), str(tmp_path / "elsewhere")]


def test_git_info_is_read_once_until_head_moves(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated captures reuse the cached git facts; a new commit makes them re-read."""
    make_repo(repo)
    environment.git_info()
    reads: list[Path] = []
    real = environment._origin_url

    def counting(common: Path) -> str | None:
        reads.append(common)
        return real(common)

    monkeypatch.setattr(environment, "_origin_url", counting)
    for _ in range(5):
        environment.git_info()
    assert reads == []
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    info = environment.git_info()
    assert len(reads) == 1
    assert info is not None
    assert info["commit"] == git(repo, "rev-parse", "HEAD")
