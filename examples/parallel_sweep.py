"""A parallel sweep: a process pool over a grid, then concurrent async runs.

Run it from this folder::

    cd examples && python parallel_sweep.py

Every call is recorded under ``experiments/`` next to this script (gitignored),
by whichever process or task ran it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

from digital_experiments import current_dir, current_id, experiment, time_block

ROOT = Path(__file__).resolve().parent / "experiments"


@experiment(root=ROOT / "train")
def train(lr: float, starts: int, steps: int = 30) -> dict[str, float]:
    """A toy fit: gradient descent on ``(x - 3)**2`` from ``starts`` starting points."""
    losses = []
    with time_block("fit"):
        for start in range(starts):
            x = -10.0 * (start + 1)
            for _ in range(steps):
                x -= lr * 2 * (x - 3)
            losses.append((x - 3) ** 2)
    loss = math.fsum(losses) / starts
    # an artefact: it lands in this run's own folder, whichever worker runs it
    (current_dir() / "losses.txt").write_text("\n".join(map(str, losses)))
    return {"loss": loss, "pid": os.getpid()}


@experiment(root=ROOT / "evaluate")
async def evaluate(seed: int) -> dict[str, object]:
    """Stands in for I/O-bound work (a download, a remote API): mostly waiting."""
    folder = current_dir()
    await asyncio.sleep(0.2)  # other runs proceed meanwhile
    assert current_dir() == folder  # each task keeps its own run across awaits
    return {"score": (seed * 7919) % 100 / 100, "id": current_id()}


def sweep_in_processes() -> None:
    grid = [
        {"lr": lr, "starts": starts}
        for lr, starts in itertools.product([1.05, 0.3, 0.003], [1, 2, 4])
    ]
    started = datetime.now()
    # spawn: the workers import this script and find `train` by reference
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [pool.submit(train, **config) for config in grid]
        results = [future.result() for future in futures]

    runs = train.observations(since=started)
    workers = {r["pid"] for r in results}
    best = min(runs, key=lambda o: o.result["loss"])
    print(f"process pool: {len(runs)} runs recorded by {len(workers)} worker processes")
    print(
        f"  best: lr={best.config['lr']} starts={best.config['starts']} "
        f"loss={best.result['loss']:.3g} (run {best.id})"
    )
    print(f"  its fit took {1000 * best.metadata['timing']['fit']['duration']:.2f} ms")


async def evaluate_concurrently(n: int) -> float:
    began = time.perf_counter()
    await asyncio.gather(*(evaluate(seed) for seed in range(n)))
    return time.perf_counter() - began


def evaluate_with_asyncio() -> None:
    started = datetime.now()
    elapsed = asyncio.run(evaluate_concurrently(12))
    runs = evaluate.observations(since=started)
    print(
        f"asyncio: {len(runs)} runs recorded in {elapsed:.2f} s "
        f"(one after the other: {0.2 * len(runs):.1f} s)"
    )
    print(f"  distinct run folders: {len({o.result['id'] for o in runs})}")


if __name__ == "__main__":
    sweep_in_processes()
    evaluate_with_asyncio()
    print(f"records under {ROOT}")
