"""Worst event-loop stall while async runs record (a measurement, no limit).

``python benchmarks/loop_gap.py`` runs the ``heartbeat`` stress driver on asyncio
and trio: a 5 ms ticker beside 61 async runs and 20 cached calls, and prints the
largest gap between ticks. The test suite proves the property (every file step
runs in a worker thread); this shows what it buys on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    for backend in ("asyncio", "trio"):
        with tempfile.TemporaryDirectory() as folder:
            env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
            env["DE_STRESS_ROOT"] = folder
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
            done = subprocess.run(
                [sys.executable, "-m", "tests.stress.drivers", "heartbeat", backend],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{backend:8} max gap {out['max_gap'] * 1000:7.1f} ms "
                f"(first run {out['max_gap_first_run'] * 1000:.1f} ms, {out['beats']} beats)"
            )


if __name__ == "__main__":
    main()
