"""Leases over any store: one holder, takeovers decided by create-only writes,
staleness on the observer's own clock, tokens that settle lost answers."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._store import LocalStore, MemoryStore, Store, open_store
from digital_experiments._store import files as storage
from digital_experiments._store import lease as leases
from digital_experiments._store.lease import Lease, Observer

from .conftest import dead_pid, python_code
from .servers import ATOMIC_KINDS, KINDS, race, store_of, use_server

FOREIGN = {"host": "another-host", "pid": 1, "boot": "b", "pidns": "p", "start": 1}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Every store: a folder, memory, and the loopback SeaweedFS and moto servers."""
    return store_of(request.param, request, tmp_path, monkeypatch)


def plant(store: Store, key: str, generation: int, token: str, holder: dict[str, Any]) -> None:
    """Another process's generation of the lease on ``key``."""
    lease = Lease(store, key, token=token)
    body = {"token": token, "generation": generation, "holder": holder}
    assert store.put_new(lease.generation_key(generation), json.dumps(body).encode())


def test_one_holder_at_a_time(store: Store) -> None:
    first, second = Lease(store, "k"), Lease(store, "k")
    assert leases.acquire(first)
    assert leases.acquire(first)  # again: still ours
    assert not leases.acquire(second)  # a live holder on this host
    assert leases.holds(first)
    assert not leases.holds(second)


def test_a_released_lease_is_taken_at_once_and_generations_grow(store: Store) -> None:
    first, second = Lease(store, "k"), Lease(store, "k")
    assert leases.acquire(first)
    leases.release(first)
    assert not leases.holds(first)
    assert leases.acquire(second)
    assert leases.generations(second) == [1]  # the released generation 0 is tidied away
    leases.release(second)
    assert leases.acquire(first)  # a new hold, a new generation
    assert leases.generations(first) == [2]


def test_a_release_mark_outlives_the_takeovers_after_it(store: Store) -> None:
    """What a lease is released with stays readable after others take it over (a
    taker looking for what the work left, right after taking over, finds it); an
    empty mark, or a release by a token that no longer holds, hides nothing."""
    first = Lease(store, "k")
    assert leases.released_mark(first) is None  # no generation at all
    assert leases.acquire(first)
    assert leases.released_mark(first) is None  # held, never released
    assert leases.release(first, b"done by run 1")
    assert leases.released_mark(first) == b"done by run 1"
    assert leases.released_mark(Lease(store, "k")) == b"done by run 1"  # any token reads it
    second = Lease(store, "k")
    assert leases.acquire(second)  # generation 1, over the released 0
    assert leases.generations(second) == [1]
    assert leases.released_mark(second) == b"done by run 1"  # the mark below stays
    assert not leases.release(first, b"stale")  # first no longer holds: nothing written
    assert leases.release(second)  # an empty mark
    assert leases.released_mark(second) == b"done by run 1"
    third = Lease(store, "k")
    assert leases.acquire(third)
    assert leases.release(third, b"done by run 3")
    assert leases.released_mark(first) == b"done by run 3"  # the latest wins


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store: Store) -> None:
    holder = {**storage.process_info(), "pid": dead_pid(), "start": None}
    plant(store, "k", 0, "theirs", holder)
    mine = Lease(store, "k")
    assert leases.acquire(mine, Observer(Clock()))
    assert leases.generations(mine) == [1]


def test_another_hosts_lease_goes_stale_only_after_a_lease_unchanged_on_our_clock(
    store: Store,
) -> None:
    """No pid can be checked: the holder is stale once its generation and heartbeat
    have not moved for one lease length, as this observer's clock measures."""
    plant(store, "k", 0, "theirs", FOREIGN)
    clock = Clock()
    observer = Observer(clock)
    mine = Lease(store, "k", length=30.0)
    assert not leases.acquire(mine, observer)  # first look: the clock starts now
    clock.now += 29.0
    assert not leases.acquire(mine, observer)
    theirs = Lease(store, "k", token="theirs")
    store.put(f"{theirs.generation_key(0)}.beat", json.dumps({"holder": FOREIGN}).encode())
    clock.now += 29.0
    assert not leases.acquire(mine, observer)  # the beat moved: counting starts again
    clock.now += 29.0
    assert not leases.acquire(mine, observer)
    clock.now += 1.0
    assert leases.acquire(mine, observer)
    assert not leases.holds(theirs)


def test_without_a_length_another_hosts_lease_uses_the_default(store: Store) -> None:
    plant(store, "k", 0, "theirs", FOREIGN)
    clock = Clock()
    observer, mine = Observer(clock), Lease(store, "k")
    assert not leases.acquire(mine, observer)
    clock.now += leases.DEFAULT_LENGTH - 1
    assert not leases.acquire(mine, observer)
    clock.now += 1
    assert leases.acquire(mine, observer)


def test_a_live_holder_on_this_host_is_waited_for_without_a_length(store: Store) -> None:
    plant(store, "k", 0, "theirs", storage.process_info())
    clock = Clock()
    observer, mine = Observer(clock), Lease(store, "k")
    assert not leases.acquire(mine, observer)
    clock.now += 10 * leases.DEFAULT_LENGTH
    assert not leases.acquire(mine, observer)


def test_a_holder_taken_over_while_frozen_no_longer_holds(store: Store) -> None:
    """Frozen past its lease, then resumed: it finds it lost, cannot renew, and
    its release does not free the new holder's lease."""
    frozen = Lease(store, "k", length=5.0)
    assert leases.acquire(frozen)
    # seen from another host: our identity is foreign there
    store.put(
        f"{frozen.generation_key(0)}.beat",
        json.dumps({"holder": FOREIGN, "token": frozen.token}).encode(),
    )
    clock = Clock()
    observer, taker = Observer(clock), Lease(store, "k", length=5.0)
    assert not leases.acquire(taker, observer)
    clock.now += 5.0
    assert leases.acquire(taker, observer)
    assert not leases.holds(frozen)
    assert not leases.beat(frozen)
    leases.release(frozen)
    assert leases.holds(taker)


class _Paused(Store):
    """A store whose next create of ``key`` waits for ``go`` (the taker stalls)."""

    def __init__(self, inner: Store, key: str) -> None:
        self.inner, self.key, self.url = inner, key, inner.url
        self.reached, self.go = threading.Event(), threading.Event()

    def put_new(self, key: str, data: bytes) -> str | None:
        if key == self.key and not self.go.is_set():
            self.reached.set()
            assert self.go.wait(60)
        return self.inner.put_new(key, data)

    def get(self, key: str) -> tuple[bytes, str]:
        return self.inner.get(key)

    def version(self, key: str) -> str | None:
        return self.inner.version(key)

    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        return self.inner.put_if(key, data, version)

    def put(self, key: str, data: bytes) -> str:
        return self.inner.put(key, data)

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        return self.inner.list(prefix, start_after)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _stall_a_taker(store: Store) -> tuple[_Paused, Lease, list[bool], threading.Thread]:
    """A taker (in a thread) that judged a foreign generation 0 stale, held just
    before its create of generation 1 lands; ``won`` gets what its acquire says."""
    plant(store, "k", 0, "theirs", FOREIGN)
    paused = _Paused(store, Lease(store, "k").generation_key(1))
    slow = Lease(paused, "k", length=0.0)
    won: list[bool] = []
    thread = threading.Thread(target=lambda: won.append(leases.acquire(slow, Observer(Clock()))))
    thread.start()
    assert paused.reached.wait(60)
    return paused, slow, won, thread


def test_a_taker_with_an_old_view_never_wins(store: Store) -> None:
    """A taker judges generation 0 stale, then stalls; meanwhile the lease moves on
    (taken, released, taken again, old generations tidied away). When the stalled
    taker's create of generation 1 finally lands, it is not the top: it loses."""
    paused, _, won, thread = _stall_a_taker(store)
    quick = Lease(store, "k", length=0.0)
    assert leases.acquire(quick, Observer(Clock()))  # generation 1
    leases.release(quick)
    later = Lease(store, "k")
    assert leases.acquire(later)  # generation 2; generation 1 tidied away
    assert leases.generations(later) == [2]
    paused.go.set()
    thread.join(60)
    assert won == [False]
    assert leases.holds(later)
    assert leases.generations(later) == [2]  # the loser withdrew its generation 1


class _LostAnswers(MemoryStore):
    """A create-only write that lands but answers "exists", as a retried request can."""

    def put_new(self, key: str, data: bytes) -> str | None:
        super().put_new(key, data)
        return None


def test_a_lost_answer_is_settled_by_the_token() -> None:
    store = _LostAnswers()
    mine, other = Lease(store, "k"), Lease(store, "k")
    assert leases.acquire(mine)
    assert leases.holds(mine)
    assert not leases.acquire(other)


def _race(url: str, env: dict[str, str], token: str, barrier: Any, results: Any) -> None:
    import os

    os.environ.update(env)
    store = open_store(url, fsync=False)
    barrier.wait(60)
    results.put((token, leases.acquire(Lease(store, "k", token=token))))


@pytest.mark.parametrize("kind", ATOMIC_KINDS)
@pytest.mark.parametrize("start", ["free", "released", "dead holder"])
def test_processes_racing_for_one_lease_one_wins(
    kind: str,
    start: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real processes (spawn), let go together by a barrier, race to create the
    first generation, to take a released lease, or to take over a dead holder's:
    exactly one wins, and the others find it holding. On a folder and on
    SeaweedFS (moto's conditional writes are not atomic: a race proves nothing)."""
    store = store_of(kind, request, tmp_path, monkeypatch)
    env = {} if kind == "local" else use_server(kind, request, monkeypatch).env()
    if start == "released":
        first = Lease(store, "k")
        assert leases.acquire(first)
        leases.release(first)
    elif start == "dead holder":
        plant(store, "k", 0, "dead", {**storage.process_info(), "pid": dead_pid(), "start": None})
    context = multiprocessing.get_context("spawn")
    tokens = [f"racer-{n}" for n in range(6)]
    outcomes = dict(race(context, _race, [(store.url, env, token) for token in tokens]))
    winners = [token for token, won in outcomes.items() if won]
    assert len(winners) == 1, outcomes
    assert leases.holds(Lease(store, "k", token=winners[0]))
    assert leases.generations(Lease(store, "k")) == [0 if start == "free" else 1]


def test_an_observer_times_each_lease_apart(tmp_path: Path) -> None:
    """What one lease did says nothing of another (another key, or another store)."""
    clock = Clock()
    observer = Observer(clock)
    a = Lease(LocalStore(tmp_path / "one", fsync=False), "a")
    b, elsewhere = Lease(a.store, "b"), Lease(LocalStore(tmp_path / "two", fsync=False), "a")
    assert observer.unchanged_for(a, "state") == 0.0  # first look
    assert observer.unchanged_for(b, "other") == 0.0
    assert observer.unchanged_for(elsewhere, "other") == 0.0
    clock.now += 5.0
    assert observer.unchanged_for(a, "state") == 5.0
    assert observer.unchanged_for(b, "other") == 5.0
    assert observer.unchanged_for(a, "moved") == 0.0  # a change starts the count again
    clock.now += 1.0
    assert observer.unchanged_for(a, "moved") == 1.0


def test_without_an_observer_the_process_wide_one_watches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``leases.OBSERVER``, looked up at each call (a fresh one here: what the
    process saw of other tests' stores, memory ones share a URL, stays out)."""
    clock = Clock()
    monkeypatch.setattr(leases, "OBSERVER", Observer(clock))
    plant(store, "k", 0, "theirs", FOREIGN)
    mine = Lease(store, "k", length=30.0)
    assert not leases.acquire(mine)  # first look of this process: not stale yet
    clock.now += 30.0
    assert leases.acquire(mine)


def test_a_lease_whose_holder_process_died_is_taken_over_at_once(tmp_path: Path) -> None:
    """A real process takes the lease and exits: its generation names it, so this
    host sees at once that it is gone."""
    folder = tmp_path / "store"
    child = python_code(
        "import sys\n"
        "from pathlib import Path\n"
        "from digital_experiments._store import lease as leases\n"
        "from digital_experiments._store import LocalStore\n"
        "store = LocalStore(Path(sys.argv[1]), fsync=False)\n"
        "assert leases.acquire(leases.Lease(store, 'k'))\n",
        folder,
    )
    assert child.returncode == 0, child.stderr
    mine = Lease(LocalStore(folder, fsync=False), "k")
    assert leases.acquire(mine, Observer(Clock()))
    assert leases.generations(mine) == [1]


def test_a_garbage_generation_is_taken_over_at_once(store: Store) -> None:
    store.put_new(Lease(store, "k").generation_key(0), b"not json")
    mine = Lease(store, "k")
    assert leases.acquire(mine, Observer(Clock()))
    assert leases.generations(mine) == [1]


def test_an_empty_generation_is_being_written_and_counts_from_when_it_is(store: Store) -> None:
    """An empty generation is one written in place (no hard links): no garbage to
    take over, and once written its count of unchanged time starts again."""
    key = Lease(store, "k").generation_key(0)
    assert store.put_new(key, b"")
    clock = Clock()
    observer, mine = Observer(clock), Lease(store, "k")
    assert not leases.acquire(mine, observer)
    clock.now += leases.DEFAULT_LENGTH - 1
    assert not leases.acquire(mine, observer)
    store.put(key, json.dumps({"token": "theirs", "holder": FOREIGN}).encode())
    clock.now += 1
    assert not leases.acquire(mine, observer)  # written just now: a fresh count
    clock.now += leases.DEFAULT_LENGTH
    assert leases.acquire(mine, observer)


def test_a_taker_that_loses_the_race_for_a_generation_does_not_hold(store: Store) -> None:
    """Both judge generation 0 stale; the other creates generation 1 first."""
    paused, slow, won, thread = _stall_a_taker(store)
    quick = Lease(store, "k", length=0.0)
    assert leases.acquire(quick, Observer(Clock()))  # generation 1
    paused.go.set()
    thread.join(60)
    assert won == [False]
    assert leases.holds(quick)
    assert not leases.holds(slow)


def test_a_takeover_leaves_only_the_new_generation_and_the_marks_below(store: Store) -> None:
    """The generations below and their heartbeats are removed; their release marks
    stay (what the work they guarded left outlives the takeover)."""
    first = Lease(store, "k")
    assert leases.acquire(first)
    assert leases.beat(first)
    leases.release(first, b"run 1")
    second = Lease(store, "k")
    assert leases.acquire(second)
    assert list(store.list(second.folder)) == [
        f"{second.generation_key(0)}.released",
        second.generation_key(1),
    ]
    assert leases.generations(second) == [1]
    assert leases.holds(second)


def test_beat_renews_only_a_lease_held(store: Store) -> None:
    lease = Lease(store, "k")
    assert not leases.beat(lease)  # nobody holds it
    assert leases.acquire(lease)
    assert not leases.beat(Lease(store, "k"))  # another token
    assert leases.beat(lease)
    leases.release(lease)
    assert not leases.beat(lease)  # given back: not to be renewed


def test_a_heartbeat_names_its_adopter_until_another_adopts(store: Store) -> None:
    """The worker that adopted the lease stays named when the driver renews it."""
    lease = Lease(store, "k")
    assert leases.acquire(lease)
    assert leases.worker(lease) is None  # no heartbeat yet
    assert leases.beat(lease)
    assert leases.worker(lease) == storage.process_info()
    beat_key = f"{lease.generation_key(0)}.beat"
    store.put(beat_key, json.dumps({"holder": FOREIGN, "token": lease.token}).encode())
    assert leases.worker(lease) == FOREIGN
    assert leases.beat(lease)  # the driver renews
    assert leases.worker(lease) == FOREIGN
    assert leases.beat(lease, adopt=True)  # this process adopts it
    assert leases.worker(lease) == storage.process_info()
    store.put(beat_key, json.dumps({"holder": "not a process"}).encode())
    assert leases.worker(lease) is None
    assert leases.worker(Lease(store, "never held")) is None


def test_every_heartbeat_moves_the_version(store: Store) -> None:
    """Observers watch the heartbeat's version; on S3 that is a digest of the bytes,
    so two beats must never write the same bytes."""
    lease = Lease(store, "k")
    assert leases.acquire(lease)
    beat_key = f"{lease.generation_key(0)}.beat"
    versions = set()
    for _ in range(3):
        assert leases.beat(lease)
        versions.add(store.version(beat_key))
    assert len(versions) == 3


def test_held_lists_the_keys_someone_holds(store: Store) -> None:
    prefix = ".de/claims/"  # not the default prefix: as sweep claims use it
    assert leases.held(store, prefix) == []
    taken = {key: Lease(store, key, prefix) for key in ("a", "b", "c")}
    for lease in taken.values():
        assert leases.acquire(lease)
    leases.release(taken["b"])
    assert leases.acquire(Lease(store, "d"))  # under the default prefix: not listed
    assert leases.held(store, prefix) == ["a", "c"]
    assert leases.holds_any(Lease(store, "a", prefix))  # by anyone, asked with any token
    assert not leases.holds_any(Lease(store, "b", prefix))  # released
    assert not leases.holds_any(Lease(store, "never", prefix))


def test_only_names_of_ten_digits_are_generations(store: Store) -> None:
    lease = Lease(store, "k")
    assert leases.acquire(lease)
    for stray in ("README.txt", "12345", "00000000001"):  # ten characters; digits; eleven
        store.put(lease.folder + stray, b"{}")
    assert leases.generations(lease) == [0]
    assert leases.holds(lease)


def test_one_thread_renews_every_kept_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two leases kept at once are both renewed, by one renewer thread; once their
    blocks have left, nothing of theirs is due (no renewal to come)."""
    store = LocalStore(tmp_path)
    first, second = Lease(store, "a"), Lease(store, "b")
    assert leases.acquire(first)
    assert leases.acquire(second)
    beats: dict[str, int] = {}
    renewed = threading.Event()
    real = leases.beat

    def counting(lease: Lease, adopt: bool = False) -> bool:
        beats[lease.key] = beats.get(lease.key, 0) + 1
        if len(beats) == 2 and min(beats.values()) >= 2:
            renewed.set()
        return real(lease, adopt)

    monkeypatch.setattr(leases, "beat", counting)
    before = {key: store.version(f".de/leases/{key}/0000000000.beat") for key in "ab"}
    with leases.kept(first, 0.01), leases.kept(second, 0.01):
        assert renewed.wait(60)
        renewers = [t for t in threading.enumerate() if t.name == "digital-experiments-lease"]
        assert len(renewers) == 1
    assert leases._KEEPER.due == {}
    for key in "ab":  # really written, not only counted
        assert store.version(f".de/leases/{key}/0000000000.beat") not in (None, before[key])


def test_a_forked_child_renews_its_own_leases(tmp_path: Path) -> None:
    """The parent's renewer thread is not in a fork child: the child starts its own,
    and does not renew the parent's leases."""
    store = LocalStore(tmp_path)
    parent = Lease(store, "parent")
    assert leases.acquire(parent)
    context = multiprocessing.get_context("fork")
    with leases.kept(parent, 3600):
        child = context.Process(target=_keep_in_child, args=(str(tmp_path),))
        child.start()
        child.join(120)
    assert child.exitcode == 0
    assert store.has(".de/leases/child/0000000000.beat")
    assert not store.has(".de/leases/parent/0000000000.beat")  # 3600 s: never due


def _keep_in_child(root: str) -> None:
    store = LocalStore(root)
    lease = Lease(store, "child")
    assert leases.acquire(lease)
    assert leases._KEEPER.due == {}  # the parent's lease is not the child's
    done = threading.Event()
    real = leases.beat

    def once(lease: Lease, adopt: bool = False) -> bool:
        try:
            return real(lease, adopt)
        finally:
            done.set()

    leases.beat = once  # type: ignore[assignment]
    with leases.kept(lease, 0.01):
        assert done.wait(60)


def test_a_hanging_renewal_holds_up_no_other_lease_and_its_own_end_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renewer renews outside its lock: while one renewal hangs (a store that
    does not answer), other leases are kept and let go; the hanging lease's own
    block leaves only once that renewal is over (none is under way after)."""
    store = LocalStore(tmp_path)
    slow, other = Lease(store, "slow"), Lease(store, "other")
    assert leases.acquire(slow)
    assert leases.acquire(other)
    hanging, answer = threading.Event(), threading.Event()
    order: list[str] = []
    real = leases.beat

    def hang(lease: Lease, adopt: bool = False) -> bool:
        if lease.key == "slow":
            hanging.set()
            answer.wait(60)
            order.append("renewal over")
        return real(lease, adopt)

    monkeypatch.setattr(leases, "beat", hang)
    block = leases.kept(slow, 0.01)
    block.__enter__()
    assert hanging.wait(60)
    with leases.kept(other, 3600):  # entered and left while the renewal hangs
        pass
    order.append("other kept and let go")

    def leave() -> None:
        block.__exit__(None, None, None)
        order.append("slow let go")

    leaving = threading.Thread(target=leave)
    leaving.start()
    leaving.join(0.5)  # a removal that did not wait would be done by now
    answer.set()
    leaving.join(60)
    assert order == ["other kept and let go", "renewal over", "slow let go"]
    assert leases._KEEPER.due == {}
