"""A grid on a local Dask cluster: two worker processes run and record every config.

Run it from this folder::

    cd examples && python sweep_dask.py

Every run is recorded under ``experiments/fit/`` next to this script (gitignored)
by the Dask worker that ran it. Run the script again and nothing runs: every
config is already completed. That is also how a sweep resumes after Ctrl-C or a
crash: call it again. On a real cluster, replace ``LocalCluster`` with your
cluster (or ``Client("scheduler-address:8786")``) and put ``ROOT`` on a
filesystem that every worker mounts.
"""

from __future__ import annotations

import os
from pathlib import Path

from dask.distributed import Client, LocalCluster

from digital_experiments import current_dir, experiment

# an absolute root: workers must write exactly where this script reads
ROOT = Path(__file__).resolve().parent / "experiments" / "fit"


@experiment(root=ROOT)
def fit(lr: float, steps: int = 20) -> dict[str, float]:
    """A toy fit: gradient descent on ``(x - 3)**2`` from ``x = -10``."""
    x = -10.0
    for _ in range(steps):
        x -= lr * 2 * (x - 3)
    # an artefact in this run's own folder, written by the worker
    (current_dir() / "worker.txt").write_text(str(os.getpid()))
    return {"loss": (x - 3) ** 2, "pid": os.getpid()}


def main() -> None:
    grid = {"lr": [0.3, 0.1, 0.03, 0.01], "steps": [5, 20]}
    before = {o.id for o in fit.observations()}
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
        # pure=False: each call is a new run, never a result Dask remembers
        runs = fit.sweep(grid, executor=client.get_executor(pure=False))

    ran = [o for o in runs if o.id not in before]
    workers = {o.result["pid"] for o in ran}
    print(
        f"{len(runs)} configs: {len(ran)} run now by {len(workers)} Dask workers, "
        f"{len(runs) - len(ran)} already done"
    )
    best = min(runs, key=lambda o: o.result["loss"])
    lr, steps, loss = best.config["lr"], best.config["steps"], best.result["loss"]
    print(f"best: lr={lr} steps={steps} loss={loss:.3g}")
    print(f"records under {ROOT}")


if __name__ == "__main__":  # workers import this file: never start a cluster on import
    main()
