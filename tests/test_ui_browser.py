"""The web view in a real browser: Playwright driving Debian's Chromium.

The screenshots these tests take are the ones ``docs/ui.md`` shows (saved under
``docs/_static/ui/``). Without Chromium the tests skip, except in CI
(``CI`` set), where ``.ci/run`` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
playwright = pytest.importorskip("playwright.sync_api")

from digital_experiments import current_dir, experiment  # noqa: E402
from digital_experiments._records import Observation  # noqa: E402
from digital_experiments.ui import create_app  # noqa: E402

from .test_ui_api import make_root  # noqa: E402
from .test_ui_safety import break_refresh  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).parent.parent / "docs" / "_static" / "ui"
REPO = Path(__file__).parent.parent

if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("no chromium on this machine", allow_module_level=True)

pytestmark = pytest.mark.slow


class Server:
    """uvicorn serving the app in a thread, on a free port."""

    def __init__(self, root: Path) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            create_app(root), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:  # set by uvicorn once it listens
            assert self.thread.is_alive(), "the server died while starting"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


playwright.expect.set_options(timeout=30_000)  # a shared CI machine can be slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path: Path, browser: Any) -> Iterator[tuple[Any, Server, list[str], Path]]:
    root = tmp_path / "root"
    ids = make_root(root)
    with Server(root) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(30_000)
        yield page, server, ids, root
        page.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_experiments_to_runs_to_one_run(site: Any) -> None:
    page, server, ids, _ = site
    expect = playwright.expect
    page.goto(server.url)
    row = page.locator('tr[data-experiment="fit"]')
    expect(row).to_contain_text("4")
    expect(row.locator('[data-status="failed"]')).to_be_visible()
    shot(page, "experiments")
    row.locator("a").click()
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    failed = page.locator(f'tr[data-id="{ids[-1]}"] [data-status="failed"]')
    expect(failed).to_have_attribute("title", "ValueError: lr=5.0 diverges")  # on hover
    expect(page.locator("#x")).to_have_value("config.lr")
    expect(page.locator("#y")).to_have_value("result.loss")
    page.locator("#plot").click()
    # one point per run with both values: the failed run has no result.loss
    expect(page.locator("#scatter .scatterlayer .point")).to_have_count(3)
    shot(page, "runs")
    page.locator(f'tr[data-id="{ids[0]}"] a').click()
    expect(page.locator("h1")).to_have_text(ids[0])
    expect(page.locator("#code .kw").first).to_have_text("def")  # highlighted
    image = page.locator('[data-artefact="curve.png"] img')
    expect(image).to_be_visible()
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 2
    expect(page.locator('[data-artefact="notes/log.txt"] pre')).to_have_text("lr=0.1\n")
    expect(page.locator("#run-curves .scatterlayer .trace")).to_have_count(1)
    shot(page, "run")


def test_sort_and_filter(site: Any) -> None:
    page, server, ids, _ = site
    expect = playwright.expect
    page.goto(server.url + "#/e/fit")
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    header = page.locator('th[data-column="result.loss"]')
    header.click()  # ascending
    expect(header).to_have_class("sorted-asc")
    first = page.locator("#runs tbody tr").first
    expect(first).to_have_attribute("data-id", ids[2])  # loss 0.04
    header.click()  # descending
    expect(page.locator("#runs tbody tr").first).to_have_attribute("data-id", ids[1])  # 0.3
    page.locator("#where").fill("config.lr < 0.2")
    page.locator("#where").press("Enter")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    expect(page.locator("#counts")).to_have_text("runs 1–2 of 2 (4 in all)")
    page.locator("#plot").click()
    expect(page.locator("#scatter .scatterlayer .point")).to_have_count(2)
    page.locator("#where").fill("config.lrr < 1")
    page.locator("#apply").click()
    expect(page.locator("#where-error")).to_contain_text("Unknown field 'config.lrr'")


def test_compare_two_runs(site: Any) -> None:
    page, server, ids, _ = site
    expect = playwright.expect
    page.goto(server.url + "#/e/fit")
    page.locator(f'input[data-select="{ids[0]}"]').check()
    page.locator(f'input[data-select="{ids[1]}"]').check()
    page.locator("#plot").click()
    expect(page.locator("#curves .scatterlayer .trace")).to_have_count(2)  # their loss curves
    page.locator("#compare").click()
    table = page.locator("#compare-table")
    expect(table.locator('tr[data-field="config.lr"] td')).to_have_text(["config.lr", "0.1", "0.3"])
    expect(table.locator('tr[data-field="code"]')).to_have_count(0)
    shot(page, "compare")


def test_a_traversal_url_is_refused(site: Any) -> None:
    page, server, ids, _ = site
    for path in ("..%2F..%2F..%2Fetc%2Fpasswd", "../../../../etc/passwd"):
        response = page.goto(f"{server.url}api/experiments/fit/runs/{ids[0]}/artefacts/{path}")
        assert response.status == 404
        assert "root:" not in page.content()


# each sets a marker in the view's origin if its script runs there
SCRIPT = "localStorage.setItem('ran', 'yes'); fetch('/api/experiments?ran=yes');"
HTML = f"<html><body><script>{SCRIPT} document.title = 'ran';</script></body></html>"
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
    f"<script>{SCRIPT} document.documentElement.setAttribute('data-ran', 'yes');</script>"
    '<rect width="4" height="4"/></svg>'
)


def scripted(x: int) -> int:
    (current_dir() / "report.html").write_text(HTML)
    (current_dir() / "plot.svg").write_text(SVG)
    return x


def test_an_artefact_s_script_never_runs_in_the_view(site: Any) -> None:
    page, server, _, root = site
    expect = playwright.expect
    run = experiment(root=root / "files", backend="json")(scripted)
    run(1)
    (id,) = [o.id for o in run.observations()]
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    base = f"{server.url}api/experiments/files/runs/{id}/artefacts/"
    page.goto(base + "plot.svg")  # opened on its own: drawn, in a sandbox
    assert page.evaluate("document.documentElement.getAttribute('data-ran')") is None
    # an HTML artefact is downloaded, not shown (goto says "Download is starting")
    with page.expect_download() as download, contextlib.suppress(playwright.Error):
        page.goto(base + "report.html")
    assert download.value.suggested_filename == "report.html"
    page.goto(f"{server.url}#/e/files/run/{id}")
    image = page.locator('[data-artefact="plot.svg"] img')
    expect(image).to_be_visible()  # the SVG still previews
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 4
    assert page.evaluate("localStorage.getItem('ran')") is None
    assert page.title() == "digital-experiments"
    assert not [url for url in requested if "ran=" in url]


def test_a_compare_naming_an_unreadable_run_says_so(site: Any) -> None:
    page, server, ids, root = site
    broken = "2026-01-01_00-00-00_000000"
    (root / "fit" / f"{broken}.json").write_text('{"id": "half')
    page.goto(f"{server.url}#/e/fit/compare/{ids[0]},{broken}")
    error = page.locator("main .error")
    playwright.expect(error).to_contain_text(f"Run '{broken}' is unreadable")
    playwright.expect(error).to_contain_text("compare readable runs")


def test_folders_not_shown_say_why(site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    page, server, _, root = site
    expect = playwright.expect
    (root / "old").mkdir()  # pickles that 3.x did not record (no .de/ids)
    record = Observation("2020-01-01_00-00-00_000000", {"x": 1}, 1, {})
    (root / "old" / f"{record.id}.pkl").write_bytes(pickle.dumps(record))
    break_refresh(monkeypatch, "broken")
    experiment(root=root / "broken", backend="json")(scripted)(1)
    page.goto(server.url + "#/e/old")
    expect(page.locator("#notice")).to_contain_text("pass --trust")
    expect(page.locator("#runs tbody tr")).to_have_count(0)
    page.goto(server.url + "#/e/broken")
    expect(page.locator("#notice")).to_contain_text("OSError: disk on fire")
    page.goto(server.url)
    expect(page.locator('tr[data-experiment="old"] [data-status="refused"]')).to_be_visible()
    expect(page.locator('tr[data-experiment="broken"] [data-status="error"]')).to_be_visible()


SWEEP = """
import sys, time
from pathlib import Path
from digital_experiments import experiment, log

root, gate = sys.argv[1], Path(sys.argv[2])

@experiment(root=root, backend="json")
def live(x):
    log(x=float(x))
    if x == 2:
        while not gate.exists():  # held running until the test has seen it
            time.sleep(0.01)
    return x * 10

live.sweep({"x": [1, 2]}, progress=False)
"""


def test_a_sweep_in_another_process_shows_up_live(site: Any, tmp_path: Path) -> None:
    page, server, _, root = site
    expect = playwright.expect
    gate = tmp_path / "gate"
    sweep = subprocess.Popen(
        [sys.executable, "-c", SWEEP, str(root / "live"), str(gate)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        page.goto(server.url + "#/e/live")  # the experiment appears as the sweep starts
        expect(page.locator("#live")).to_have_text("live")
        rows = page.locator("#runs tbody tr")
        expect(rows).to_have_count(2)  # new rows arrive without reloading
        expect(page.locator('#runs [data-status="running"]')).to_have_count(1)
        expect(page.locator('#runs [data-status="completed"]')).to_have_count(1)
        shot(page, "live")
        gate.touch()
        expect(page.locator('#runs [data-status="completed"]')).to_have_count(2)
        expect(page.locator('#runs [data-status="running"]')).to_have_count(0)
    finally:
        gate.touch()
        _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, stderr
