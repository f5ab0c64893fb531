"""``benchmarks/targets_bench.py --quick`` runs and prints every row of issue 19's
table (timings are not checked: they belong to the machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "targets_bench.py"
ROWS = [
    "one recorded call, `DE_DURABILITY=power`",
    "one recorded call, `DE_DURABILITY=process`",
    "`sweep`, 10 trivial configs, `ProcessPoolExecutor(2)`",
    "`asweep`, 10 runs of `asyncio.sleep(0.01)`, `max_concurrency=50`",
    "`observations()`, 50 runs, index built (first listing)",
    "`observations()`, 50 runs, fresh process",
    "`import digital_experiments`, fresh process",
]


def test_targets_bench_quick_prints_every_row(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    args = ["--quick", "--rounds", "1", "--calls", "3", "--configs", "10", "--runs", "50"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--work", str(work)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Machine: ")
    assert "| what | ours | reference | ratio | target | met |" in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| what")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == ROWS
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 6
        assert cells[2] != "not measured (timed out)", row
        if "index built" in row:  # shown for its cost, with no target
            assert cells[4:] == ["-", "-"], row
        else:
            assert cells[5] in ("yes", "no"), row  # every row was measured
    assert any(line.startswith("Listing, ours per run: 50: ") for line in lines)
    assert not work.exists()  # the scratch folder is removed
