"""The web view's JSON API, through Starlette's test client (no browser)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from digital_experiments import current_dir, experiment, log, query
from digital_experiments._runs.annotations import note
from digital_experiments._runs.observation import Observation
from digital_experiments._store.local import LocalStore
from digital_experiments.ui import create_app
from digital_experiments.ui._index import RunIndex, extras_of

# a 2 x 2 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAwMDAwMAAAAwAAd7KxjgAAAAASUVORK5CYII="
)


def fit(lr: float, depth: int = 2) -> dict[str, float]:
    for step in range(4):
        log(loss=lr * (4 - step))
    (current_dir() / "curve.png").write_bytes(PNG)
    (current_dir() / "notes" / "log.txt").parent.mkdir()
    (current_dir() / "notes" / "log.txt").write_text(f"lr={lr}\n")
    if lr > 1:
        raise ValueError(f"lr={lr} diverges")
    return {"loss": lr * depth}


def make_root(root: Path) -> list[str]:
    f = experiment(root=root / "fit", backend="json")(fit)
    for lr, depth in [(0.1, 2), (0.3, 1), (0.01, 4)]:
        f(lr, depth)
    with pytest.raises(ValueError, match="diverges"):
        f(5.0)
    return [run.id for run in f.observations(status="all")]


@pytest.fixture
def client(tmp_path: Path) -> Any:
    ids = make_root(tmp_path / "root")
    with TestClient(create_app(tmp_path / "root", hosts=["testserver"])) as test_client:
        test_client.ids = ids
        test_client.root = tmp_path / "root"
        yield test_client


def test_experiments_lists_counts_by_status(client: Any) -> None:
    data = client.get("/api/experiments").json()
    (fit_,) = data["experiments"]
    assert fit_["name"] == "fit"
    assert fit_["runs"] == 4
    assert fit_["statuses"] == {"completed": 3, "failed": 1}
    assert fit_["latest"] == client.ids[-1]


def test_runs_are_sorted_filtered_and_paged(client: Any) -> None:
    data = client.get("/api/experiments/fit/runs", params={"sort": "-result.loss"}).json()
    assert data["total"] == data["matched"] == 4
    assert [row["result.loss"] for row in data["rows"][:3]] == [0.3, 0.2, 0.04]
    assert data["rows"][3]["status"] == "failed"
    assert data["rows"][3]["error"] == "ValueError: lr=5.0 diverges"
    assert {"config.lr", "result.loss", "metrics.loss"} <= set(data["numeric"])
    assert data["columns"][:3] == ["id", "status", "duration"]
    page = client.get("/api/experiments/fit/runs", params={"offset": 1, "limit": 2}).json()
    assert [row["id"] for row in page["rows"]] == client.ids[1:3]
    only = client.get("/api/experiments/fit/runs", params={"where": "config.lr < 0.2"}).json()
    assert only["matched"] == 2
    assert {row["config.lr"] for row in only["rows"]} == {0.1, 0.01}


def test_a_bad_query_is_a_400_pointing_at_it(client: Any) -> None:
    response = client.get("/api/experiments/fit/runs", params={"where": "config.lrr < 1"})
    assert response.status_code == 400
    assert "Unknown field 'config.lrr'" in response.json()["error"]
    assert "^^^^^^^^^^" in response.json()["error"]
    assert client.get("/api/experiments/nope/runs").status_code == 404


def test_points_give_whole_columns_of_completed_runs_for_plots(client: Any) -> None:
    """The plots get every completed run; a failed one is counted, not plotted."""
    data = client.get(
        "/api/experiments/fit/points", params={"columns": "config.lr,result.loss"}
    ).json()
    assert data["ids"] == client.ids[:3]
    assert data["config.lr"] == [0.1, 0.3, 0.01]
    assert data["result.loss"] == [0.2, 0.3, 0.04]
    assert (data["matched"], data["plotted"], data["shown"]) == (4, 3, 3)
    assert data["left_out"] == {"failed": 1}


def test_a_query_means_in_the_view_what_it_means_in_python(client: Any) -> None:
    """Rows are built as Python and the CLI build them, ``metadata.*`` included."""
    backend = query.open_root(client.root / "fit")
    for where, sort in [
        ("metadata.status == 'failed'", "id"),
        ("metadata.timing.duration > 0 and config.lr < 1", "-metadata.timing.duration"),
        ("tags.best == true", "id"),  # no run tagged yet: matches nothing
    ]:
        expected = [o.id for o in query.select(backend, status="all", where=where, sort=sort)]
        answer = client.get("/api/experiments/fit/runs", params={"where": where, "sort": sort})
        assert answer.status_code == 200, answer.json()
        assert [row["id"] for row in answer.json()["rows"]] == expected, where
    failed = client.get(
        "/api/experiments/fit/runs", params={"where": "metadata.status == 'failed'"}
    )
    assert [row["id"] for row in failed.json()["rows"]] == [client.ids[-1]]


def test_points_are_a_sample_keeping_both_ends_and_the_ticked_runs(tmp_path: Path) -> None:
    f = experiment(root=tmp_path / "many", backend="json")(fit)
    for n in range(30):
        f(0.01 * (n + 1), n % 3 + 1)
    ids = [o.id for o in f.observations()]
    with TestClient(create_app(tmp_path, hosts=["testserver"])) as client:
        params = {"columns": "config.lr,result.loss", "limit": 10, "keep": "result.loss"}
        data = client.get("/api/experiments/many/points", params={**params, "ids": ids[7]}).json()
    assert (data["matched"], data["plotted"], data["shown"]) == (30, 30, 10)
    losses = [0.01 * (n + 1) * (n % 3 + 1) for n in range(30)]
    best, worst = ids[losses.index(min(losses))], ids[losses.index(max(losses))]
    assert {best, worst, ids[7]} <= set(data["ids"])
    assert data["ids"] == sorted(data["ids"])  # in the runs' order
    assert data["result.loss"] == [losses[ids.index(i)] for i in data["ids"]]


def test_curves_are_named_by_what_differs_and_thinned(client: Any) -> None:
    a, b, c = client.ids[:3]
    data = client.get(
        "/api/experiments/fit/curves", params={"ids": f"{a},{b},{c}", "points": 2}
    ).json()
    assert data["labels"] == {a: "lr=0.1, depth=2", b: "lr=0.3, depth=1", c: "lr=0.01, depth=4"}
    assert data["metrics"]["loss"][a] == {"steps": [0, 3], "values": [0.4, 0.1]}  # last kept
    same = client.get("/api/experiments/fit/curves", params={"ids": a}).json()
    assert same["labels"] == {a: a}  # nothing differs: the id
    bad = client.get("/api/experiments/fit/curves", params={"ids": "../x"})
    assert bad.status_code == 400
    assert "?ids=ID1,ID2" in bad.json()["error"]


def test_a_running_run_s_elapsed_time_counts_from_its_id_in_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids are UTC: in any time zone, a run claimed now has run for about no time."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+5:30
    time.tzset()
    try:
        id = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S_%f")
        running = Observation(id, {"x": 1}, None, {"status": "running"})
        started = extras_of(running, "running", LocalStore(tmp_path))["started"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert abs(started - time.time()) < 60


def test_one_run_in_full_with_artefacts_and_metrics(client: Any) -> None:
    id = client.ids[0]
    run = client.get(f"/api/experiments/fit/runs/{id}").json()
    assert run["config"] == {"lr": 0.1, "depth": 2}
    assert run["status"] == "completed"
    assert "def fit" in run["code"]
    assert {a["path"]: a["kind"] for a in run["artefacts"]} == {
        "curve.png": "image",
        "notes/log.txt": "text",
    }
    image = client.get(f"/api/experiments/fit/runs/{id}/artefacts/curve.png")
    assert image.headers["content-type"] == "image/png"
    assert image.content == PNG
    assert client.get(f"/api/experiments/fit/runs/{id}/artefacts/notes/log.txt").text == "lr=0.1\n"
    metrics = client.get(f"/api/experiments/fit/runs/{id}/metrics").json()["metrics"]
    assert metrics["loss"]["steps"] == [0, 1, 2, 3]
    failed = client.get(f"/api/experiments/fit/runs/{client.ids[-1]}").json()
    assert "ValueError: lr=5.0 diverges" in failed["error"]["traceback"]
    assert (run["tags"], run["notes"]) == ({}, [])
    experiment(root=client.root / "fit", backend="json")(fit).tag(id, best=True)
    note(LocalStore(client.root / "fit"), id, "the one to beat")
    run = client.get(f"/api/experiments/fit/runs/{id}").json()
    assert (run["tags"], run["notes"]) == ({"best": True}, ["the one to beat"])
    assert "tags" not in run["metadata"]


def test_artefact_paths_cannot_leave_the_run(client: Any, tmp_path: Path) -> None:
    id = client.ids[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    folder = client.root / "fit" / "storage" / id
    (folder / "link.txt").symlink_to(secret)
    (folder / "up").symlink_to(tmp_path)
    other = client.ids[1]
    for path in (
        "../../../secret.txt",
        "..%2F..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "link.txt",
        "up/secret.txt",
        f"../{other}/curve.png",
        "notes",
        "nothing.txt",
    ):
        response = client.get(f"/api/experiments/fit/runs/{id}/artefacts/{path}")
        assert response.status_code == 404, path
        assert "top secret" not in response.text
    listed = client.get(f"/api/experiments/fit/runs/{id}").json()["artefacts"]
    assert "link.txt" not in [a["path"] for a in listed]
    assert client.get("/api/experiments/fit/runs/..%2F..%2Fsecret").status_code == 404


def test_compare_gives_the_fields_that_differ(client: Any) -> None:
    a, b = client.ids[:2]
    data = client.get("/api/experiments/fit/compare", params={"ids": f"{a},{b}"}).json()
    assert data["ids"] == [a, b]
    pairs = zip(data["values"][a], data["values"][b], strict=True)
    values = dict(zip(data["fields"], pairs, strict=True))
    assert values["config.lr"] == (0.1, 0.3)
    assert "code" not in values
    assert client.get("/api/experiments/fit/compare", params={"ids": a}).status_code == 400


def test_a_corrupt_record_shows_as_unreadable(client: Any) -> None:
    broken = "2026-01-01_00-00-00_000000"
    (client.root / "fit" / f"{broken}.json").write_text('{"id": "half')
    index = client.app.state.root.index("fit")
    index.refresh()
    data = client.get("/api/experiments/fit/runs").json()
    assert [u["id"] for u in data["unreadable"]] == [broken]
    assert data["total"] == 4
    run = client.get(f"/api/experiments/fit/runs/{broken}").json()
    assert run["unreadable"].startswith("JSONDecodeError")
    assert client.get("/api/experiments").json()["experiments"][0]["unreadable"] == 1


def test_nothing_writes(client: Any) -> None:
    """Every route answers GET only."""
    for route in client.app.routes:
        methods = getattr(route, "methods", None) or {"GET", "HEAD"}
        assert methods <= {"GET", "HEAD"}, route.path
    assert client.post("/api/experiments").status_code == 405


def test_the_index_rereads_only_what_changed(tmp_path: Path) -> None:
    ids = make_root(tmp_path)
    index = RunIndex(tmp_path / "fit")
    assert index.refresh()
    assert len(index.snapshot()) == 4
    version = index.version
    assert not index.refresh()  # nothing changed: not even a scan
    assert index.version == version
    os.unlink(tmp_path / "fit" / f"{ids[0]}.json")
    assert index.refresh()
    assert [row["id"] for row in index.snapshot()] == ids[1:]
    assert index.version == version + 1


def test_a_slow_listing_does_not_hide_a_run_written_in_the_folders_last_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written after the listing, in the same mtime tick as the folder's
    last change, is found by the next refresh, even when the listing took longer
    than the time a folder's mtime needs to settle."""
    from digital_experiments.ui import _index

    ids = make_root(tmp_path)
    folder = tmp_path / "fit"
    index = RunIndex(folder)
    listing = index._listing
    late = folder / f"{ids[-1][:-6]}999999.json"
    stamp = os.stat(folder).st_mtime_ns
    clock = _index.time.time_ns

    def slow_listing(*args: Any) -> Any:
        found = listing(*args)
        late.write_bytes((folder / f"{ids[-1]}.json").read_bytes())
        os.utime(folder, ns=(stamp, stamp))  # the same tick as the folder's last change
        monkeypatch.setattr(_index.time, "time_ns", lambda: clock() + 3_000_000_000)
        return found

    monkeypatch.setattr(index, "_listing", slow_listing)
    os.utime(folder, ns=(stamp, stamp))
    assert index.refresh()
    assert len(index.snapshot()) == 4  # the late record came after the listing
    monkeypatch.setattr(index, "_listing", listing)
    index.refresh()
    assert len(index.snapshot()) == 5


def test_ui_command_refuses_a_missing_root_and_names_the_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "digital_experiments", "ui", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "No folder" in done.stderr


def test_the_ui_command_serves_until_ctrl_c(tmp_path: Path) -> None:
    """`digital-experiments ui ROOT` prints its URL once it answers, and exits cleanly on Ctrl-C;
    on an address other machines can reach it warns first."""
    import signal
    import socket
    import urllib.request

    make_root(tmp_path / "root")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digital_experiments",
            "ui",
            str(tmp_path / "root"),
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once it accepts connections
        assert f":{port}/" in line
        assert "Ctrl-C to stop" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments") as answer:
            body = answer.read()  # at once: no retry
        assert b'"name": "fit"' in body
    finally:
        server.send_signal(signal.SIGINT)
        out, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "reachable from other machines" in stderr
    assert "stopped" in out
    assert "Traceback" not in stderr


def test_a_first_load_reads_its_records_through_the_roots_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/performance.md says of the web view: a server starting on a root
    whose index a listing built reads no record file for its first page."""
    from digital_experiments._runs import index as read_index
    from digital_experiments._store import files

    monkeypatch.setattr(files, "RECENT_NS", -1)  # every record settled at once
    runs = read_index.MIN_NEW * 3

    @experiment(root=tmp_path / "fit")
    def fit(x: int) -> int:
        return x

    for x in range(runs):
        fit(x)
    assert len(query.load(tmp_path / "fit")) == runs  # builds the index
    read: list[str] = []
    real = files.read_bytes

    def counting(path: str) -> bytes:
        if path.endswith(".pkl") and "/.de/" not in path:
            read.append(path)
        return real(path)

    monkeypatch.setattr(files, "read_bytes", counting)
    index = RunIndex(tmp_path / "fit")
    assert index.refresh()
    assert len(index.snapshot()) == runs
    assert read == []
