"""Formats apart from places: every format on every store (a folder, ``memory://``
and a real S3 server), a format registered by name, and the 2.0.4 way of
writing a file backend (a subclass with its own suffix, dumps and loads)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import Observation, experiment, query
from digital_experiments import backends as backends_module
from digital_experiments.backends import (
    FileBackend,
    Format,
    JSONBackend,
    PickleBackend,
    YAMLBackend,
    available_backends,
    backend_class,
    instantiate_backend,
    register_backend,
    register_format,
)
from digital_experiments.errors import UnknownBackendError

from .servers import use_server

ID = "2026-01-01_00-00-00_000000"
BUILT_IN = {"pickle": PickleBackend, "json": JSONBackend, "yaml": YAMLBackend}


def sample(id: str = ID) -> Observation:
    """What every format stores: nested values, a multi-line string, no tuple
    (JSON has none)."""
    return Observation(
        id,
        {"lr": 0.1, "layers": [1, 2], "name": "a\nmulti-line\nstring", "opts": {"deep": True}},
        {"loss": 0.5, "history": [1.0, 0.5]},
        {"status": "completed", "code": "def f():\n    pass\n"},
    )


@pytest.fixture(params=["folder", "memory", "s3"])
def root(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str | Path:
    """A fresh root of each kind: a folder, ``memory://`` and SeaweedFS."""
    if request.param == "folder":
        return tmp_path / "root"
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    pytest.importorskip("boto3")
    return use_server("seaweedfs", request, monkeypatch).url()


class CompactJSON(Format):
    """A format of a user's: JSON with no spaces, ``.cjson``."""

    name, suffix = "compact-json", ".cjson"

    def dumps(self, observation: Observation) -> bytes:
        return json.dumps(observation._asdict(), separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**json.loads(data))


def record_keys(backend: FileBackend) -> list[str]:
    """The keys of the records at the top of the backend's store."""
    return [k for k in backend.store.list("") if not k.startswith(".")]


# ---------------------------------------------------------------- every format, every store


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_format_round_trips_an_observation_on_every_store(
    root: str | Path, name: str
) -> None:
    backend = instantiate_backend(name, root)
    assert isinstance(backend, BUILT_IN[name])
    suffix = backend.format.suffix if backend.format else ""
    assert backend.suffix == suffix == {"pickle": ".pkl", "json": ".json", "yaml": ".yaml"}[name]
    environment = {"python": "3.12", "packages": ["numpy==2.0"]}
    created = backend.create(sample()._replace(metadata={**sample().metadata, "running": 1}))
    backend.record(created._replace(metadata={**sample().metadata, "environment": environment}))
    # one record, named by its id, in the format's bytes; the environment stored apart
    assert record_keys(backend) == [f"{created.id}{suffix}"]
    data = backend.store.read(backend.key(created.id))
    assert backend.format is not None
    assert backend.format.loads(data).metadata["environment_ref"]
    loaded = backend.load(created.id)
    assert loaded == sample(created.id)._replace(
        metadata={**sample().metadata, "environment": environment}
    )
    assert backend.all_ids() == [created.id]
    assert list(backend.iter_observations([created.id])) == [loaded]
    backend.delete(created.id)
    assert backend.all_ids() == []


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_a_file_backend_takes_its_format_by_name_or_as_an_object(tmp_path: Path, name: str) -> None:
    by_name = FileBackend(tmp_path, format=name)
    by_object = FileBackend(tmp_path, format=BUILT_IN[name].format)
    assert by_name.format is by_object.format is BUILT_IN[name].format
    by_name.record(sample())
    assert by_object.load(ID) == sample()
    assert (tmp_path / f"{ID}{by_name.suffix}").is_file()


def test_a_file_backend_without_a_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="without a format"):
        FileBackend(tmp_path)
    with pytest.raises(UnknownBackendError, match="Unknown format 'nope'"):
        FileBackend(tmp_path, format="nope")

    class OnlyDumps(FileBackend):
        suffix = ".x"

        def dumps(self, observation: Observation) -> bytes:
            return b""

    with pytest.raises(TypeError, match="without a format"):
        OnlyDumps(tmp_path)


# ---------------------------------------------------------------- a format of one's own


@pytest.fixture
def registries() -> Iterator[None]:
    """The backend and format registries, restored after the test."""
    from digital_experiments._runs import formats

    backends, known = dict(backends_module._ALL_BACKENDS), dict(formats._FORMATS)
    yield
    backends_module._ALL_BACKENDS.clear()
    backends_module._ALL_BACKENDS.update(backends)
    formats._FORMATS.clear()
    formats._FORMATS.update(known)


def square(x: int) -> int:
    return x * x


@pytest.mark.usefixtures("registries")
@pytest.mark.parametrize("kind", ["folder", "memory"])
def test_a_format_registered_by_name_records_and_lists(tmp_path: Path, kind: str) -> None:
    assert register_format(CompactJSON) is CompactJSON  # a decorator: the class back
    assert "compact-json" in available_backends()
    where: str | Path = tmp_path / "square" if kind == "folder" else f"memory://{uuid.uuid4().hex}"
    run = experiment(root=where, backend="compact-json")(square)
    assert run(2) == 4
    assert run(3) == 9
    backend = run.backend
    assert isinstance(backend, FileBackend)
    assert isinstance(backend.format, CompactJSON)
    ids = [o.id for o in run.observations()]
    assert [o.result for o in run.observations()] == [4, 9]
    assert record_keys(backend) == [f"{id}.cjson" for id in ids]
    assert b'"result":4' in backend.store.read(f"{ids[0]}.cjson")  # its own bytes
    assert run.observations()[0].metadata["environment"]["system"]  # shared, as for any format
    # found by its suffix, without being named, like the built-in formats
    assert [o.result for o in query.load(where)] == [4, 9]


@pytest.mark.usefixtures("registries")
def test_a_registered_format_is_a_file_backend_class_with_its_suffix() -> None:
    register_format(CompactJSON())
    cls = backend_class("compact-json")
    assert issubclass(cls, FileBackend)
    assert cls.suffix == ".cjson"  # listings read the suffix from the class
    assert backend_class("compact-json") is cls  # made once


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (object(), "takes a Format"),
        (type("NoName", (CompactJSON,), {"name": ""})(), "name is a non-empty string"),
        (type("Folder", (CompactJSON,), {"suffix": "/x"})(), "suffix is a file extension"),
        (type("NoDot", (CompactJSON,), {"suffix": "cjson"})(), "suffix is a file extension"),
    ],
)
@pytest.mark.usefixtures("registries")
def test_register_format_refuses_what_is_no_usable_format(bad: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        register_format(bad)


# ---------------------------------------------------------------- the 2.0.4 way


class SpacelessJSON(FileBackend):
    """A file backend as 2.0.4 documented it: suffix, dumps, loads."""

    suffix = ".sjson"

    def dumps(self, observation: Observation) -> bytes:
        return json.dumps(observation._asdict(), separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Observation:
        return Observation(**json.loads(data))


@pytest.mark.usefixtures("registries")
@pytest.mark.parametrize("kind", ["folder", "memory"])
def test_a_2_0_4_style_file_backend_subclass_still_works(tmp_path: Path, kind: str) -> None:
    register_backend("spaceless")(SpacelessJSON)
    where: str | Path = tmp_path / "square" if kind == "folder" else f"memory://{uuid.uuid4().hex}"
    run = experiment(root=where, backend="spaceless")(square)
    run(2)
    run(3)
    backend = run.backend
    assert isinstance(backend, SpacelessJSON)
    assert backend.format is None  # its own dumps and loads
    ids = [o.id for o in run.observations()]
    assert [o.result for o in run.observations()] == [4, 9]
    assert record_keys(backend) == [f"{id}.sjson" for id in ids]
    assert b'"result":9' in backend.store.read(f"{ids[1]}.sjson")
    assert run.observations()[0].metadata["environment"]["system"]


def test_a_subclass_of_a_built_in_backend_keeps_its_own_dumps_and_loads(tmp_path: Path) -> None:
    """3.x code overriding a method of a built-in backend still has it called, by
    every path that writes or reads."""

    class Marked(JSONBackend):
        def dumps(self, observation: Observation) -> bytes:
            return super().dumps(observation._replace(result="written"))

        def loads(self, data: bytes) -> Observation:
            loaded = super().loads(data)
            return loaded._replace(result=f"{loaded.result}, read")

    backend = Marked(tmp_path)
    assert backend.suffix == ".json"
    backend.record(sample())
    assert backend.load(ID).result == "written, read"
    assert [o.result for o in backend.iter_observations([ID])] == ["written, read"]
