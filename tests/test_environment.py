"""Cheap, cached environment capture: packages, system facts and git state."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digital_experiments import experiment
from digital_experiments._record import environment

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
        "dirty": False,
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
    assert recorded_git(tmp_path) == {
        "branch": "main",
        "commit": None,
        "remote": None,
        "dirty": False,
    }


def test_git_repo_without_remote(repo: Path, tmp_path: Path) -> None:
    """A repository without an origin remote records remote None."""
    make_repo(repo)
    info = recorded_git(tmp_path)
    assert info == {
        "branch": "main",
        "commit": git(repo, "rev-parse", "HEAD"),
        "remote": None,
        "dirty": False,
    }


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
    assert info == {"branch": "HEAD", "commit": first, "remote": None, "dirty": False}


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


# ---------------------------------------------------------------- git dirty


class FakeClock:
    """Stands in for ``time.monotonic`` so a test decides when time passes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Freeze the clock of the dirty check (and forget cached answers)."""
    fake = FakeClock()
    monkeypatch.setattr(environment, "_clock", fake)
    environment.refresh()
    return fake


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bool | None]:
    """The answers of every real ``git status`` check made, in order."""
    seen: list[bool | None] = []
    real = environment.git_dirty

    def counting(cwd: str | None = None) -> bool | None:
        seen.append(real(cwd))
        return seen[-1]

    monkeypatch.setattr(environment, "git_dirty", counting)
    return seen


def dirty() -> object:
    info = environment.git_info()
    assert info is not None
    return info["dirty"]


def test_git_dirty_is_recorded(repo: Path, tmp_path: Path, clock: FakeClock) -> None:
    """A run records ``dirty`` False in a clean tree and True after a tracked file changes."""
    make_repo(repo)

    @experiment(root=tmp_path / "runs")
    def f(x: int) -> int:
        return x

    f(1)
    (repo / "README").write_text("edited\n")
    clock.now += environment.DIRTY_RECHECK
    f(2)
    assert [o.metadata["environment"]["git"]["dirty"] for o in f.observations()] == [False, True]


def test_unstaged_edit_is_noticed_after_the_recheck_delay(
    repo: Path, clock: FakeClock, checks: list[bool | None]
) -> None:
    """An edit the index does not see is cached for at most DIRTY_RECHECK seconds."""
    make_repo(repo)
    assert dirty() is False
    index = os.stat(repo / ".git" / "index")
    (repo / "README").write_text("edited, not staged\n")
    assert dirty() is False  # the documented blind spot: same index, within the delay
    assert checks == [False]
    clock.now += environment.DIRTY_RECHECK
    assert dirty() is True
    assert checks == [False, True]
    # the check never rewrites the user's index
    after = os.stat(repo / ".git" / "index")
    assert (after.st_ino, after.st_mtime_ns) == (index.st_ino, index.st_mtime_ns)


def test_index_and_head_changes_recheck_at_once(
    repo: Path, clock: FakeClock, checks: list[bool | None]
) -> None:
    """Staging and committing are noticed by the next call, with no time passing."""
    make_repo(repo)
    assert dirty() is False
    (repo / "README").write_text("staged\n")
    git(repo, "add", "README")
    assert dirty() is True
    git(repo, "commit", "-q", "-m", "second")
    assert dirty() is False
    assert checks == [False, True, False]
    for _ in range(3):
        assert dirty() is False
    assert len(checks) == 3  # cached while nothing changed


def test_untracked_and_touched_files_are_not_dirty(repo: Path, clock: FakeClock) -> None:
    """New untracked files and a touched (unchanged) tracked file leave the tree clean."""
    make_repo(repo)
    (repo / "new.txt").write_text("untracked\n")
    readme = repo / "README"
    os.utime(readme, ns=(readme.stat().st_atime_ns, readme.stat().st_mtime_ns + 10**9))
    assert dirty() is False


def test_git_dirty_in_a_repo_without_commits(repo: Path, clock: FakeClock) -> None:
    """Without any commit: clean when nothing is staged, dirty once a file is staged."""
    make_repo(repo, commit=False)
    assert dirty() is False
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    info = environment.git_info()
    assert info == {"branch": "main", "commit": None, "remote": None, "dirty": True}


def test_git_dirty_is_none_without_git(
    repo: Path, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no ``git`` executable is on PATH, ``dirty`` is None and the rest is still read."""
    make_repo(repo)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = environment.git_info()
    assert info is not None
    assert info["dirty"] is None
    assert info["branch"] == "main"


# ---------------------------------------------------------------- packages and system


def test_pip_freeze_lines_are_sorted_requirements() -> None:
    """``pip_freeze()`` gives one requirement per package, sorted by name, without pip."""
    lines = [line for line in environment.pip_freeze().splitlines() if not line.startswith("#")]
    named = [line for line in lines if not line.startswith("-e ")]
    assert named
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(===?| @ )\S+", line) for line in named)
    names = [re.split(r"===?| @ ", line)[0].lower() for line in named]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert "pip" not in names


def pip_freeze_output(*args: str) -> str:
    """What ``pip freeze`` prints in this interpreter (stdout, without the last newline)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", *args], capture_output=True, text=True, check=True
    )
    return proc.stdout.rstrip("\n")


def test_pip_freeze_matches_pip() -> None:
    """The package list is exactly what ``pip freeze`` prints, editable installs included."""
    theirs = pip_freeze_output()
    assert theirs, "pip freeze listed nothing"
    assert environment.pip_freeze() == theirs


# A tiny PEP 517/660 build backend: test packages install offline, with no setuptools.
BACKEND = (Path(__file__).parent / "tiny_build_backend.py").read_text()


def make_package(folder: Path, name: str) -> Path:
    """A one-module project ``name`` 1.0 in ``folder`` that pip can build and install offline."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    )
    (folder / "NAME").write_text(f"{name} 1.0\n")
    (folder / "backend.py").write_text(BACKEND)
    (folder / f"{name.replace('-', '_')}.py").write_text("x = 1\n")
    return folder


def pip(*args: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            *args,
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ],
        check=True,
        capture_output=True,
    )


def test_direct_url_installs_are_frozen_as_pip_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folder, wheel, VCS and editable installs (PEP 610) give pip freeze's exact lines."""
    monkeypatch.delenv("GIT_DIR", raising=False)
    target = tmp_path / "site"
    src = tmp_path / "src"
    pip("install", "--target", str(target), str(make_package(src / "alpha", "alpha-pkg")))
    pip("wheel", "-w", str(tmp_path / "wheels"), str(make_package(src / "beta", "beta-pkg")))
    (wheel,) = (tmp_path / "wheels").iterdir()
    pip("install", "--target", str(target), str(wheel))
    make_repo(make_package(src / "gamma", "gamma-pkg"))
    git(src / "gamma", "add", "-A")
    git(src / "gamma", "commit", "-q", "-m", "gamma")
    pip("install", "--target", str(target), f"git+{(src / 'gamma').as_uri()}")
    delta = make_package(src / "repo" / "python" / "delta", "delta-pkg")
    make_repo(src / "repo", remote="git@example.com:team/repo.git")
    git(src / "repo", "add", "-A")
    git(src / "repo", "commit", "-q", "-m", "delta")
    pip("install", "--target", str(target), "-e", str(delta))
    pip("install", "--target", str(target), "-e", str(make_package(src / "eps", "eps-pkg")))
    make_repo(make_package(src / "zeta", "zeta-pkg"))  # a checkout with no remote
    pip("install", "--target", str(target), "-e", str(src / "zeta"))

    ours = environment._read_packages([str(target)])[0]
    assert ours == pip_freeze_output("--path", str(target))
    lines = ours.splitlines()
    commit = git(src / "repo", "rev-parse", "HEAD")
    assert (
        f"-e git+ssh://git@example.com/team/repo.git@{commit}#egg=delta_pkg"
        "&subdirectory=python/delta" in lines
    )
    assert (
        f"gamma-pkg @ git+{(src / 'gamma').as_uri()}@"
        f"{git(src / 'gamma', 'rev-parse', 'HEAD')}" in lines
    )
    assert f"alpha-pkg @ {(src / 'alpha').as_uri()}" in lines
    assert any(line.startswith(f"beta-pkg @ {wheel.as_uri()}#sha256=") for line in lines)
    assert f"-e {src / 'eps'}" in lines

    # a commit in an editable install's repository shows in the next capture
    real = environment._read_packages
    monkeypatch.setattr(environment, "_read_packages", lambda: real([str(target)]))
    environment.refresh()
    assert environment.pip_freeze() == ours
    git(src / "repo", "commit", "-q", "--allow-empty", "-m", "second")
    second = git(src / "repo", "rev-parse", "HEAD")
    assert (
        f"-e git+ssh://git@example.com/team/repo.git@{second}#egg=delta_pkg"
        "&subdirectory=python/delta" in environment.pip_freeze().splitlines()
    )
    assert environment.pip_freeze() == pip_freeze_output("--path", str(target))
    environment.refresh()


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("2023.07.22", "2023.7.22"),
        ("1.0-1", "1.0.post1"),
        ("1.0.0-Beta2", "1.0.0b2"),
        ("v1.2RC", "1.2rc0"),
        ("1!2.0.dev", "1!2.0.dev0"),
        ("1.0+Ubuntu-1", "1.0+ubuntu.1"),
        ("0!1.0", "1.0"),
        ("not a version", None),
    ],
)
def test_versions_are_printed_in_normal_form(raw: str, normal: str | None) -> None:
    """Like pip, versions print in PEP 440 normal form (invalid ones as ``name===raw``)."""
    assert environment._normal_version(raw) == normal
    expected = f"p=={normal}" if normal is not None else f"p==={raw}"
    assert environment._name_version("p", raw) == expected


def test_pip_freeze_is_cached_until_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package list is read once per process; ``refresh()`` forgets it."""
    calls: list[int] = []
    real = environment._read_packages

    def counting() -> object:
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
    real = environment._remote_urls

    def counting(common: Path) -> dict[str, str]:
        reads.append(common)
        return real(common)

    monkeypatch.setattr(environment, "_remote_urls", counting)
    for _ in range(5):
        environment.git_info()
    assert reads == []
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    info = environment.git_info()
    assert len(reads) == 1
    assert info is not None
    assert info["commit"] == git(repo, "rev-parse", "HEAD")
