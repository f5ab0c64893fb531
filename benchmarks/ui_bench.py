"""The web view: first load of the runs page, and how soon a new run shows.

    python benchmarks/ui_bench.py [--sizes 10000,100000]

Needs the ``ui`` and ``dev`` extras and Chromium (``apt-get install chromium``).
For each size, a store of that many runs is written, the server is started
fresh, and Chromium opens the runs page: the time from the server starting to
the first rows on screen (the server's first scan included), and again with
the server already warm; then how long after that reload the plots are drawn
(they draw on their own, from a sample of at most 4,000 runs) and the longest
task on the page's main thread meanwhile (plotly.js starting is most of it,
whatever the number of runs). Then a record is written while the page is open, and
the time until its row is on screen is measured (the live path: the watcher's
scan, then a server-sent event, then the page's fetch). There is no 2.0.4
counterpart; the reference is the time to read the same store with
``query.load`` in one process.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _stores import sweep_store  # benchmarks/ is on sys.path: this script's folder

from digital_experiments import Observation, query

ROUNDS = 3
# the page's long tasks (over 50 ms), and when its plots were drawn (app.js marks it)
LONG_TASKS = """window.longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({type: "longtask", buffered: true});"""
DRAWN = "performance.getEntriesByName('plots-drawn').length > 0"
DRAWN_AT = "performance.getEntriesByName('plots-drawn')[0].startTime"


class Server:
    def __init__(self, root: Path) -> None:
        import uvicorn

        from digital_experiments.ui import create_app

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}/"

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    rows = []
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for size in [int(s) for s in args.sizes.split(",") if s]:
            root = Path(scratch) / f"runs-{size}" / "sweep"
            print(f"# {size:,} runs", file=sys.stderr)
            sweep_store(root, size)
            start = time.perf_counter()
            query.load(root)
            reference = time.perf_counter() - start
            cold, warm, delays, plotted, longest = [], [], [], [], []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                with Server(root.parent) as server:
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    page.add_init_script(LONG_TASKS)
                    page.goto(server.url + "#/e/sweep")
                    page.wait_for_selector("#runs tbody tr", timeout=600_000)
                    cold.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    page.reload()
                    page.wait_for_selector("#runs tbody tr", timeout=600_000)
                    warm.append(time.perf_counter() - start)
                    page.wait_for_function(DRAWN, timeout=600_000)
                    plotted.append(page.evaluate(DRAWN_AT) / 1000)
                    longest.append(page.evaluate("Math.max(0, ...window.longTasks)") / 1000)
                    page.wait_for_selector("#live.on")
                    id = f"2026-12-31_00-00-00_{len(delays):06d}"  # sorts last: a new run
                    page.locator("#where").fill(f'id == "{id}"')
                    page.locator("#where").press("Enter")
                    page.wait_for_selector("#counts")
                    written = time.perf_counter()
                    observation = Observation(id, {"lr": 2.0, "depth": 0}, {"loss": 0}, {})
                    (root / f"{id}.pkl").write_bytes(pickle.dumps(observation))
                    page.wait_for_selector(f'tr[data-id="{id}"]', timeout=60_000)
                    delays.append(time.perf_counter() - written)
                    (root / f"{id}.pkl").unlink()
                    page.close()
            rows.append(
                (
                    size,
                    statistics.median(cold),
                    statistics.median(warm),
                    statistics.median(plotted),
                    statistics.median(longest),
                    reference,
                    statistics.median(delays),
                )
            )
        browser.close()
    print(f"Medians of {ROUNDS} rounds; Chromium headless; one watcher per experiment folder.")
    print()
    columns = [
        "runs",
        "first load (server starting)",
        "page load (server warm)",
        "plots drawn (after the reload)",
        "longest main-thread task",
        "`query.load` of the store",
        "record written → row on screen",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, cold, warm, drawn, longest, reference, delay in rows:
        print(
            f"| {size:,} | {cold:.2f} s | {warm:.2f} s | {drawn:.2f} s | {longest:.2f} s "
            f"| {reference:.2f} s | {delay:.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
