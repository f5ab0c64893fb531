"""Reading stored runs: :mod:`digital_experiments.query` and the queries built on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from digital_experiments import Observation, experiment, query
from digital_experiments.backends import FileBackend, instantiate_backend


def double(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return 2 * x


def make_runs(root: Path, backend: str = "pickle") -> Any:
    function = experiment(root=root, backend=backend)(double)
    for x in (1, 2, 3):
        function(x)
    with pytest.raises(ValueError, match="negative"):
        function(-1)
    return function


def test_load_reads_a_root_without_its_function(tmp_path: Path) -> None:
    """``load(root)`` returns the completed runs, oldest first, like ``observations()``."""
    function = make_runs(tmp_path / "double")
    runs = query.load(tmp_path / "double")
    assert [run.result for run in runs] == [2, 4, 6]
    assert runs == function.observations()
    assert runs[0].metadata["environment"]["pip_freeze"]


def test_load_filters_by_status_since_and_limit(tmp_path: Path) -> None:
    """``status``, ``since`` and ``limit`` work as in ``observations()``."""
    make_runs(tmp_path / "double")
    every = query.load(tmp_path / "double", status="all")
    assert [run.status for run in every] == ["completed"] * 3 + ["failed"]
    assert [run.config["x"] for run in query.load(tmp_path / "double", status="failed")] == [-1]
    assert query.load(tmp_path / "double", since=every[1].id, limit=1) == [every[2]]


@pytest.mark.parametrize("backend", ["pickle", "json", "yaml"])
def test_open_root_detects_the_format(tmp_path: Path, backend: str) -> None:
    """The backend is chosen from the records' suffix."""
    make_runs(tmp_path / "double", backend)
    opened = query.open_root(tmp_path / "double")
    assert type(opened) is type(instantiate_backend(backend, tmp_path / "double"))


def test_open_root_of_several_formats_needs_a_choice(tmp_path: Path) -> None:
    """A folder holding several formats raises, naming them; ``backend=`` picks one."""
    make_runs(tmp_path / "double", "pickle")
    make_runs(tmp_path / "double", "json")
    with pytest.raises(ValueError, match=r"several formats \(4 \w+, 4 \w+\)"):
        query.open_root(tmp_path / "double")
    assert len(query.load(tmp_path / "double", backend="json")) == 3


def test_open_root_of_a_missing_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    """A folder that does not exist raises ``NoSuchRoot`` (a ``FileNotFoundError``)."""
    with pytest.raises(FileNotFoundError, match="No experiment folder at"):
        query.open_root(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_select_can_leave_the_environment_out(tmp_path: Path) -> None:
    """``environment=False`` skips attaching the shared environment; the rest is the same."""
    make_runs(tmp_path / "double")
    backend = query.open_root(tmp_path / "double")
    assert isinstance(backend, FileBackend)
    full = query.select(backend)
    light = query.select(backend, environment=False)
    assert [run.id for run in light] == [run.id for run in full]
    assert all("environment" in run.metadata for run in full)
    assert not any("environment" in run.metadata for run in light)
    assert not any("environment_ref" in run.metadata for run in light)


def test_environment_copies_are_independent(tmp_path: Path) -> None:
    """Runs sharing one stored environment each get their own copy."""
    make_runs(tmp_path / "double")
    first, second, *_ = query.load(tmp_path / "double")
    first.metadata["environment"]["system"]["pwd"] = "changed"
    assert second.metadata["environment"]["system"]["pwd"] != "changed"
    assert query.load(tmp_path / "double")[0].metadata["environment"]["system"]["pwd"] != "changed"


ROWS = [
    Observation("a", {"x": 1, "nested": {"a": 1, "deep": {"b": 2}}}, 3, {"k": 1}),
    Observation("b", {"x": 2.5, "empty": {}}, {"r": 1, "e": {}}, {"k": {"z": None}}),
    Observation("c", {1: "int key", "s": None}, [1, 2], {}),
    Observation("d", {}, None, {"x.y": 1}),
]


@pytest.mark.parametrize("sep", [".", "_", ""])
@pytest.mark.parametrize("include_metadata", [False, True])
def test_to_dataframe_matches_json_normalize(sep: str, include_metadata: bool) -> None:
    """The table equals 2.0.4's ``pandas.json_normalize`` one: columns, order, dtypes, values."""
    rows = [o._asdict() for o in ROWS]
    if not include_metadata:
        for row in rows:
            del row["metadata"]
    expected = pd.json_normalize(rows, sep=sep)
    got = query.to_dataframe(ROWS, include_metadata, sep)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected)


def test_to_dataframe_of_no_runs_is_empty() -> None:
    """No runs give an empty frame, as in 2.0.4."""
    assert query.to_dataframe([]).empty


def test_experiment_to_dataframe_with_metadata_has_the_environment(tmp_path: Path) -> None:
    """``include_metadata=True`` still brings the shared environment in as columns."""
    function = make_runs(tmp_path / "double")
    plain = function.to_dataframe()
    assert list(plain.columns) == ["id", "result", "config.x"]
    full = function.to_dataframe(include_metadata=True)
    assert "metadata.environment.pip_freeze" in full.columns
    assert full["metadata.environment.pip_freeze"].notna().all()


def test_to_dataframe_where_callable_sees_the_environment(tmp_path: Path) -> None:
    """A ``where=`` callable is given whole runs, environment included."""
    function = make_runs(tmp_path / "double")
    seen: list[bool] = []

    def keep(run: Observation) -> bool:
        seen.append("environment" in run.metadata)
        return True

    assert len(function.to_dataframe(where=keep)) == 3
    assert seen
    assert all(seen)
