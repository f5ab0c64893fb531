"""``s3://`` roots end to end, on a real S3 server (SeaweedFS on loopback).

An experiment whose root is ``s3://bucket/prefix`` records into the bucket:
ids are claimed by create-only writes of the record's key, ``current_dir()``
is staged locally and uploaded when the run ends, ``artefacts()`` downloads on
demand, tags, notes, metrics, the cache index and sweep claims live under the
prefix. A bad setting fails before the function's body runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import current_dir, current_id, experiment, log
from digital_experiments._store import files as storage
from digital_experiments._store.base import StoreError
from digital_experiments._store.s3 import S3Store

from .servers import Server, race

pytest.importorskip("boto3")


def square(x: int) -> dict[str, int]:
    (current_dir() / "out.txt").write_text(f"x={x}")
    (current_dir() / "deep").mkdir()
    (current_dir() / "deep" / "more.bin").write_bytes(bytes([x % 256]) * 3)
    log(loss=1.0 / (x + 1))
    log(loss=0.5 / (x + 1))
    return {"y": x * x}


def keys(url: str, prefix: str = "") -> list[str]:
    return (
        list(S3Store(url).walk(prefix)) if prefix.endswith("/") else list(S3Store(url).list(prefix))
    )


def test_a_run_is_recorded_in_the_bucket_and_read_back(server: Server) -> None:
    url = server.url()
    run = experiment(root=url, backend="json")(square)
    assert run(3) == {"y": 9}
    (observation,) = run.observations()
    assert observation.config == {"x": 3}
    assert observation.result == {"y": 9}
    assert observation.metadata["status"] == "completed"
    assert observation.metadata["environment"]["system"]  # the shared blob, from the bucket
    # the record is an object of the bucket, named by its id
    assert keys(url) == [f"{observation.id}.json"]
    assert [k for k in keys(url, ".de/") if k.startswith(".de/environments/")]
    # metrics were uploaded whole at the end of the run
    frame = observation.metrics()
    assert list(frame["value"]) == [0.25, 0.125]
    assert run.to_dataframe()["result.y"].tolist() == [9]


def test_artefacts_are_uploaded_and_downloaded_on_demand(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url()
    run = experiment(root=url)(square)
    run(5)
    (id,) = [o.id for o in run.observations()]
    assert sorted(keys(url, f"storage/{id}/")) == [
        f"storage/{id}/deep/more.bin",
        f"storage/{id}/out.txt",
    ]
    # another machine: an empty local cache downloads them
    monkeypatch.setenv("DE_CACHE", str(tmp_path / "elsewhere"))
    again = experiment(root=url)(square)
    files = again.artefacts(id)
    base = again.backend.root / "storage" / id
    assert [p.relative_to(base).as_posix() for p in files] == ["deep/more.bin", "out.txt"]
    assert (tmp_path / "elsewhere") in files[0].parents
    assert files[1].read_text() == "x=5"


def failing(x: int) -> None:
    (current_dir() / "partial.txt").write_text("half done")
    raise ValueError(f"x={x} diverges")


def test_a_failed_run_keeps_its_artefacts_and_its_error(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(failing)
    with pytest.raises(ValueError, match="x=1 diverges"):
        run(1)
    (observation,) = run.observations(status="failed")
    assert "x=1 diverges" in observation.metadata["error"]["message"]
    assert keys(url, f"storage/{observation.id}/") == [f"storage/{observation.id}/partial.txt"]


def plain(x: int) -> int:
    return x


def test_concurrent_taggers_merge_on_the_bucket(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(plain)
    run(1)
    (id,) = [o.id for o in run.observations()]
    threads = [threading.Thread(target=run.tag, args=(id,), kwargs={f"t{i}": i}) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.note(id, "looked at it")
    (observation,) = run.observations()
    assert observation.metadata["tags"] == {f"t{i}": i for i in range(8)}
    assert observation.metadata["notes"] == ["looked at it"]


def test_de_root_names_a_prefix_of_experiments(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = server.url()
    monkeypatch.setenv("DE_ROOT", base + "/")
    run = experiment(plain)
    run(2)
    assert run.backend.where == f"{base}/plain"
    assert [k.endswith(".pkl") for k in keys(f"{base}/plain")] == [True]
    assert not Path("experiments").exists()


def test_cache_and_sweeps_keep_their_index_and_claims_in_the_bucket(server: Server) -> None:
    url = server.url()
    calls: list[int] = []

    def counted(x: int) -> int:
        calls.append(x)
        return x + 1

    cached = experiment(root=url, cache=True)(counted)
    assert cached(1) == cached(1) == 2
    assert calls == [1]
    assert [k for k in keys(url, ".de/") if k.startswith(".de/cache/")]
    swept = experiment(root=url + "-sweep")(plain)
    first = swept.sweep({"x": [1, 2, 3]}, skip="completed")
    again = swept.sweep({"x": [1, 2, 3]}, skip="completed")
    assert [o.id for o in first] == [o.id for o in again]
    assert len(swept.observations()) == 3
    # each config was claimed in the bucket (a released claim keeps its generation)
    claimed = {k.split("/")[2] for k in keys(url + "-sweep", ".de/") if k.startswith(".de/claims/")}
    assert len(claimed) == 3


async def asquare(x: int) -> int:
    (current_dir() / "a.txt").write_text(current_id())
    return x * x


@pytest.mark.anyio
async def test_an_async_run_records_into_the_bucket(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(asquare)
    assert await run(4) == 16
    (observation,) = run.observations()
    assert keys(url, f"storage/{observation.id}/") == [f"storage/{observation.id}/a.txt"]


def test_a_damaged_object_is_skipped_with_a_warning(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(plain)
    run(1)
    S3Store(url).put("2026-01-01_00-00-00_000000.pkl", b"not a pickle")
    with pytest.warns(UserWarning, match="Skipping unreadable record '2026-01-01_00-00-00_000000'"):
        found = run.observations()
    assert [o.config for o in found] == [{"x": 1}]


BODY_RAN = "the body ran"


def noisy(x: int) -> int:
    print(BODY_RAN)
    return x


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("AWS_SECRET_ACCESS_KEY", "wrong", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9", "cannot reach"),
        ("bucket", "no-such-bucket", "the bucket 'no-such-bucket' does not exist"),
    ],
)
def test_a_bad_setting_fails_before_the_body_runs(
    request: pytest.FixtureRequest, setting: str, value: str, named: str
) -> None:
    """In a fresh process, as a user would meet it: one error naming what to fix.
    (SeaweedFS creates a missing bucket on the first put, so the missing bucket
    is asked of moto, which answers NoSuchBucket as AWS does.)"""
    server: Server = request.getfixturevalue("moto" if setting == "bucket" else "seaweedfs")
    env = {**os.environ, **server.env()}
    url = server.url()
    if setting == "bucket":
        url = f"s3://{value}/runs"
    else:
        env[setting] = value
    code = (
        "from digital_experiments import experiment\n"
        "from tests.test_s3_roots import noisy\n"
        f"experiment(root={url!r})(noisy)(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode != 0
    assert BODY_RAN not in done.stdout
    assert "StorageError: Could not create a record: s3://" in done.stderr
    assert named in done.stderr


def test_an_upload_that_fails_keeps_the_result(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url()
    run = experiment(root=url)(square)
    store = run.backend.store
    real = store.put

    def refuse_artefacts(key: str, data: bytes, **options: Any) -> str:
        if key.startswith("storage/"):
            raise StoreError("the bucket is full")
        return real(key, data, **options)

    monkeypatch.setattr(store, "put", refuse_artefacts)
    with pytest.warns(RuntimeWarning, match="Could not keep the artefacts of run"):
        assert run(2) == {"y": 4}
    (observation,) = run.observations()
    assert observation.result == {"y": 4}


def _of_run(url: str, id: str) -> list[str]:
    """Every key of the bucket's prefix that belongs to run ``id``."""
    return sorted(key for key in S3Store(url).walk("") if id in key)


def test_the_trash_moves_a_run_whole_on_a_bucket_and_back(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(square)
    run(4)
    (id,) = [o.id for o in run.observations()]
    run.tag(id, best=True)
    placed = _of_run(url, id)
    assert f"{id}.pkl" in placed
    assert f".de/annotations/{id}.json" in placed

    assert run.delete(id) == [id]
    assert run.observations() == []
    assert run.trash() == [id]
    assert _of_run(url, id) == sorted(
        [
            f".de/trash/{id}/{id}.pkl",
            f".de/trash/{id}/annotations.json",
            f".de/trash/{id}/deleted.json",
            f".de/trash/{id}/metrics.jsonl",
            f"storage/.trash/{id}/deep/more.bin",
            f"storage/.trash/{id}/out.txt",
        ]
    )

    restored = run.restore(id[:19])  # a prefix, as for a folder
    assert restored.id == id
    assert restored.result == {"y": 16}
    assert _of_run(url, id) == placed
    (back,) = run.observations()
    assert back.metadata["tags"] == {"best": True}
    assert list(back.metrics()["value"]) == [0.2, 0.1]
    assert run.trash() == []


def test_a_purged_run_leaves_nothing_in_the_bucket(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(square)
    run(1)
    run(2)
    first, second = sorted(o.id for o in run.observations())
    run.delete(first)
    assert run.purge() == 1
    assert _of_run(url, first) == []
    assert [o.id for o in run.observations()] == [second]  # the other run is untouched
    assert _of_run(url, second) == [
        f".de/metrics/{second}.jsonl",
        f"{second}.pkl",
        f"storage/{second}/deep/more.bin",
        f"storage/{second}/out.txt",
    ]


def test_a_delete_cut_short_is_finished_by_the_next(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails after the record moved leaves the run out of listings with
    some parts in place; deleting it again moves the rest, and a restore brings
    all of it back."""
    url = server.url()
    run = experiment(root=url)(square)
    run(3)
    (id,) = [o.id for o in run.observations()]
    store = run.backend.store
    real, copies = store.copy, []

    def fail_after_the_record(source: str, target: str) -> str:
        copies.append(source)
        if len(copies) > 1:
            raise StoreError("the connection dropped")
        return real(source, target)

    monkeypatch.setattr(store, "copy", fail_after_the_record)
    with pytest.raises(StoreError, match="connection dropped"):
        run.delete(id)
    assert copies == [f"{id}.pkl", f".de/metrics/{id}.jsonl"]  # the record went first
    assert run.observations() == []
    assert f".de/metrics/{id}.jsonl" in _of_run(url, id)  # still in place
    monkeypatch.setattr(store, "copy", real)

    assert run.delete(id) == [id]
    assert not [k for k in _of_run(url, id) if not k.startswith((".de/trash/", "storage/.trash/"))]
    run.restore(id)
    (back,) = run.observations()
    assert sorted(p.name for p in run.artefacts(id)) == ["more.bin", "out.txt"]
    assert list(back.metrics()["value"]) == [0.25, 0.125]


def test_a_restore_never_overwrites_a_run_that_took_the_id(server: Server) -> None:
    url = server.url()
    run = experiment(root=url)(plain)
    run(1)
    run(2)
    id, other = sorted(o.id for o in run.observations())
    run.delete(id)
    store = S3Store(url)
    store.put_new(f"{id}.pkl", store.read(f"{other}.pkl"))  # another host's run, not this one
    with pytest.raises(FileExistsError, match=f"Run '{id}' is in 's3://"):
        run.restore(id)
    assert run.trash() == [id]  # still there, whole
    assert store.read(f"{id}.pkl") == store.read(f"{other}.pkl")  # untouched


def test_a_sweep_counts_a_run_deleted_since_it_began(server: Server) -> None:
    """load_even_deleted reads when a remote run was deleted from its trash."""
    from digital_experiments._read import trash

    url = server.url()
    run = experiment(root=url)(plain)
    run(1)
    (id,) = [o.id for o in run.observations()]
    began = time.time()
    run.delete(id)
    assert trash.load_even_deleted(run.backend, id, deleted_since=began).result == 1
    with pytest.raises(FileNotFoundError):
        trash.load_even_deleted(run.backend, id, deleted_since=time.time() + 3600)


def test_listings_of_one_experiment_in_many_threads_agree(server: Server) -> None:
    """Concurrent listings of one remote backend (a web view's requests) each see
    every run with its tags."""
    url = server.url()
    run = experiment(root=url)(plain)
    for x in range(3):
        run(x)
    first = run.observations()[0].id
    run.tag(first, best=True)
    seen: list[list[Any]] = []
    barrier = threading.Barrier(6)

    def list_runs() -> None:
        barrier.wait()
        seen.append([o.metadata.get("tags") for o in run.observations()])

    threads = [threading.Thread(target=list_runs) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [[{"best": True}, None, None]] * 6


def test_ids_are_unique_when_every_process_starts_from_the_same_id(server: Server) -> None:
    """Four processes whose clocks all give the same first id: each run still gets
    its own key, because the record's key is created create-only."""
    url = server.url()
    context = multiprocessing.get_context("spawn")
    returned = race(context, _same_id_runs, [(url,)] * 4, timeout=300)
    ids = [i for each in returned for i in each]
    assert len(ids) == len(set(ids)) == 40
    assert FROZEN_ID in ids  # the clash really happened: one process got the frozen id
    assert sorted(f"{i}.pkl" for i in ids) == sorted(keys(url))
    run = experiment(root=url)(plain)
    assert sorted(o.id for o in run.observations()) == sorted(ids)


def test_four_hosts_sweeping_one_grid_on_a_bucket_run_each_config_once(server: Server) -> None:
    """Four processes (spawned, started together) sweep the same 100 instant configs
    into one bucket prefix: claims released and taken over while others look, and
    still every config is recorded once (before release marks outlived takeovers,
    the S3 benchmark's four-host sweep recorded 118 to 130 runs for 100 configs)."""
    url = server.url()
    context = multiprocessing.get_context("spawn")
    returned = race(context, _sweeping_host, [(url,)] * 4, timeout=300)
    assert all(ids == returned[0] for ids in returned)  # every host returns the same runs
    assert len(set(returned[0])) == 100
    records = [k for k in keys(url) if k.endswith(".pkl")]
    assert sorted(records) == sorted(f"{i}.pkl" for i in returned[0])


def _sweeping_host(url: str, barrier: Any, out: Any) -> None:
    run = experiment(root=url)(plain)
    run.backend.store.check()  # the client built before the start
    barrier.wait()
    found = run.sweep({"x": list(range(100))}, progress=False)
    assert all(o.status == "completed" for o in found)
    out.put([o.id for o in found])


FROZEN_ID = "2026-01-01_00-00-00_000000"


def _same_id_runs(url: str, barrier: Any, out: Any) -> None:
    real = storage.new_id

    def frozen(now: Any = None) -> str:
        # a call's first id (from local time) is the same in every process; the
        # ids tried after a clash (next_id, from UTC) are not frozen
        return real(now) if now is not None and now.tzinfo is not None else FROZEN_ID

    storage.new_id = frozen
    run = experiment(root=url)(plain)
    barrier.wait()
    endings = [run.experiment.record((i,), {}) for i in range(10)]  # type: ignore[attr-defined]
    out.put([o.id if o is not None else repr(e) for o, e in endings])


# ---------------------------------------------------------------- cache=True across hosts


def held_square(x: int) -> int:
    """Says it started (one file per process), then waits for the test's go."""
    flags = Path(os.environ["DE_TEST_FLAGS"])
    (flags / f"entered-{os.getpid()}").touch()
    while not (flags / "go").exists():
        time.sleep(0.01)  # waits for a file the test writes, not for time
    return x * x


async def aheld_square(x: int) -> int:
    return held_square(x)


def _note(flags: Path, event: str) -> None:
    """Append ``event`` to the hosts' shared log (one small O_APPEND write: whole)."""
    with open(flags / "events", "a") as events:
        events.write(f"{event} {os.getpid()}\n")


def failing_once_square(x: int) -> int:
    """:func:`held_square`, but the first call to get past the go fails (one-shot,
    by an exclusive create of a marker); every later call returns."""
    flags = Path(os.environ["DE_TEST_FLAGS"])
    _note(flags, "entered")
    held_square(x)
    try:
        (flags / "failed-once").open("x").close()
    except FileExistsError:
        _note(flags, "returned")
        return x * x
    _note(flags, "failed")
    raise RuntimeError("the first run fails")


async def afailing_once_square(x: int) -> int:
    return failing_once_square(x)


def _cached_host(
    url: str, cache: str, flags: str, name: str, out: Any, body: str = "held_square"
) -> None:
    """A host of its own (its own DE_CACHE, so its own local locks) calling the
    cached experiment ``body`` once; it notes when the config's lease was refused,
    and puts what the call returned, or raised, on ``out``."""
    os.environ["DE_CACHE"], os.environ["DE_TEST_FLAGS"] = cache, flags
    from digital_experiments._store import lease as leases

    real = leases.acquire

    def watched(lease: Any, observer: Any = None) -> bool:
        taken = real(lease, observer)
        if not taken:
            (Path(flags) / f"refused-{name}").touch()
        return taken

    leases.acquire = watched  # type: ignore[assignment]
    asynchronous = name.startswith("async-")
    run = experiment(root=url, cache=True)(globals()[("a" if asynchronous else "") + body])
    try:
        if asynchronous:
            import anyio

            result = anyio.run(run, 3)
        else:
            result = run(3)
    except Exception as error:
        result = repr(error)
    out.put((name, result))


def _wait_for(path: Path, *others: Path) -> Path:
    """The first of ``path, *others`` to exist (each written by a child process)."""
    deadline = time.monotonic() + 120  # only a bound on a hang: the order is by files
    while time.monotonic() < deadline:
        for candidate in (path, *others):
            if candidate.exists():
                return candidate
        time.sleep(0.01)
    raise AssertionError(f"none of {[path, *others]} appeared")


def _two_hosts(
    url: str, tmp_path: Path, kind: str, body: str = "held_square"
) -> tuple[dict[str, Any], int, int, Path]:
    """Host A enters the body first; host B starts and must be refused the lease
    (its poll ran) before A is let go. The results by host, A's and B's pids, and
    the flags folder."""
    flags = tmp_path / "flags"
    flags.mkdir()
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    hosts = [
        context.Process(
            target=_cached_host,
            args=(url, str(tmp_path / name), str(flags), f"{kind}-{name}", out),
            kwargs={"body": body},
            daemon=True,  # a failed test must not wait for a host stuck in its body
        )
        for name in ("a", "b")
    ]
    first, other = hosts
    try:
        first.start()
        _wait_for(flags / f"entered-{first.pid}")
        other.start()
        seen = _wait_for(flags / f"refused-{kind}-b", flags / f"entered-{other.pid}")
        assert seen == flags / f"refused-{kind}-b"  # B waits on A's lease, never enters
        (flags / "go").touch()
        results = dict(out.get(timeout=120) for _ in range(2))
        for proc in hosts:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in hosts:
            if proc.pid is not None:
                proc.kill()
    assert first.pid is not None
    assert other.pid is not None
    return results, first.pid, other.pid, flags


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_cache_runs_a_config_once_across_hosts(server: Server, tmp_path: Path, kind: str) -> None:
    """Host A runs the config and holds it; host B (another DE_CACHE, so no shared
    local lock) is refused the config's lease, waits, and gets A's run as a hit."""
    url = server.url()
    results, _, other_pid, flags = _two_hosts(url, tmp_path, kind)
    assert results == {f"{kind}-a": 9, f"{kind}-b": 9}
    assert not (flags / f"entered-{other_pid}").exists()
    function = aheld_square if kind == "async" else held_square
    assert len(experiment(root=url)(function).observations()) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_cache_waiter_runs_the_config_itself_when_the_holders_run_fails(
    server: Server, tmp_path: Path, kind: str
) -> None:
    """Host A holds the config's lease and its run fails; host B, refused the lease
    meanwhile, finds no completed run once A lets go, so takes the lease and runs
    the config itself: a completed run, B's result."""
    url = server.url()
    results, first_pid, other_pid, flags = _two_hosts(url, tmp_path, kind, "failing_once_square")
    assert results == {f"{kind}-a": "RuntimeError('the first run fails')", f"{kind}-b": 9}
    # B's body ran only once A's run had failed
    assert (flags / "events").read_text().splitlines() == [
        f"entered {first_pid}",
        f"failed {first_pid}",
        f"entered {other_pid}",
        f"returned {other_pid}",
    ]
    function = afailing_once_square if kind == "async" else failing_once_square
    runs = experiment(root=url)(function).observations(status="all")
    assert [o.status for o in runs] == ["failed", "completed"]
    assert runs[1].result == 9
    hit = experiment(root=url, cache=True)(function).experiment.index.lookup({"x": 3})
    assert hit is not None
    assert hit.id == runs[1].id  # B's run is the cached one


def test_a_folder_on_a_network_filesystem_counts_as_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digital_experiments._store import filesystems

    run = experiment(root=tmp_path / "runs", cache=True)(plain)
    assert not run.experiment.index.shared()  # type: ignore[attr-defined]
    monkeypatch.setattr(filesystems, "mount_of", lambda path: ("/mnt", "nfs4"))
    run = experiment(root=tmp_path / "other", cache=True)(plain)
    assert run.experiment.index.shared()  # type: ignore[attr-defined]
    assert run(2) == 2  # runs under the lease
    assert run(2) == 2  # and hits
    assert [p.name for p in (tmp_path / "other" / ".de" / "leases").iterdir()] == [
        run.experiment.index.key({"x": 2})  # type: ignore[attr-defined]
    ]
    assert len(run.observations()) == 1


def test_a_running_runs_metrics_reach_the_bucket_before_it_ends(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other hosts see a running run's curve: its points are uploaded now and then
    (here at every write), not only when it ends."""
    from digital_experiments._runs import metrics

    monkeypatch.setattr(metrics, "FLUSH_EVERY", 0.0)
    monkeypatch.setattr(metrics, "UPLOAD_EVERY", 0.0)
    url = server.url()
    seen: list[list[float]] = []

    def train(epochs: int) -> int:
        store = S3Store(url)
        for epoch in range(epochs):
            log(loss=1.0 / (epoch + 1))
            text = store.read(f".de/metrics/{current_id()}.jsonl").decode()
            seen.append([json.loads(line)[2] for line in text.splitlines() if line])
        return epochs

    run = experiment(root=url)(train)
    assert run(3) == 3
    assert seen == [[1.0], [1.0, 0.5], [1.0, 0.5, 1 / 3]]  # uploaded while it ran
    (observation,) = run.observations()
    assert list(observation.metrics()["value"]) == [1.0, 0.5, 1 / 3]


def test_a_failed_progress_upload_loses_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digital_experiments._runs import metrics

    monkeypatch.setattr(metrics, "FLUSH_EVERY", 0.0)
    monkeypatch.setattr(metrics, "UPLOAD_EVERY", 0.0)
    url = server.url()
    run = experiment(root=url)(square)
    store = run.backend.store
    real, refused = store.put, []

    def flaky(key: str, data: bytes, **options: Any) -> str:
        if key.startswith(".de/metrics/") and not refused:
            refused.append(key)
            raise StoreError("the connection dropped")
        return real(key, data, **options)

    monkeypatch.setattr(store, "put", flaky)
    assert run(1) == {"y": 1}
    assert refused  # the first upload really failed, inside log()
    (observation,) = run.observations()
    assert list(observation.metrics()["value"]) == [0.5, 0.25]


# ---------------------------------------------------------------- abandoned across hosts


def _as_if_running_elsewhere(run: Any) -> str:
    """Rewrite the one run's record as ``running`` in a process of another host."""
    (observation,) = run.observations()
    metadata = {**observation.metadata, "status": "running"}
    metadata["process"] = {"host": "another-host", "pid": 1, "boot": "x", "pidns": 1}
    metadata.pop("environment", None)
    run.backend.record(observation._replace(result=None, metadata=metadata))
    return str(observation.id)


def test_a_run_of_another_host_silent_too_long_reads_abandoned(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pid cannot be checked here: the age of its record (the store's clock)
    decides, against ABANDONED_AFTER."""
    from digital_experiments._runs import heartbeats

    run = experiment(root=server.url())(plain)
    run(1)
    id = _as_if_running_elsewhere(run)
    monkeypatch.setattr(heartbeats, "ABANDONED_AFTER", 3600.0)
    assert [o.id for o in run.observations(status="running")] == [id]  # just written
    monkeypatch.setattr(heartbeats, "ABANDONED_AFTER", -1.0)
    assert [o.id for o in run.observations(status="abandoned")] == [id]  # silent "too long"
    assert run.observations(status="running") == []


def test_the_same_record_in_an_unshared_folder_stays_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a local disk no other host writes, so no heartbeat is kept and none is
    judged: another PID namespace's run stays running."""
    from digital_experiments._runs import heartbeats

    monkeypatch.setattr(heartbeats, "ABANDONED_AFTER", -1.0)
    run = experiment(root=tmp_path / "runs")(plain)
    run(1)
    id = _as_if_running_elsewhere(run)
    assert [o.id for o in run.observations(status="running")] == [id]


def test_a_live_run_beats_and_its_heartbeat_goes_when_it_ends(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While it runs, .de/heartbeats/<id> is rewritten; a reader on another host
    (another HOST here) finds it fresh; when the run ends, it is deleted."""
    from digital_experiments._runs import heartbeats

    url = server.url()
    store = S3Store(url)
    seen: dict[str, Any] = {}
    host = storage.HOST

    def long_run(x: int) -> int:
        id = current_id()
        key = f".de/heartbeats/{id}"
        monkeypatch.setattr(heartbeats, "EVERY", 0.01)
        heartbeats._wake.set()  # the beating thread may be in a long wait: wake it
        deadline = time.monotonic() + 60  # a bound on a hang only
        while store.version(key) is None:
            assert time.monotonic() < deadline, "no heartbeat was written"
            time.sleep(0.01)
        heartbeats._wake.clear()
        seen["holder"] = json.loads(store.read(key))["holder"]
        monkeypatch.setattr(storage, "HOST", "reader-host")  # as another host reads it
        monkeypatch.setattr(heartbeats, "ABANDONED_AFTER", 3600.0)
        seen["fresh"] = [o.status for o in run.observations(status="all")]
        monkeypatch.setattr(heartbeats, "ABANDONED_AFTER", -1.0)
        seen["stale"] = [o.status for o in run.observations(status="all")]
        monkeypatch.setattr(storage, "HOST", host)  # this host again, to end the run
        return x

    run = experiment(root=url)(long_run)
    assert run(5) == 5
    assert seen["holder"]["pid"] == os.getpid()
    assert seen["fresh"] == ["running"]
    assert seen["stale"] == ["abandoned"]
    assert [k for k in store.walk(".de/") if k.startswith(".de/heartbeats/")] == []
    assert [o.status for o in run.observations()] == ["completed"]


# ---------------------------------------------------------------- the server stopped mid-write


@pytest.mark.parametrize("write", ["put_new", "put"], ids=["create", "final-record"])
def test_a_server_stopped_mid_write_delays_the_run_and_loses_nothing(
    seaweedfs: Server, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """SIGSTOP the server just before a record's write reaches it; once the write
    has been passed on (the proxy says), SIGCONT. The call waits, then completes
    with one whole record."""
    from .servers import DroppingProxy

    with DroppingProxy(seaweedfs.endpoint) as proxy:
        for name, value in {**seaweedfs.env(), "AWS_ENDPOINT_URL": proxy.endpoint}.items():
            monkeypatch.setenv(name, value)
        url = seaweedfs.url()
        run = experiment(root=url)(plain)
        store = run.backend.store
        real = getattr(store, write)
        stopped: list[str] = []

        def stop_the_server(key: str, data: bytes, **options: Any) -> Any:
            if key.endswith(".pkl") and not stopped:
                stopped.append(key)
                line = f"PUT /{seaweedfs.bucket}/{url.rsplit('/', 1)[1]}/{key}".encode()
                seaweedfs.pause()
                threading.Thread(target=resume_once_sent, args=(line,), daemon=True).start()
            return real(key, data, **options)

        def resume_once_sent(line: bytes) -> None:
            try:
                proxy.wait_for(line)
            finally:
                seaweedfs.resume()

        monkeypatch.setattr(store, write, stop_the_server)
        assert run(7) == 7
        assert stopped  # the server really was stopped during this write
        (observation,) = run.observations()
        assert observation.result == 7
        assert observation.metadata["status"] == "completed"
        assert keys(url) == [f"{observation.id}.pkl"]
