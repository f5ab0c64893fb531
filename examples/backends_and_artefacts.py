"""Backends, artefacts, saved logs and caching.

Run it from this folder with ``python backends_and_artefacts.py``. Everything
it records goes under ``./experiments/`` (or ``$DE_ROOT`` when it is set).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from digital_experiments import (
    Backend,
    Observation,
    SaveLogs,
    current_dir,
    experiment,
    register_backend,
)

# ---------------------------------------------------------------- formats


@experiment(backend="json")
def add(a, b=2):
    return {"sum": a + b, "inputs": [a, b]}


@experiment(backend="yaml")
def describe(name, notes):
    return f"{name}: {len(notes.splitlines())} lines of notes"


# ---------------------------------------------------------------- a custom backend


@register_backend("jsonl")
class JSONLinesBackend(Backend):
    """Every run in one ``runs.jsonl`` file, one JSON object per line.

    A run is recorded twice (``running``, then its final state), so the last
    line of an id wins when loading.
    """

    @property
    def file(self) -> Path:
        return self.root / "runs.jsonl"

    def record(self, observation: Observation) -> None:
        with self.file.open("a") as f:
            f.write(json.dumps(observation._asdict()) + "\n")

    def _latest(self) -> dict[str, dict]:
        latest = {}
        if self.file.exists():
            for line in self.file.read_text().splitlines():
                data = json.loads(line)
                latest[data["id"]] = data
        return latest

    def load(self, id: str) -> Observation:
        return Observation(**self._latest()[id])

    def all_ids(self) -> list[str]:
        return list(self._latest())


@experiment(backend="jsonl")
def multiply(a, b):
    return a * b


# ---------------------------------------------------------------- artefacts and logs


@experiment(callbacks=[SaveLogs("log.txt")])
def train(epochs):
    loss = 1.0
    for epoch in range(epochs):
        loss /= 2
        print(f"epoch {epoch}: loss {loss}")
    (current_dir() / "model.txt").write_text(f"final loss {loss}\n")
    return loss


# ---------------------------------------------------------------- caching

CALLS = []


@experiment(cache=True)
def slow_square(x):
    CALLS.append(x)
    time.sleep(0.2)  # stands in for an expensive computation
    return x**2


def show_record(path: Path) -> None:
    """Print a record file up to its metadata, which is long."""
    print(f"--- {path.parent.name}/{path.name} ---")
    for line in path.read_text().splitlines():
        if "metadata" in line:
            print(line.replace("{", "").rstrip(), "... (status, timing, code, environment_ref)")
            break
        print(line)


def main() -> None:
    for function in (add, describe, multiply, train, slow_square):
        shutil.rmtree(function.backend.root, ignore_errors=True)

    print("== json and yaml backends")
    add(1)
    describe("report", "first line\nsecond line\n")
    show_record(next(add.backend.root.glob("*.json")))
    show_record(next(describe.backend.root.glob("*.yaml")))
    blobs = list((add.backend.root / ".de" / "environments").iterdir())
    print("the environment is stored once, in", Path(".de", "environments", blobs[0].name))

    print("\n== a custom backend")
    for a in range(3):
        multiply(a, 10)
    print("records:", multiply.observations())
    print("stored in:", sorted(p.name for p in multiply.backend.root.iterdir()))

    print("\n== artefacts and saved logs")
    train(3)
    run = train.observations()[-1]
    for artefact in train.artefacts(run.id):
        print(f"{artefact.name}:")
        print("   ", artefact.read_text().strip().replace("\n", "\n    "))

    print("\n== caching")
    for _ in range(3):
        start = time.perf_counter()
        value = slow_square(4)
        print(f"slow_square(4) = {value} in {time.perf_counter() - start:.2f} s")
    print("the function body ran", len(CALLS), "time(s)")
    print("runs recorded:", len(slow_square.observations()))


if __name__ == "__main__":
    main()
