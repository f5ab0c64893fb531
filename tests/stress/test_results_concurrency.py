"""Writers, taggers and a deleter on one root, as separate processes.

Two processes sweep the same grid, two tag whatever runs they see, one deletes
completed runs of some configs, all at once. Afterwards nothing is torn or lost:
every config ran exactly once (its run in the root or in the trash), both sweeps
got an observation for every config, and every tag a tagger was told it set is
on its run, wherever that run now is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from digital_experiments import query
from digital_experiments._model import layout
from digital_experiments.backends import JSONBackend

from .conftest import driver_env

pytestmark = pytest.mark.slow

N = 40

COMMON = """
import json, os, random, sys, time
from pathlib import Path
from digital_experiments import experiment, log

root, role, out, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])

@experiment(root=root, backend="json")
def fit(x):
    for step in range(3):
        log(step=step, v=float(x * step))
    return x * x
"""

WRITER = f"""
while len(list(stop.parent.glob("*.ready"))) < 3:  # taggers and deleter are at work
    time.sleep(0.001)
runs = fit.sweep({{"x": list(range({N}))}}, progress=False)
out.write_text(json.dumps({{str(r.config["x"]): [r.id, r.status] for r in runs}}))
"""

TAGGER = """
Path(str(out) + ".ready").touch()
done = []
rng = random.Random(os.getpid())
while not stop.exists() or not done:
    runs = fit.observations(status="all")
    for run in rng.sample(runs, min(3, len(runs))):
        name = "t%d_%d" % (os.getpid(), len(done))
        try:
            fit.tag(run.id, **{name: len(done)})
        except ValueError:  # deleted meanwhile: refused, so not counted
            continue
        done.append([run.id, name, len(done)])
    time.sleep(0.001)
out.write_text(json.dumps(done))
"""

DELETER = """
Path(str(out) + ".ready").touch()
deleted = []
while not stop.exists() or not deleted:
    for run in fit.observations(where="config.x in [0, 5, 10, 15, 20, 25, 30, 35]"):
        deleted += fit.delete(run.id)
    time.sleep(0.001)
out.write_text(json.dumps(deleted))
"""


def _start(root: Path, role: str, code: str, out: Path, stop: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", COMMON + code, str(root), role, str(out), str(stop)],
        env=driver_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_writers_taggers_and_a_deleter_share_a_root(tmp_path: Path) -> None:
    root, stop = tmp_path / "fit", tmp_path / "stop"
    outs = {name: tmp_path / f"{name}.json" for name in ("w1", "w2", "t1", "t2", "d")}
    writers = [_start(root, "writer", WRITER, outs[name], stop) for name in ("w1", "w2")]
    others = [
        _start(root, "tagger", TAGGER, outs["t1"], stop),
        _start(root, "tagger", TAGGER, outs["t2"], stop),
        _start(root, "deleter", DELETER, outs["d"], stop),
    ]
    try:
        for process in writers:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
    finally:
        stop.touch()
        for process in others:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr

    # both sweeps got a completed run for every config: nothing lost to a delete
    for name in ("w1", "w2"):
        got = json.loads(outs[name].read_text())
        assert sorted(map(int, got)) == list(range(N))
        assert all(id and status == "completed" for id, status in got.values())

    # every record, in place or in the trash, reads whole; each config ran once
    backend = JSONBackend(root)
    in_place = query.select(backend, status="all")
    trashed = [
        backend.load_from(layout.trash(root, id) / f"{id}.json", id)
        for id in sorted(p.name for p in layout.trash(root).iterdir())
    ]
    runs = in_place + trashed
    assert sorted(run.config["x"] for run in runs) == list(range(N))
    assert {run.status for run in runs} == {"completed"}
    deleted = json.loads(outs["d"].read_text())
    assert deleted, "the deleter never deleted"
    assert sorted(deleted) == sorted(run.id for run in trashed)
    assert {run.config["x"] % 5 for run in trashed} <= {0}
    assert all(len(run.metrics()) == 3 for run in in_place)

    # every tag a tagger set is on its run, in place or in the trash
    tags = {run.id: run.metadata.get("tags", {}) for run in in_place}
    for run in trashed:
        path = layout.trash(root, run.id) / "annotations.json"
        tags[run.id] = json.loads(path.read_text())["tags"] if path.exists() else {}
    told = json.loads(outs["t1"].read_text()) + json.loads(outs["t2"].read_text())
    assert told, "the taggers never tagged"
    for id, name, value in told:
        assert tags[id].get(name) == value, (id, name)
    assert not list(layout.internal(root, "annotations").glob(".tmp-*"))
