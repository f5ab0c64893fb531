"""Quickstart: record every call of a function, then look at what was recorded.

Run it from this folder with ``python quickstart.py``. Runs are stored under
``./experiments/<function name>/`` (or ``$DE_ROOT/<function name>/`` when the
``DE_ROOT`` environment variable is set).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from digital_experiments import current_dir, experiment, time_block


@experiment
def square(x):
    return x**2


@experiment
def cube(x):
    with time_block("compute"):
        time.sleep(0.05)  # stands in for real work
        result = x**3
    with time_block("save"):
        (current_dir() / "result.txt").write_text(f"{x} cubed is {result}\n")
    return result


def main() -> None:
    # start from a clean slate so the output below is the same every time
    for function in (square, cube):
        shutil.rmtree(function.backend.root, ignore_errors=True)

    print("results:", [square(i) for i in range(5)])

    print("\nobservations, oldest first:")
    for observation in square.observations():
        print(" ", observation)

    print("\nas a DataFrame:")
    print(square.to_dataframe())

    first = square.observations()[0]
    print("\nmetadata of the first run:", sorted(first.metadata))
    print("  took", f"{first.metadata['timing']['duration']:.6f}", "s")
    print("  python", first.metadata["environment"]["system"]["python_version"])

    print("\nrecords are files:")
    root = square.backend.root
    for path in sorted(root.iterdir()):
        if not path.name.startswith("."):
            print(" ", Path(root.parent.name, root.name, path.name))

    cube(3)
    (run,) = cube.observations()
    print("\ncube(3) timing blocks:", sorted(run.metadata["timing"]))
    print("  compute took at least 0.05 s:", run.metadata["timing"]["compute"]["duration"] >= 0.05)
    for artefact in cube.artefacts(run.id):
        print("  artefact", artefact.name, "->", artefact.read_text().strip())


if __name__ == "__main__":
    main()
