"""The web view in a real browser: Playwright driving Debian's Chromium.

The screenshots these tests take are the ones ``docs/ui.md`` shows (saved under
``docs/_static/ui/``). Without Chromium the tests skip, except in CI
(``CI`` set), where ``.ci/run`` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import re
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

from digital_experiments import current_dir, experiment, log, query  # noqa: E402
from digital_experiments._runs.annotations import note  # noqa: E402
from digital_experiments._runs.observation import Observation  # noqa: E402
from digital_experiments._store.local import LocalStore  # noqa: E402
from digital_experiments.ui import create_app  # noqa: E402

from .test_ui_api import fit, make_root  # noqa: E402
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


def drawn(page: Any, *plots: str) -> None:
    """Wait until each of ``plots`` (element ids) is drawn."""
    for plot in plots or ("scatter", "parallel", "curves"):
        playwright.expect(page.locator(f"#{plot}")).to_have_attribute("data-state", "drawn")


def test_experiments_to_runs_to_one_run(site: Any) -> None:
    """The latest run is a link; the runs page plots on its own; the run page shows
    tags and notes first, then config and result as tables, then its curves."""
    page, server, ids, root = site
    expect = playwright.expect
    run = experiment(root=root / "fit", backend="json")(fit)
    run.tag(ids[0], best=True, owner="ana")
    note(LocalStore(root / "fit"), ids[0], "the one to beat")
    page.goto(server.url)
    row = page.locator('tr[data-experiment="fit"]')
    expect(row).to_contain_text("4")
    expect(row.locator('[data-status="failed"]')).to_be_visible()
    expect(row.locator(".latest a")).to_have_text(ids[-1])
    shot(page, "experiments")
    row.locator(".latest a").click()
    expect(page.locator("h1")).to_have_text(ids[-1])
    page.go_back()
    row.locator("td a").first.click()
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    failed = page.locator(f'tr[data-id="{ids[-1]}"] [data-status="failed"]')
    expect(failed).to_have_attribute("title", "ValueError: lr=5.0 diverges")  # on hover
    expect(page.locator("#x")).to_have_value("config.lr")
    expect(page.locator("#y")).to_have_value("result.loss")
    drawn(page)  # nothing to press
    expect(page.locator("#scatter .scatterlayer .point")).to_have_count(3)
    expect(page.locator("#plots-status")).to_have_text("3 completed runs; left out: 1 failed")
    page.locator("#scatter").scroll_into_view_if_needed()
    shot(page, "runs")
    page.locator(f'tr[data-id="{ids[0]}"] td.id a').click()
    expect(page.locator("h1")).to_have_text(ids[0])
    expect(page.locator('#tags [data-tag="best"]')).to_have_text("best")
    expect(page.locator('#tags [data-tag="owner"]')).to_have_text("owner=ana")
    expect(page.locator("#notes li")).to_have_text(["the one to beat"])
    expect(page.locator('#config tr[data-field="lr"] td')).to_have_text("0.1")
    expect(page.locator('#result tr[data-field="loss"] td')).to_have_text("0.2")
    tags_at = page.locator("#tags").bounding_box()["y"]
    assert tags_at < page.locator("#config").bounding_box()["y"]  # near the top
    expect(page.locator("#code .kw").first).to_have_text("def")  # highlighted
    image = page.locator('[data-artefact="curve.png"] img')
    expect(image).to_be_visible()
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 2
    expect(page.locator('[data-artefact="notes/log.txt"] pre')).to_have_text("lr=0.1\n")
    expect(page.locator("#run-curves .scatterlayer .trace")).to_have_count(1)
    shot(page, "run")


def test_plots_leave_out_failed_runs_and_redraw_when_runs_are_ticked(site: Any) -> None:
    """The failed run logged a loss, yet is in no plot; ticking a run marks it in
    the scatter and the parallel coordinates, and draws its curve."""
    page, server, ids, _ = site
    expect = playwright.expect
    page.goto(server.url + "#/e/fit")
    drawn(page)
    page.locator("#y").select_option("metrics.loss")  # the failed run has one
    page.wait_for_function(
        "document.getElementById('scatter').layout.yaxis.title.text === 'metrics.loss'"
    )
    expect(page.locator("#scatter .scatterlayer .point")).to_have_count(3)
    expect(page.locator("#plots-status")).to_have_text("3 completed runs; left out: 1 failed")
    parallel = page.locator("#parallel .parallel")
    expect(parallel).to_have_attribute("data-lines", "3")
    expect(parallel).to_have_attribute("data-ticked", "0")
    expect(page.locator("#curves .curve .scatterlayer .trace")).to_have_count(4)  # the top rows'
    page.locator(f'input[data-select="{ids[0]}"]').check()
    expect(page.locator("#scatter .scatterlayer .trace")).to_have_count(2)  # runs, ticked
    expect(parallel).to_have_attribute("data-ticked", "1")
    expect(page.locator("#curves .curve .scatterlayer .trace")).to_have_count(1)
    expect(page.locator("#curves-note")).to_have_text("Curves of the 1 ticked run.")


def test_plots_show_a_loading_sign_and_never_hold_up_the_table(site: Any) -> None:
    """plotly.js is fetched after the table is on screen; until it comes the plots
    say they are loading, and no page without a plot fetches it at all."""
    page, server, _, root = site
    expect = playwright.expect
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(server.url)
    expect(page.locator('tr[data-experiment="fit"]')).to_be_visible()
    plain_run = experiment(root=root / "plain", backend="json")(scripted)
    plain_run(1)  # no metrics
    (plain,) = [o.id for o in plain_run.observations()]
    page.goto(f"{server.url}#/e/plain/run/{plain}")
    expect(page.locator("h1")).to_have_text(plain)
    expect(page.locator('[data-artefact="plot.svg"]')).to_be_visible()
    assert not [url for url in fetched if "plotly" in url]
    held: list[Any] = []
    page.route("**/static/plotly.min.js", lambda route: held.append(route))
    with page.expect_request("**/static/plotly.min.js"):
        page.goto(server.url + "#/e/fit")
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    expect(page.locator("#plots-status")).to_have_class("muted loading")
    expect(page.locator("#plots-status")).to_have_text("drawing…")
    expect(page.locator("#scatter")).to_have_attribute("data-state", "loading")
    assert len(held) == 1
    held[0].continue_()
    drawn(page)
    expect(page.locator("#plots-status")).not_to_have_class("muted loading")


def spread(lr: float, depth: int, seed: int = 0) -> dict[str, float]:
    for step in range(5):
        log(loss=lr * depth / (1 + step), lr_eff=lr / (1 + step))
    return {"loss": lr * depth, "accuracy_on_the_held_out_validation_set": 1 - lr}


def test_axes_log_or_linear_no_constant_column_and_no_overlapping_labels(site: Any) -> None:
    """A column spanning decades is drawn on a log axis (toggled off and on), a
    column that never changes is in no plot, and the axis titles stay apart."""
    page, server, _, root = site
    expect = playwright.expect
    run = experiment(root=root / "spread", backend="json")(spread)
    for lr, depth in [(1e-4, 1), (1e-3, 2), (1e-2, 3), (1e-1, 4), (1.0, 2)]:
        run(lr, depth)
    page.goto(server.url + "#/e/spread")
    drawn(page)
    expect(page.locator("#x")).to_have_value("config.lr")
    expect(page.locator("#logx")).to_be_checked()
    assert page.evaluate("document.getElementById('scatter').layout.xaxis.type") == "log"
    page.locator("#logx").uncheck()
    expect(page.locator("#scatter .xtick text").first).to_have_text("0")  # linear from 0
    assert page.evaluate("document.getElementById('scatter').layout.xaxis.type") == "linear"
    page.locator("#logx").check()
    expect(page.locator("#scatter .xtick text").first).to_have_text(re.compile("^1e.4$"))
    columns = page.locator("#parallel .parallel").get_attribute("data-columns").split(",")
    assert "config.seed" not in columns  # 0 in every run
    assert {"config.lr", "config.depth", "result.loss"} <= set(columns)
    expect(page.locator("#parallel .axis-title").first).to_have_text("lr (log)")
    options = page.locator("#x option").all_text_contents()
    assert "config.seed" not in options
    assert "config.seed" not in page.locator("#runs thead").inner_text()
    boxes = [t.bounding_box() for t in page.locator("#parallel .axis-title").all()]
    frame = page.locator("#parallel").bounding_box()
    for box in boxes:  # inside the picture
        assert frame["x"] <= box["x"]
        assert box["x"] + box["width"] <= frame["x"] + frame["width"]
    for a, b in itertools.combinations(boxes, 2):
        apart = a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
        assert apart or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"], (a, b)
    titles = page.locator("#parallel .axis > title").all_text_contents()
    assert "result.accuracy_on_the_held_out_validation_set" in titles  # its full name on hover


def test_metric_curves_one_chart_per_metric_named_by_what_differs(site: Any) -> None:
    """loss and lr_eff get a chart each, the legend names each run by its config
    (lr=0.001), and the y axis turns logarithmic on demand."""
    page, server, _, root = site
    expect = playwright.expect
    run = experiment(root=root / "spread", backend="json")(spread)
    for lr in (1e-3, 1e-2):
        run(lr, 2)
    page.goto(server.url + "#/e/spread")
    drawn(page, "curves")
    charts = page.locator("#curves .curve")
    expect(charts).to_have_count(2)
    expect(charts.locator("figcaption")).to_have_text(["loss", "lr_eff"])
    legend = charts.first.locator(".legend .traces text")
    expect(legend).to_have_text(["lr=0.01", "lr=0.001"])  # newest first, as in the table
    chart = "document.querySelector('#curves .curve .chart')"
    assert page.evaluate(f"{chart}.layout.yaxis.type") == "linear"
    page.locator("#curves-log").check()
    page.wait_for_function(f"{chart}.layout.yaxis.type === 'log'")
    page.locator("#curves").scroll_into_view_if_needed()
    shot(page, "curves")


def write_runs(folder: Path, count: int) -> list[str]:
    """``count`` completed runs of a sweep, written as 3.x writes its pickles (fast)."""
    (folder / ".de" / "ids").mkdir(parents=True)
    ids = []
    for n in range(count):
        id = f"2026-02-01_00-{n // 60:02d}-{n % 60:02d}_000000"
        meta = {"status": "completed", "timing": {"duration": 1.0 + n}}
        record = Observation(id, {"lr": n / 1000, "depth": n % 3}, {"loss": 1 / (1 + n)}, meta)
        (folder / f"{id}.pkl").write_bytes(pickle.dumps(record))
        ids.append(id)
    return ids


def test_newest_first_filter_sort_page_and_selection_live_in_the_url(site: Any) -> None:
    """Newest runs come first; a reload, or the link opened elsewhere, shows the
    same filter, sort, page and ticks."""
    page, server, _, root = site
    expect = playwright.expect
    ids = write_runs(root / "many", 130)
    page.goto(server.url + "#/e/many")
    rows = page.locator("#runs tbody tr")
    expect(rows.first).to_have_attribute("data-id", ids[-1])  # newest first
    expect(page.locator('th[data-column="id"]')).to_have_class("sorted-desc")
    page.locator("#where").fill("config.lr < 0.125")
    page.locator("#where").press("Enter")
    expect(page.locator("#counts")).to_have_text("runs 1–100 of 125 (130 in all)")
    loss = page.locator('th[data-column="result.loss"]')
    loss.click()
    expect(rows.first).to_have_attribute("data-id", ids[124])  # the smallest loss
    loss.click()
    expect(rows.first).to_have_attribute("data-id", ids[0])  # the largest
    page.locator("#next").click()
    expect(page.locator("#counts")).to_have_text("runs 101–125 of 125 (130 in all)")
    page.locator(f'input[data-select="{ids[124]}"]').check()
    page.locator(f'input[data-select="{ids[123]}"]').check()
    expect(page.locator("#compare")).to_have_text("Compare selected (2)")
    url = page.url
    for shown in (page, page.context.browser.new_page()):  # reloaded, and the link shared
        if shown is page:
            page.reload()
        else:
            shown.goto(url)
        expect(shown.locator("#where")).to_have_value("config.lr < 0.125")
        expect(shown.locator('th[data-column="result.loss"]')).to_have_class("sorted-desc")
        expect(shown.locator("#counts")).to_have_text("runs 101–125 of 125 (130 in all)")
        expect(shown.locator(f'input[data-select="{ids[124]}"]')).to_be_checked()
        expect(shown.locator("#compare")).to_have_text("Compare selected (2)")
        assert shown.url == url
    shown.close()


def test_a_failed_query_clears_the_table(site: Any) -> None:
    page, server, _, _ = site
    expect = playwright.expect
    page.goto(server.url + "#/e/fit")
    expect(page.locator("#runs tbody tr")).to_have_count(4)
    drawn(page)
    page.locator("#where").fill("config.lrr < 1")
    page.locator("#apply").click()
    expect(page.locator("#where-error")).to_contain_text("Unknown field 'config.lrr'")
    expect(page.locator("#runs")).to_have_count(0)  # no stale answer left on screen
    expect(page.locator("#no-table")).to_be_visible()
    expect(page.locator("#pager")).to_be_empty()
    for plot in ("scatter", "parallel", "curves"):
        expect(page.locator(f"#{plot}")).to_have_attribute("data-state", "empty")
    page.locator("#where").fill("config.lr < 0.2")
    page.locator("#where").press("Enter")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    expect(page.locator("#where-error")).to_be_empty()


def test_one_query_means_what_it_means_in_python(site: Any) -> None:
    """``metadata.status`` (and any metadata field) filters in the browser as in Python."""
    page, server, ids, root = site
    expect = playwright.expect
    failed = "metadata.status == 'failed'"
    found = query.select(query.open_root(root / "fit"), status="all", where=failed)
    assert [o.id for o in found] == [ids[-1]]
    page.goto(server.url + "#/e/fit")
    page.locator("#where").fill(failed)
    page.locator("#where").press("Enter")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs tbody tr")).to_have_attribute("data-id", ids[-1])
    expect(page.locator("#where-error")).to_be_empty()


def wide(learning_rate: float, hidden_layers: int, optimiser: str = "adam") -> dict[str, float]:
    log(training_loss=learning_rate, validation_loss=learning_rate * 2)
    return {"validation_accuracy": 1 - learning_rate, "test_accuracy": 0.9 - learning_rate}


def test_the_table_fits_1280_pixels_and_columns_can_be_chosen(site: Any) -> None:
    """Every result, metric and tag column is on screen without scrolling sideways;
    the chooser hides and shows columns, and the URL keeps the choice."""
    page, server, _, root = site
    expect = playwright.expect
    run = experiment(root=root / "wide", backend="json")(wide)
    for n in range(3):
        run(0.1 * (n + 1), n + 1, optimiser=["adam", "sgd", "adamw"][n])
    (first, *_) = [o.id for o in run.observations()]
    run.tag(first, reviewed=True, best_so_far="yes")
    note(LocalStore(root / "wide"), first, "a long note about why this run is the one to keep")
    page.goto(server.url + "#/e/wide")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    heads = page.locator("#runs thead th[data-column]")
    columns = heads.evaluate_all("hs => hs.map(h => h.dataset.column)")
    for column in ("result.test_accuracy", "metrics.validation_loss", "tags.best_so_far", "notes"):
        assert column in columns
    wrap = page.locator("#runs-table")
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth")  # nothing cut off
    for head in heads.all():
        box = head.bounding_box()
        assert box["x"] + box["width"] <= 1280, head.get_attribute("data-column")
    page.locator("#columns-chooser summary").click()
    page.locator('[data-column-toggle="config.optimiser"]').uncheck()
    expect(page.locator('th[data-column="config.optimiser"]')).to_have_count(0)
    page.locator('[data-column-toggle="metadata.timing.start"]').check()
    expect(page.locator('th[data-column="metadata.timing.start"]')).to_have_count(1)
    page.reload()
    expect(page.locator('th[data-column="metadata.timing.start"]')).to_have_count(1)
    expect(page.locator('th[data-column="config.optimiser"]')).to_have_count(0)
    page.locator("#columns-chooser summary").click()
    shot(page, "columns")
    page.locator("#columns-reset").click()
    expect(page.locator('th[data-column="config.optimiser"]')).to_have_count(1)
    expect(page.locator('th[data-column="metadata.timing.start"]')).to_have_count(0)


def test_compare_shows_curves_and_says_why_it_needs_two_runs(site: Any) -> None:
    page, server, ids, _ = site
    expect = playwright.expect
    page.goto(server.url + "#/e/fit")
    page.locator(f'input[data-select="{ids[0]}"]').check()
    page.locator("#compare").click()
    expect(page.locator("#compare-why")).to_have_text(
        "Tick two runs or more to compare them (1 ticked)."
    )
    page.locator(f'input[data-select="{ids[1]}"]').check()
    expect(page.locator("#compare-why")).to_be_empty()
    page.locator("#compare").click()
    table = page.locator("#compare-table")
    expect(table.locator('tr[data-field="config.lr"] td')).to_have_text(["config.lr", "0.1", "0.3"])
    expect(table.locator('tr[data-field="code"]')).to_have_count(0)
    curves = page.locator("#compare-curves .curve")
    expect(curves).to_have_count(1)
    expect(curves.locator(".scatterlayer .trace")).to_have_count(2)
    expect(curves.locator(".legend .traces text")).to_have_text(
        ["lr=0.1, depth=2", "lr=0.3, depth=1"]
    )
    shot(page, "compare")
    page.goto(f"{server.url}#/e/fit/compare/{ids[0]}")
    expect(page.locator("#compare-why")).to_contain_text("Compare needs two runs or more")


def test_no_page_asks_for_a_missing_file(site: Any) -> None:
    """The favicon is there: no page logs a 404."""
    page, server, ids, _ = site
    expect = playwright.expect
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(server.url)
    expect(page.locator('tr[data-experiment="fit"]')).to_be_visible()
    page.goto(server.url + "#/e/fit")
    drawn(page)
    page.goto(f"{server.url}#/e/fit/run/{ids[0]}")
    expect(page.locator("#run-curves .scatterlayer .trace")).to_have_count(1)
    icon = page.evaluate("fetch('/favicon.ico').then(r => r.status)")
    assert icon == 200
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("favicon.svg")
    assert missing == []


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
    """Artefacts whose script would run in the view's origin, and no metrics."""
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
            time.sleep(0.05)
            log(x=float(x))  # written once a second
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
        running = rows.first  # newest first
        expect(running.locator('[data-status="running"]')).to_have_count(1)
        expect(page.locator('#runs [data-status="completed"]')).to_have_count(1)
        expect(running.locator("td.running .elapsed")).to_have_text(re.compile(r"^\d+ s$"))
        expect(running.locator("td.running .step")).to_have_text(re.compile(r"^ · step \d+$"))
        expect(page.locator("#scatter .scatterlayer .point")).to_have_count(1)  # one completed
        shot(page, "live")
        gate.touch()
        expect(page.locator('#runs [data-status="completed"]')).to_have_count(2)
        expect(page.locator('#runs [data-status="running"]')).to_have_count(0)
        expect(page.locator("#scatter .scatterlayer .point")).to_have_count(2)  # followed
    finally:
        gate.touch()
        _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, stderr
