"""The web view against hostile or odd input (issue 21): other Host names, script
in artefacts, untrusted pickles, records whose row cannot be built, changes made
while it runs, bad query parameters and huge results."""

from __future__ import annotations

import http.client
import json
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from digital_experiments import current_dir, experiment
from digital_experiments._read import query as _query
from digital_experiments._runs.annotations import note, tag
from digital_experiments._runs.observation import Observation
from digital_experiments._store.local import LocalStore
from digital_experiments.ui import create_app
from digital_experiments.ui._index import RunIndex

from .conftest import Touch
from .test_ui_api import fit, make_root

DEADLINE = 60  # seconds to wait for a condition on a shared machine
OLD_ID = "2020-01-01_00-00-00_000000"


def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def ids_of(run: Any) -> list[str]:
    return [o.id for o in run.observations(status="all")]


def app_client(root: Path, **options: Any) -> TestClient:
    return TestClient(create_app(root, hosts=["testserver"], **options))


class UI:
    """A real ``digital-experiments ui`` process on a free port, stopped by Ctrl-C."""

    def __init__(self, root: Path, *options: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [
            sys.executable,
            "-m",
            "digital_experiments",
            "ui",
            str(root),
            "--port",
            str(self.port),
            *options,
        ]
        self.stderr = ""

    def __enter__(self) -> UI:
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

        def listening() -> bool:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    return True
            except OSError:
                return False

        eventually(listening, "the server listens")
        return self

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        """``GET path`` with ``Host: host`` (default ``127.0.0.1:PORT``)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            connection.endheaders()
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGINT)
        _, self.stderr = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, self.stderr
        assert "Traceback" not in self.stderr


# ---------------------------------------------------------------- 1. DNS rebinding


def test_a_real_server_answers_only_its_own_host_names(tmp_path: Path) -> None:
    make_root(tmp_path / "root")
    with UI(tmp_path / "root") as ui:
        status, body = ui.get("/api/experiments", host=f"attacker.example:{ui.port}")
        assert status == 400
        assert b"fit" not in body
        assert ui.get("/", host=f"attacker.example:{ui.port}")[0] == 400
        for host in (f"127.0.0.1:{ui.port}", f"localhost:{ui.port}", f"[::1]:{ui.port}"):
            status, body = ui.get("/api/experiments", host=host)
            assert status == 200, host
            assert json.loads(body)["experiments"][0]["name"] == "fit"


def test_create_app_answers_loopback_names_unless_told_otherwise(tmp_path: Path) -> None:
    make_root(tmp_path / "root")
    with TestClient(create_app(tmp_path / "root")) as client:  # host "testserver"
        assert client.get("/api/experiments").status_code == 400
        assert client.get("http://localhost:8765/api/experiments").status_code == 200
        assert client.get("http://127.0.0.1/api/experiments").status_code == 200
    with TestClient(create_app(tmp_path / "root", hosts=["Lab.example"])) as client:
        assert client.get("http://lab.example/api/experiments").status_code == 200
        assert client.get("http://localhost/api/experiments").status_code == 400


# ---------------------------------------------------------------- 2. artefacts

PAGE = "<html><body><script>document.title = 'ran'</script></body></html>"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4"/></svg>'


def files(name: str) -> None:
    (current_dir() / "report.html").write_text(PAGE)
    (current_dir() / "plot.svg").write_text(SVG)
    (current_dir() / "data.bin").write_bytes(b"\0\1")
    (current_dir() / "log.txt").write_text("hello")


def test_artefacts_never_render_in_the_view_s_origin(tmp_path: Path) -> None:
    run = experiment(root=tmp_path / "root" / "files", backend="json")(files)
    run("x")
    (id,) = ids_of(run)
    with app_client(tmp_path / "root") as client:
        base = f"/api/experiments/files/runs/{id}/artefacts/"
        answers = {
            name: client.get(base + name)
            for name in ("report.html", "plot.svg", "data.bin", "log.txt", "nothing.html")
        }
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"] == "sandbox", name
        assert answer.headers["x-content-type-options"] == "nosniff", name
    html = answers["report.html"]
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")
    assert html.text == PAGE  # downloaded as written
    assert answers["data.bin"].headers["content-disposition"].startswith("attachment")
    svg = answers["plot.svg"]
    assert svg.headers["content-type"] == "image/svg+xml"  # still an <img> preview
    assert "content-disposition" not in svg.headers
    assert answers["log.txt"].headers["content-type"] == "text/plain; charset=utf-8"
    assert answers["nothing.html"].status_code == 404


# ---------------------------------------------------------------- 3. trust


def old_folder(root: Path, marker: Path) -> Path:
    """An experiment folder of pickle records that 3.x did not record (no .de/ids),
    tagged (which makes .de/ but not .de/ids), beside a 3.x JSON experiment."""
    make_root(root)
    folder = root / "old"
    folder.mkdir()
    record = Observation(OLD_ID, {"x": Touch(marker)}, 1, {"status": "completed"})
    (folder / f"{OLD_ID}.pkl").write_bytes(pickle.dumps(record))
    tag(LocalStore(folder), OLD_ID, {"seen": True})
    assert (folder / ".de").is_dir()
    assert not (folder / ".de" / "ids").exists()
    return folder


def test_the_view_loads_no_untrusted_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    old_folder(tmp_path / "root", marker)
    with app_client(tmp_path / "root") as client:
        found = {e["name"]: e for e in client.get("/api/experiments").json()["experiments"]}
        assert found["old"]["runs"] == 0
        assert "--trust" in found["old"]["refused"][0]
        assert found["fit"]["runs"] == 4
        assert found["fit"]["refused"] == []
        runs = client.get("/api/experiments/old/runs").json()
        assert runs["rows"] == []
        assert "loading a pickle runs any code" in runs["refused"][0]
        one = client.get(f"/api/experiments/old/runs/{OLD_ID}").json()
        assert "--trust" in one["unreadable"]
        compared = client.get("/api/experiments/old/compare", params={"ids": f"{OLD_ID},{OLD_ID}"})
        assert compared.status_code == 400
        assert "--trust" in compared.json()["error"]
        client.app.state.root.index("old").refresh()
    assert not marker.exists()
    with app_client(tmp_path / "root", trust=True) as client:
        assert marker.exists()  # trusted: loaded
        runs = client.get("/api/experiments/old/runs").json()
        assert [row["id"] for row in runs["rows"]] == [OLD_ID]
        assert runs["refused"] == []


def test_a_real_server_loads_no_untrusted_pickle_unless_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    old_folder(tmp_path / "root", marker)
    with UI(tmp_path / "root") as ui:
        for path in ("/api/experiments", "/api/experiments/old/runs"):
            assert ui.get(path)[0] == 200
        _, body = ui.get(f"/api/experiments/old/runs/{OLD_ID}")
        assert "--trust" in json.loads(body)["unreadable"]
    assert not marker.exists()
    with UI(tmp_path / "root", "--trust") as ui:
        _, body = ui.get("/api/experiments/old/runs")  # started: loaded at startup
        assert [row["id"] for row in json.loads(body)["rows"]] == [OLD_ID]
    assert marker.exists()


# ---------------------------------------------------------------- 4. odd records


def counted(x: int) -> int:
    return x * 10


@pytest.fixture
def odd_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the row of a run with ``x == 13`` raises (as an odd record might)."""
    real = _query.rows

    def rows(observations: Any, *args: Any, **kwargs: Any) -> Any:
        if any(o.config.get("x") == 13 for o in observations):
            raise RuntimeError("odd record")
        return real(observations, *args, **kwargs)

    monkeypatch.setattr(_query, "rows", rows)


def test_an_odd_record_at_startup_is_one_unreadable_run(tmp_path: Path, odd_rows: None) -> None:
    run = experiment(root=tmp_path / "root" / "counted", backend="json")(counted)
    for x in (1, 13, 2):
        run(x)
    odd = ids_of(run)[1]
    with app_client(tmp_path / "root") as client:
        data = client.get("/api/experiments/counted/runs").json()
        assert [row["config.x"] for row in data["rows"]] == [1, 2]
        assert data["unreadable"] == [{"id": odd, "error": "RuntimeError: odd record"}]
        assert client.get(f"/api/experiments/counted/runs/{odd}").json()["unreadable"]


def test_an_odd_record_later_leaves_the_others_live(tmp_path: Path, odd_rows: None) -> None:
    run = experiment(root=tmp_path / "root" / "counted", backend="json")(counted)
    run(1)
    with app_client(tmp_path / "root") as client:
        run(13)
        run(2)

        def shown() -> Any:
            data = client.get("/api/experiments/counted/runs").json()
            return data if len(data["rows"]) == 2 and data["unreadable"] else None

        data = eventually(shown, "the good run listed, the odd one unreadable")
        assert [row["config.x"] for row in data["rows"]] == [1, 2]
        assert data["unreadable"][0]["error"] == "RuntimeError: odd record"
        run(3)  # and it goes on updating
        eventually(
            lambda: len(client.get("/api/experiments/counted/runs").json()["rows"]) == 3,
            "a later run listed",
        )


def break_refresh(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Every refresh of experiment ``name``'s index fails (``OSError: disk on fire``)."""
    real = RunIndex.refresh

    def refresh(self: RunIndex) -> bool:
        if self.folder.name == name:
            raise OSError("disk on fire")
        return real(self)

    monkeypatch.setattr(RunIndex, "refresh", refresh)


def test_a_refresh_that_fails_at_startup_does_not_stop_the_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_root(tmp_path / "root")
    experiment(root=tmp_path / "root" / "broken", backend="json")(counted)(1)
    break_refresh(monkeypatch, "broken")
    with app_client(tmp_path / "root") as client:
        found = {e["name"]: e for e in client.get("/api/experiments").json()["experiments"]}
        assert found["fit"]["runs"] == 4
        assert found["broken"]["problem"] == "OSError: disk on fire"
        assert client.get("/api/experiments/broken/runs").json()["problem"] == (
            "OSError: disk on fire"
        )


def test_a_real_server_starts_over_a_record_with_list_tags(tmp_path: Path) -> None:
    run = experiment(root=tmp_path / "root" / "counted", backend="json")(counted)
    run(1)
    (id,) = ids_of(run)
    path = tmp_path / "root" / "counted" / f"{id}.json"
    record = json.loads(path.read_text())
    record["metadata"]["tags"] = ["best"]
    path.write_text(json.dumps(record))
    with UI(tmp_path / "root") as ui:
        status, body = ui.get("/api/experiments/counted/runs")
        assert status == 200
        data = json.loads(body)
        assert len(data["rows"]) + len(data["unreadable"]) == 1


# ---------------------------------------------------------------- 5. stale views


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Any]:
    ids = make_root(tmp_path / "root")
    with app_client(tmp_path / "root") as client:
        client.ids = ids
        client.root = tmp_path / "root"
        yield client


def test_tags_and_notes_added_while_it_runs_show(live: Any) -> None:
    id = live.ids[0]
    runs = "/api/experiments/fit/runs"
    missing = live.get(runs, params={"where": "tags.best == 1"})  # no run tagged yet
    assert missing.status_code == 200
    assert missing.json()["matched"] == 0
    experiment(root=live.root / "fit", backend="json")(fit).tag(id, best=1)

    def found() -> Any:
        answer = live.get(runs, params={"where": "tags.best == 1"})
        return answer.json() if answer.json()["matched"] else None

    assert [row["id"] for row in eventually(found, "tags.best queryable")["rows"]] == [id]
    tag(LocalStore(live.root / "fit"), id, {"best": 2})
    note(LocalStore(live.root / "fit"), live.ids[1], "a second look")

    def changed() -> bool:
        rows = {row["id"]: row for row in live.get(runs).json()["rows"]}
        return rows[id].get("tags.best") == 2 and rows[live.ids[1]].get("notes") == (
            "a second look"
        )

    eventually(changed, "a changed tag and a new note shown")
    tag(LocalStore(live.root / "fit"), id, {"best": None})
    eventually(lambda: "tags.best" not in live.get(runs).json()["rows"][0], "a removed tag gone")


def test_a_removed_or_renamed_experiment_goes(live: Any) -> None:
    experiment(root=live.root / "other", backend="json")(counted)(1)

    def names() -> list[str]:
        return [e["name"] for e in live.get("/api/experiments").json()["experiments"]]

    eventually(lambda: names() == ["fit", "other"], "both listed")
    (live.root / "fit").rename(live.root / "renamed")
    eventually(lambda: names() == ["other", "renamed"], "the renamed one under its name")
    assert live.get("/api/experiments/fit/runs").status_code == 404
    eventually(
        lambda: live.get("/api/experiments/renamed/runs").json()["total"] == 4,
        "the renamed one's runs",
    )
    shutil.rmtree(live.root / "other")
    eventually(lambda: names() == ["renamed"], "the removed one gone")
    assert live.get("/api/experiments/other/runs").status_code == 404


# ---------------------------------------------------------------- 6. errors


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"offset": "abc"}, "offset='abc' is not a whole number: pass a row number from 0"),
        ({"limit": "1e3"}, "limit='1e3' is not a whole number: pass 1 to 1000 rows"),
    ],
)
def test_a_bad_page_is_a_400_naming_the_value_and_the_fix(
    live: Any, params: dict[str, str], said: str
) -> None:
    answer = live.get("/api/experiments/fit/runs", params=params)
    assert answer.status_code == 400
    assert said in answer.json()["error"]


def test_a_compare_naming_an_unreadable_run_is_a_400(live: Any) -> None:
    broken = "2026-01-01_00-00-00_000000"
    (live.root / "fit" / f"{broken}.json").write_text('{"id": "half')
    for refresh in (False, True):  # whether or not the index has seen it yet
        if refresh:
            live.app.state.root.index("fit").refresh()
        ids = f"{live.ids[0]},{broken}"
        answer = live.get("/api/experiments/fit/compare", params={"ids": ids})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert f"Run {broken!r} is unreadable (JSONDecodeError" in error
        assert "compare readable runs" in error


# ---------------------------------------------------------------- 7. large results


def curve(seed: int) -> dict[str, Any]:
    return {"curve": [seed + i / 7 for i in range(100_000)], "best": seed}


def test_the_runs_table_carries_previews_of_long_values(tmp_path: Path) -> None:
    run = experiment(root=tmp_path / "root" / "curve", backend="json")(curve)
    for seed in range(40):
        run(seed)
    with app_client(tmp_path / "root") as client:
        answer = client.get("/api/experiments/curve/runs")
        assert len(answer.content) < 100_000
        rows = answer.json()["rows"]
        assert len(rows) == 40
        assert all(isinstance(r["result.curve"], str) for r in rows)
        assert rows[0]["result.curve"].startswith("[0.0, 0.14285714285714285, ")
        assert rows[0]["result.curve"].endswith("…")
        assert len(rows[0]["result.curve"]) <= 201
        assert rows[3]["result.best"] == 3  # short values whole
        whole = client.get(f"/api/experiments/curve/runs/{rows[0]['id']}").json()
        assert len(whole["result"]["curve"]) == 100_000
        assert whole["result"]["curve"][-1] == 99_999 / 7


def test_previews_cut_long_text_and_keep_short_lists(tmp_path: Path) -> None:
    def shaped(n: int) -> dict[str, Any]:
        return {"text": "x" * n, "few": [1, 2, 3], "names": {"a": [{"b": "y" * n}]}}

    experiment(root=tmp_path / "root" / "shaped", backend="json")(shaped)(300)
    with app_client(tmp_path / "root") as client:
        (row,) = client.get("/api/experiments/shaped/runs").json()["rows"]
    assert row["result.text"] == "x" * 200 + "…"
    assert row["result.few"] == [1, 2, 3]
    assert row["result.names.a"].endswith("…")
    assert row["result.names.a"].startswith('[{"b": "yyy')


def test_the_cli_warning_names_the_host_check(tmp_path: Path) -> None:
    make_root(tmp_path / "root")
    with UI(tmp_path / "root", "--host", "0.0.0.0") as ui:
        assert ui.get("/api/experiments", host=f"0.0.0.0:{ui.port}")[0] == 200
        assert ui.get("/api/experiments", host=f"attacker.example:{ui.port}")[0] == 400
    assert "addressed to 0.0.0.0 or a loopback name only" in ui.stderr
