"""Working with results: the cost of log(), reading metrics, and where= queries.

    python benchmarks/results_bench.py [--runs 100000] [--metric-runs 1000] [--steps 1000]

2.0.4 has none of these, so each row is measured against the plainest code that
does the same job in the same process (the reference), and printed as ours /
reference:

* one ``log(loss=...)`` call inside a run, against appending the point to a
  list and writing it as a JSON line in batches of 1,000;
* reading the metrics of ``--metric-runs`` runs of ``--steps`` points each
  (``Observation.metrics()`` for every run, then one DataFrame), against a bare
  loop that opens each metrics file and parses its lines;
* ``observations(where="...")`` over ``--runs`` runs, against ``observations()``
  filtered by a Python list comprehension.

Medians of ``--rounds`` rounds; the stores are made once, in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from _stores import sweep_store  # benchmarks/ is on sys.path: this script's folder

from digital_experiments import Observation, experiment, log, query
from digital_experiments._model import layout


def median_time(action: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def log_cost(folder: Path, calls: int, rounds: int) -> tuple[float, float]:
    @experiment(root=folder / "log")
    def logging(n: int) -> None:
        for i in range(n):
            log(loss=i * 0.5)

    @experiment(root=folder / "bare")
    def bare(n: int) -> None:
        points: list[tuple[int, str, float, float]] = []
        path = folder / "bare.jsonl"
        with open(path, "a") as file:
            for i in range(n):
                points.append((i, "loss", i * 0.5, time.time()))
                if len(points) == 1000:
                    file.write("".join(json.dumps(p) + "\n" for p in points))
                    points.clear()
            file.write("".join(json.dumps(p) + "\n" for p in points))

    ours = median_time(lambda: logging(calls), rounds)
    base = median_time(lambda: bare(0), rounds)  # the run itself, without points
    reference = median_time(lambda: bare(calls), rounds)
    return (ours - base) / calls, (reference - base) / calls


def metric_store(folder: Path, runs: int, steps: int) -> Path:
    """``runs`` records with ``steps`` points of one metric each, written directly."""
    root = folder / "metrics"
    root.mkdir(parents=True)
    (root / ".de" / "ids").mkdir(parents=True)  # recorded by 3.x: its pickles are trusted
    for n in range(runs):
        id = f"2026-01-01_00-00-00_{n:06d}"
        observation = Observation(id, {"n": n}, n, {"status": "completed", "code": "x"})
        (root / f"{id}.pkl").write_bytes(pickle.dumps(observation))
        path = layout.metrics(root, id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(json.dumps([s, "loss", s * 0.1, 1.0 + s]) + "\n" for s in range(steps))
        )
    return root


def read_metrics(root: Path) -> pd.DataFrame:
    frames = [run.metrics().assign(id=run.id) for run in query.load(root)]
    return pd.concat(frames, ignore_index=True)


def read_metrics_bare(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(layout.internal(root, "metrics").iterdir()):
        id = path.name[: -len(".jsonl")]
        with open(path, "rb") as file:
            for line in file:
                step, name, value, when = json.loads(line)
                rows.append((step, name, value, when, id))
    return pd.DataFrame(rows, columns=["step", "name", "value", "time", "id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--metric-runs", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print("# log() calls", file=sys.stderr)
        ours, reference = log_cost(folder, args.calls, args.rounds)
        rows.append(("one `log()` call (in a run)", ours * 1e6, reference * 1e6, "µs"))

        print(f"# {args.metric_runs:,} runs x {args.steps:,} steps", file=sys.stderr)
        root = metric_store(folder, args.metric_runs, args.steps)
        assert len(read_metrics(root)) == len(read_metrics_bare(root))
        rows.append(
            (
                f"metrics of {args.metric_runs:,} runs x {args.steps:,} steps",
                median_time(lambda: read_metrics(root), args.rounds),
                median_time(lambda: read_metrics_bare(root), args.rounds),
                "s",
            )
        )

        print(f"# where= over {args.runs:,} runs", file=sys.stderr)
        root = sweep_store(folder / "runs", args.runs)
        text = "config.lr < 0.5 and config.depth in [1, 3] and result.loss > 0.6"

        def ours_where() -> int:
            return len(query.load(root, where=text))

        def bare_where() -> int:
            runs = query.load(root)
            return len(
                [
                    o
                    for o in runs
                    if o.config["lr"] < 0.5
                    and o.config["depth"] in (1, 3)
                    and o.result["loss"] > 0.6
                ]
            )

        assert ours_where() == bare_where() > 0
        rows.append(
            (
                f'`where="{text}"`, {args.runs:,} runs',
                median_time(ours_where, args.rounds),
                median_time(bare_where, args.rounds),
                "s",
            )
        )
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.rounds} rounds"
    )
    print()
    print("| measurement | ours | reference | ours / reference |")
    print("|---|---:|---:|---:|")
    for label, mine, theirs, unit in rows:
        print(f"| {label} | {mine:,.3g} {unit} | {theirs:,.3g} {unit} | {mine / theirs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
