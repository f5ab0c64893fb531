"""Heartbeats of running runs (``_runs/heartbeats.py``), one piece at a time: the
beating thread's rounds driven here, in this thread, with stores that record
what they are asked (mutation testing asked for each of these)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from digital_experiments._model import layout
from digital_experiments._runs import heartbeats
from digital_experiments._store import files as storage

ID, OTHER, THIRD = (f"2026-01-01_00-00-00_00000{n}" for n in (1, 2, 3))


class Stop(BaseException):
    """Ends the beating loop after its round (the loop never ends by itself)."""


class Recorder:
    """A store that writes nothing and remembers what the test's thread asked. The
    beating thread an earlier test may have left in this process is refused like a
    store hiccup (it skips the run), so it changes nothing here."""

    def __init__(self, *, put: Any = None, delete: Any = None) -> None:
        self.puts: list[tuple[str, bytes]] = []
        self.deletes: list[str] = []
        self.on_put, self.on_delete = put, delete
        self.owner = threading.current_thread()

    def put(self, key: str, data: bytes) -> str:
        if threading.current_thread() is not self.owner:
            raise OSError("another beating thread of this process: not this test's")
        self.puts.append((key, data))
        if self.on_put is not None:
            self.on_put(self, key)
        return "1"

    def delete(self, key: str) -> None:
        self.deletes.append(key)
        if self.on_delete is not None:
            self.on_delete(self, key)


def _refuse(store: Any, key: str) -> None:
    raise OSError("the connection dropped")


@pytest.fixture
def beating(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[Any, str], bool]]:
    """This test's own runs to beat for, and a beating thread that does nothing
    until the test ends (the process's real one never sees these runs)."""
    runs: dict[tuple[Any, str], bool] = {}
    monkeypatch.setattr(heartbeats, "_beating", runs)
    monkeypatch.setattr(heartbeats, "_thread", None)
    done = threading.Event()
    monkeypatch.setattr(heartbeats, "_beat", done.wait)
    yield runs
    done.set()


def _one_round(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Run one round of the real beating loop in this thread; the waits it made."""
    waits: list[float | None] = []
    me, never = threading.current_thread(), threading.Event()

    def wait(timeout: float | None = None) -> bool:
        if threading.current_thread() is not me:  # another beating thread: as before
            return never.wait(timeout)
        waits.append(timeout)
        if len(waits) == 2:
            raise Stop
        return False

    monkeypatch.setattr(heartbeats, "_wake", type("Wake", (), {"wait": staticmethod(wait)})())
    with pytest.raises(Stop):
        heartbeats._beat()
    return waits


def test_a_round_beats_for_every_run_after_waiting_every_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = Recorder(), Recorder()
    runs = {(first, ID): False, (second, OTHER): True}
    monkeypatch.setattr(heartbeats, "_beating", runs)
    assert _one_round(monkeypatch) == [heartbeats.EVERY, heartbeats.EVERY]
    body = json.dumps({"holder": storage.process_info()}).encode()
    assert first.puts == [(layout.heartbeat_key(ID), body)]
    assert second.puts == [(layout.heartbeat_key(OTHER), body)]
    assert json.loads(body)["holder"]["pid"] == os.getpid()
    assert first.deletes == second.deletes == []
    for store, id in ((first, ID), (second, OTHER)):  # both have beaten now: stop deletes
        heartbeats.stop(store, id)  # type: ignore[arg-type]
        assert store.deletes == [layout.heartbeat_key(id)]


def test_a_store_that_fails_a_beat_holds_up_no_other_run(monkeypatch: pytest.MonkeyPatch) -> None:
    failing, fine = Recorder(put=_refuse), Recorder()
    runs = {(failing, ID): False, (fine, OTHER): False}
    monkeypatch.setattr(heartbeats, "_beating", runs)
    _one_round(monkeypatch)
    assert fine.puts == [(layout.heartbeat_key(OTHER), fine.puts[0][1])]
    heartbeats.stop(failing, ID)  # type: ignore[arg-type]
    heartbeats.stop(fine, OTHER)  # type: ignore[arg-type]
    assert failing.deletes == []  # it never beat: nothing to delete
    assert fine.deletes == [layout.heartbeat_key(OTHER)]


def test_a_run_stopped_while_it_beat_takes_its_heartbeat_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even when that delete fails: the next run of the round still beats."""
    runs: dict[tuple[Any, str], bool] = {}

    def stopped(store: Any, key: str) -> None:
        del runs[(store, key.rsplit("/", 1)[-1])]  # stop() ran meanwhile

    gone, refused, fine = Recorder(put=stopped), Recorder(put=stopped, delete=_refuse), Recorder()
    runs.update({(gone, ID): False, (refused, OTHER): False, (fine, THIRD): False})
    monkeypatch.setattr(heartbeats, "_beating", runs)
    _one_round(monkeypatch)
    assert gone.deletes == [layout.heartbeat_key(ID)]
    assert refused.deletes == [layout.heartbeat_key(OTHER)]
    assert len(fine.puts) == 1
    assert list(runs) == [(fine, THIRD)]
    heartbeats.stop(fine, THIRD)  # type: ignore[arg-type]
    assert fine.deletes == [layout.heartbeat_key(THIRD)]


def test_a_run_shorter_than_one_beat_makes_no_request(
    beating: dict[tuple[Any, str], bool],
) -> None:
    store = Recorder()
    heartbeats.start(store, ID)  # type: ignore[arg-type]
    assert list(beating) == [(store, ID)]
    heartbeats.stop(store, ID)  # type: ignore[arg-type]
    assert (store.puts, store.deletes) == ([], [])
    assert beating == {}


def test_a_run_that_beat_deletes_its_heartbeat_even_if_that_fails_quietly(
    beating: dict[tuple[Any, str], bool],
) -> None:
    store, refusing = Recorder(), Recorder(delete=_refuse)
    for each in (store, refusing):
        heartbeats.start(each, ID)  # type: ignore[arg-type]
        beating[(each, ID)] = True  # as after a beat
        heartbeats.stop(each, ID)  # type: ignore[arg-type]
        assert each.deletes == [layout.heartbeat_key(ID)]
    assert beating == {}


def test_one_daemon_thread_beats_for_every_run_of_a_process(
    beating: dict[tuple[Any, str], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made on the first start (none yet), kept while it lives, made again once it
    died (or in a forked child, where it is another process's)."""
    store = Recorder()
    heartbeats.start(store, ID)  # type: ignore[arg-type]
    assert heartbeats._thread is not None
    pid, thread = heartbeats._thread
    assert pid == os.getpid()
    assert thread.is_alive()
    assert thread.daemon  # never keeps a process from exiting
    assert thread.name == "digital-experiments-heartbeat"
    heartbeats.start(store, OTHER)  # type: ignore[arg-type]
    assert heartbeats._thread == (pid, thread)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    monkeypatch.setattr(heartbeats, "_thread", (os.getpid(), dead))
    heartbeats.start(store, THIRD)  # type: ignore[arg-type]
    assert heartbeats._thread[1] is not dead
    assert heartbeats._thread[1].is_alive()
    assert set(beating) == {(store, ID), (store, OTHER), (store, THIRD)}


def test_silent_for_is_the_heartbeats_age_else_the_records() -> None:
    ages = {layout.heartbeat_key(ID): 5.0, "record": 100.0}
    store = type("Ages", (), {"age": staticmethod(ages.get)})()
    assert heartbeats.silent_for(store, ID, "record") == 5.0  # the newer sign of life
    assert heartbeats.silent_for(store, ID, None) == 5.0
    assert heartbeats.silent_for(store, OTHER, "record") == 100.0  # no heartbeat yet
    assert heartbeats.silent_for(store, OTHER, None) is None
    assert heartbeats.silent_for(store, OTHER, "gone") is None
