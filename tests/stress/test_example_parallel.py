"""``examples/parallel_sweep.py`` runs as documented and records what it says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .conftest import REPO, reader, run_example

EXAMPLE = REPO / "examples" / "parallel_sweep.py"


def test_parallel_sweep_example(tmp_path: Path) -> None:
    """Run twice from its folder: each run reports 9 pool runs and 12 async runs, all on disk."""
    folder = tmp_path / "examples"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder)

    for session in (1, 2):
        out = run_example(folder, "parallel_sweep.py", timeout=60)
        assert re.search(r"^process pool: 9 runs recorded by [12] worker processes$", out, re.M)
        assert re.search(r"^  best: lr=0\.3 starts=\d ", out, re.M)
        assert re.search(r"^asyncio: 12 runs recorded in \d+\.\d\d s", out, re.M)
        assert "distinct run folders: 12" in out
        train = reader(folder / "experiments" / "train")
        evaluate = reader(folder / "experiments" / "evaluate")
        assert len(train.observations(current_code_only=False)) == 9 * session
        assert len(evaluate.observations(current_code_only=False)) == 12 * session
    for run in train.observations(current_code_only=False):
        assert [p.name for p in train.artefacts(run.id)] == ["losses.txt"]
