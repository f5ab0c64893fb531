"""The backend registry and the pickle, json and yaml formats."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from digital_experiments import (
    Backend,
    Observation,
    UnknownBackendError,
    UnstorableValueError,
    experiment,
    log,
    register_backend,
)
from digital_experiments import backends as backends_module
from digital_experiments.backends import (
    FileBackend,
    JSONBackend,
    PickleBackend,
    YAMLBackend,
    available_backends,
    instantiate_backend,
)

FORMATS: dict[str, type[FileBackend]] = {
    "pickle": PickleBackend,
    "json": JSONBackend,
    "yaml": YAMLBackend,
}


@pytest.fixture
def registry() -> Iterator[dict[str, type[Backend]]]:
    """The backend registry, restored after the test."""
    saved = dict(backends_module._ALL_BACKENDS)
    yield backends_module._ALL_BACKENDS
    backends_module._ALL_BACKENDS.clear()
    backends_module._ALL_BACKENDS.update(saved)


class MemoryBackend(Backend):
    """A custom backend keeping observations in a class-level dict."""

    store: ClassVar[dict[str, Observation]] = {}

    def record(self, observation: Observation) -> None:
        self.store[observation.id] = observation

    def load(self, id: str) -> Observation:
        return self.store[id]

    def all_ids(self) -> list[str]:
        return list(self.store)


# ---------------------------------------------------------------- registry


def test_builtin_backends_are_registered() -> None:
    """pickle, json and yaml are available by name."""
    assert available_backends() == ["json", "pickle", "yaml"]
    for name, cls in FORMATS.items():
        assert backends_module._ALL_BACKENDS[name] is cls


@pytest.mark.parametrize(("name", "cls"), FORMATS.items())
def test_instantiate_backend(tmp_path: Path, name: str, cls: type[Backend]) -> None:
    """``instantiate_backend(name, root)`` builds the registered class on root, creating it."""
    backend = instantiate_backend(name, tmp_path / "new")
    assert type(backend) is cls
    assert backend.root == tmp_path / "new"
    assert backend.root.is_dir()
    assert repr(backend) == f"{cls.__name__}({str(tmp_path / 'new')!r})"


def test_unknown_backend_lists_the_available_ones() -> None:
    """An unknown backend name raises ValueError naming the registered backends."""
    with pytest.raises(
        ValueError,
        match=r"Unknown backend 'jsno'\. Available: json, pickle, yaml\. Register your own",
    ):

        @experiment(backend="jsno")
        def f() -> None:
            pass

    with pytest.raises(UnknownBackendError):
        instantiate_backend("nope", Path("x"))


def test_custom_backend_end_to_end(registry: dict[str, type[Backend]]) -> None:
    """A ``Backend`` subclass registered by name records and lists runs."""
    register_backend("memory")(MemoryBackend)
    MemoryBackend.store = {}
    assert "memory" in available_backends()

    @experiment(backend="memory", root="memory-root")
    def square(x: int) -> int:
        return x**2

    for i in range(3):
        square(i)
    observations = square.observations()
    assert [o.result for o in observations] == [0, 1, 4]
    assert sorted(MemoryBackend.store) == [o.id for o in observations]
    assert observations[0].metadata["environment"]["pip_freeze"]
    assert isinstance(square.backend, MemoryBackend)
    assert len({o.id for o in observations}) == 3
    # ids are claimed through markers under the hidden .de folder
    assert len(list((square.backend.root / ".de" / "ids").iterdir())) == 3


def test_backend_instance_can_be_passed(tmp_path: Path) -> None:
    """``backend=`` also takes a Backend instance, used as is."""
    store = JSONBackend(tmp_path / "direct")

    @experiment(backend=store)
    def f() -> int:
        return 7

    f()
    assert f.backend is store
    assert len(list((tmp_path / "direct").glob("*.json"))) == 1


def test_register_backend_checks_its_arguments(registry: dict[str, type[Backend]]) -> None:
    """``register_backend`` wants a non-empty name and a Backend subclass."""
    with pytest.raises(TypeError, match="Backend names are non-empty strings, not ''"):
        register_backend("")
    with pytest.raises(TypeError, match=r"@register_backend\('x'\) decorates Backend subclasses"):
        register_backend("x")(dict)  # type: ignore[type-var]
    assert "x" not in registry


def test_register_backend_returns_the_class(registry: dict[str, type[Backend]]) -> None:
    """The decorator returns the class unchanged, so it can be used as a decorator."""

    @register_backend("memory2")
    class Memory2(MemoryBackend):
        pass

    assert registry["memory2"] is Memory2


def test_backend_is_abstract(tmp_path: Path) -> None:
    """A Backend subclass must implement record, load and all_ids."""

    class Incomplete(Backend):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(tmp_path)  # type: ignore[abstract]


# ---------------------------------------------------------------- formats


def sample(id: str = "2026-01-01_00-00-00_000000") -> Observation:
    return Observation(
        id,
        {"lr": 0.1, "layers": [1, 2], "name": "a\nmulti-line\nstring", "opts": {"deep": True}},
        {"loss": 0.5, "history": [1.0, 0.5]},
        {"status": "completed", "code": "def f():\n    pass\n"},
    )


@pytest.mark.parametrize("name", FORMATS)
def test_record_and_load_round_trip(tmp_path: Path, name: str) -> None:
    """A recorded observation loads back equal, and its id is listed."""
    backend = instantiate_backend(name, tmp_path)
    backend.record(sample())
    assert backend.all_ids() == ["2026-01-01_00-00-00_000000"]
    assert backend.load("2026-01-01_00-00-00_000000") == sample()
    assert backend.load_all() == [sample()]


@pytest.mark.parametrize("name", FORMATS)
def test_record_replaces_an_existing_record(tmp_path: Path, name: str) -> None:
    """Recording the same id twice keeps only the newer observation."""
    backend = instantiate_backend(name, tmp_path)
    backend.record(sample())
    backend.record(sample()._replace(result=42))
    assert backend.load_all() == [sample()._replace(result=42)]


@pytest.mark.parametrize("name", FORMATS)
def test_delete_removes_a_record(tmp_path: Path, name: str) -> None:
    """``delete(id)`` removes the record; deleting twice is harmless."""
    backend = instantiate_backend(name, tmp_path)
    backend.record(sample())
    backend.delete(sample().id)
    backend.delete(sample().id)
    assert backend.all_ids() == []


@pytest.mark.parametrize("name", FORMATS)
def test_load_all_is_sorted_by_id(tmp_path: Path, name: str) -> None:
    """``load_all`` returns observations sorted by id whatever the listing order."""
    backend = instantiate_backend(name, tmp_path)
    ids = ["2026-01-03_00-00-00_000000", "2026-01-01_00-00-00_000000", "2026-01-02_00-00-00_000000"]
    for i in ids:
        backend.record(sample(i))
    assert [o.id for o in backend.load_all()] == sorted(ids)


@pytest.mark.parametrize("name", FORMATS)
def test_listing_ignores_other_files(tmp_path: Path, name: str) -> None:
    """Files of other formats, hidden files and folders are not listed as runs."""
    backend = instantiate_backend(name, tmp_path)
    backend.record(sample())
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".hidden.pkl").write_text("hi")
    (tmp_path / "storage").mkdir()
    assert backend.all_ids() == [sample().id]


def test_json_records_are_plain_json(tmp_path: Path) -> None:
    """A json record is a readable JSON object with id, config, result and metadata."""
    JSONBackend(tmp_path).record(sample())
    data = json.loads((tmp_path / f"{sample().id}.json").read_text())
    assert data == sample()._asdict()


def test_yaml_records_are_safe_yaml_with_block_strings(tmp_path: Path) -> None:
    """A yaml record of plain values loads with ``safe_load``; multi-line strings are blocks."""
    YAMLBackend(tmp_path).record(sample())
    text = (tmp_path / f"{sample().id}.yaml").read_text()
    assert yaml.safe_load(text) == sample()._asdict()
    assert "name: |-\n" in text or "name: |\n" in text
    assert "  a\n" in text  # the block's lines are written as they are
    assert list(yaml.safe_load(text)) == ["id", "config", "result", "metadata"]


def test_yaml_keeps_tuples(tmp_path: Path) -> None:
    """The yaml backend round-trips tuples (as 2.0.4 did, with PyYAML's python tags)."""
    backend = YAMLBackend(tmp_path)
    backend.record(sample()._replace(config={"shape": (2, 3)}))
    assert backend.load(sample().id).config == {"shape": (2, 3)}


def test_pickle_records_are_observations(tmp_path: Path) -> None:
    """A pickle record unpickles to an Observation."""
    PickleBackend(tmp_path).record(sample())
    assert pickle.loads((tmp_path / f"{sample().id}.pkl").read_bytes()) == sample()


def test_pickle_stores_arbitrary_objects() -> None:
    """The default pickle backend keeps any picklable config or result."""

    @experiment
    def f(value: complex) -> set[int]:
        return {1, 2}

    f(1 + 2j)
    (observation,) = f.observations()
    assert observation.config == {"value": 1 + 2j}
    assert observation.result == {1, 2}


def test_unstorable_result_raises_and_records_a_failure() -> None:
    """A result JSON cannot store raises TypeError keeping the result, and is recorded failed."""
    value = object()

    @experiment(backend="json")
    def f() -> Any:
        return value

    with pytest.raises(TypeError, match=r"cannot store result of run") as info:
        f()
    assert isinstance(info.value, UnstorableValueError)
    assert info.value.result is value
    assert info.value.field == "result"
    assert f.observations() == []
    (failed,) = f.observations(status="failed")
    assert failed.metadata["error"]["type"] == "UnstorableValueError"


def test_unstorable_config_is_refused_with_its_repr() -> None:
    """A config value the backend cannot store is refused, naming it by its repr; nothing runs."""

    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    @experiment(backend="json")
    def f(thing: Any) -> int:
        return 1

    with pytest.raises(TypeError, match=r"cannot store config\.thing = Opaque\(\)"):
        f(Opaque())
    assert f.observations(status="all") == []


def test_custom_file_backend_gets_storage_rules_for_free(
    registry: dict[str, type[Backend]], tmp_path: Path
) -> None:
    """A FileBackend subclass only encodes; records, ids and shared environments come for free."""

    @register_backend("compact-json")
    class CompactJSON(FileBackend):
        suffix = ".cjson"

        def dumps(self, observation: Observation) -> bytes:
            return json.dumps(observation._asdict(), separators=(",", ":")).encode()

        def loads(self, data: bytes) -> Observation:
            return Observation(**json.loads(data))

    @experiment(backend="compact-json", root="compact")
    def f(x: int) -> int:
        return x

    f(1)
    f(2)
    assert [o.result for o in f.observations()] == [1, 2]
    assert f.observations()[0].metadata["environment"]["pip_freeze"]
    names = sorted(p.name for p in (tmp_path / "compact").iterdir())
    assert names == sorted([f"{o.id}.cjson" for o in f.observations()] + [".de"])


# ---------------------------------------------------------------- ids and paths


@pytest.mark.parametrize("name", FORMATS)
def test_a_file_not_named_by_an_id_is_never_a_run(tmp_path: Path, name: str) -> None:
    """A record copied to ``notes<suffix>`` is skipped with a warning naming the file."""
    backend = instantiate_backend(name, tmp_path)
    backend.record(sample())
    suffix = FORMATS[name].suffix
    (tmp_path / f"notes{suffix}").write_bytes(backend.path(sample().id).read_bytes())
    with pytest.warns(UserWarning, match=rf"'notes{suffix}' is not named by a run id"):
        assert [o.id for o in backend.load_all()] == [sample().id]


@pytest.mark.parametrize("id", ["../victim", "/tmp/victim", "..", "", "2026-01-01", "a/b"])
def test_delete_refuses_what_is_not_an_id(tmp_path: Path, id: str) -> None:
    """``delete`` takes ids only, so it can never remove a file outside the root."""
    root = tmp_path / "root"
    backend = instantiate_backend("pickle", root)
    victim = tmp_path / "victim.pkl"
    victim.write_text("keep me")
    with pytest.raises(ValueError, match="Invalid run id"):
        backend.delete(id)
    assert victim.exists()


def test_a_symlinked_record_is_deleted_as_a_link(tmp_path: Path) -> None:
    """Deleting a record that is a symbolic link removes the link, not its target."""
    backend = instantiate_backend("pickle", tmp_path / "root")
    elsewhere = tmp_path / "elsewhere.pkl"
    elsewhere.write_bytes(pickle.dumps(sample()))
    backend.path(sample().id).symlink_to(elsewhere)
    assert backend.all_ids() == [sample().id]
    backend.delete(sample().id)
    assert backend.all_ids() == []
    assert elsewhere.exists()


# ---------------------------------------------------------------- artefacts


def test_artefacts_of_a_run_folder_moved_and_linked_back(tmp_path: Path) -> None:
    """A storage folder that is a symbolic link lists its files under the link's path."""
    backend = instantiate_backend("pickle", tmp_path / "root")
    id = sample().id
    moved = tmp_path / "big-disk" / id
    (moved / "sub").mkdir(parents=True)
    (moved / "model.txt").write_text("weights")
    (moved / "sub" / "log.txt").write_text("log")
    (backend.root / "storage").mkdir()
    (backend.root / "storage" / id).symlink_to(moved, target_is_directory=True)
    assert backend.artefacts(id) == [
        backend.root / "storage" / id / "model.txt",
        backend.root / "storage" / id / "sub" / "log.txt",
    ]


def test_artefacts_never_raise_on_odd_links(tmp_path: Path) -> None:
    """A dangling link, a link loop or a linked folder inside never make artefacts() raise."""
    backend = instantiate_backend("pickle", tmp_path / "root")
    storage_dir = backend.root / "storage"
    storage_dir.mkdir()
    dangling = "2026-01-01_00-00-00_000000"
    (storage_dir / dangling).symlink_to(tmp_path / "gone", target_is_directory=True)
    assert backend.artefacts(dangling) == []
    looped = "2026-01-01_00-00-01_000000"
    (storage_dir / looped).mkdir()
    (storage_dir / looped / "self").symlink_to(storage_dir / looped, target_is_directory=True)
    (storage_dir / looped / "broken").symlink_to(tmp_path / "missing-file")
    (storage_dir / looped / "data.txt").write_text("x")
    assert backend.artefacts(looped) == [storage_dir / looped / "data.txt"]
    with pytest.raises(ValueError, match="Invalid run id"):
        backend.artefacts("..")


# ---------------------------------------------------------------- safe formats


@pytest.mark.parametrize("name", ["json", "yaml"])
def test_numpy_values_are_stored_as_numbers_and_lists(tmp_path: Path, name: str) -> None:
    """``np.float32``, ``np.int64`` and arrays store as Python numbers and lists."""
    np = pytest.importorskip("numpy")
    backend = FORMATS[name](tmp_path)
    config = {"lr": np.float32(0.5), "n": np.int64(3), "xs": np.arange(3), "ok": np.bool_(True)}
    result = {"grid": np.linspace(0, 1, 3), "m": np.float64(2.5), "nan": float("nan")}
    backend.record(sample()._replace(config=config, result=result))
    loaded = backend.load(sample().id)
    assert loaded.config == {"lr": 0.5, "n": 3, "xs": [0, 1, 2], "ok": True}
    assert [type(v) for v in loaded.config.values()] == [float, int, list, bool]
    assert loaded.result["grid"] == [0.0, 0.5, 1.0]
    assert loaded.result["m"] == 2.5
    assert loaded.result["nan"] != loaded.result["nan"]  # NaN stays NaN


@pytest.mark.parametrize("name", ["json", "yaml"])
def test_numpy_sweep_values_are_storable(name: str) -> None:
    """A run over ``np.linspace`` values records with the json and yaml backends."""
    np = pytest.importorskip("numpy")

    @experiment(backend=name)
    def f(x: Any) -> Any:
        return x * 2

    grid = {"x": np.linspace(0, 1, 3, dtype=np.float32)}
    assert [o.result for o in f.sweep(grid)] == [0.0, 1.0, 2.0]
    configs = [o.config for o in f.observations()]
    assert configs == [{"x": 0.0}, {"x": 0.5}, {"x": 1.0}]
    assert {type(c["x"]) for c in configs} == {float}


def test_yaml_refuses_values_it_cannot_load_back() -> None:
    """A lambda result is refused like JSON refuses it; the failed run stays readable."""
    value = lambda: 1  # noqa: E731

    @experiment(backend="yaml")
    def f() -> Any:
        return value

    with pytest.raises(UnstorableValueError, match=r"cannot store result of run") as info:
        f()
    assert info.value.result is value
    (failed,) = f.observations(status="all")
    assert failed.metadata["status"] == "failed"
    text = f.backend.path(failed.id).read_text()  # type: ignore[attr-defined]
    assert "!!python/name" not in text


def test_yaml_records_hold_only_safe_tags(tmp_path: Path) -> None:
    """Everything the yaml backend writes loads with ``safe_load`` except ``!!python/tuple``."""
    backend = YAMLBackend(tmp_path)
    backend.record(sample()._replace(config={"shape": (2, 3), "on": {1, 2}, "raw": b"x"}))
    text = (tmp_path / f"{sample().id}.yaml").read_text()
    assert [line for line in text.splitlines() if "!!python" in line] == ["  shape: !!python/tuple"]
    assert backend.load(sample().id).config == {"shape": (2, 3), "on": {1, 2}, "raw": b"x"}


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system",
        "!!python/object/new:os.system",
        "!!python/name:os.system",
    ],
)
def test_loading_a_yaml_record_runs_no_code(tmp_path: Path, tag: str) -> None:
    """A record asking PyYAML to call ``os.system`` is skipped with a warning, not run."""
    marker = tmp_path / "pwned"
    good, evil = "2026-01-01_00-00-00_000000", "2026-01-02_00-00-00_000000"
    backend = YAMLBackend(tmp_path)
    backend.record(sample(good))
    argument = f'["touch {marker}"]' if "name:" not in tag else "''"
    (tmp_path / f"{evil}.yaml").write_text(
        f"id: {evil}\nconfig: {{}}\nresult: {tag} {argument}\nmetadata: {{}}\n"
    )
    with pytest.warns(UserWarning, match=rf"Skipping unreadable record '{evil}'"):
        assert [o.id for o in backend.load_all()] == [good]
    assert not marker.exists()


@pytest.mark.parametrize("name", ["json", "yaml"])
def test_subclasses_of_plain_types_are_stored_as_plain_values(tmp_path: Path, name: str) -> None:
    """An OrderedDict, a named tuple and an IntEnum store as a dict, a sequence and an int."""
    import enum
    from collections import OrderedDict, namedtuple

    class Level(enum.IntEnum):
        HIGH = 3

    Point = namedtuple("Point", "x y")
    backend = FORMATS[name](tmp_path)
    config = {"o": OrderedDict(a=1), "p": Point(1, 2), "level": Level.HIGH}
    backend.record(sample()._replace(config=config))
    loaded = backend.load(sample().id).config
    assert loaded["o"] == {"a": 1}
    assert list(loaded["p"]) == [1, 2]
    assert loaded["level"] == 3
    assert type(loaded["level"]) is int


def test_pickle_records_name_observation_where_2_0_4_did(tmp_path: Path) -> None:
    """A pickle record refers to ``digital_experiments.core.Observation``, the path
    2.0.4 and every 3.x release read, whatever module defines the class now."""
    backend = PickleBackend(tmp_path)
    backend.record(Observation("2026-01-01_00-00-00_000000", {"x": 1}, 2, {}))
    data = (tmp_path / "2026-01-01_00-00-00_000000.pkl").read_bytes()
    assert b"digital_experiments.core" in data
    assert b"digital_experiments._runs.observation" not in data
    loaded = backend.load("2026-01-01_00-00-00_000000")
    assert pickle.loads(pickle.dumps(loaded)) == loaded


def test_a_custom_backend_keeps_tags_notes_and_metrics(
    registry: dict[str, type[Backend]], tmp_path: Path
) -> None:
    """Tags, notes and metrics live beside the records, whatever the backend: one
    written for 2.0.4 (with its own attribute named ``store``) shows them too."""
    register_backend("memory")(MemoryBackend)
    MemoryBackend.store = {}

    @experiment(backend="memory", root=tmp_path / "custom")
    def train(lr: float) -> float:
        log(loss=lr)
        return lr

    train(0.1)
    train(0.2)
    first = train.observations()[0].id
    assert train.tag(first, best=True) == {"best": True}
    assert train.note(first, "the one") == ["the one"]
    (tagged,) = train.observations(where="tags.best == true")
    assert tagged.id == first
    assert tagged.metadata["notes"] == ["the one"]
    assert train.observations()[1].metadata.get("tags") is None
    assert list(train.compare(first, train.observations()[1].id).columns) == [
        first,
        train.observations()[1].id,
    ]
    assert list(tagged.metrics()["value"]) == [0.1]
