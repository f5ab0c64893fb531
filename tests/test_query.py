"""Reading stored runs: :mod:`digital_experiments.query` and the queries built on it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from digital_experiments import Observation, experiment, query
from digital_experiments._read import query as _query
from digital_experiments._store import files as storage
from digital_experiments.backends import FileBackend, instantiate_backend
from digital_experiments.errors import DigitalExperimentsError


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


def test_runs_share_one_read_only_environment(tmp_path: Path) -> None:
    """Runs recorded in one environment share one read-only copy of it: an edit
    raises rather than reach every run (and the cache); thaw() gives an editable copy."""
    make_runs(tmp_path / "double")
    first, second, *_ = query.load(tmp_path / "double")
    shared = first.metadata["environment"]
    assert shared is second.metadata["environment"]
    for edit in (
        lambda: shared["system"].__setitem__("pwd", "changed"),
        lambda: shared.update(x=1),
        lambda: shared.pop("system"),
        lambda: shared["system"].clear(),
    ):
        with pytest.raises(TypeError, match="shared, read-only"):
            edit()
    assert second.metadata["environment"]["system"]["pwd"] != "changed"
    mine = shared.thaw()
    mine["system"]["pwd"] = "changed"
    assert shared["system"]["pwd"] != "changed"
    assert type(pickle.loads(pickle.dumps(shared))) is dict
    assert json.loads(json.dumps(shared)) == mine | {
        "system": {**mine["system"], "pwd": shared["system"]["pwd"]}
    }


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


# ---------------------------------------------------------------- since=

TIMES = [
    datetime(2026, 11, 28, 23, 58, 0),
    datetime(2026, 11, 28, 23, 59, 30),
    datetime(2026, 11, 29, 0, 1, 0),
]


def runs_at(root: Path, times: list[datetime]) -> list[str]:
    """One stored run started at each (local) time; their ids, as the library makes them."""
    backend = instantiate_backend("json", root)
    ids = [storage.new_id(when) for when in times]
    for id in ids:
        backend.record(Observation(id, {}, 1, {"status": "completed"}))
    return ids


@pytest.mark.parametrize(
    ("since", "first"),
    [
        ("2026-11-28 23:59", 1),  # the form of metadata["timing"]["start"]
        ("2026-11-28T23:59", 1),
        ("2026-11-28T23:59:30", 1),
        ("2026-11-28 23:59:30.000001", 2),
        ("  2026-11-28 23:59  ", 1),
        (datetime(2026, 11, 28, 23, 59), 1),
        (date(2026, 11, 29), 2),
        ("2026-11-29", 2),
        ("2026-11-28", 0),
        ("2026-11-30", 3),
    ],
)
def test_since_accepts_times_and_dates_in_local_time(
    tmp_path: Path, since: str | date, first: int
) -> None:
    """ISO strings (space or T), datetimes and dates are local times, compared as times."""
    ids = runs_at(tmp_path, TIMES)
    assert [run.id for run in query.load(tmp_path, since=since)] == ids[first:]


def test_since_accepts_id_prefixes(tmp_path: Path) -> None:
    """An id or a prefix of one (``2026-11-28_12``) is compared with the ids as it is."""
    ids = runs_at(tmp_path, TIMES)
    assert [run.id for run in query.load(tmp_path, since=ids[1])] == ids[1:]
    hour = ids[2][: len("2026-11-28_12")]
    assert [run.id for run in query.load(tmp_path, since=hour)] == [
        id for id in ids if id[: len(hour)] >= hour
    ]
    assert query.load(tmp_path, since=ids[0][:4]) == query.load(tmp_path)


def test_since_with_a_utc_offset_is_that_absolute_time(tmp_path: Path) -> None:
    """``2026-11-28T23:59:30+01:00`` and an aware datetime mean that instant."""
    ids = runs_at(tmp_path, TIMES)
    aware = datetime(2026, 11, 28, 23, 59, 30, tzinfo=timezone(timedelta(hours=1)))
    expected = [id for id in ids if id >= storage.new_id(aware)]
    assert [run.id for run in query.load(tmp_path, since=aware)] == expected
    text = "2026-11-28T23:59:30+01:00"
    assert [run.id for run in query.load(tmp_path, since=text)] == expected


@pytest.mark.parametrize(
    "since", ["yesterday", "garbage", "", "2026-13-01", "2026-11-28_25", "28/11/2026", 20261128]
)
def test_since_rejects_anything_else(tmp_path: Path, since: Any) -> None:
    """Anything else is a ValueError naming the value and the accepted forms."""
    runs_at(tmp_path, TIMES)
    with pytest.raises(ValueError, match=rf"since={since!r} is not a time.*2026-11-28_12"):
        query.load(tmp_path, since=since)
    assert issubclass(query.InvalidSince, DigitalExperimentsError)


def test_since_in_a_time_zone_far_from_utc(tmp_path: Path) -> None:
    """A naive time is local wherever the process runs (here UTC+9 and UTC-10)."""
    script = (
        "import sys, datetime as d\n"
        "from digital_experiments import Observation, query\n"
        "from digital_experiments._store import files as storage\n"
        "from digital_experiments.backends import instantiate_backend\n"
        "b = instantiate_backend('json', __import__('pathlib').Path(sys.argv[1]))\n"
        "id = storage.new_id(d.datetime(2026, 11, 28, 23, 59, 30))\n"
        "b.record(Observation(id, {}, 1, {}))\n"
        "assert [o.id for o in query.load(sys.argv[1], since='2026-11-28 23:59')] == [id]\n"
        "assert query.load(sys.argv[1], since='2026-11-29T00:00') == []\n"
        "assert [o.id for o in query.load(sys.argv[1], since=d.date(2026, 11, 28))] == [id]\n"
    )
    for zone in ("Asia/Tokyo", "Pacific/Honolulu"):
        env = {**os.environ, "TZ": zone}
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / zone.replace("/", "-"))],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the file name is the id


def test_a_copied_record_lists_under_its_file_name_with_one_warning(tmp_path: Path) -> None:
    """A record copied to another name is its own run: one id each, a warning naming both."""
    function = make_runs(tmp_path / "double", "json")
    first = function.observations()[0]
    copy_id = "2020-01-01_00-00-00_000000"
    shutil.copy(tmp_path / "double" / f"{first.id}.json", tmp_path / "double" / f"{copy_id}.json")
    with pytest.warns(UserWarning, match=rf"'{copy_id}.json'.*holds the id '{first.id}'"):
        runs = function.observations()
    ids = [run.id for run in runs]
    assert ids == sorted(set(ids))
    assert ids[0] == copy_id
    assert first.id in ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file, not on every listing
        assert [run.id for run in query.load(tmp_path / "double")] == ids
    backend = query.open_root(tmp_path / "double")
    assert backend.load(copy_id).id == copy_id


# ---------------------------------------------------------------- malformed records

MALFORMED = {
    "metadata null": {"metadata": None},
    "metadata list": {"metadata": ["status", "completed"]},
    "numeric id": {"id": 20260101},
    "config list": {"config": [1, 2]},
    "config null": {"config": None},
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_records_are_skipped_with_a_warning_everywhere(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    """observations(), to_dataframe(), cached calls and sweeps skip a malformed record."""
    root = tmp_path / "double"
    root.mkdir()
    bad = "2020-01-01_00-00-00_000000"
    record = {"id": bad, "config": {"x": 5}, "result": 999, "metadata": {}, **change}
    (root / f"{bad}.json").write_text(json.dumps(record))
    function = experiment(root=root, backend="json", cache=True)(double)
    unreadable = rf"Skipping unreadable record '{bad}'.*malformed"
    with pytest.warns(UserWarning, match=unreadable):
        assert function(5) == 10  # a cached call scans the records once per process
    with pytest.warns(UserWarning, match=unreadable):
        assert [run.result for run in function.observations(status="all")] == [10]
    with pytest.warns(UserWarning, match=unreadable):
        assert list(function.to_dataframe()["result"]) == [10]
    with pytest.warns(UserWarning, match=unreadable):
        assert [run.result for run in function.sweep({"x": [5, 3]})] == [10, 6]


def test_a_record_deleted_after_listing_is_skipped_silently(tmp_path: Path) -> None:
    """A record that vanished between listing and reading (a prune) is gone, not unreadable."""
    make_runs(tmp_path / "double")
    backend = query.open_root(tmp_path / "double")
    ids = sorted(backend.all_ids())
    backend.delete(ids[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [run.id for run in backend.iter_observations(ids)] == ids[1:]


# ---------------------------------------------------------------- folders of experiments


def test_experiment_folders_finds_the_experiments_of_a_folder(tmp_path: Path) -> None:
    """A folder of experiments is not itself one; its experiments are listed by name."""
    make_runs(tmp_path / "experiments" / "double")
    make_runs(tmp_path / "experiments" / "again", "json")
    (tmp_path / "experiments" / "not-an-experiment").mkdir()
    assert query.is_experiment_folder(tmp_path / "experiments" / "double")
    assert not query.is_experiment_folder(tmp_path / "experiments")
    assert query.experiment_folders(tmp_path / "experiments") == [
        tmp_path / "experiments" / "again",
        tmp_path / "experiments" / "double",
    ]


def test_where_matches_numpy_values_by_content() -> None:
    """where={"x": array} compares by content, never raising on an array's ambiguous ==."""
    np = pytest.importorskip("numpy")

    @experiment
    def f(x: Any) -> int:
        return int(np.sum(x))

    f(np.arange(3))
    f(np.arange(4))
    assert [o.result for o in f.observations(where={"x": np.arange(4)})] == [6]
    assert [o.result for o in f.observations(where={"x": [0, 1, 2]})] == [3]


# ---------------------------------------------------------------- missing fields and id prefixes


def test_open_namespaces_close_config_and_result_once_a_run_has_them() -> None:
    """``tags``, ``metrics``, ``metadata`` are open; ``config``, ``result`` until a run has one."""
    assert _query.open_namespaces([]) == ["tags", "metrics", "metadata", "config", "result"]
    assert _query.open_namespaces(["config.lr", "id"]) == ["tags", "metrics", "metadata", "result"]
    assert _query.open_namespaces(["config.lr", "result.loss"]) == ["tags", "metrics", "metadata"]


@pytest.mark.parametrize("sort", ["result.loss", "-result.loss"])
def test_sort_order_puts_rows_without_the_field_last(sort: str) -> None:
    """Rows lacking the sort field (or holding ``None`` there) come last, in their order."""
    rows = [{"id": "a"}, {"id": "b", "result.loss": 2}, {"id": "c", "result.loss": None}]
    rows += [{"id": "d", "result.loss": 1}, {"id": "e"}]
    order = [rows[i]["id"] for i in _query.sort_order(rows, sort)]
    assert order[:2] == (["d", "b"] if sort == "result.loss" else ["b", "d"])
    assert order[2:] == ["a", "c", "e"]


def test_matching_a_tag_nobody_set_keeps_no_row() -> None:
    """``tags.best == true`` over rows without tags is an empty answer, not an error."""
    rows = [{"id": "a", "config.lr": 0.1}, {"id": "b", "config.lr": 0.2}]
    assert _query.matching(rows, "tags.best == true") == []
    assert _query.matching(rows, "not tags.best == true") == [0, 1]
    with pytest.raises(ValueError, match=r"Did you mean 'config\.lr'"):
        _query.matching(rows, "config.lrr > 0")


def test_find_id_takes_a_whole_id_or_its_only_beginning(tmp_path: Path) -> None:
    """``find_id``: the id a prefix begins; a prefix of several ids, or none, is ``NoSuchRun``."""
    backend = instantiate_backend("json", tmp_path)
    ids = ["2026-01-01_12-00-00_000000", "2026-01-01_12-00-00_000001", "2026-01-02_12-00-00_000000"]
    for id in ids:
        backend.record(Observation(id, {"x": 1}, 1, {"status": "completed"}))
    assert _query.find_id(backend, ids[0]) == ids[0]
    assert _query.find_id(backend, "2026-01-02") == ids[2]
    with pytest.raises(_query.NoSuchRun, match="matches 2 runs") as several:
        _query.find_id(backend, "2026-01-01")
    assert several.value.matches == ids[:2]
    assert isinstance(several.value, DigitalExperimentsError)
    copied = pickle.loads(pickle.dumps(several.value))
    assert (copied.matches, str(copied)) == (ids[:2], str(several.value))
    with pytest.raises(_query.NoSuchRun, match="No run '1999'") as none:
        _query.find_id(backend, "1999")
    assert none.value.matches == []
    assert _query.find_id(backend, "2026-01-01_12-00-00_000001", ids=[ids[1]]) == ids[1]
    with pytest.raises(_query.NoSuchRun):
        _query.find_id(backend, "")
