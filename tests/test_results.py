"""Working with results: where= queries, sort, columns, tags, notes, trash, compare, rerun."""

from __future__ import annotations

import pickle
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import current_dir, experiment, log, query
from digital_experiments._model import layout
from digital_experiments._model.where import WhereError, compile_where


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
