"""Metrics, queries, comparisons, tags and the trash.

Run it from this folder with ``python metrics_and_queries.py``. It trains a toy
model (gradient descent on a quadratic) over a small grid, logging the loss at
every step, then finds the best run with a query, tags it, compares it with the
worst, reruns it, and deletes and restores a run. The same can be done from the
shell: the commands are printed at the end, ready to paste into any shell (with
the full path of ``digital-experiments`` when its virtual environment is not
activated).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from digital_experiments import experiment, log


@experiment
def descend(lr: float, steps: int = 30) -> dict[str, float]:
    """Minimise (x - 3)^2 from x = 0 by gradient descent; log the loss each step."""
    x = 0.0
    for _ in range(steps):
        x -= lr * 2 * (x - 3)
        log(loss=(x - 3) ** 2, x=x)
    return {"x": x, "loss": (x - 3) ** 2}


def main() -> None:
    shutil.rmtree(descend.backend.root, ignore_errors=True)  # the same output every time
    runs = descend.sweep({"lr": [0.01, 0.05, 0.1, 0.3], "steps": [10, 30]}, progress=False)
    print(f"{len(runs)} runs recorded")

    good = descend.observations(where="result.loss < 0.01 and config.steps == 30", sort="config.lr")
    print("converged with 30 steps, lr:", [run.config["lr"] for run in good])

    best = descend.observations(sort="result.loss", limit=1)[0]
    worst = descend.observations(sort="-result.loss", limit=1)[0]
    print(
        f"best: lr={best.config['lr']} steps={best.config['steps']} loss={best.result['loss']:.2e}"
    )

    curve = best.metrics()
    loss = curve[curve.name == "loss"]
    first, last = loss.value.iloc[0], loss.value.iloc[-1]
    print(f"its loss curve: {len(loss)} steps, from {first:.3f} to {last:.2e}")

    descend.tag(best.id, best=True)
    descend.note(best.id, "fastest to converge")
    print(
        "tagged best:",
        [run.id == best.id for run in descend.observations(where="tags.best == true")],
    )

    frame = descend.to_dataframe(
        metrics="min", columns=["config", "metrics.loss"], sort="config.lr"
    )
    print(f"table with the minimum loss of each run: {frame.shape[0]} rows, {list(frame.columns)}")

    diff = descend.compare(best.id, worst.id)
    print("best and worst differ in:", ", ".join(diff.index))

    again = descend.rerun(best.id)
    same, linked = again.result == best.result, again.metadata["rerun_of"] == best.id
    print(f"rerun of the best: same result {same}, rerun_of {linked}")

    descend.delete(worst.id)
    left, trashed = len(descend.observations()), len(descend.trash())
    print(f"deleted the worst: {left} runs left, {trashed} in the trash")
    descend.restore(worst.id)
    print(f"restored it: {len(descend.observations())} runs")

    root, de = shlex.quote(str(descend.backend.root)), command_line()
    print("\nthe same from the shell:")
    print(f'  {de} list {root} --where "result.loss < 0.01" --sort=-config.lr')
    print(f"  {de} diff {root} {best.id} {worst.id}")
    print(f"  {de} tag {root} {best.id} reviewed=true")
    print(f"  {de} show {root} {best.id} --call")
    print(f"  {de} ui {shlex.quote(str(descend.backend.root.parent))}")


def command_line() -> str:
    """How to call ``digital-experiments`` from a fresh shell: by its name when the
    shell finds this one, else by its full path (a virtual environment that is not
    activated is not on PATH), else through this Python."""
    script = Path(os.path.abspath(sys.executable)).parent / "digital-experiments"
    found = shutil.which("digital-experiments")
    if found is not None and Path(os.path.abspath(found)) == script:
        return "digital-experiments"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m digital_experiments"


if __name__ == "__main__":
    main()
