"""One ``s3://`` benchmark scenario per process: ours, or the same work in bare boto3.

``benchmarks/s3_bench.py`` starts this file as ``python _s3_scenarios.py NAME
ARGS...`` with the server's AWS settings in the environment; it prints one
JSON line last. Scenarios with ``hosts`` in their name are one of several
processes let go together: they print ``ready`` once set up and start when a
line arrives on stdin, so imports and client set-up stay off the clock.

Each timed scenario also counts the requests its part on the clock made, by
S3 operation (``requests`` in its JSON). With ``DE_BENCH_PROFILE=<file>`` in
the environment, the timed part runs under cProfile and its statistics are
written to that file.
"""

from __future__ import annotations

import cProfile
import json
import os
import pickle
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


def trivial(x: int, y: float = 2.0, name: str = "a") -> dict[str, float]:
    """The benchmarked experiment: as cheap as a function can be."""
    return {"loss": x * y, "acc": 0.5}


def _experiment(url: str) -> Any:
    from digital_experiments import experiment

    return experiment(root=url)(trivial)


def _bare_client(connections: int = 10) -> Any:
    """A plain boto3 client from the same AWS settings (endpoint, keys, region)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(max_pool_connections=connections))


def _split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


REQUESTS: Counter[str] = Counter()  # S3 operations made while on the clock
_COUNTING = threading.Event()
_COUNT_LOCK = threading.Lock()


def _count_requests() -> None:
    """Count every boto3 request (ours and bare alike) by operation, while counting."""
    from botocore.client import BaseClient

    call = BaseClient._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        if _COUNTING.is_set():
            with _COUNT_LOCK:
                REQUESTS[operation] += 1
        return call(self, operation, params)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]


def _profiled(work: Callable[[], T]) -> T:
    """``work()``, with its requests counted, under cProfile when
    ``DE_BENCH_PROFILE`` names a file."""
    target = os.environ.get("DE_BENCH_PROFILE")
    REQUESTS.clear()
    _COUNTING.set()
    try:
        if not target:
            return work()
        profile = cProfile.Profile()
        try:
            return profile.runcall(work)
        finally:
            profile.dump_stats(target)
    finally:
        _COUNTING.clear()


def _wait_for_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


# ---------------------------------------------------------------- set-up


def template(url: str, out: str) -> dict[str, Any]:
    """Record three calls into ``url``; write one record's bytes to ``out``."""
    function = _experiment(url)
    for i in range(3):
        function(i)
    store = function.backend.store
    key = next(k for k in store.list("") if k.endswith(".pkl"))
    data, _ = store.get(key)
    with open(out, "wb") as file:
        file.write(data)
    return {"bytes": len(data)}


def populate(url: str, runs: str) -> dict[str, Any]:
    """``runs`` realistic records under ``url`` in our own format.

    Three real calls, then clones of a real record with new ids, configs and
    results, put in parallel (the way :func:`benchmarks._scenarios.populate`
    fills a folder).
    """
    function = _experiment(url)
    for i in range(3):
        function(i)
    backend, store = function.backend, function.backend.store
    key = next(k for k in store.list("") if k.endswith(".pkl"))
    packed = backend.loads(store.get(key)[0])
    first = datetime(2025, 1, 1)

    def put(i: int) -> None:
        id = (first + timedelta(seconds=i)).strftime("%Y-%m-%d_%H-%M-%S_%f")
        clone = packed._replace(
            id=id, config={"x": i, "y": 2.0, "name": "a"}, result={"loss": i * 2.0, "acc": 0.5}
        )
        store.put(backend.key(id), backend.dumps(clone))

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(int(runs) - 3)))
    return {"seconds": time.perf_counter() - start}


def count(url: str, suffix: str = ".pkl") -> dict[str, Any]:
    """How many objects directly under ``url`` end with ``suffix``."""
    bucket, prefix = _split(url)
    client = _bare_client()
    found = 0
    pages = client.get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix + "/", Delimiter="/"):
        found += sum(1 for e in page.get("Contents", ()) if e["Key"].endswith(suffix))
    return {"count": found}


# ---------------------------------------------------------------- 1. one call


def call_ours(url: str, calls: str) -> dict[str, Any]:
    """The first recorded call of a fresh process, then the mean of ``calls`` more."""
    import boto3  # noqa: F401  imported lazily by ours: off the clock, as for bare

    function = _experiment(url)
    start = time.perf_counter()
    function(-1)  # the client, the bucket check, the environment's blob
    first = time.perf_counter() - start
    n = int(calls)

    def work() -> float:
        start = time.perf_counter()
        for i in range(n):
            function(i)
        return time.perf_counter() - start

    seconds = _profiled(work)
    return {"first": first, "seconds": seconds / n, "requests": REQUESTS}


def call_bare(url: str, calls: str, record: str) -> dict[str, Any]:
    """The same for bare ``put_object`` of a record's bytes, each under a new key."""
    import boto3  # noqa: F401

    bucket, prefix = _split(url)
    with open(record, "rb") as file:
        data = file.read()
    start = time.perf_counter()
    client = _bare_client()
    client.put_object(Bucket=bucket, Key=f"{prefix}/first.pkl", Body=data)
    first = time.perf_counter() - start
    n = int(calls)

    def work() -> float:
        start = time.perf_counter()
        for i in range(n):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{i:08d}.pkl", Body=data)
        return time.perf_counter() - start

    seconds = _profiled(work)
    requests = dict(REQUESTS)
    start = time.perf_counter()  # then as many create-only puts, as ours makes its records
    for i in range(n):
        key = f"{prefix}/new-{i:08d}.pkl"
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    create_only = (time.perf_counter() - start) / n
    return {
        "first": first,
        "seconds": seconds / n,
        "create_only": create_only,
        "requests": requests,
    }


# ---------------------------------------------------------------- 2. a sweep on several hosts


def sweep_hosts_ours(url: str, configs: str) -> dict[str, Any]:
    """One host of a sweep: every host sweeps the same grid into the same root."""
    import boto3  # noqa: F401

    function = _experiment(url)
    function.backend.store.check()  # the client built off the clock
    n = int(configs)
    _wait_for_go()
    start = time.time()
    found = _profiled(lambda: function.sweep({"x": list(range(n))}, progress=False))
    end = time.time()
    completed = sum(o.metadata.get("status") == "completed" for o in found)
    assert len(found) == n == completed, (len(found), n, completed)
    return {"start": start, "end": end, "returned": len(found), "requests": REQUESTS}


def sweep_hosts_bare(url: str, configs: str, record: str, host: str, hosts: str) -> dict[str, Any]:
    """The same work in bare puts: host ``host`` of ``hosts`` puts its share of the keys."""
    import boto3  # noqa: F401

    bucket, prefix = _split(url)
    with open(record, "rb") as file:
        data = file.read()
    client = _bare_client()
    client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/", MaxKeys=1)
    mine = range(int(host), int(configs), int(hosts))
    _wait_for_go()
    start = time.time()

    def work() -> None:
        for i in mine:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{i:08d}.pkl", Body=data)

    _profiled(work)
    end = time.time()
    return {"start": start, "end": end, "returned": len(mine), "requests": REQUESTS}


# ---------------------------------------------------------------- 3. listing


def list_ours(url: str, runs: str) -> dict[str, Any]:
    """``observations()`` of a root of ``runs`` runs, in a fresh process (client included)."""
    import boto3  # noqa: F401

    function = _experiment(url)
    start = time.perf_counter()
    found = _profiled(function.observations)
    seconds = time.perf_counter() - start
    assert len(found) == int(runs), (len(found), runs)
    return {"seconds": seconds, "requests": REQUESTS}


def list_bare(url: str, runs: str, readers: str) -> dict[str, Any]:
    """list_objects_v2, then parallel get_object (as many threads as ours) and unpickle."""
    import boto3  # noqa: F401

    import digital_experiments  # noqa: F401  the records' class, for unpickling

    bucket, prefix = _split(url)
    threads = int(readers)

    def work() -> list[Any]:
        client = _bare_client(threads)
        keys: list[str] = []
        pages = client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix + "/", Delimiter="/"):
            keys += [e["Key"] for e in page.get("Contents", ()) if e["Key"].endswith(".pkl")]

        def get(key: str) -> bytes:
            body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body

        with ThreadPoolExecutor(threads) as pool:
            return [pickle.loads(data) for data in pool.map(get, keys)]

    start = time.perf_counter()
    found = _profiled(work)
    seconds = time.perf_counter() - start
    assert len(found) == int(runs), (len(found), runs)
    return {"seconds": seconds, "requests": REQUESTS}


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "template": template,
    "populate": populate,
    "count": count,
    "call_ours": call_ours,
    "call_bare": call_bare,
    "sweep_hosts_ours": sweep_hosts_ours,
    "sweep_hosts_bare": sweep_hosts_bare,
    "list_ours": list_ours,
    "list_bare": list_bare,
}

if __name__ == "__main__":
    _count_requests()
    print(json.dumps(SCENARIOS[sys.argv[1]](*sys.argv[2:])), flush=True)
