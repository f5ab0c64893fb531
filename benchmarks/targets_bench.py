"""The speed targets of issue 19, each as ours / a reference floor measured in the same run.

Usage (``make bench`` runs the first)::

    python benchmarks/targets_bench.py
    python benchmarks/targets_bench.py --quick        # a smoke run, small sizes
    python benchmarks/targets_bench.py --rounds 7 --runs 20000

Every measurement runs in a fresh process (``benchmarks/run.py``'s
:class:`Runner`, the scenarios in ``benchmarks/_target_scenarios.py``), ours and
the reference alternating which goes first, ``--rounds`` rounds; medians are
compared, so a busy shared machine slows both sides of a row alike. The floors
use the functions our code really calls (pickle's highest protocol, the data
sync ours binds at import, ``os.replace``):

* one recorded call, ``DE_DURABILITY=power``: ``--calls`` calls of a trivial
  function against, per call, ``pickle.dumps`` of the same Observation, a temp
  file written, its data synced, renamed into place, the folder synced;
* the same with ``DE_DURABILITY=process``, against the floor without its syncs;
* ``sweep`` of ``--configs`` trivial configs on ``ProcessPoolExecutor(2)``
  against a bare ``pool.map`` of the same function body over the same configs;
  both start their workers first (ours with a 4-config sweep, which also loads
  the sweep engine), and each round sweeps a fresh root;
* ``asweep`` of ``--configs`` runs of ``await asyncio.sleep(0.01)``, 50 at once,
  against ``asyncio.gather`` of the bare coroutine through a semaphore of 50
  (a 4-config warm-up on both sides first);
* ``observations()`` of a store of ``--runs`` records against a bare loop that
  lists the folder, opens and unpickles every record file. The store is
  populated once (three real calls, then clones with new ids, as ``run.py``
  does) and shared; one untimed run of each side warms the page cache first;
* ``import digital_experiments`` in a fresh process, in absolute milliseconds
  (bytecode cached: ``PYTHONDONTWRITEBYTECODE`` is dropped, as in ``run.py``).

The scenarios run inside a scratch git repository with a commit and a remote,
as in ``run.py``. The full run (100,000 records to list) takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import HERE, Runner, fresh_process, git_repo, log, machine, pick

TARGETS = HERE / "_target_scenarios.py"
OURS, REF = "ours", "reference"
SIDES = [OURS, REF]
CONCURRENCY = 50  # asweep's max_concurrency, and the reference's semaphore
SETTLE = 2.5  # seconds: past the read index's racy window (files.RECENT_NS, 2 s)

FULL = {"rounds": 5, "calls": 300, "configs": 2000, "runs": 100_000}
QUICK = {"rounds": 2, "calls": 20, "configs": 100, "runs": 1000}


class TargetRunner(Runner):
    """:class:`Runner` for ``_target_scenarios.py``: ours and the reference are
    both this interpreter, told apart by the scenario's side argument."""

    def run(self, lib: str, scenario: str, *args: object) -> dict[str, Any]:
        command = [self.pythons[lib], str(TARGETS), scenario, lib, *map(str, args)]
        return fresh_process(command, self.cwd, self.env, self.timeout, f"{lib} {scenario} {args}")


@dataclass
class Row:
    """One line of the table: medians of each side, compared with a target."""

    what: str
    unit: str  # "call" (seconds per call), "s" or "ms"
    times: dict[str, list[float]]
    target: float | None = None  # None: a row shown for what it costs, with no target
    absolute: bool = False  # the target is ours in ms, not a ratio

    def median(self, side: str) -> float | None:
        found = self.times.get(side)
        return statistics.median(found) if found else None

    def ratio(self) -> float | None:
        ours, ref = self.median(OURS), self.median(REF)
        return ours / ref if ours is not None and ref else None

    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.absolute:
            ours = self.median(OURS)
            return None if ours is None else ours * 1e3 <= self.target
        ratio = self.ratio()
        return None if ratio is None else ratio <= self.target


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, help=f"rounds of each side (default {FULL['rounds']})"
    )
    parser.add_argument("--calls", type=int, help=f"calls per process (default {FULL['calls']})")
    parser.add_argument(
        "--configs", type=int, help=f"configs of sweep and asweep (default {FULL['configs']})"
    )
    parser.add_argument("--runs", type=int, help=f"records to list (default {FULL['runs']:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: small sizes ({QUICK}) unless given"
    )
    parser.add_argument(
        "--million",
        action=argparse.BooleanOptionalAction,
        help="list 1,000,000 runs too (default: on, off with --quick)",
    )
    parser.add_argument(
        "--only", choices=["listing"], help="measure only these rows (the listing sizes)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument(
        "--work", type=Path, default=HERE / "_work" / "targets", help="scratch folder (emptied)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.million is None:
        args.million = not args.quick
    return args


def measure(args: argparse.Namespace) -> list[Row]:
    work: Path = args.work
    pythons = {OURS: sys.executable, REF: sys.executable}
    runner = TargetRunner(pythons, git_repo(work / "repo"), args.timeout)
    rounds = args.rounds
    rows: list[Row] = []
    if args.only == "listing":
        return listing(runner, args)

    for durability, target in (("power", 1.3), ("process", 4.0)):
        log(f"one call, DE_DURABILITY={durability}")
        folder = work / f"call-{durability}"

        def call_args(lib: str, r: int, d: str = durability, f: Path = folder) -> list[object]:
            return [d, f / f"{lib}-{r}", args.calls]

        times = pick(runner.rounds(rounds, "call", call_args, SIDES))
        rows.append(Row(f"one recorded call, `DE_DURABILITY={durability}`", "call", times, target))

    log(f"sweep of {args.configs:,} configs, ProcessPoolExecutor(2)")
    times = pick(
        runner.rounds(
            rounds,
            "sweep",
            lambda lib, r: (work / "sweep" / f"{lib}-{r}", args.configs),
            SIDES,
        )
    )
    rows.append(
        Row(f"`sweep`, {args.configs:,} trivial configs, `ProcessPoolExecutor(2)`", "s", times, 3.0)
    )

    log(f"asweep of {args.configs:,} sleeps, {CONCURRENCY} at once")
    times = pick(
        runner.rounds(
            rounds,
            "asweep",
            lambda lib, r: (work / "asweep" / f"{lib}-{r}", args.configs, CONCURRENCY),
            SIDES,
        )
    )
    rows.append(
        Row(
            f"`asweep`, {args.configs:,} runs of `asyncio.sleep(0.01)`, "
            f"`max_concurrency={CONCURRENCY}`",
            "s",
            times,
            2.0,
        )
    )

    rows += listing(runner, args)

    log("import time")
    runner.rounds(1, "import", lambda lib, r: (), [OURS])  # bytecode cached
    times = pick(runner.rounds(rounds * 2, "import", lambda lib, r: (), [OURS]))
    rows.append(Row("`import digital_experiments`, fresh process", "ms", times, 60, absolute=True))
    return rows


def listing(runner: TargetRunner, args: argparse.Namespace) -> list[Row]:
    """``observations()`` of stores of every size up to ``--runs`` (and 1,000,000
    with ``--million``): warm (the index built by the untimed first listing), and,
    at ``--runs``, cold (the index deleted before each of ours, so it is built)."""
    rows: list[Row] = []
    sizes = sorted({min(1_000, args.runs), min(10_000, args.runs), args.runs})
    if args.million:
        sizes.append(1_000_000)
    for size in sizes:
        log(f"populating a store of {size:,} runs")
        store = args.work / f"store-{size}"
        began = time.perf_counter()
        runner.run(OURS, "populate", store, size)
        log(f"populated in {time.perf_counter() - began:.0f} s; warming the page cache")
        # records younger than the racy window are read from their files until they
        # settle (never indexed): let the last ones settle, as any root's have
        time.sleep(SETTLE)
        for side in SIDES:
            runner.run(side, "observations", store, size)
        rounds = args.rounds if size <= 100_000 else min(args.rounds, 2)
        if size == args.runs:
            times = pick(
                runner.rounds(
                    rounds, "observations_cold", lambda lib, r, s=store, n=size: (s, n), SIDES
                )
            )
            rows.append(
                Row(f"`observations()`, {size:,} runs, index built (first listing)", "s", times)
            )
            runner.run(OURS, "observations", store, size)  # the index of the last state
        times = pick(
            runner.rounds(rounds, "observations", lambda lib, r, s=store, n=size: (s, n), SIDES)
        )
        rows.append(Row(f"`observations()`, {size:,} runs, fresh process", "s", times, 0.3))
        shutil.rmtree(store, ignore_errors=True)
    return rows


def linearity(rows: list[Row]) -> str:
    """Ours per run at each size of the warm listing rows."""
    parts = []
    for row in rows:
        if row.what.endswith("runs, fresh process") and row.median(OURS) is not None:
            size = int(row.what.split(", ")[1].split(" ")[0].replace(",", ""))
            parts.append(f"{size:,}: {row.median(OURS) / size * 1e6:.1f} µs")  # type: ignore[operator]
    return "Listing, ours per run: " + "; ".join(parts) + "."


def machine_line(facts: dict[str, Any]) -> str:
    load = facts["load"]
    return (
        f"Machine: {facts['cpus']} CPUs, {facts['model']}, {facts['system']}, "
        f"Python {facts['python']}" + (f" (load average at start {load[0]:.2f})" if load else "")
    )


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Medians of {args.rounds} fresh processes per side ({args.rounds * 2} for import), "
        "ours and the reference alternating; inside a git repository.",
        "",
        "| what | ours | reference | ratio | target | met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio, met = row.ratio(), row.met()
        if row.target is None:
            target = "-"
        else:
            target = f"<= {row.target:g} ms" if row.absolute else f"<= {row.target:g}"
        lines.append(
            f"| {row.what} | {_fmt(row.median(OURS), row.unit)} | "
            f"{_fmt(row.median(REF), row.unit) if not row.absolute else '-'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {target} | "
            f"{'-' if met is None else ('yes' if met else 'no')} |"
        )
    lines += ["", linearity(rows)]
    return "\n".join(lines)


def _fmt(seconds: float | None, unit: str) -> str:
    if seconds is None:
        return "not measured (timed out)"
    if unit == "call":
        return f"{seconds * 1e6:,.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"
    if unit == "ms" or seconds < 1:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds:,.2f} s"


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    started = time.perf_counter()
    print(machine_line(machine()), flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    try:
        rows = measure(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(report(rows, args))
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
