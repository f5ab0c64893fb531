"""Benchmark this digital-experiments against 2.0.4, side by side.

Usage (``make bench`` runs the first)::

    python benchmarks/run.py
    python benchmarks/run.py --rounds 5 --sizes 1000,10000
    python benchmarks/run.py --old-python /path/to/python-with-2.0.4

"Ours" is the interpreter running this script. 2.0.4 is installed (with
pandas) into ``benchmarks/.venv-2.0.4`` on first use. Every measurement runs in
a fresh process of each interpreter, alternating which goes first, inside a
scratch git repository with a commit and an ``origin`` remote (2.0.4 asks git
for every run, so this is where its users pay it). Medians are printed as a
markdown table with the ratio ours / 2.0.4 (below 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "_scenarios.py"
WORK = HERE / "_work"
OLD_VENV = HERE / ".venv-2.0.4"
OURS, OLD = "ours", "2.0.4"


class TimedOut(Exception):
    """A scenario ran past its time limit."""


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "unknown"
    return {
        "cpus": os.cpu_count(),
        "model": model,
        "system": platform.platform(),
        "python": platform.python_version(),
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def old_python(given: str | None) -> str:
    """An interpreter with digital-experiments 2.0.4 and pandas, made if needed."""
    if given:
        return given
    python = OLD_VENV / "bin" / "python"
    stamp = OLD_VENV / ".installed"
    if not stamp.exists():
        log(f"creating {OLD_VENV} with digital-experiments==2.0.4 and pandas")
        shutil.rmtree(OLD_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "digital-experiments==2.0.4",
                "pandas",
            ],
            check=True,
        )
        stamp.touch()
    return str(python)


def git_repo(path: Path) -> Path:
    """A scratch repository with a commit and a remote, to run the scenarios in."""
    path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com"}
    env.update(GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)

    git("init", "-q")
    (path / "README").write_text("scratch repository for benchmarks/run.py\n")
    git("add", "README")
    git("commit", "-q", "-m", "benchmark scratch repository")
    git("remote", "add", "origin", "https://example.com/bench/scratch.git")
    return path


def fresh_process(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str
) -> dict[str, Any]:
    """Run one scenario in a fresh process: the JSON of its last line of output.

    Raises
    ------
    TimedOut
        Past ``timeout`` seconds.
    RuntimeError
        If it failed (its stderr is in the message).
    """
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise TimedOut(f"{what} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Runner:
    """Runs scenarios in fresh processes and keeps every measurement."""

    def __init__(self, pythons: dict[str, str], cwd: Path, timeout: float) -> None:
        self.pythons = pythons
        self.cwd = cwd
        self.timeout = timeout
        # PYTHONDONTWRITEBYTECODE would make every fresh process compile both
        # libraries from source: users' installs have their bytecode cached
        dropped = ("DE_ROOT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}

    def run(self, lib: str, scenario: str, *args: object) -> dict[str, Any]:
        command = [self.pythons[lib], str(SCENARIOS), scenario, *map(str, args)]
        return fresh_process(command, self.cwd, self.env, self.timeout, f"{lib} {scenario} {args}")

    def rounds(
        self,
        rounds: int,
        scenario: str,
        args: Callable[[str, int], Sequence[object]],
        libs: list[str],
    ) -> dict[str, list[dict[str, Any]]]:
        """``rounds`` runs per library, alternating which goes first; each run's results."""
        results: dict[str, list[dict[str, Any]]] = {lib: [] for lib in libs}
        for round in range(rounds):
            order = libs if round % 2 == 0 else libs[::-1]
            for lib in order:
                if lib not in results:
                    continue
                try:
                    results[lib].append(self.run(lib, scenario, *args(lib, round)))
                except TimedOut as exc:
                    log(f"{exc}: not measured further")
                    del results[lib]
        return results


def pick(results: dict[str, list[dict[str, Any]]], key: str = "seconds") -> dict[str, list[float]]:
    """One measurement out of every run's results."""
    return {lib: [run[key] for run in runs] for lib, runs in results.items()}


def disk_per_run(root: Path) -> float:
    """Apparent bytes of every file under ``root`` (records, ``.de`` blobs) per record."""
    records = [p for p in root.iterdir() if p.suffix == ".pkl"]
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return total / len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each listing (default 3)")
    parser.add_argument("--call-rounds", type=int, default=5, help="runs of per-call/import")
    parser.add_argument("--calls", type=int, default=300, help="calls per per-call run")
    parser.add_argument("--sizes", default="1000,10000,100000", help="store sizes to list")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per process")
    parser.add_argument("--old-python", help="an interpreter that has digital-experiments 2.0.4")
    parser.add_argument("--keep", action="store_true", help=f"keep {WORK} (the stores)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    started = time.perf_counter()
    facts = machine()
    pythons = {OURS: sys.executable, OLD: old_python(args.old_python)}
    shutil.rmtree(WORK, ignore_errors=True)
    runner = Runner(pythons, git_repo(WORK / "repo"), args.timeout)
    versions = {lib: runner.run(lib, "version") for lib in pythons}
    for lib, info in versions.items():
        log(f"{lib}: digital-experiments {info['version']} on Python {info['python']}")
    libs = [OURS, OLD]
    rows: list[tuple[str, str, dict[str, list[float]], float]] = []

    log("import time")
    runner.rounds(1, "import", lambda lib, r: (), libs)  # warm bytecode caches
    times = pick(runner.rounds(args.call_rounds * 2, "import", lambda lib, r: (), libs))
    rows.append(("`import digital_experiments`", "ms", times, 1e3))

    log("per-call overhead")
    roots = WORK / "per-call"
    results = runner.rounds(
        args.call_rounds, "per_call", lambda lib, r: (roots / f"{lib}-{r}", args.calls), libs
    )
    rows.append(
        (f"per-call overhead (trivial function, {args.calls} calls)", "ms", pick(results), 1e3)
    )
    # 2.0.4 never fsyncs; ours waits for the disk twice a call (record, then its folder)
    waits = pick(results, "fsync")
    cpu = {
        lib: [t - w for t, w in zip(pick(results)[lib], waits[lib], strict=True)] for lib in waits
    }
    rows.append(("… of which waiting for fsync", "ms", waits, 1e3))
    rows.append(("… the rest (CPU and other system calls)", "ms", cpu, 1e3))
    disk = {lib: disk_per_run(roots / f"{lib}-0") for lib in libs}

    for size in sizes:
        log(f"populating stores of {size:,} runs")
        stores = {lib: WORK / "stores" / f"{lib}-{size}" for lib in libs}
        for lib in libs:
            runner.run(lib, "populate", stores[lib], size)
        for scenario, label in (
            ("observations", "observations()"),
            ("to_dataframe", "to_dataframe()"),
        ):
            log(f"{label} on {size:,} runs")
            times = pick(
                runner.rounds(
                    args.rounds,
                    scenario,
                    lambda lib, r, stores=stores, size=size: (stores[lib], size),
                    libs,
                )
            )
            rows.append((f"{label}, {size:,} runs", "s", times, 1.0))
            if OLD not in times:  # too slow: do not try it on bigger stores
                libs = [OURS]
        if not args.keep:
            shutil.rmtree(WORK / "stores", ignore_errors=True)

    print(report(facts, versions, rows, disk, args))
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def report(
    facts: dict[str, Any],
    versions: dict[str, dict[str, Any]],
    rows: list[tuple[str, str, dict[str, list[float]], float]],
    disk: dict[str, float],
    args: argparse.Namespace,
) -> str:
    ours, old = versions[OURS]["version"], versions[OLD]["version"]
    load = facts["load"]
    lines = [
        f"Machine: {facts['cpus']} CPUs, {facts['model']}, {facts['system']}, "
        f"Python {facts['python']}" + (f" (load average at start {load[0]:.2f})" if load else ""),
        f"Medians of {args.rounds} fresh processes per listing, {args.call_rounds} per "
        f"per-call run, {args.call_rounds * 2} per import; inside a git repository.",
        "",
        f"| measurement | {ours} | {old} | ours / {old} |",
        "|---|---:|---:|---:|",
    ]
    for label, unit, times, scale in rows:
        mine = statistics.median(times[OURS]) * scale if times.get(OURS) else None
        theirs = statistics.median(times[OLD]) * scale if times.get(OLD) else None
        ratio = f"{mine / theirs:.2f}" if mine is not None and theirs else "-"
        lines.append(f"| {label} | {_fmt(mine, unit)} | {_fmt(theirs, unit)} | {ratio} |")
    lines.append(
        f"| disk per run (record + share of `.de/`) | {disk[OURS]:,.0f} B | {disk[OLD]:,.0f} B "
        f"| {disk[OURS] / disk[OLD]:.2f} |"
    )
    return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not run (too slow)"
    if unit == "s" and value < 1:
        return f"{value * 1e3:,.0f} ms" if value >= 0.1 else f"{value * 1e3:,.1f} ms"
    return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
