"""A script whose experiment lives in ``__main__``: loky ships it by value (cloudpickle).

Run as ``python main_script.py N`` from the folder that should hold ``experiments/``.
"""

from __future__ import annotations

import json
import os
import sys

import cloudpickle
import loky

from digital_experiments import current_dir, experiment


@experiment
def cube(x: int) -> dict[str, int]:
    (current_dir() / "pid.txt").write_text(str(os.getpid()))
    return {"cube": x**3, "pid": os.getpid()}


if __name__ == "__main__":
    n = int(sys.argv[1])
    executor = loky.ProcessPoolExecutor(max_workers=2)
    with executor:
        results = list(executor.map(cube, range(n)))
    out = {
        "driver": os.getpid(),
        "by_value_size": len(cloudpickle.dumps(cube)),
        "results": results,
    }
    print(json.dumps(out))
