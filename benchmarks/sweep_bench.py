"""Sweep throughput: N trivial runs, serial vs a 2-worker process pool vs a Dask cluster.

    python benchmarks/sweep_bench.py [--runs 2000]

Prints a markdown table. Each engine sweeps a fresh root in a temporary folder;
its start-up (spawning workers, starting the cluster, first imports) is timed
apart from the sweep. A last row re-runs the serial sweep on its completed root:
the cost of a resume that has nothing left to do.

The runs are trivial on purpose, so the table shows the overhead of a sweep
(claim, submit, record, load) rather than any work. Timings are noisy on a
shared machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from digital_experiments import experiment
from digital_experiments.backends import PickleBackend

# an import-time placeholder: each engine points the experiment at its own root
PLACEHOLDER = Path(tempfile.gettempdir()) / "digital-experiments-sweep-bench"


@experiment(root=PLACEHOLDER / "trivial")
def trivial(i: int) -> int:
    """As little work as a run can do."""
    return i


@contextmanager
def serial() -> Iterator[Any]:
    yield None


@contextmanager
def process_pool() -> Iterator[Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        yield pool


@contextmanager
def dask() -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client.get_executor(pure=False)


ENGINES: dict[str, Callable[[], Any]] = {
    "serial (no executor)": serial,
    "ProcessPoolExecutor, 2 workers (spawn)": process_pool,
    "Dask LocalCluster, 2 worker processes": dask,
}


def use_root(root: Path) -> None:
    trivial.experiment.backend = PickleBackend(root)  # type: ignore[attr-defined]


def bench(name: str, runs: int, work: Path) -> tuple[float, float, Path]:
    """``(start-up seconds, sweep seconds, root)`` of one engine."""
    began = time.perf_counter()
    with ENGINES[name]() as executor:
        use_root(work / f"warm-{len(name)}")
        trivial.sweep({"i": range(4)}, executor=executor, progress=False)  # workers up
        started = time.perf_counter() - began
        root = work / f"runs-{len(name)}"
        use_root(root)
        began = time.perf_counter()
        observations = trivial.sweep({"i": range(runs)}, executor=executor, progress=False)
        elapsed = time.perf_counter() - began
    assert len(observations) == runs
    assert all(o.status == "completed" for o in observations)
    return started, elapsed, root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        serial_root = None
        for name in ENGINES:
            started, elapsed, root = bench(name, args.runs, work)
            serial_root = serial_root or root
            rows.append((name, started, elapsed))
        use_root(serial_root)  # type: ignore[arg-type]
        began = time.perf_counter()
        trivial.sweep({"i": range(args.runs)}, progress=False)
        rows.append(("resume, all completed (serial)", 0.0, time.perf_counter() - began))

    print(
        f"{args.runs} trivial runs; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {sys.platform}\n"
    )
    print("| engine | start-up (s) | sweep wall time (s) | runs/s |")
    print("|---|---:|---:|---:|")
    for name, started, elapsed in rows:
        print(f"| {name} | {started:.2f} | {elapsed:.2f} | {args.runs / elapsed:,.0f} |")


if __name__ == "__main__":
    main()
