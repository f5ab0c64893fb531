"""Process pools, many processes on one root, and the race-free cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, driver_env, last_json, reader

ID_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}")
CALLS = 120


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver", "loky"])
def test_process_pool_workers_record_every_call(
    method: str, run_driver: Callable[..., Any], runs_root: Path
) -> None:
    """A module-level experiment pickles by reference; 120 pool calls are recorded by workers."""
    out = run_driver("pool", method, CALLS)
    driver = out["driver"]
    assert out["by_reference"]["pickle"]
    assert out["by_reference"]["cloudpickle"]
    assert out["by_reference"]["pickle_size"] < 100  # a reference, not the code

    worker_pids = {r["pid"] for r in out["results"]}
    assert [r["square"] for r in out["results"]] == [x * x for x in range(CALLS)]
    assert driver not in worker_pids

    square = reader(runs_root / "square")
    observations = square.observations(current_code_only=False)
    assert len(observations) == CALLS
    assert len({o.id for o in observations}) == CALLS
    assert sorted(o.config["x"] for o in observations) == list(range(CALLS))
    for o in observations:
        # the process that ran the function is the one that wrote the record
        assert o.metadata["recorded_by"] == o.result["pid"] != driver
        (artefact,) = square.artefacts(o.id)
        assert artefact.parent == runs_root / "square" / "storage" / o.id
        assert artefact.read_text() == f"{o.config['x']} {o.id} {o.result['pid']}"

    # propagate(save) submitted from a run in the driver writes into that run's folder
    (outer,) = reader(runs_root / "outer").observations(current_code_only=False)
    folder = runs_root / "outer" / "storage" / outer.id
    assert {Path(path).parent for path, _ in out["parts"]} == {folder}
    assert driver not in {pid for _, pid in out["parts"]}
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"part-{k}.txt" for k in range(12))


def test_main_script_function_shipped_by_loky(tmp_path: Path) -> None:
    """An experiment in a script's __main__ ships with loky (cloudpickle), recorded by workers."""
    script = REPO / "tests" / "stress" / "main_script.py"
    done = subprocess.run(
        [sys.executable, str(script), "40"],
        cwd=tmp_path,
        env=driver_env(tmp_path / "unused"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = last_json(done.stdout)
    assert out["by_value_size"] > 1000  # cloudpickle shipped the function itself
    assert [r["cube"] for r in out["results"]] == [x**3 for x in range(40)]
    assert out["driver"] not in {r["pid"] for r in out["results"]}

    observations = reader(tmp_path / "experiments" / "cube").observations(current_code_only=False)
    assert len(observations) == 40
    for o in observations:
        assert o.result["pid"] != out["driver"]
        (artefact,) = (tmp_path / "experiments" / "cube" / "storage" / o.id).iterdir()
        assert artefact.read_text() == str(o.result["pid"])


def test_four_processes_share_one_root(
    start_driver: Callable[..., subprocess.Popen[str]], runs_root: Path
) -> None:
    """4 processes x 150 runs into one root: 600 loadable records, 600 distinct well-formed ids."""
    t0 = time.time() + 1.5  # all four start recording at the same instant
    drivers = [start_driver("many", p, 150, t0) for p in range(4)]
    returned: list[str] = []
    for process in drivers:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        returned += last_json(stdout)

    assert len(returned) == len(set(returned)) == 600
    tagged = reader(runs_root / "tagged")
    observations = tagged.observations(current_code_only=False)
    assert sorted(o.id for o in observations) == sorted(returned)
    assert all(ID_SHAPE.fullmatch(o.id) for o in observations)
    assert sorted((o.config["process"], o.config["i"]) for o in observations) == [
        (p, i) for p in range(4) for i in range(150)
    ]
    for o in observations:
        assert o.result == o.id
        assert o.metadata["environment"]["system"]["pwd"]  # the shared blob loads too
        (artefact,) = tagged.artefacts(o.id)
        assert artefact.read_text() == f"{o.config['process']} {o.config['i']}"


def test_cache_runs_each_config_once_across_processes(
    start_driver: Callable[..., subprocess.Popen[str]], runs_root: Path
) -> None:
    """4 processes x the same 15 cached configs: each runs once, the others wait and reuse it."""
    configs = list(range(15))
    orders = [configs, configs, configs[::-1], configs[::-1]]
    t0 = time.time() + 1.5
    drivers = [start_driver("cache", ",".join(map(str, order)), t0) for order in orders]
    for process in drivers:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert sorted(map(tuple, last_json(stdout))) == [(x, 10 * x) for x in configs]

    executions = (runs_root / "executions.log").read_text().splitlines()
    assert Counter(int(line.split()[0]) for line in executions) == dict.fromkeys(configs, 1)
    observations = reader(runs_root / "cached").observations(current_code_only=False, status="all")
    assert sorted(o.config["x"] for o in observations) == configs
    assert all(o.status == "completed" for o in observations)
    # the work really was shared: more than one process executed something
    assert len({line.split()[1] for line in executions}) > 1
    assert os.path.isdir(runs_root / "cached" / ".de" / "locks")
