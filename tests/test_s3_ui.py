"""The web view of an ``s3://`` root, through Starlette's test client, on SeaweedFS.

The same API as for a folder: experiments of a prefix, runs with their tags,
one run with its artefacts (downloaded on demand) and metrics; a bucket is
looked at every few seconds, and a new run or a changed tag appears.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("boto3")

from starlette.testclient import TestClient

from digital_experiments import experiment
from digital_experiments.ui import _index, create_app

from .servers import Server
from .test_cli import cli
from .test_ui_api import PNG, fit


@pytest.fixture
def bucket(server: Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A prefix with the experiment ``fit`` (three runs, one failed)."""
    prefix = server.url()
    run = experiment(root=f"{prefix}/fit", backend="json")(fit)
    run(0.1)
    run(0.3, 1)
    with pytest.raises(ValueError, match="diverges"):
        run(5.0)
    run.tag(run.observations()[0].id, best=True)
    return prefix, run


def test_the_view_of_a_bucket_lists_runs_tags_artefacts_and_metrics(bucket: Any) -> None:
    prefix, run = bucket
    ids = [o.id for o in run.observations(status="all")]
    with TestClient(create_app(prefix, hosts=["testserver"])) as client:
        (fit_,) = client.get("/api/experiments").json()["experiments"]
        assert fit_["name"] == "fit"
        assert fit_["runs"] == 3
        assert fit_["statuses"] == {"completed": 2, "failed": 1}

        rows = client.get("/api/experiments/fit/runs").json()["rows"]
        assert sorted(row["id"] for row in rows) == sorted(ids)
        tagged = {row["id"]: row.get("tags.best") for row in rows}
        assert tagged[ids[0]] is True

        shown = client.get(f"/api/experiments/fit/runs/{ids[0]}").json()
        assert shown["config"] == {"lr": 0.1, "depth": 2}
        assert shown["tags"] == {"best": True}
        assert sorted(a["path"] for a in shown["artefacts"]) == ["curve.png", "notes/log.txt"]
        image = client.get(f"/api/experiments/fit/runs/{ids[0]}/artefacts/curve.png")
        assert image.status_code == 200
        assert image.content == PNG

        curves = client.get(f"/api/experiments/fit/runs/{ids[0]}/metrics").json()["metrics"]
        assert curves["loss"]["values"] == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_the_index_of_a_bucket_sees_a_new_run_and_a_changed_tag(
    bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look lists records and annotations with their versions, so a rewritten tag
    is seen without any mtime; between two looks (REMOTE_INTERVAL) nothing is asked."""
    prefix, run = bucket
    first = run.observations()[0].id
    index = _index.RunIndex(f"{prefix}/fit")
    assert index.refresh()
    assert len(index.snapshot()) == 3
    run(0.02)
    run.tag(first, best=False)
    assert not index.refresh()  # too soon: the bucket is not asked
    monkeypatch.setattr(_index, "REMOTE_INTERVAL", 0.0)
    assert index.refresh()
    rows = {row["id"]: row for row in index.snapshot()}
    assert len(rows) == 4
    assert rows[first]["tags.best"] is False
    version = index.version
    assert not index.refresh()  # asked again: nothing changed
    assert index.version == version


def test_the_command_serves_a_bucket_and_refuses_an_empty_prefix(server: Server) -> None:
    empty = server.url()
    done = cli("ui", f"{empty}/nothing")
    assert done.returncode == 2
    assert "No folder" in done.stderr


def test_the_ui_command_serves_a_bucket_until_ctrl_c(bucket: Any) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    prefix, _ = bucket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "digital_experiments", "ui", prefix, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once it accepts connections
        assert f":{port}/" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments") as answer:
            body = answer.read()
        assert b'"name": "fit"' in body
        assert b'"runs": 3' in body
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
