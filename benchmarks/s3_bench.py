"""``s3://`` roots against bare boto3, side by side on a loopback SeaweedFS.

Usage (``make bench`` runs the first)::

    python benchmarks/s3_bench.py
    python benchmarks/s3_bench.py --runs 500 --configs 100 --calls 20 --rounds 1  # a smoke run
    python benchmarks/s3_bench.py --profile all

Three measurements, each against the same work written with bare boto3:

1. one recorded call of a trivial function, against one ``put_object`` of a
   record's bytes (target: ours <= 2x);
2. a sweep of ``--configs`` trivial configs by ``--hosts`` processes, each
   running the same ``sweep`` over the same grid into the same root (claims
   split the work), against as many processes splitting as many puts;
3. ``observations()`` of ``--runs`` runs in a fresh process, against
   list_objects_v2 plus get_object on a thread pool as wide as ours, and
   unpickling (target: ours <= 1.5x).

The script starts its own SeaweedFS (``weed mini``, from the ``dev`` extra) on
free loopback ports and always stops it. Every measurement runs in fresh
processes, alternating which of ours and bare goes first, ``--rounds`` times;
medians are printed as a markdown table with the ratio ours / bare. With
``--profile miss`` (the default) a measurement that misses its target is run
once more under cProfile and the functions where its time goes are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from run import fresh_process, log, machine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the servers the tests start, started the same way
from tests.servers import Server, running  # noqa: E402

SCENARIOS = HERE / "_s3_scenarios.py"
OURS, BARE = "ours", "bare boto3"


@dataclass
class Row:
    """One line of the table: every round's seconds, ours and bare."""

    label: str
    unit: str  # "ms" or "s"
    ours: list[float]
    bare: list[float]
    target: float | None = None  # the largest ratio ours / bare allowed
    # requests to the server per unit of work ("call", "config", "run"), by operation
    per: str = ""
    requests: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.bare)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


class Runner:
    """Runs scenarios in fresh processes, pointed at the server."""

    def __init__(self, server: Server, work: Path, timeout: float) -> None:
        self.server = server
        self.work = work
        self.timeout = timeout
        dropped = ("DE_ROOT", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")  # as benchmarks/run.py
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update(server.env(), DE_CACHE=str(work / "cache"))

    def url(self, name: str) -> str:
        """A fresh ``s3://`` root in the server's bucket."""
        return f"s3://{self.server.bucket}/{name}-{uuid.uuid4().hex[:8]}"

    def run(self, scenario: str, *args: object, profile: Path | None = None) -> dict[str, Any]:
        env = dict(self.env)
        if profile is not None:
            env["DE_BENCH_PROFILE"] = str(profile)
        command = [sys.executable, str(SCENARIOS), scenario, *map(str, args)]
        return fresh_process(command, self.work, env, self.timeout, f"{scenario} {args}")

    def hosts(
        self, scenario: str, args: list[list[object]], profile: Path | None = None
    ) -> list[dict[str, Any]]:
        """One process per entry of ``args``, let go together once all are set up."""
        procs: list[tuple[subprocess.Popen[str], IO[str]]] = []
        with contextlib.ExitStack() as stack:
            stack.callback(_kill, procs)  # on any error, no host is left running
            for i, each in enumerate(args):
                env = dict(self.env)
                if profile is not None:
                    env["DE_BENCH_PROFILE"] = f"{profile}.{i}"
                errors = stack.enter_context(tempfile.TemporaryFile("w+", dir=self.work))
                command = [sys.executable, str(SCENARIOS), scenario, *map(str, each)]
                proc = subprocess.Popen(
                    command,
                    cwd=self.work,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    text=True,
                )
                procs.append((proc, errors))
            for proc, errors in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    proc.wait(self.timeout)
                    errors.seek(0)
                    raise RuntimeError(f"{scenario} did not start:\n{errors.read()}")
            for proc, _ in procs:  # let them go together
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = []
            deadline = time.monotonic() + self.timeout
            for proc, errors in procs:
                assert proc.stdout is not None
                out = proc.stdout.read()
                code = proc.wait(max(1.0, deadline - time.monotonic()))
                if code != 0:
                    errors.seek(0)
                    raise RuntimeError(f"{scenario} exited with {code}:\n{errors.read()}")
                results.append(json.loads(out.strip().splitlines()[-1]))
            return results


def _kill(procs: list[tuple[subprocess.Popen[str], IO[str]]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def per_unit(rounds: list[list[dict[str, Any]]], units: int) -> dict[str, float]:
    """Requests by operation per unit of work, averaged over rounds (each round
    a list of its processes' results)."""
    total: Counter[str] = Counter()
    for processes in rounds:
        for result in processes:
            total.update(result.get("requests", {}))
    return {op: n / units / len(rounds) for op, n in total.most_common()}


def span(results: list[dict[str, Any]]) -> float:
    """From the first host's start to the last host's end."""
    return max(r["end"] for r in results) - min(r["start"] for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, ours and bare")
    parser.add_argument("--calls", type=int, default=200, help="calls timed per call run")
    parser.add_argument("--configs", type=int, default=2000, help="configs of the sweep")
    parser.add_argument("--hosts", type=int, default=4, help="processes sharing the sweep")
    parser.add_argument("--runs", type=int, default=10000, help="runs to list")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per process")
    parser.add_argument(
        "--profile",
        choices=["miss", "all", "none"],
        default="miss",
        help="profile ours (and bare) where a target is missed (default), everywhere, or not",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)

    # SIGTERM unwinds like Ctrl-C, so the server is stopped whatever ends the run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    facts = machine()
    work = Path(tempfile.mkdtemp(prefix="de-s3-bench-"))
    try:
        with running("seaweedfs", work / "weed") as server:
            log(f"SeaweedFS at {server.endpoint} (pid {server.process.pid}), scratch {work}")
            runner = Runner(server, work, args.timeout)
            rows, profiles = measure(runner, args)
        print(report(facts, rows, args))
        for text in profiles:
            print()
            print(text)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def measure(runner: Runner, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    from digital_experiments._store.s3 import READERS

    work = runner.work
    record = work / "record.pkl"
    size = runner.run("template", runner.url("template"), record)["bytes"]
    log(f"a trivial run's record: {size} bytes")
    rows: list[Row] = []
    profiles: list[str] = []
    wanted = {"all": lambda met: True, "miss": lambda met: met is False, "none": lambda met: False}
    profile = wanted[args.profile]

    # 1. one call
    log(f"one call: {args.rounds} rounds of {args.calls} calls, ours and bare")
    results: dict[str, list[dict[str, Any]]] = {OURS: [], BARE: []}
    for r in range(args.rounds):
        for lib in (OURS, BARE) if r % 2 == 0 else (BARE, OURS):
            if lib == OURS:
                results[lib].append(runner.run("call_ours", runner.url("call"), args.calls))
            else:
                results[lib].append(
                    runner.run("call_bare", runner.url("bare-call"), args.calls, record)
                )
    call = Row(
        f"one call, trivial function vs one put_object ({size} B; mean of {args.calls})",
        "ms",
        [x["seconds"] for x in results[OURS]],
        [x["seconds"] for x in results[BARE]],
        2.0,
        "call",
        {lib: per_unit([[x] for x in results[lib]], args.calls) for lib in results},
    )
    rows.append(call)
    rows.append(
        Row(
            "… against one create-only put_object (If-None-Match: *) instead",
            "ms",
            call.ours,
            [x["create_only"] for x in results[BARE]],
        )
    )
    rows.append(
        Row(
            "… the first call of a fresh process (client set-up, bucket check, environment)",
            "ms",
            [x["first"] for x in results[OURS]],
            [x["first"] for x in results[BARE]],
        )
    )
    if profile(call.met):
        files = (work / "call-ours.prof", work / "call-bare.prof")
        runner.run("call_ours", runner.url("call"), args.calls, profile=files[0])
        runner.run("call_bare", runner.url("bare-call"), args.calls, record, profile=files[1])
        profiles.append(summary(f"one call, {args.calls} calls", files))

    # 2. a sweep on several hosts
    log(f"sweep: {args.configs} configs by {args.hosts} hosts, {args.rounds} rounds")
    times: dict[str, list[float]] = {OURS: [], BARE: []}
    hosts: dict[str, list[list[dict[str, Any]]]] = {OURS: [], BARE: []}
    for r in range(args.rounds):
        for lib in (OURS, BARE) if r % 2 == 0 else (BARE, OURS):
            url = runner.url("sweep")
            if lib == OURS:
                each: list[list[object]] = [[url, args.configs]] * args.hosts
                hosts[lib].append(runner.hosts("sweep_hosts_ours", each))
                made = runner.run("count", url)["count"]
                if made != args.configs:
                    log(f"ours recorded {made} runs for {args.configs} configs")
            else:
                each = [[url, args.configs, record, h, args.hosts] for h in range(args.hosts)]
                hosts[lib].append(runner.hosts("sweep_hosts_bare", each))
            times[lib].append(span(hosts[lib][-1]))
            log(f"  round {r + 1}, {lib}: {times[lib][-1]:.1f} s")
    sweep = Row(
        f"sweep of {args.configs:,} trivial configs by {args.hosts} hosts (wall)",
        "s",
        times[OURS],
        times[BARE],
        None,
        "config",
        {lib: per_unit(hosts[lib], args.configs) for lib in hosts},
    )
    rows.append(sweep)
    if args.profile == "all":
        base = work / "sweep-ours.prof"
        runner.hosts("sweep_hosts_ours", [[runner.url("sweep"), args.configs]] * args.hosts, base)
        bare = work / "sweep-bare.prof"
        url = runner.url("sweep")
        each = [[url, args.configs, record, h, args.hosts] for h in range(args.hosts)]
        runner.hosts("sweep_hosts_bare", each, bare)
        profiles.append(
            summary(
                f"sweep, {args.hosts} hosts (all hosts merged)",
                (
                    [Path(f"{base}.{h}") for h in range(args.hosts)],
                    [Path(f"{bare}.{h}") for h in range(args.hosts)],
                ),
            )
        )

    # 3. listing
    url = runner.url("list")
    log(f"populating {url} with {args.runs:,} runs")
    runner.run("populate", url, args.runs)
    log(f"listing {args.runs:,} runs: {args.rounds} rounds")
    results = {OURS: [], BARE: []}
    for r in range(args.rounds):
        for lib in (OURS, BARE) if r % 2 == 0 else (BARE, OURS):
            if lib == OURS:
                results[lib].append(runner.run("list_ours", url, args.runs))
            else:
                results[lib].append(runner.run("list_bare", url, args.runs, READERS))
    listing = Row(
        f"observations() of {args.runs:,} runs, fresh process, vs list + {READERS} threads "
        "of get_object + unpickle",
        "s",
        [x["seconds"] for x in results[OURS]],
        [x["seconds"] for x in results[BARE]],
        1.5,
        "run",
        {lib: per_unit([[x] for x in results[lib]], args.runs) for lib in results},
    )
    rows.append(listing)
    if profile(listing.met):
        files = (work / "list-ours.prof", work / "list-bare.prof")
        runner.run("list_ours", url, args.runs, profile=files[0])
        runner.run("list_bare", url, args.runs, READERS, profile=files[1])
        profiles.append(summary(f"listing {args.runs:,} runs (main thread)", files))
    return rows, profiles


def summary(title: str, files: tuple[Any, Any], top: int = 18) -> str:
    """Where the time goes, ours then bare: the functions with most time of their own,
    and ours' own functions by cumulative time, as shares of the profiled total."""
    lines = [f"Profile: {title}"]
    for lib, paths in zip((OURS, BARE), files, strict=True):
        paths = paths if isinstance(paths, list) else [paths]
        stats = pstats.Stats(*map(str, paths))
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        total = sum(tt for _, _, tt, _, _ in raw.values())
        lines += ["", f"{lib}: {total:.3f} s profiled", "", "own time:"]
        by_own = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
        for func, (_, calls, tt, ct, _) in by_own[:top]:
            lines.append(f"  {tt / total:6.1%} own {ct / total:6.1%} cum {calls:>8} {_name(func)}")
        if lib == OURS:
            lines.append("ours, cumulative:")
            mine = [(f, v) for f, v in raw.items() if "digital_experiments" in f[0]]
            for func, (_, calls, tt, ct, _) in sorted(mine, key=lambda x: x[1][3], reverse=True)[
                :top
            ]:
                lines.append(
                    f"  {ct / total:6.1%} cum {tt / total:6.1%} own {calls:>8} {_name(func)}"
                )
    return "\n".join(lines)


def _name(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "src/", "lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{line})" if line else name


def report(facts: dict[str, Any], rows: list[Row], args: argparse.Namespace) -> str:
    load = facts["load"]
    lines = [
        f"Machine: {facts['cpus']} CPUs, {facts['model']}, {facts['system']}, "
        f"Python {facts['python']}" + (f" (load average at start {load[0]:.2f})" if load else ""),
        f"SeaweedFS (weed mini) on loopback; medians of {args.rounds} rounds of fresh "
        "processes, ours and bare alternating.",
        "",
        f"| measurement | {OURS} | {BARE} | ours / bare | target | met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        mine, theirs = statistics.median(row.ours), statistics.median(row.bare)
        target = f"<= {row.target:g}" if row.target is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        lines.append(
            f"| {row.label} | {_fmt(mine, row.unit)} | {_fmt(theirs, row.unit)} "
            f"| {row.ratio:.2f} | {target} | {met} |"
        )
    lines += [
        "",
        f"Requests to the server (boto3 operations, {OURS} and {BARE}), per unit of work:",
        "",
        f"| measurement | per | {OURS} | {BARE} |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if row.requests:
            lines.append(
                f"| {row.label} | {row.per} | {_requests(row.requests[OURS])} "
                f"| {_requests(row.requests[BARE])} |"
            )
    return "\n".join(lines)


def _requests(counts: dict[str, float]) -> str:
    """``17.2: ListObjectsV2 6.1, GetObject 5.0, ...``, largest first."""
    if not counts:
        return "0"
    parts = ", ".join(f"{op} {n:.2f}" for op, n in counts.items())
    return f"**{sum(counts.values()):.2f}**: {parts}"


def _fmt(seconds: float, unit: str) -> str:
    value = seconds * 1e3 if unit == "ms" else seconds
    return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
