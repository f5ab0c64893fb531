"""Hostile and damaged input to the command line, the trash, metrics and reruns:
nothing runs that the user did not ask for, nothing is lost, nothing crashes."""

from __future__ import annotations

import ast
import errno
import json
import os
import pickle
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import Observation, current_dir, experiment, log
from digital_experiments._model import layout
from digital_experiments.backends import instantiate_backend
from digital_experiments.errors import TrashError

from .conftest import Touch
from .test_cli import cli

ID = "2026-01-01_00-00-00_000000"


def foreign_pickles(folder: Path, marker: Path) -> None:
    """A folder of .pkl records digital-experiments did not record (no .de/ids)."""
    folder.mkdir(parents=True)
    (folder / f"{ID}.pkl").write_bytes(pickle.dumps(Touch(marker)))


# ---------------------------------------------------------------- the trust gate


def test_rm_does_not_unpickle_an_untrusted_record(tmp_path: Path) -> None:
    """``rm ROOT ID`` refuses a folder it may not load, like show and list; with
    --trust it deletes."""
    folder, marker = tmp_path / "downloaded", tmp_path / "ran"
    foreign_pickles(folder, marker)
    done = cli("rm", folder, ID, "--yes")
    assert done.returncode == 2, done.stderr
    assert "--trust" in done.stderr
    assert not marker.exists()
    assert (folder / f"{ID}.pkl").exists()
    trusted = cli("rm", folder, ID, "--yes", "--trust")
    assert trusted.returncode == 0, trusted.stderr
    assert not (folder / f"{ID}.pkl").exists()


@pytest.mark.parametrize("command", [("tag", ID, "best=true"), ("note", ID, "looked at it")])
def test_tags_and_notes_do_not_make_a_folder_trusted(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Annotating creates .de/ (our bookkeeping); a plain list still refuses."""
    folder, marker = tmp_path / "downloaded", tmp_path / "ran"
    foreign_pickles(folder, marker)
    annotated = cli(command[0], folder, *command[1:])
    assert annotated.returncode == 0, annotated.stderr
    assert (folder / ".de").is_dir()
    listed = cli("list", folder)
    assert listed.returncode == 2
    assert "--trust" in listed.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- deleting


def test_an_unreadable_record_can_be_deleted(tmp_path: Path) -> None:
    """A truncated JSON record: ``rm`` and ``Experiment.delete`` need no parse."""

    @experiment(root=tmp_path / "f", backend="json")
    def f(x: int) -> int:
        return x

    first, second = f(1), f(2)
    ids = [run.id for run in f.observations()]
    assert (first, second) == (1, 2)
    for id in ids:
        path = tmp_path / "f" / f"{id}.json"
        path.write_bytes(path.read_bytes()[:20])
    assert f.delete(ids[0]) == [ids[0]]
    done = cli("rm", tmp_path / "f", ids[1], "--yes")
    assert done.returncode == 0, done.stderr
    assert f.trash() == ids
    assert not list((tmp_path / "f").glob("*.json"))


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than ``tmp_path`` (tmpfs)."""
    base = Path("/dev/shm")
    if not base.is_dir() or os.stat(base).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("this test needs /dev/shm on another filesystem than the temp folder")
    folder = base / f"de-test-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_with_everything(root: Path) -> tuple[Any, str]:
    @experiment(root=root, backend="json")
    def g(x: int) -> int:
        (current_dir() / "weights.bin").write_bytes(b"w" * 1000)
        log(loss=1.0)
        return x

    g(1)
    (run,) = g.observations()
    g.tag(run.id, best=True)
    return g, run.id


def test_a_run_with_artefacts_on_another_disk_is_deleted_whole(
    tmp_path: Path, other_disk: Path
) -> None:
    """``storage`` linked to another filesystem: delete moves every part (the
    artefacts by rename beside where they are), restore brings all back, purge
    removes all."""
    root = tmp_path / "g"
    root.mkdir()
    (root / "storage").symlink_to(other_disk, target_is_directory=True)
    g, id = _run_with_everything(root)
    parts = [
        layout.artefacts(root, id) / "weights.bin",
        layout.metrics(root, id),
        layout.annotation_file(root, id),
        root / f"{id}.json",
    ]
    assert all(part.exists() for part in parts)
    assert g.delete(id) == [id]
    assert not any(part.exists() for part in parts)
    assert g.trash() == [id]
    restored = g.restore(id)
    assert all(part.exists() for part in parts)
    assert restored.metadata["tags"] == {"best": True}
    assert list(restored.metrics().value) == [1.0]
    assert g.delete(id) == [id]
    assert g.purge() == 1
    assert not any(other_disk.rglob("weights.bin"))  # the artefacts went too
    assert not (other_disk / id).exists()


def test_a_part_no_rename_can_move_leaves_the_whole_run_in_place(
    tmp_path: Path, other_disk: Path
) -> None:
    """The metrics folder on another filesystem than the trash: nothing moves, and
    the error says why (before 3.5, the record went and the rest stayed)."""
    root = tmp_path / "g"
    (root / ".de").mkdir(parents=True)
    (root / ".de" / "metrics").symlink_to(other_disk, target_is_directory=True)
    g, id = _run_with_everything(root)
    with pytest.raises(TrashError, match=r"different filesystems.*nothing of the run") as refused:
        g.delete(id)
    here, trash = layout.metrics(root, id), layout.trash(root, id)
    assert refused.value.errno == errno.EXDEV
    assert refused.value.strerror == (
        f"Cannot move {str(here)!r} to the trash in {str(trash)!r}: they are on different "
        "filesystems, so nothing of the run was deleted. Keep 'metrics' on the filesystem "
        f"of {str(trash)!r}."
    )
    assert (root / f"{id}.json").exists()
    assert layout.metrics(root, id).exists()
    assert (layout.artefacts(root, id) / "weights.bin").exists()
    assert g.trash() == []
    (run,) = g.observations()
    assert run.metadata["tags"] == {"best": True}


def test_a_sweep_runs_again_a_config_whose_run_was_deleted_before_it(tmp_path: Path) -> None:
    """The trash fallback covers a delete racing a sweep, not one before it began."""
    calls: list[int] = []

    @experiment(root=tmp_path / "s")
    def s(x: int) -> int:
        calls.append(x)
        return x

    s.sweep({"x": [1, 2, 3]}, progress=False)
    (two,) = [run for run in s.observations() if run.config["x"] == 2]
    assert s.delete(two.id) == [two.id]
    again = s.sweep({"x": [1, 2, 3]}, progress=False)
    assert calls == [1, 2, 3, 2]
    assert sorted(run.config["x"] for run in again) == [1, 2, 3]
    assert two.id not in [run.id for run in again]
    assert sorted(run.config["x"] for run in s.observations()) == [1, 2, 3]


# ---------------------------------------------------------------- damaged annotations


@pytest.fixture
def odd_runs(tmp_path: Path) -> Path:
    """Three runs whose metadata (a callback may put anything there) has a list of
    tags, a string of tags and an int of notes; and a good run, tagged."""
    root = tmp_path / "odd"
    backend = instantiate_backend("json", root)
    odd: list[dict[str, Any]] = [{"tags": ["a", "b"]}, {"tags": "best"}, {"notes": 7}]
    for n, metadata in enumerate(odd):
        id = f"2026-01-01_00-00-0{n}_000000"
        backend.record(Observation(id, {"lr": n / 10}, {"loss": n}, dict(metadata)))
    good = "2026-01-01_00-00-09_000000"
    backend.record(Observation(good, {"lr": 0.9}, {"loss": 9}, {}))
    layout.reserved_ids(root).mkdir(parents=True)
    done = cli("tag", root, good, "best=true")
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--where", "tags.best == true"),
        ("list", "--sort=-result.loss"),
        ("list", "--format", "csv"),
        ("export", "--format", "csv"),
        ("export", "--format", "json"),
        ("diff", "2026-01-01_00-00-00_000000", "2026-01-01_00-00-01_000000"),
    ],
)
def test_odd_tags_and_notes_do_not_stop_the_command_line(
    odd_runs: Path, args: tuple[str, ...]
) -> None:
    done = cli(args[0], odd_runs, *args[1:])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "left out" in done.stderr  # one warning per odd field
    if args[1:2] == ("--where",):
        assert "2026-01-01_00-00-09_000000" in done.stdout
        assert "2026-01-01_00-00-00_000000" not in done.stdout


def test_odd_tags_and_notes_do_not_stop_queries(odd_runs: Path) -> None:
    from digital_experiments import query

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best = query.load(odd_runs, where="tags.best == true")
    assert [run.id for run in best] == ["2026-01-01_00-00-09_000000"]
    said = [str(w.message) for w in caught]
    assert any("metadata['tags'] = ['a', 'b']" in m for m in said), said
    assert any("metadata['notes'] = 7" in m for m in said), said
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ordered = query.load(odd_runs, sort="-result.loss")
        frame = query.to_dataframe(ordered)
    assert list(frame["result.loss"]) == [9, 2, 1, 0]


# ---------------------------------------------------------------- damaged metrics


def _one_run(root: Path) -> tuple[Any, str]:
    @experiment(root=root, backend="json")
    def m(x: int) -> int:
        log(loss=0.5)
        return x

    m(1)
    (run,) = m.observations()
    return m, run.id


@pytest.mark.parametrize("line", ["null", "1", '["a", "loss", 1, 2]', '[0, "loss"]', "{}"])
def test_a_metrics_line_of_the_wrong_shape_is_skipped(tmp_path: Path, line: str) -> None:
    m, id = _one_run(tmp_path / "m")
    with open(layout.metrics(tmp_path / "m", id), "a") as file:
        file.write(line + "\n")
    (run,) = m.observations(where="metrics.loss < 1")
    assert list(run.metrics().value) == [0.5]
    done = cli("list", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    assert "loss=0.5" in done.stdout


def test_a_torn_line_never_takes_the_next_writers_points(tmp_path: Path) -> None:
    """A writer killed mid-write leaves half a line without its newline; the next
    writer's first point must not fuse with it."""

    @experiment(root=tmp_path / "t")
    def t() -> None:
        # what another process of this run, killed mid-flush, leaves behind
        path = layout.metrics(tmp_path / "t", current_dir().name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'[0, "loss", 0.2')
        for step in range(3):
            log(step=step, acc=step / 10)

    t()
    (run,) = t.observations()
    points = run.metrics()
    assert list(points.step) == [0, 1, 2]
    assert list(points.value) == [0.0, 0.1, 0.2]


# ---------------------------------------------------------------- reproducing calls


def va(a: int, *rest: int) -> tuple[int, ...]:
    return (a, *rest)


def po(a: int, /, b: int = 2) -> tuple[int, int]:
    return (a, b)


def kw(a: int, **options: int) -> dict[str, int]:
    return {"a": a, **options}


def mixed(a: int, /, b: int, *rest: int, c: int = 3, **options: int) -> list[Any]:
    return [a, b, rest, c, options]


# a call of each kind of parameter: *args, positional-only, **kwargs, all at once
EVERY_KIND = [
    (va, (1, 2, 3), {}),
    (po, (1,), {"b": 5}),
    (kw, (1,), {"d": 4}),
    (mixed, (1, 2, 7, 8), {"c": 9, "e": 5}),
]


@pytest.mark.parametrize(("function", "args", "kwargs"), EVERY_KIND)
def test_rerun_works_for_every_kind_of_parameter(
    tmp_path: Path, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    f = experiment(root=tmp_path / function.__name__)(function)
    first = f(*args, **kwargs)
    (old,) = f.observations()
    new = f.rerun(old.id)
    assert new.config == old.config
    assert new.result == first


@pytest.mark.parametrize(("function", "args", "kwargs"), EVERY_KIND)
def test_show_call_prints_the_call_that_reproduces_the_config(
    tmp_path: Path, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The printed call, run, binds exactly the recorded config."""
    root = tmp_path / function.__name__
    f = experiment(root=root, backend="json")(function)
    expected = f(*args, **kwargs)
    (old,) = f.observations()
    done = cli("show", root, old.id, "--call")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert printed.startswith(f"{function.__name__}(")
    assert eval(printed, {function.__name__: function}) == expected


def test_show_call_never_prints_a_key_as_code(tmp_path: Path) -> None:
    """A JSON record (safe to open) whose config key is code: the printed call
    passes it as a string in ``**{...}``, so pasting it runs nothing."""
    root, marker = tmp_path / "train", tmp_path / "ran"
    hostile = f"lr=__import__('pathlib').Path({str(marker)!r}).touch(),epochs"
    backend = instantiate_backend("json", root)
    backend.record(Observation(ID, {hostile: 1, "lr": 0.1}, 0, {}))
    layout.reserved_ids(root).mkdir(parents=True)
    done = cli("show", root, ID, "--call")
    assert done.returncode == 0, done.stderr
    call = ast.parse(done.stdout.strip(), mode="eval").body
    assert isinstance(call, ast.Call)
    assert all(isinstance(node, (ast.Constant, ast.Dict)) for node in call.args)
    for keyword in call.keywords:
        assert isinstance(keyword.value, (ast.Constant, ast.Dict)), ast.dump(keyword)
    received: dict[str, Any] = {}
    eval(done.stdout, {"train": lambda **kw: received.update(kw)})
    assert not marker.exists()
    assert received == {hostile: 1, "lr": 0.1}


# ---------------------------------------------------------------- the terminal

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZWNobyBoaQ==\x07\x9b31m"


@pytest.fixture
def hostile_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    """A failed run whose error, config and result hold terminal escapes."""
    root = tmp_path / "h"

    @experiment(root=root, backend="json")
    def h(name: str) -> str:
        if name == "fail":
            raise ValueError(HOSTILE)
        return name + HOSTILE

    h(HOSTILE)
    h("plain")
    with pytest.raises(ValueError, match="pwned"):
        h("fail")
    return root, [run.id for run in h.observations(status="all")]


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--format", "md"),
        ("list", "--format", "csv"),
        ("list", "--format", "json"),
        ("diff", 0, 1),
        ("show", 0),
        ("show", 0, "--json"),
        ("export", "--format", "json"),
        ("export", "--format", "csv"),
    ],
)
def test_record_contents_never_reach_the_terminal_raw(
    hostile_runs: tuple[Path, list[str]], args: tuple[Any, ...]
) -> None:
    root, ids = hostile_runs
    words = [ids[a] if isinstance(a, int) else a for a in args]
    done = (
        cli(words[0], root, *words[1:], "--status", "all")
        if words[0]
        in (
            "list",
            "export",
        )
        else cli(words[0], root, *words[1:])
    )
    assert done.returncode == 0, done.stderr
    for char in ("\x1b", "\x07", "\x9b"):
        assert char not in done.stdout
        assert char not in done.stderr
    assert "pwned" in done.stdout  # shown, escaped
    if words[-1] == "json" or "--json" in words:  # escaped, yet the same data
        assert HOSTILE + HOSTILE in _strings(json.loads(done.stdout))


def _strings(value: Any) -> list[str]:
    """Every string inside ``value``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    return [s for item in value for s in _strings(item)] if isinstance(value, list) else []
