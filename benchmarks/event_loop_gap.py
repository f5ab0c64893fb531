"""How long async runs keep the event loop from ticking (a measurement, not a test).

    python benchmarks/event_loop_gap.py [--backend asyncio|trio]

A 5 ms heartbeat task runs beside 61 async runs (the first captures the
environment) and 20 cached ones; the worst gaps between ticks are printed. The
test suite proves the property itself (no disk step runs on the loop thread:
tests/stress/test_async_tasks.py); this shows what it buys, on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio

from digital_experiments import SaveLogs, experiment


def measure(backend: str, root: Path) -> dict[str, float]:
    @experiment(root=root / "beat", callbacks=[SaveLogs()])
    async def beat(i: int) -> int:
        await anyio.sleep(0.001)
        print(f"beat {i}")
        return i

    @experiment(root=root / "cached", cache=True)
    async def cached(i: int) -> int:
        await anyio.sleep(0.005)
        return i

    gaps: list[float] = []
    marks: list[int] = []

    async def main() -> None:
        done = anyio.Event()

        async def tick() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await anyio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            await anyio.sleep(0.05)
            marks.append(len(gaps))
            await beat(0)
            marks.append(len(gaps))
            async with anyio.create_task_group() as runs:
                for i in range(1, 61):
                    runs.start_soon(beat, i)
                for i in range(20):
                    runs.start_soon(cached, i % 4)
            done.set()

    anyio.run(main, backend=backend)
    return {
        "worst gap, first run (ms)": 1000 * max(gaps[marks[0] : marks[1] + 1]),
        "worst gap, all runs (ms)": 1000 * max(gaps),
        "ticks": len(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, value in measure(args.backend, Path(folder)).items():
            print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
