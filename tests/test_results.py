"""Working with results: where= queries, sort, columns, tags, notes, trash, compare, rerun."""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import current_dir, experiment, log, query
from digital_experiments._model import layout
from digital_experiments._model.where import WhereError, compile_where
from digital_experiments._read import trash
from digital_experiments._store import files as storage
from digital_experiments.errors import RunningError


@pytest.fixture
def train(tmp_path: Path) -> Any:
    @experiment(root=tmp_path / "train")
    def train(lr: float, depth: int = 2) -> dict[str, float]:
        log(loss=lr * depth)
        (current_dir() / "weights.txt").write_text(str(lr))
        if lr < 0:
            raise ValueError("negative lr")
        return {"loss": lr * depth, "acc": 1 - lr}

    for lr, depth in [(0.1, 2), (0.01, 2), (0.001, 4), (0.5, 1)]:
        train(lr, depth)
    with pytest.raises(ValueError, match="negative lr"):
        train(-1.0)
    return train


def configs(runs: list[Any]) -> list[tuple[float, int]]:
    return [(run.config["lr"], run.config["depth"]) for run in runs]


# ---------------------------------------------------------------- where=


def test_where_strings_filter_on_config_result_status_and_metrics(train: Any) -> None:
    assert configs(train.observations(where="config.lr < 0.05")) == [(0.01, 2), (0.001, 4)]
    assert configs(
        train.observations(where="config.lr < 0.2 and result.loss <= 0.05 or config.depth == 1")
    ) == [(0.01, 2), (0.001, 4), (0.5, 1)]
    assert configs(train.observations(where="not (config.depth in [2, 4])")) == [(0.5, 1)]
    assert configs(train.observations(status="all", where='status == "failed"')) == [(-1.0, 2)]
    assert configs(train.observations(where="metrics.loss > 0.3")) == [(0.5, 1)]
    assert configs(train.observations(where="config.depth != 2 and config.lr >= 1e-3")) == [
        (0.001, 4),
        (0.5, 1),
    ]


def test_an_unknown_field_is_an_error_pointing_at_it(train: Any) -> None:
    with pytest.raises(ValueError, match=re.escape("Unknown field 'config.lrr'")) as info:
        train.observations(where="config.lrr < 0.1")
    assert "  config.lrr < 0.1\n  ^^^^^^^^^^\n" in str(info.value)
    assert "config.lr" in str(info.value).split("Known fields:")[1]
    with pytest.raises(ValueError, match=re.escape("Unknown field 'cfg.lr'")):
        query.load(train.experiment.root, where="cfg.lr == 1")
    # no runs yet: any field of a known namespace may exist later
    assert train.observations(where="config.lr < 1", since="2999") == []
    with pytest.raises(ValueError, match=re.escape("Unknown field 'cfg.lr'")):
        train.observations(where="cfg.lr < 1", since="2999")


@pytest.mark.parametrize(
    ("text", "message", "caret"),
    [
        ("config.lr <", "Expected a value after '<' at column 12", "             ^"),
        ("(config.lr < 1", "Expected ')' at column 15", "                ^"),
        ("config.lr = 1", "Unexpected '=' (comparisons use ==)", "            ^"),
        ("config.lr < 1 1", "Unexpected '1' at column 15", "                ^"),
        ("status == 'done", "Unclosed string", "            ^"),
    ],
)
def test_syntax_errors_point_at_the_spot(text: str, message: str, caret: str) -> None:
    with pytest.raises(WhereError, match=re.escape(message)) as info:
        compile_where(text)
    lines = str(info.value).splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == caret
    assert isinstance(info.value, ValueError)


def test_an_unquoted_string_gets_a_hint() -> None:
    with pytest.raises(WhereError, match='Strings are quoted: "completed"'):
        compile_where("status == completed")


def test_values_compare_safely() -> None:
    row = {"n": 1, "f": 2.5, "s": "a", "b": True, "z": None, "x.y": 3}
    assert compile_where("n == 1.0 and f > 2 and s == 'a' and b == true and z == null")(row)
    assert not compile_where("b == 1")(row)  # a bool is not a number
    assert not compile_where("s < 1")(row)  # text and numbers do not order
    assert not compile_where("missing == 1")(row)
    assert not compile_where("missing != 1")(row)
    assert compile_where("not missing == 1")(row)
    assert compile_where("x")(row)  # a prefix of a present field
    assert compile_where("s in ['a', 'b'] and n not in [2, 3]")(row)
    assert compile_where("s == \"a\" or s == 'it\\'s'")({"s": "it's"})
    assert compile_where("n == -1 or f == 25e-1")(row)


def test_queries_never_run_code() -> None:
    for text in ("__import__('os').system('echo hacked')", "lambda: 1", "config.lr + 1"):
        with pytest.raises(WhereError, match="Unexpected"):
            compile_where(text)
    # a dotted name is only ever a field to look up, never an attribute
    assert not compile_where("config.lr.__class__")({"config.lr": 1})
    where = compile_where("config.lr < 1")
    assert pickle.loads(pickle.dumps(where))({"config.lr": 0.5})


def test_sort_limit_and_columns(train: Any) -> None:
    by_loss = train.observations(sort="result.loss")
    assert [run.result["loss"] for run in by_loss] == [0.004, 0.02, 0.2, 0.5]
    best = train.observations(sort="-result.acc", limit=2)
    assert configs(best) == [(0.001, 4), (0.01, 2)]
    assert configs(train.observations(limit=1)) == [(0.5, 1)]  # no sort: the latest
    assert configs(train.observations(sort="config.depth,-config.lr")) == [
        (0.5, 1),
        (0.1, 2),
        (0.01, 2),
        (0.001, 4),
    ]
    with pytest.raises(ValueError, match=re.escape("unknown field 'result.los'")):
        train.observations(sort="result.los")
    frame = train.to_dataframe(columns=["id", "config.lr", "result"], sort="config.lr")
    assert list(frame.columns) == ["id", "config.lr", "result.loss", "result.acc"]
    assert list(frame["config.lr"]) == [0.001, 0.01, 0.1, 0.5]
    with pytest.raises(ValueError, match="Unknown column 'nope'"):
        train.to_dataframe(columns=["nope"])


# ---------------------------------------------------------------- tags and notes


def test_tags_and_notes_show_in_metadata_and_queries(train: Any) -> None:
    first, second = train.observations()[:2]
    assert train.tag(first.id, best=True, owner="ana") == {"best": True, "owner": "ana"}
    assert train.tag(first.id, owner=None) == {"best": True}  # None removes
    train.note(second.id, "odd spike at step 3")
    assert train.note(second.id, "rerun it") == ["odd spike at step 3", "rerun it"]
    runs = {run.id: run for run in train.observations()}
    assert runs[first.id].metadata["tags"] == {"best": True}
    assert runs[second.id].metadata["notes"] == ["odd spike at step 3", "rerun it"]
    assert [r.id for r in train.observations(where="tags.best == true")] == [first.id]
    assert [r.id for r in train.observations(where="notes")] == [second.id]
    (record,) = list(train.experiment.root.glob(f"{first.id}.*"))
    assert b"best" not in record.read_bytes()  # the record itself is unchanged
    with pytest.raises(TypeError, match="tags are str, int, float, bool or None"):
        train.tag(first.id, weights=[1, 2])
    with pytest.raises(ValueError, match="No run 'nope'"):
        train.tag("nope", x=1)


def test_concurrent_taggers_never_lose_a_tag(train: Any) -> None:
    run = train.observations()[0]
    start = threading.Barrier(8)

    def tagger(n: int) -> None:
        start.wait()
        for i in range(10):
            train.tag(run.id, **{f"t{n}_{i}": i})

    threads = [threading.Thread(target=tagger, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tags = train.observations(where=f'id == "{run.id}"')[0].metadata["tags"]
    assert tags == {f"t{n}_{i}": i for n in range(8) for i in range(10)}


# ---------------------------------------------------------------- trash


def test_delete_restore_and_purge_move_every_part(train: Any) -> None:
    root = train.experiment.root
    run = train.observations()[0]
    train.tag(run.id, keep=False)
    parts = [
        layout.artefacts(root, run.id) / "weights.txt",
        layout.metrics(root, run.id),
        layout.annotation_file(root, run.id),
    ]
    assert all(part.exists() for part in parts)
    assert train.delete(run.id, "2000-01-01_00-00-00_000000") == [run.id]
    assert run.id not in [r.id for r in train.observations()]
    assert not any(part.exists() for part in parts)
    assert train.trash() == [run.id]
    restored = train.restore(run.id)
    assert restored == run._replace(metadata=restored.metadata)
    assert restored.metadata["tags"] == {"keep": False}
    assert all(part.exists() for part in parts)
    assert list(restored.metrics().value) == [0.2]
    train.delete(run.id)
    assert train.purge() == 1
    assert train.trash() == []
    with pytest.raises(FileNotFoundError, match="No run"):
        train.restore(run.id)


def test_a_running_run_cannot_be_deleted(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    @experiment(root=tmp_path)
    def slow() -> int:
        started.set()
        assert release.wait(60)
        return 1

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert started.wait(60)
        (running,) = slow.observations(status="running")
        with pytest.raises(ValueError, match="is running"):
            slow.delete(running.id)
    finally:
        release.set()
        thread.join()
    assert slow.delete(running.id) == [running.id]


def test_a_sweep_still_returns_a_run_deleted_meanwhile(tmp_path: Path) -> None:
    @experiment(root=tmp_path)
    def f(x: int) -> int:
        return x

    class DeletingExecutor:
        """Runs each job, then deletes its run before the sweep reads it back."""

        def submit(self, fn: Any, job: Any) -> Any:
            outcome = fn(job)
            f.delete(outcome.id)
            return type("Done", (), {"result": lambda self: outcome, "done": lambda self: True})()

    runs = f.sweep({"x": [1, 2]}, executor=DeletingExecutor(), progress=False)
    assert [run.result for run in runs] == [1, 2]
    assert f.observations() == []
    assert sorted(f.trash()) == sorted(run.id for run in runs)


class Killed(BaseException):
    """The process dies here (a kill -9, as far as the files are concerned)."""


def test_a_delete_killed_after_the_record_moved_is_finished_by_the_next(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, run = train.experiment.root, train.observations()[0]
    real = trash._move

    def killed(source: Path, target: Path) -> None:
        raise Killed

    monkeypatch.setattr(trash, "_move", killed)
    with pytest.raises(Killed):
        train.delete(run.id)
    assert (layout.trash(root, run.id) / f"{run.id}.pkl").exists()  # the record went first
    assert layout.metrics(root, run.id).exists()  # the rest is still in place
    monkeypatch.setattr(trash, "_move", real)
    assert train.delete(run.id) == [run.id]  # into the trash folder there already
    assert not layout.metrics(root, run.id).exists()
    assert not layout.artefacts(root, run.id).exists()
    assert list(train.restore(run.id).metrics().value) == [0.2]


def test_a_delete_beaten_by_a_delete_and_purge_says_no_run_and_leaves_no_trace(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process deleted and purged the run between this delete's look and
    its lock. Before, an empty ``.de/trash/<id>`` stayed, listed as a trashed run
    that no restore could bring back."""
    run, backend = train.observations()[0], train.backend
    real = trash.locked

    def another_first(store: Any, id: str) -> Any:
        monkeypatch.setattr(trash, "locked", real)
        assert trash.delete(backend, id)
        assert trash.purge(backend, [id]) == 1
        return real(store, id)

    monkeypatch.setattr(trash, "locked", another_first)
    assert trash.delete(backend, run.id) is False
    assert train.trash() == []
    assert not layout.trash(train.experiment.root, run.id).exists()


def test_a_purge_between_such_a_delete_and_its_cleanup_is_no_error(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge takes no lock: it may take the empty trash folder such a delete made
    before the delete removes it."""
    root, backend = train.experiment.root, train.backend
    run = train.observations()[0]
    record = root / f"{run.id}.pkl"
    real_locked, real_rename = trash.locked, os.rename

    def another_first(store: Any, id: str) -> Any:
        monkeypatch.setattr(trash, "locked", real_locked)
        assert trash.delete(backend, id)
        assert trash.purge(backend, [id]) == 1
        monkeypatch.setattr(os, "rename", rename)
        return real_locked(store, id)

    def rename(source: Any, target: Any) -> None:
        if Path(source) == record:
            trash.purge(backend, [run.id])  # the folder made for nothing goes meanwhile
        real_rename(source, target)

    monkeypatch.setattr(trash, "locked", another_first)
    assert trash.delete(backend, run.id) is False
    monkeypatch.undo()
    assert train.trash() == []


def test_delete_and_restore_move_under_the_runs_lock(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The annotation lock of that run: a tagger comes before or after, never between."""
    root, run = train.experiment.root, train.observations()[0]
    lock = layout.lock(root, f"annotations-{run.id}")
    held: list[bool] = []
    real = os.rename

    def rename(source: Any, target: Any) -> None:
        other = storage.make_lock(lock)
        free = storage.try_acquire(other)
        if free:
            other.release()
        held.append(not free)
        real(source, target)

    monkeypatch.setattr(os, "rename", rename)
    train.delete(run.id)
    train.restore(run.id)
    monkeypatch.undo()
    assert held == [True] * 6  # record, artefacts, metrics: there and back


def test_a_run_deleted_by_3_4_gets_its_artefacts_back(train: Any) -> None:
    """3.4 kept a run's artefacts in its ``.de/trash/<id>/storage``."""
    root, run = train.experiment.root, train.observations()[0]
    train.delete(run.id)
    os.rename(trash._artefacts_trash(root, run.id), layout.trash(root, run.id) / layout.ARTEFACTS)
    train.restore(run.id)
    assert (layout.artefacts(root, run.id) / "weights.txt").read_text() == "0.1"
    assert not layout.trash(root, run.id).exists()  # its trash folder goes once empty


def test_a_restore_leaves_what_it_does_not_know_in_the_trash(train: Any) -> None:
    root, run = train.experiment.root, train.observations()[0]
    train.delete(run.id)
    (layout.trash(root, run.id) / "notes.txt").write_text("mine")
    assert train.restore(run.id).id == run.id
    assert (layout.trash(root, run.id) / "notes.txt").read_text() == "mine"


def test_refusals_name_the_run_and_the_root(train: Any) -> None:
    root, backend = train.experiment.root, train.backend
    run = train.observations()[0]
    missing = "2000-01-01_00-00-00_000000"
    with pytest.raises(FileNotFoundError) as gone:
        trash.restore(backend, missing)
    assert str(gone.value) == f"No run {missing!r} in the trash of {str(root)!r}."
    train.delete(run.id)
    shutil.copy(layout.trash(root, run.id) / f"{run.id}.pkl", root / f"{run.id}.pkl")
    with pytest.raises(FileExistsError) as taken:
        trash.restore(backend, run.id)
    assert str(taken.value) == f"Run {run.id!r} is in {str(root)!r} already."
    with pytest.raises(TypeError) as refused:
        trash.delete(object(), run.id)  # type: ignore[arg-type]
    assert str(refused.value).startswith(
        "Deleting runs needs a file backend (pickle, json, yaml...), not <object object at "
    )
    assert str(refused.value).endswith(">: call its delete(id) instead.")


def _running_in(train: Any, run: Any, process: object) -> None:
    """Rewrite ``run``'s record as running in ``process``."""
    metadata = {**run.metadata, "status": "running", "process": process}
    train.backend.record(run._replace(metadata=metadata))


def test_a_running_run_is_refused_with_its_pid(train: Any) -> None:
    first, second = train.observations()[:2]
    _running_in(train, first, storage.process_info())  # this live process
    _running_in(train, second, "?")  # no process this version can read
    for run, pid in ((first, os.getpid()), (second, None)):
        with pytest.raises(RunningError) as refused:
            train.delete(run.id)
        assert str(refused.value) == (
            f"Run {run.id!r} is running (pid {pid}): wait until it ends, or stop it; a run "
            "whose process is gone reads 'abandoned' and can be deleted."
        )


def test_a_trashed_record_keeps_its_file_names_id(train: Any) -> None:
    root, backend = train.experiment.root, train.backend
    first, second = train.observations()[:2]
    train.delete(first.id)
    shutil.copy(root / f"{second.id}.pkl", layout.trash(root, first.id) / f"{first.id}.pkl")
    with pytest.warns(UserWarning, match="using its file name's id"):
        loaded = trash.load_trashed(backend, first.id)
    assert loaded.id == first.id
    assert loaded.config == second.config


def test_when_a_run_was_deleted_is_its_trash_folders_time(train: Any) -> None:
    root, backend = train.experiment.root, train.backend
    first, second = train.observations()[:2]
    train.delete(first.id)
    os.utime(layout.trash(root, first.id), (1000.0, 1000.0))
    assert trash.deleted_at(backend, first.id) == 1000.0
    assert trash.deleted_at(backend, second.id) is None  # in place: not in the trash


def test_purge_takes_the_ids_it_is_given_and_counts_each(train: Any) -> None:
    root, backend = train.experiment.root, train.backend
    ids = [run.id for run in train.observations()[:3]]
    assert train.delete(*ids) == ids
    assert trash.purge(backend, ["2000-01-01_00-00-00_000000", ids[0]]) == 1  # one not there
    assert train.trash() == ids[1:]
    assert train.purge() == 2
    assert train.trash() == []
    # nothing left, not even the folders renamed away to be removed
    assert os.listdir(layout.trash(root)) == []
    assert os.listdir(trash._artefacts_trash(root)) == []


def test_a_purge_goes_on_past_files_it_cannot_remove(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NFS file still open elsewhere cannot go (EBUSY): the run is purged all the
    same, its leftovers under names no listing takes for a run."""
    run = train.observations()[0]
    train.delete(run.id)
    real = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(path) in ("metrics.jsonl", "weights.txt"):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    assert train.purge() == 1
    monkeypatch.undo()
    assert train.trash() == []
    with pytest.raises(FileNotFoundError):
        train.restore(run.id)


def test_a_purge_removes_a_link_to_artefacts_never_what_it_points_to(
    train: Any, tmp_path: Path
) -> None:
    root, run = train.experiment.root, train.observations()[0]
    elsewhere = tmp_path / "elsewhere"
    os.rename(layout.artefacts(root, run.id), elsewhere)
    layout.artefacts(root, run.id).symlink_to(elsewhere, target_is_directory=True)
    train.delete(run.id)
    assert train.purge() == 1
    assert (elsewhere / "weights.txt").read_text() == "0.1"
    assert os.listdir(trash._artefacts_trash(root)) == []


def test_a_part_another_mover_moved_first_is_left_to_it(
    train: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, run = train.experiment.root, train.observations()[0]
    metrics = layout.metrics(root, run.id)
    real = os.rename

    def rename(source: Any, target: Any) -> None:
        if Path(source) == metrics:
            real(source, target)  # another mover, first
        real(source, target)

    monkeypatch.setattr(os, "rename", rename)
    assert train.delete(run.id) == [run.id]
    monkeypatch.undo()
    assert (layout.trash(root, run.id) / "metrics.jsonl").exists()
    assert list(train.restore(run.id).metrics().value) == [0.2]


# ---------------------------------------------------------------- compare and rerun


def test_compare_shows_only_what_differs(train: Any) -> None:
    a, b = train.observations()[:2]
    frame = train.compare(a.id, b.id)
    assert list(frame.columns) == [a.id, b.id]
    assert "config.lr" in frame.index
    assert "result.loss" in frame.index
    assert "metrics.loss" in frame.index
    assert "config.depth" not in frame.index  # both 2
    assert "code" not in frame.index  # same code
    assert frame.loc["config.lr", a.id] == 0.1
    with pytest.raises(ValueError, match="two runs or more"):
        train.compare(a.id)


def test_rerun_calls_again_with_the_stored_config(train: Any) -> None:
    old = train.observations()[0]
    new = train.rerun(old.id)
    assert new.config == old.config
    assert new.result == old.result
    assert new.id != old.id
    assert new.metadata["rerun_of"] == old.id
    assert train.observations()[-1].metadata["rerun_of"] == old.id


def test_rerun_refuses_other_code_unless_told(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"experiment": experiment, "root": tmp_path}
    exec("@experiment(root=root)\ndef f(x):\n    return x\n", namespace)
    namespace["f"](3)
    (old,) = namespace["f"].observations()
    exec("@experiment(root=root)\ndef f(x):\n    return x * 2\n", namespace)
    with pytest.raises(ValueError, match="ran other code"):
        namespace["f"].rerun(old.id)
    assert namespace["f"].rerun(old.id, check_code=False).result == 6


# ---------------------------------------------------------------- notebooks


def test_observations_render_as_html_tables(train: Any) -> None:
    runs = train.observations(status="all")
    html = runs._repr_html_()
    assert html.count("<tr>") == len(runs) + 1
    assert "color:#cf222e" in html
    assert ">failed<" in html
    assert "color:#1a7f37" in html
    assert runs[0]._repr_html_().count("<tr>") == 2
    assert (
        "&lt;"
        in type(runs[0])(  # values are escaped
            "2026-01-01_00-00-00_000000", {"x": "<b>"}, None, {}
        )._repr_html_()
    )


def test_a_sweep_waiting_for_a_run_deleted_meanwhile_does_not_run_it_again(
    tmp_path: Path,
) -> None:
    """Another process holds a config's claim; its run completes and is indexed, then
    deleted, then the claim goes: the waiting sweep returns that run, from the
    trash, and runs nothing."""
    from digital_experiments._sweep import claims

    calls: list[int] = []

    @experiment(root=tmp_path)
    def f(x: int) -> int:
        calls.append(x)
        return x

    exp = f.experiment
    key = exp.config_key({"x": 1})
    other = claims.Claim(str(exp.root), key, "another sweep")
    assert claims.try_claim(other)  # held by a live process (this one, another token)
    result: list[Any] = []
    sweep = threading.Thread(target=lambda: result.extend(f.sweep({"x": [1]}, progress=False)))
    sweep.start()
    done = f(1)  # "the other sweep's" run
    exp.index.remember(f.observations()[0])
    assert f.delete(done_id := f.observations()[0].id) == [done_id]
    claims.release(other)
    sweep.join(60)
    assert not sweep.is_alive()
    assert [run.id for run in result] == [done_id]
    assert result[0].result == done == 1
    assert calls == [1]  # the sweep ran nothing
    assert f.observations() == []
