"""The experiment and results behaviours on a ``memory://`` root: a
:class:`~digital_experiments._store.MemoryStore`, so everything a run records goes
through the store interface. Each test runs in an empty folder and checks it is
still empty afterwards: nothing above the store wrote to the disk there (only the
run's staging folder, which the store names, is on disk)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from digital_experiments import current_dir, experiment, log, query
from digital_experiments._read import trash
from digital_experiments._store import StoreError, open_store


@pytest.fixture(autouse=True)
def nothing_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DE_ROOT", raising=False)
    yield
    assert list(cwd.iterdir()) == []


def root() -> str:
    return f"memory://{uuid.uuid4().hex}"


def fit(lr: float, epochs: int = 2) -> dict[str, float]:
    for epoch in range(epochs):
        log(loss=lr / (epoch + 1))
    (current_dir() / "model.txt").write_text(f"lr={lr}")
    if lr > 1:
        raise ValueError(f"lr={lr} diverges")
    return {"loss": lr / epochs}


def test_runs_are_recorded_and_read_back_with_their_metrics_and_artefacts() -> None:
    url = root()
    train = experiment(root=url)(fit)
    assert train(0.2) == {"loss": 0.1}
    (run,) = train.observations()
    assert run.config == {"lr": 0.2, "epochs": 2}
    assert run.metadata["status"] == "completed"
    assert run.metadata["environment"]["system"]
    assert list(run.metrics()["value"]) == [0.2, 0.1]
    assert [p.read_text() for p in train.artefacts(run.id)] == ["lr=0.2"]
    store = open_store(url)
    keys = sorted(store.walk(""))
    assert [k for k in keys if not k.startswith(".de/")] == [
        f"{run.id}.pkl",
        f"storage/{run.id}/model.txt",
    ]
    assert f".de/metrics/{run.id}.jsonl" in keys
    assert [k for k in keys if k.startswith(".de/environments/")]
    frame = train.to_dataframe()
    assert list(frame.columns) == ["id", "config.lr", "config.epochs", "result.loss"]


def test_failures_statuses_queries_tags_and_notes() -> None:
    train = experiment(root=root())(fit)
    train(0.1)
    train(0.3)
    with pytest.raises(ValueError, match="diverges"):
        train(5.0)
    assert len(train.observations()) == 2
    (failed,) = train.observations(status="failed")
    assert "diverges" in failed.metadata["error"]["message"]
    best = train.observations(where="result.loss < 0.1")[0].id
    train.tag(best, best=True)
    train.note(best, "the one")
    (tagged,) = train.observations(where="tags.best == true")
    assert tagged.id == best
    assert tagged.metadata["notes"] == ["the one"]
    loaded = query.load(train.backend.where, status="all")
    assert len(loaded) == 3


def test_ids_stay_unique_for_many_threads_at_once() -> None:
    train = experiment(root=root())(fit)
    barrier = threading.Barrier(8)

    def calls(k: int) -> None:
        barrier.wait()
        for i in range(5):
            train(k / 10 + i / 100, epochs=1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(calls, range(8)))
    ids = [run.id for run in train.observations()]
    assert len(ids) == len(set(ids)) == 40


def test_cache_runs_a_config_once_for_threads_at_once() -> None:
    ran = []

    def body(x: int) -> int:
        ran.append(x)
        return x

    cached = experiment(root=root(), cache=True)(body)
    barrier = threading.Barrier(6)

    def call(_: int) -> int:
        barrier.wait()
        return cached(4)

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(call, range(6))) == [4] * 6
    assert ran == [4]
    assert len(cached.observations()) == 1


def test_a_sweep_runs_each_config_once_and_skips_them_the_second_time() -> None:
    train = experiment(root=root())(fit)
    grid = {"lr": [0.1, 0.2, 0.3], "epochs": [1, 2]}
    with ThreadPoolExecutor(3) as pool:
        first = train.sweep(grid, executor=pool, progress=False)
    assert len(first) == 6
    again = train.sweep(grid, progress=False)
    assert sorted(o.id for o in again) == sorted(o.id for o in first)
    assert len(train.observations()) == 6


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_async_runs_and_asweep(anyio_backend: str) -> None:
    async def afit(lr: float) -> float:
        await anyio.sleep(0)
        log(loss=lr)
        return lr * 2

    train = experiment(root=root())(afit)
    assert await train(0.5) == 1.0
    runs = await train.asweep({"lr": [0.1, 0.2, 0.5]}, progress=False)
    assert sorted(o.result for o in runs) == [0.2, 0.4, 1.0]
    assert len(train.observations()) == 3


def test_the_trash_round_trip() -> None:
    url = root()
    train = experiment(root=url)(fit)
    train(0.1)
    (id,) = [o.id for o in train.observations()]
    assert train.delete(id) == [id]
    assert train.observations() == []
    assert train.trash() == [id]
    assert train.restore(id).result == {"loss": 0.05}
    assert [p.name for p in train.artefacts(id)] == ["model.txt"]
    train.delete(id)
    assert train.purge() == 1
    assert not [key for key in open_store(url).walk("") if id in key]


def test_a_delete_cut_short_after_its_first_write_lists_no_trashed_run() -> None:
    """``deleted.json`` goes to the trash before anything moves: on its own it is not a
    trashed run (the run is still in place), and the next delete moves the run."""
    url = root()
    train = experiment(root=url)(fit)
    train(0.1)
    (id,) = [o.id for o in train.observations()]
    open_store(url).put(f".de/trash/{id}/deleted.json", b'{"at": 0}')
    assert train.trash() == []
    assert [o.id for o in train.observations()] == [id]
    assert train.delete(id) == [id]
    assert train.trash() == [id]


def _trashed_run() -> tuple[str, Any, str]:
    """A root in memory with one run, deleted: its URL, backend and id."""
    url = root()
    train = experiment(root=url)(fit)
    train(0.1)
    (id,) = [o.id for o in train.observations()]
    assert train.delete(id) == [id]
    return url, train.backend, id


def test_no_run_to_delete_or_restore_says_so() -> None:
    url = root()
    backend = experiment(root=url)(fit).backend
    missing = "2000-01-01_00-00-00_000000"
    assert trash.delete(backend, missing) is False
    with pytest.raises(FileNotFoundError) as gone:
        trash.restore(backend, missing)
    assert str(gone.value) == f"No run {missing!r} in the trash of {url!r}."


def test_a_refused_restore_leaves_every_part_in_the_trash() -> None:
    """A run took the id meanwhile (another host's): nothing of the trashed run moves
    over its parts."""
    url, backend, id = _trashed_run()
    store = open_store(url)
    store.put(f"{id}.pkl", b"another host's run")
    with pytest.raises(FileExistsError, match="already"):
        trash.restore(backend, id)
    keys = set(store.walk(""))
    assert {f".de/trash/{id}/metrics.jsonl", f"storage/.trash/{id}/model.txt"} <= keys
    assert not {f".de/metrics/{id}.jsonl", f"storage/{id}/model.txt"} & keys


def test_when_a_remote_run_was_deleted_is_read_from_its_trash() -> None:
    url, backend, id = _trashed_run()
    store = open_store(url)
    for when, read in ((b'"yesterday"', None), (b"[1]", None), (b"1000", 1000.0)):
        store.put(f".de/trash/{id}/deleted.json", b'{"at": ' + when + b"}")
        assert trash.deleted_at(backend, id) == read
    # deleted at 1000.0 exactly: a sweep that began then still counts it
    assert trash.load_even_deleted(backend, id, deleted_since=1000.0).id == id
    with pytest.raises(FileNotFoundError):
        trash.load_even_deleted(backend, id, deleted_since=1000.5)


def test_a_run_deleted_at_any_time_is_read_without_asking_when(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, backend, id = _trashed_run()
    store = open_store(url)
    real, read = store.read, []

    def reading(key: str) -> bytes:
        read.append(key)
        return real(key)

    monkeypatch.setattr(store, "read", reading)
    assert trash.load_even_deleted(backend, id).id == id
    assert not [key for key in read if key.endswith("deleted.json")]  # one request less


def test_purge_on_a_remote_store_takes_the_ids_it_is_given_and_counts_each() -> None:
    url = root()
    train = experiment(root=url)(fit)
    for lr in (0.1, 0.2, 0.3):
        train(lr)
    ids = sorted(o.id for o in train.observations())
    assert train.delete(*ids) == ids
    assert trash.purge(train.backend, ["2000-01-01_00-00-00_000000", ids[0]]) == 1
    assert train.trash() == ids[1:]
    assert train.purge() == 2
    assert not [key for key in open_store(url).walk("") if "trash" in key]


def test_a_purge_cut_short_leaves_no_restorable_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trashed record goes first; the next purge removes the rest."""
    url, backend, id = _trashed_run()
    store = open_store(url)
    real = store.delete

    def cut_short(key: str) -> None:
        monkeypatch.setattr(store, "delete", failing)
        real(key)

    def failing(key: str) -> None:
        raise StoreError("the connection dropped")

    monkeypatch.setattr(store, "delete", cut_short)
    with pytest.raises(StoreError):
        trash.purge(backend)
    monkeypatch.setattr(store, "delete", real)
    with pytest.raises(FileNotFoundError, match="No run"):
        trash.restore(backend, id)
    assert trash.purge(backend, [id]) == 1
    assert not [key for key in store.walk("") if id in key]
