"""The base types of ``digital_experiments.core``: Observation, Backend, Callback, Controller."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import core
from digital_experiments.core import Backend, Callback, Controller, Observation
from digital_experiments.experiment import Experiment


class ListBackend(Backend):
    """A minimal custom backend (the 2.0.4 contract only)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.records: dict[str, Observation] = {}

    def record(self, observation: Observation) -> None:
        self.records[observation.id] = observation

    def load(self, id: str) -> Observation:
        if id == "broken":
            raise OSError("cannot read")
        return self.records[id]

    def all_ids(self) -> list[str]:
        return [*self.records, "broken"]


# ---------------------------------------------------------------- Observation


def test_observation_is_a_namedtuple() -> None:
    """Observation has the fields id, config, result, metadata, in that order."""
    observation = Observation("i", {"x": 1}, 2, {"k": "v"})
    assert Observation._fields == ("id", "config", "result", "metadata")
    assert tuple(observation) == ("i", {"x": 1}, 2, {"k": "v"})
    assert observation._asdict() == {
        "id": "i",
        "config": {"x": 1},
        "result": 2,
        "metadata": {"k": "v"},
    }


def test_observation_repr() -> None:
    """The repr is ``Observation(<id>, <config> → <result>)``, without metadata."""
    observation = Observation("2026-01-01_00-00-00_000000", {"x": 2}, 4, {"big": "x" * 100})
    assert repr(observation) == "Observation(2026-01-01_00-00-00_000000, {'x': 2} → 4)"


def test_observation_status_defaults_to_completed() -> None:
    """A record without status (written by 2.0.4) counts as completed."""
    assert Observation("i", {}, None, {}).status == "completed"
    assert Observation("i", {}, None, {"status": "failed"}).status == "failed"


def test_observation_pickles_and_serialises() -> None:
    """Observations round-trip through pickle, and ``_asdict`` through JSON."""
    observation = Observation("i", {"x": [1, 2]}, {"y": 1.5}, {"status": "completed"})
    assert pickle.loads(pickle.dumps(observation)) == observation
    assert Observation(**json.loads(json.dumps(observation._asdict()))) == observation


# ---------------------------------------------------------------- Backend


def test_backend_creates_its_root(tmp_path: Path) -> None:
    """Instantiating a backend creates its folder (str or Path root)."""
    backend = ListBackend(tmp_path / "a" / "b")
    assert backend.root == tmp_path / "a" / "b"
    assert backend.root.is_dir()
    assert ListBackend(str(tmp_path / "c")).root == tmp_path / "c"  # type: ignore[arg-type]


def test_load_all_skips_unreadable_records_with_a_warning(tmp_path: Path) -> None:
    """One record that cannot be loaded is skipped with a warning, not an exception."""
    backend = ListBackend(tmp_path)
    backend.record(Observation("b", {}, 2, {}))
    backend.record(Observation("a", {}, 1, {}))
    with pytest.warns(UserWarning, match=r"Skipping unreadable record 'broken'.*cannot read"):
        loaded = backend.load_all()
    assert [o.id for o in loaded] == ["a", "b"]


def test_default_create_gives_unique_ids(tmp_path: Path) -> None:
    """``Backend.create`` reserves a unique id even when two observations ask for the same one."""
    backend = ListBackend(tmp_path)
    first = backend.create(Observation("2026-01-01_00-00-00_000000", {}, None, {}))
    second = backend.create(Observation("2026-01-01_00-00-00_000000", {}, None, {}))
    assert first.id >= "2026-01-01_00-00-00_000000"
    assert second.id > first.id
    assert set(backend.records) == {first.id, second.id}


def test_default_delete_is_not_supported(tmp_path: Path) -> None:
    """A custom backend that does not implement delete says so."""
    with pytest.raises(NotImplementedError, match="ListBackend cannot delete records"):
        ListBackend(tmp_path).delete("x")


def test_artefacts_of_a_backend(tmp_path: Path) -> None:
    """``Backend.artefacts(id)`` lists ``<root>/storage/<id>/`` files, ``[]`` if absent."""
    backend = ListBackend(tmp_path)
    folder = tmp_path / "storage" / "run-1"
    folder.mkdir(parents=True)
    (folder / "x.txt").write_text("x")
    assert backend.artefacts("run-1") == [folder / "x.txt"]
    assert backend.artefacts("run-2") == []


@pytest.mark.parametrize("bad", ["../..", "..", "a/b", "/etc", "", ".", "../storage/x"])
def test_artefacts_refuses_path_like_ids(tmp_path: Path, bad: str) -> None:
    """Ids that are paths raise ValueError instead of listing another folder."""
    with pytest.raises(ValueError, match=r"Invalid run id .*: ids are plain names"):
        ListBackend(tmp_path).artefacts(bad)


# ---------------------------------------------------------------- Callback and Controller


def test_callback_hooks_do_nothing_by_default() -> None:
    """The Callback base class accepts every hook and changes nothing."""
    callback = Callback()
    observation = Observation("i", {}, 1, {})
    callback.setup(print)
    callback.start("i", {})
    callback.end(observation)
    assert observation.metadata == {}


def test_controller_is_abstract() -> None:
    """Controller needs ``suggest``."""
    with pytest.raises(TypeError, match="abstract"):
        Controller()  # type: ignore[abstract]


def test_controller_suggest_many_stops_at_none() -> None:
    """The default ``suggest_many`` asks ``suggest`` until it returns None."""

    class Countdown(Controller):
        def __init__(self) -> None:
            self.left = 3

        def suggest(self, experiment: Any) -> dict[str, Any] | None:
            self.left -= 1
            return {"x": self.left} if self.left >= 0 else None

    assert Countdown().suggest_many(None, 10) == [{"x": 2}, {"x": 1}, {"x": 0}]  # type: ignore[arg-type]
    assert Countdown().suggest_many(None, 2) == [{"x": 2}, {"x": 1}]  # type: ignore[arg-type]


def test_core_experiment_is_the_experiment_class() -> None:
    """``digital_experiments.core.Experiment`` (its 2.0.4 path) is the Experiment class."""
    assert core.Experiment is Experiment
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = core.Nope  # type: ignore[attr-defined]


def test_custom_backend_skips_a_record_deleted_since_listing_silently(tmp_path: Path) -> None:
    """A record that vanished between listing and reading is skipped without a warning."""

    class Vanishing(ListBackend):
        def load(self, id: str) -> Observation:
            if id == "gone":
                raise FileNotFoundError(id)
            return super().load(id)

    backend = Vanishing(tmp_path)
    backend.record(Observation("kept", {}, 1, {}))
    assert [o.id for o in backend.iter_observations(["gone", "kept"])] == ["kept"]


def test_a_backend_written_for_3_x_claim_still_creates_runs(tmp_path: Path) -> None:
    """3.x called the hook ``claim``: a subclass overriding it is still used by ``create``,
    and calling ``claim`` warns and gives a unique id."""

    class OldStyle(ListBackend):
        def claim(self, observation: Observation) -> Observation:
            self.claimed = observation.id
            self.record(observation)
            return observation

    old = OldStyle(tmp_path / "old")
    assert old.create(Observation("2026-01-01_00-00-00_000000", {}, None, {})).id == old.claimed
    backend = ListBackend(tmp_path / "new")
    with pytest.warns(DeprecationWarning, match=r"Backend.claim\(\) is now Backend.create\(\)"):
        first = backend.claim(Observation("2026-01-01_00-00-00_000000", {}, None, {}))
    assert set(backend.records) == {first.id}


def test_lock_timeout_error_is_gone_but_still_importable() -> None:
    """No lock times out any more; 3.x code importing LockTimeoutError gets TimeoutError."""
    import digital_experiments

    with pytest.warns(DeprecationWarning, match="no lock times out"):
        assert digital_experiments.LockTimeoutError is TimeoutError
    assert "LockTimeoutError" not in digital_experiments.__all__
