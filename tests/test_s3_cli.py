"""The command line on ``s3://`` roots, run for real against SeaweedFS.

Every command that takes ROOT takes ``s3://bucket/prefix/<name>`` (and ``list``
and ``show`` a prefix of experiments, as ``$DE_ROOT`` gives): the runs, tags,
trash and exports are the bucket's. A bad setting exits non-zero with one line
that names it.
"""

from __future__ import annotations

import json
import pickle

import pytest

from digital_experiments import current_dir, experiment, log
from digital_experiments._store.s3 import S3Store

from .servers import Server
from .test_cli import cli

pytest.importorskip("boto3")


def fit(lr: float) -> dict[str, float]:
    (current_dir() / "weights.txt").write_text(f"lr={lr}")
    log(loss=lr * 2)
    return {"loss": lr * 2}


def other(x: int) -> int:
    return x


@pytest.fixture
def bucket(server: Server, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """A prefix of two experiments: ``fit`` (two runs) and ``other`` (one)."""
    prefix = server.url()
    monkeypatch.setenv("DE_ROOT", prefix)
    run = experiment(fit)
    run(0.1)
    run(0.2)
    experiment(other)(7)
    return prefix, sorted(o.id for o in run.observations())


def test_list_a_prefix_of_experiments_and_one_experiment(bucket: tuple[str, list[str]]) -> None:
    prefix, ids = bucket
    done = cli("list", prefix)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:3] == ["fit", "2", "2"]
    assert lines[2].split()[:3] == ["other", "1", "1"]
    assert lines[-1] == "2 experiments, 3 runs"

    done = cli("list", f"{prefix}/fit", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in json.loads(done.stdout)] == ids
    # $DE_ROOT names the prefix when ROOT is left out
    done = cli("list", de_root=prefix)
    assert done.returncode == 0, done.stderr
    assert "2 experiments, 3 runs" in done.stdout


def test_show_finds_a_run_among_the_experiments_of_a_prefix(
    bucket: tuple[str, list[str]],
) -> None:
    prefix, ids = bucket
    done = cli("show", ids[1][:24], "--json", de_root=prefix)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["id"] == ids[1]
    assert shown["config"] == {"lr": 0.2}
    assert shown["artefacts"] == [f"storage/{ids[1]}/weights.txt"]  # downloaded to show
    done = cli("show", ids[0], "--call", de_root=prefix)
    assert done.stdout.strip() == "fit(lr=0.1)"


def test_diff_tag_and_export_read_and_write_the_bucket(bucket: tuple[str, list[str]]) -> None:
    prefix, ids = bucket
    root = f"{prefix}/fit"
    done = cli("diff", root, *ids)
    assert done.returncode == 0, done.stderr
    assert "config.lr" in done.stdout

    done = cli("tag", root, ids[0], "best=true")
    assert done.returncode == 0, done.stderr
    annotations = json.loads(S3Store(root).read(f".de/annotations/{ids[0]}.json"))
    assert annotations["tags"] == {"best": True}

    done = cli("export", root, "--format", "json")
    assert done.returncode == 0, done.stderr
    exported = {row["id"]: row for row in json.loads(done.stdout)}
    assert exported[ids[0]]["tags"] == {"best": True}
    assert exported[ids[1]]["result"] == {"loss": 0.4}


def test_rm_and_the_trash_on_a_bucket(bucket: tuple[str, list[str]]) -> None:
    prefix, ids = bucket
    root = f"{prefix}/fit"
    # without a terminal, rm refuses to ask and deletes nothing
    done = cli("rm", root, ids[0])
    assert done.returncode == 2
    assert len(json.loads(cli("list", root, "--format", "json").stdout)) == 2

    done = cli("rm", root, ids[0], "--yes")
    assert done.returncode == 0, done.stderr
    assert f"trash {root} list" in done.stdout
    assert [r["id"] for r in json.loads(cli("list", root, "--format", "json").stdout)] == ids[1:]
    assert cli("trash", root, "list").stdout.splitlines()[0] == ids[0]

    done = cli("trash", root, "restore", ids[0])
    assert done.returncode == 0, done.stderr
    assert len(json.loads(cli("list", root, "--format", "json").stdout)) == 2

    assert cli("rm", root, ids[0], "--yes").returncode == 0
    done = cli("trash", root, "purge", "--yes")
    assert done.returncode == 0, done.stderr
    assert not [key for key in S3Store(root).walk("") if ids[0] in key]


def test_a_prefix_with_nothing_under_it_exits_2(server: Server) -> None:
    empty = server.url()
    done = cli("list", f"{empty}/fit")
    assert done.returncode == 2
    assert f"No experiment folder at '{empty}/fit'" in done.stderr
    assert "s3://bucket/prefix/<function name>" in done.stderr


def test_wrong_credentials_exit_2_naming_them(
    bucket: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, _ = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    done = cli("list", f"{prefix}/fit")
    assert done.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_another_url_scheme_exits_2_naming_the_roots_that_work() -> None:
    done = cli("list", "gs://bucket/runs")
    assert done.returncode == 2
    assert "s3://bucket/prefix" in done.stderr


def test_the_web_view_of_a_bucket_with_wrong_credentials_exits_2(
    bucket: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before serving, ui asks the bucket: a refused key is one line, exit 2
    (the app itself is tested in test_s3_ui.py)."""
    prefix, _ = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    done = cli("ui", prefix)
    assert done.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_pickles_planted_in_a_bucket_are_not_loaded_without_trust(server: Server) -> None:
    """A prefix that digital-experiments did not record (no environments) holds
    pickles that would run code when loaded: refused, unless --trust."""
    root = server.url()
    store = S3Store(root)
    planted = {"id": "2026-01-01_12-00-00_000000", "config": {}, "result": 1, "metadata": {}}
    store.put("2026-01-01_12-00-00_000000.pkl", pickle.dumps(planted))
    done = cli("list", root)
    assert done.returncode == 2
    assert "--trust" in done.stderr
    assert ".de/environments/" in done.stderr
    done = cli("list", root, "--trust", "--format", "json", "--status", "all")
    assert done.returncode == 0, done.stderr
