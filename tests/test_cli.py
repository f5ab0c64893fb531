"""The command line, run for real: ``python -m digital_experiments ...`` in a subprocess."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import digital_experiments
from digital_experiments import Observation, current_dir, experiment
from digital_experiments._store.files import HOST
from digital_experiments.backends import instantiate_backend

from .conftest import dead_pid


def cli(
    *args: str | Path,
    input: str | None = None,
    cwd: Path | None = None,
    de_root: Path | str | None = None,
    terminal: str | None = None,
    columns: int = 200,
) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fresh interpreter; never raises on a non-zero exit.

    ``input`` is piped to it (no terminal, as in a script; without it, standard
    input is ``/dev/null``, never the terminal pytest runs in); ``terminal`` is
    typed on a pseudo-terminal that is its standard input (``"\\x04"``: end of
    input).
    """
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    if de_root is not None:
        env["DE_ROOT"] = str(de_root)
    env["COLUMNS"] = str(columns)  # wide tables by default: nothing cut
    command = [sys.executable, "-m", "digital_experiments", *map(str, args)]
    if terminal is None:
        return subprocess.run(
            command,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=120,
        )
    leader, follower = pty.openpty()
    try:
        os.write(leader, terminal.encode())  # typed ahead: the terminal keeps it until read
        return subprocess.run(
            command, stdin=follower, capture_output=True, text=True, cwd=cwd, env=env, timeout=120
        )
    finally:
        os.close(follower)
        os.close(leader)


def train(lr: float, epochs: int = 3) -> dict[str, float]:
    if lr > 1:
        raise ValueError(f"lr too big: {lr}")
    (current_dir() / "model.txt").write_text("weights")
    return {"loss": 0.1 / lr}


def make_runs(root: Path, backend: str = "pickle") -> dict[str, str]:
    """Two completed runs (with artefacts), one failed; their ids by status."""
    function = experiment(root=root, backend=backend)(train)
    function(0.1)
    function(0.01)
    with pytest.raises(ValueError, match="lr too big"):
        function(5.0)
    runs = {o.config["lr"]: o.id for o in function.observations(status="all")}
    return {"first": runs[0.1], "second": runs[0.01], "failed": runs[5.0]}


def add_record(root: Path, id: str, status: str, storage: bool = True, **metadata: Any) -> None:
    """Store a record with ``status`` as the library would, without running anything."""
    backend = instantiate_backend("pickle", root)
    backend.record(Observation(id, {"lr": 0.5}, None, {"status": status, **metadata}))
    (root / ".de" / "ids").mkdir(parents=True, exist_ok=True)  # every root the library records in
    if not storage:
        return
    (root / "storage" / id).mkdir(parents=True)
    (root / "storage" / id / "partial.txt").write_text("half done")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "experiments" / "train"


# ---------------------------------------------------------------- entry points


def test_version_prints_the_package_version() -> None:
    """``--version`` prints the installed version and exits 0."""
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"digital-experiments {digital_experiments.__version__}"


def test_console_script_runs_the_same_command_line() -> None:
    """The ``digital-experiments`` console script is the same program as ``python -m``."""
    script = Path(sys.executable).parent / "digital-experiments"
    if not script.exists():
        pytest.skip("package not installed with its console script")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert digital_experiments.__version__ in done.stdout


def test_no_command_is_a_usage_error() -> None:
    """Without a command the usage is printed to stderr with exit code 2."""
    done = cli()
    assert done.returncode == 2
    assert "usage: digital-experiments" in done.stderr


@pytest.mark.parametrize("command", ["list", "show", "export", "prune"])
def test_missing_root_is_a_usage_error(tmp_path: Path, command: str) -> None:
    """Every command refuses a folder that does not exist, with exit code 2."""
    extra = {"list": [], "show": ["some-id"], "export": ["--format", "csv"]}
    args = extra.get(command, ["--status", "failed", "--yes"])
    done = cli(command, tmp_path / "nowhere", *args)
    assert done.returncode == 2
    assert "No experiment folder at" in done.stderr
    assert not (tmp_path / "nowhere").exists()  # looking must not create it


# ---------------------------------------------------------------- list


def test_list_shows_every_run_with_status_duration_config_and_result(root: Path) -> None:
    """``list`` shows all runs by default: id, status, duration, config and result."""
    ids = make_runs(root)
    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "status", "duration", "config", "result"]
    assert [line.split()[0] for line in lines[1:4]] == [ids["first"], ids["second"], ids["failed"]]
    assert "completed" in lines[1]
    assert "lr=0.1, epochs=3" in lines[1]
    assert "loss=1" in lines[1]
    assert "failed" in lines[3]
    assert "ValueError: lr too big: 5.0" in lines[3]
    assert lines[1].split()[3] in ("µs", "ms", "s")  # such as "243 µs"
    assert lines[-1] == "3 runs (2 completed, 1 failed)"


def test_list_filters_by_status_and_limit(root: Path) -> None:
    """``--status`` keeps runs of that status; ``--limit N`` keeps the N most recent."""
    ids = make_runs(root)
    failed = cli("list", root, "--status", "failed")
    assert ids["failed"] in failed.stdout
    assert ids["first"] not in failed.stdout
    latest = cli("list", root, "--status", "completed", "--limit", "1")
    assert ids["second"] in latest.stdout
    assert ids["first"] not in latest.stdout
    both = cli("list", root, "--status", "failed,completed")
    assert both.stdout.splitlines()[-1] == "3 runs (2 completed, 1 failed)"


def test_list_rejects_an_unknown_status(root: Path) -> None:
    """An unknown status is a usage error naming the valid ones."""
    make_runs(root)
    done = cli("list", root, "--status", "complete")
    assert done.returncode == 2
    assert "Unknown status 'complete'" in done.stderr


def test_list_of_an_empty_folder(root: Path) -> None:
    """An existing folder without runs lists nothing, successfully."""
    root.mkdir(parents=True)
    done = cli("list", root)
    assert done.returncode == 0
    assert done.stdout.strip() == "0 runs"


def test_list_reports_abandoned_and_interrupted_runs(root: Path) -> None:
    """A running record whose process is gone reads as abandoned."""
    add_record(root, "2026-01-01_00-00-00_000000", "interrupted")
    add_record(
        root, "2026-01-01_00-00-01_000000", "running", process={"host": HOST, "pid": dead_pid()}
    )
    done = cli("list", root)
    assert "interrupted" in done.stdout
    assert "abandoned" in done.stdout
    assert done.stdout.splitlines()[-1] == "2 runs (1 interrupted, 1 abandoned)"


def test_list_warns_about_an_unreadable_record_and_goes_on(root: Path) -> None:
    """A torn or foreign record is skipped with a warning on stderr."""
    ids = make_runs(root)
    (root / "2026-01-01_00-00-00_000000.pkl").write_bytes(b"not a pickle")
    done = cli("list", root)
    assert done.returncode == 0
    assert ids["first"] in done.stdout
    assert "warning: Skipping unreadable record '2026-01-01_00-00-00_000000'" in done.stderr


@pytest.mark.parametrize("backend", ["json", "yaml"])
def test_list_detects_the_record_format(root: Path, backend: str) -> None:
    """The backend is found from the records' suffix."""
    ids = make_runs(root, backend)
    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    assert ids["second"] in done.stdout


def test_mixed_formats_need_backend(root: Path) -> None:
    """A folder holding several formats asks for ``--backend``, which then picks one."""
    make_runs(root, "pickle")
    json_ids = make_runs(root, "json")
    done = cli("list", root)
    assert done.returncode == 2
    assert "several formats" in done.stderr
    assert "backend" in done.stderr
    chosen = cli("list", root, "--backend", "json")
    assert chosen.returncode == 0
    assert json_ids["first"] in chosen.stdout
    assert chosen.stdout.splitlines()[-1].startswith("3 runs")


# ---------------------------------------------------------------- show


def test_show_prints_the_whole_record_and_its_artefacts(root: Path) -> None:
    """``show`` prints config, result, metadata (environment included) and artefact paths."""
    ids = make_runs(root)
    done = cli("show", root, ids["first"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"id: {ids['first']}" in text
    assert "status: completed" in text
    assert "lr: 0.1" in text
    assert "loss: 1.0" in text
    assert "pip_freeze:" in text
    assert "def train(lr" in text
    assert f"- storage/{ids['first']}/model.txt" in text


def test_show_json_is_machine_readable(root: Path) -> None:
    """``show --json`` prints one JSON object."""
    ids = make_runs(root)
    record = json.loads(cli("show", root, ids["failed"], "--json").stdout)
    assert record["status"] == "failed"
    assert record["config"] == {"lr": 5.0, "epochs": 3}
    assert record["metadata"]["error"]["type"] == "ValueError"
    assert record["artefacts"] == []


def test_show_accepts_a_unique_prefix(root: Path) -> None:
    """An unambiguous prefix of an id is enough; an ambiguous one is an error."""
    ids = make_runs(root)
    add_record(root, "2020-01-01_00-00-00_000000", "failed")
    done = cli("show", root, "2020-01")
    assert done.returncode == 0
    assert "id: 2020-01-01_00-00-00_000000" in done.stdout
    ambiguous = cli("show", root, ids["first"][:4])
    assert ambiguous.returncode == 1
    assert "matches 3 runs" in ambiguous.stderr


def test_show_unknown_id_fails_with_a_hint(root: Path) -> None:
    """An id with no record exits 1 and says how to see the ids."""
    make_runs(root)
    done = cli("show", root, "1999-01-01_00-00-00_000000")
    assert done.returncode == 1
    assert "No run '1999-01-01_00-00-00_000000'" in done.stderr
    assert "digital-experiments list" in done.stderr


def test_show_refuses_a_path_as_id(root: Path) -> None:
    """An id that is a path is a usage error, never read."""
    make_runs(root)
    done = cli("show", root, "../../etc")
    assert done.returncode == 2
    assert "Invalid run id" in done.stderr


# ---------------------------------------------------------------- export


def test_export_csv_is_the_dataframe_with_a_status_column(root: Path) -> None:
    """CSV export has one flat row per completed run (by default), like to_dataframe()."""
    ids = make_runs(root)
    done = cli("export", root, "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [row["id"] for row in rows] == [ids["first"], ids["second"]]
    assert list(rows[0]) == ["id", "status", "config.lr", "config.epochs", "result.loss"]
    assert rows[1]["result.loss"] == "10.0"


def test_export_to_a_file_with_every_status(root: Path, tmp_path: Path) -> None:
    """``--output`` writes the file; ``--status all`` includes failed runs."""
    make_runs(root)
    output = tmp_path / "runs.csv"
    done = cli("export", root, "--format", "csv", "--status", "all", "--output", output)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Wrote 3 runs" in done.stderr
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [row["status"] for row in rows] == ["completed", "completed", "failed"]


def test_export_json_records(root: Path) -> None:
    """JSON export is a list of nested records; metadata only on request."""
    ids = make_runs(root)
    records = json.loads(cli("export", root, "--format", "json").stdout)
    assert records[0] == {
        "id": ids["first"],
        "status": "completed",
        "config": {"lr": 0.1, "epochs": 3},
        "result": {"loss": 1.0},
    }
    full = json.loads(cli("export", root, "--format", "json", "--include-metadata").stdout)
    assert "pip_freeze" in full[0]["metadata"]["environment"]


def test_export_parquet_needs_an_output_file(root: Path) -> None:
    """Parquet is binary: without ``--output`` it is a usage error."""
    make_runs(root)
    done = cli("export", root, "--format", "parquet")
    assert done.returncode == 2
    assert "--output" in done.stderr


def test_export_parquet(root: Path, tmp_path: Path) -> None:
    """Parquet export writes a table when pyarrow is installed, else says to install it."""
    make_runs(root)
    output = tmp_path / "runs.parquet"
    done = cli("export", root, "--format", "parquet", "--output", output)
    if importlib.util.find_spec("pyarrow") is None:
        assert done.returncode == 1
        assert "needs pyarrow: pip install pyarrow" in done.stderr
        assert not output.exists()
    else:
        import pandas as pd

        assert done.returncode == 0, done.stderr
        assert list(pd.read_parquet(output)["status"]) == ["completed", "completed"]


# ---------------------------------------------------------------- prune


def test_prune_asks_and_answering_no_deletes_nothing(root: Path) -> None:
    """``prune`` lists the runs it would delete and keeps them on "n"."""
    ids = make_runs(root)
    add_record(root, "2026-01-01_00-00-00_000000", "failed")
    done = cli("prune", root, "--status", "failed", terminal="n\n")
    assert done.returncode == 0
    assert ids["failed"] in done.stdout
    assert "2026-01-01_00-00-00_000000" in done.stdout
    assert "Delete the 2 runs above and their artefacts? [y/N]" in done.stdout
    assert "Nothing deleted." in done.stdout
    assert (root / f"{ids['failed']}.pkl").exists()
    assert (root / "storage" / "2026-01-01_00-00-00_000000").exists()


def test_prune_without_an_answer_deletes_nothing(root: Path) -> None:
    """End of input on a terminal (Ctrl-D) counts as "no"."""
    ids = make_runs(root)
    done = cli("prune", root, "--status", "failed", terminal="\x04")
    assert done.returncode == 0, done.stderr
    assert "Nothing deleted." in done.stdout
    assert (root / f"{ids['failed']}.pkl").exists()


@pytest.mark.parametrize("answer", ["y\n", "yes\n"])
def test_prune_deletes_records_and_artefacts_on_yes(root: Path, answer: str) -> None:
    """Answering yes deletes the matching records and their artefact folders, nothing else."""
    ids = make_runs(root)
    add_record(root, "2026-01-01_00-00-00_000000", "failed")
    done = cli("prune", root, "--status", "failed", terminal=answer)
    assert done.returncode == 0, done.stderr
    assert "Deleted 2 runs." in done.stdout
    assert not (root / f"{ids['failed']}.pkl").exists()
    assert not (root / "2026-01-01_00-00-00_000000.pkl").exists()
    assert not (root / "storage" / "2026-01-01_00-00-00_000000").exists()
    assert (root / f"{ids['first']}.pkl").exists()
    assert (root / "storage" / ids["first"] / "model.txt").exists()


def test_prune_yes_skips_the_question(root: Path) -> None:
    """``--yes`` deletes without reading stdin; several statuses at once."""
    add_record(root, "2026-01-01_00-00-00_000000", "interrupted")
    add_record(
        root, "2026-01-01_00-00-01_000000", "running", process={"host": HOST, "pid": dead_pid()}
    )
    add_record(
        root, "2026-01-01_00-00-02_000000", "running", process={"host": HOST, "pid": os.getpid()}
    )
    done = cli("prune", root, "--status", "abandoned", "--status", "interrupted", "--yes")
    assert done.returncode == 0, done.stderr
    assert "[y/N]" not in done.stdout
    assert "Deleted 2 runs." in done.stdout
    assert sorted(p.name for p in root.glob("*.pkl")) == ["2026-01-01_00-00-02_000000.pkl"]


def test_prune_refuses_completed_and_running_runs(root: Path) -> None:
    """Only failed, abandoned and interrupted runs can be pruned."""
    ids = make_runs(root)
    for status in ("completed", "running", "all"):
        done = cli("prune", root, "--status", status, "--yes")
        assert done.returncode == 2
        assert "prune deletes only failed, abandoned, interrupted runs" in done.stderr
    assert (root / f"{ids['first']}.pkl").exists()


def test_prune_with_nothing_to_delete(root: Path) -> None:
    """No matching runs: says so and exits 0."""
    make_runs(root)
    done = cli("prune", root, "--status", "abandoned", "--yes")
    assert done.returncode == 0
    assert "Nothing to prune" in done.stdout


# ---------------------------------------------------------------- --since


def test_since_takes_iso_times_and_refuses_garbage(root: Path) -> None:
    """``--since`` takes the ISO form of ``timing.start``; garbage is a usage error."""
    ids = make_runs(root)
    later = cli("list", root, "--since", "2999-01-01 00:00")
    assert later.returncode == 0, later.stderr
    assert later.stdout.strip() == "0 runs"
    earlier = cli("list", root, "--since", "2000-01-01T00:00:00")
    assert ids["first"] in earlier.stdout
    for bad in ("garbage", "yesterday"):
        done = cli("list", root, "--since", bad)
        assert done.returncode == 2
        assert f"since={bad!r} is not a time" in done.stderr
        assert "2026-11-28_12" in done.stderr
    assert cli("export", root, "--format", "csv", "--since", "garbage").returncode == 2


# ---------------------------------------------------------------- the file name is the id


def test_a_copied_record_lists_once_and_shows_by_its_file_name(root: Path) -> None:
    """A record copied under another id lists under that id, and ``show`` finds it."""
    ids = make_runs(root)
    copy = "2020-01-01_00-00-00_000000"
    shutil.copy(root / f"{ids['first']}.pkl", root / f"{copy}.pkl")
    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()[1:-1]]
    assert listed == [copy, ids["first"], ids["second"], ids["failed"]]
    assert f"holds the id {ids['first']!r}" in done.stderr
    shown = cli("show", root, copy, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == copy


# ---------------------------------------------------------------- malformed records


@pytest.mark.parametrize(
    "change",
    [{"metadata": None}, {"metadata": [1]}, {"id": 5}, {"config": [1]}, {"config": "lr=1"}],
)
def test_list_skips_a_malformed_record_with_a_warning(root: Path, change: dict[str, Any]) -> None:
    """A record with a null or list metadata, a numeric id or a non-dict config is skipped."""
    ids = make_runs(root, "json")
    bad = "2020-01-01_00-00-00_000000"
    record = {"id": bad, "config": {"lr": 1.0}, "result": 1, "metadata": {}, **change}
    (root / f"{bad}.json").write_text(json.dumps(record))
    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    assert ids["first"] in done.stdout
    assert f"warning: Skipping unreadable record {bad!r}" in done.stderr
    assert done.stdout.splitlines()[-1] == "3 runs (2 completed, 1 failed)"


# ---------------------------------------------------------------- prune stays in its root


def test_prune_deletes_by_file_name_never_by_the_id_inside(root: Path, tmp_path: Path) -> None:
    """Bogus records naming another run or an outside folder are deleted themselves, alone."""
    ids = make_runs(root, "json")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    bogus = {
        "2020-01-01_00-00-00_000000": ids["first"],  # a completed run's id
        "2020-01-01_00-00-01_000000": str(outside),  # an absolute path
        "2020-01-01_00-00-02_000000": "../../precious",
    }
    for name, inner in bogus.items():
        record = {"id": inner, "config": {}, "result": None, "metadata": {"status": "failed"}}
        (root / f"{name}.json").write_text(json.dumps(record))
    done = cli("prune", root, "--status", "failed", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Deleted 4 runs." in done.stdout
    assert (outside / "thesis.tex").read_text() == "years of work"
    assert (root / f"{ids['first']}.json").exists()
    assert (root / "storage" / ids["first"] / "model.txt").exists()
    assert not (root / f"{ids['failed']}.json").exists()
    assert sorted(path.stem for path in root.glob("*.json")) == sorted(
        [ids["first"], ids["second"]]
    )


def test_prune_removes_a_storage_link_but_not_what_it_points_to(root: Path, tmp_path: Path) -> None:
    """A failed run's storage folder linked outside the root: the link goes, the files stay."""
    add_record(root, "2026-01-01_00-00-00_000000", "failed")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    link = root / "storage" / "2026-01-01_00-00-01_000000"
    link.symlink_to(outside, target_is_directory=True)
    add_record(root, "2026-01-01_00-00-01_000000", "failed", storage=False)
    done = cli("prune", root, "--status", "failed", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Deleted 2 runs." in done.stdout
    assert not link.is_symlink()
    assert not (root / "storage" / "2026-01-01_00-00-00_000000").exists()
    assert (outside / "keep.txt").read_text() == "keep"


# ---------------------------------------------------------------- a storage folder moved away


def test_show_lists_the_files_of_a_storage_folder_moved_and_linked_back(
    root: Path, tmp_path: Path
) -> None:
    """A run folder moved elsewhere and symlinked back still shows its artefacts."""
    ids = make_runs(root)
    moved = tmp_path / "big-disk" / ids["first"]
    moved.parent.mkdir()
    shutil.move(root / "storage" / ids["first"], moved)
    (root / "storage" / ids["first"]).symlink_to(moved, target_is_directory=True)
    done = cli("show", root, ids["first"])
    assert done.returncode == 0, done.stderr
    assert f"- storage/{ids['first']}/model.txt" in done.stdout


# ---------------------------------------------------------------- folders of experiments


def make_experiments(folder: Path) -> dict[str, str]:
    ids = make_runs(folder / "train")
    other = experiment(root=folder / "other", backend="json")(train)
    other(0.5)
    return {**ids, "other": other.observations()[0].id}


def test_list_of_a_folder_of_experiments(tmp_path: Path) -> None:
    """Given a folder of experiments, ``list`` shows each with its run counts and latest run."""
    ids = make_experiments(tmp_path / "experiments")
    done = cli("list", tmp_path / "experiments")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["experiment", "runs", "statuses", "latest"]
    assert lines[1].split() == ["other", "1", "1", "completed", ids["other"]]
    assert lines[2].split() == ["train", "3", "2", "completed,", "1", "failed", ids["failed"]]
    assert lines[-1] == "2 experiments, 4 runs"


def test_list_without_root_uses_de_root_then_experiments(tmp_path: Path) -> None:
    """With no ROOT, ``list`` reads ``$DE_ROOT``, else ``./experiments``."""
    make_experiments(tmp_path / "experiments")
    here = cli("list", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert here.stdout.splitlines()[-1] == "2 experiments, 4 runs"
    make_runs(tmp_path / "elsewhere" / "train")
    there = cli("list", cwd=tmp_path, de_root=tmp_path / "elsewhere")
    assert there.stdout.splitlines()[-1] == "1 experiment, 3 runs"
    nothing = cli("list", cwd=tmp_path / "elsewhere")
    assert nothing.returncode == 2
    assert "No experiment folder at" in nothing.stderr
    assert "$DE_ROOT" in nothing.stderr


def test_show_without_root_finds_the_run_among_the_experiments(tmp_path: Path) -> None:
    """``show ID`` looks for the run in every experiment of ``$DE_ROOT`` or ``./experiments``."""
    ids = make_experiments(tmp_path / "experiments")
    done = cli("show", ids["other"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"id: {ids['other']}" in done.stdout
    missing = cli("show", "1999-01-01", cwd=tmp_path)
    assert missing.returncode == 1
    assert "No run '1999-01-01'" in missing.stderr


def test_commands_for_one_experiment_refuse_a_folder_of_experiments(tmp_path: Path) -> None:
    """``prune`` and ``export`` of a folder of experiments ask for one of them."""
    ids = make_experiments(tmp_path / "experiments")
    for command in (["prune", "--status", "failed", "--yes"], ["export", "--format", "csv"]):
        done = cli(command[0], tmp_path / "experiments", *command[1:])
        assert done.returncode == 2
        assert "is a folder of experiments (other, train): pass one of them" in done.stderr
    assert (tmp_path / "experiments" / "train" / f"{ids['failed']}.pkl").exists()


# ---------------------------------------------------------------- pickle needs trust

EVIL = """
import os, pickle, sys
class Evil:
    def __reduce__(self):
        return (os.mkdir, (sys.argv[2],))
open(sys.argv[1], "wb").write(pickle.dumps(Evil()))
"""


def test_pickle_records_of_a_foreign_folder_need_trust(tmp_path: Path) -> None:
    """A pickle folder without ``.de/`` is not unpickled (no code runs) unless ``--trust``."""
    root = tmp_path / "downloaded"
    root.mkdir()
    ran = tmp_path / "code-ran"
    record = root / "2026-01-01_00-00-00_000000.pkl"
    subprocess.run([sys.executable, "-c", EVIL, record, ran], check=True, timeout=60)
    for command in (["list"], ["show", "2026"], ["export", "--format", "json"]):
        done = cli(command[0], root, *command[1:])
        assert done.returncode == 2, command
        assert "loading a pickle runs any code" in done.stderr
        assert "--trust" in done.stderr
    prune = cli("prune", root, "--status", "failed", "--yes")
    assert prune.returncode == 2
    assert not ran.exists()
    assert record.exists()
    trusted = cli("list", root, "--trust")
    assert ran.exists()  # what --trust means: the pickle ran
    assert "Skipping unreadable record" in trusted.stderr


def test_folders_written_by_the_library_and_json_need_no_trust(root: Path, tmp_path: Path) -> None:
    """Roots holding ``.de/`` (written by 3.x) and JSON or YAML roots open without a flag."""
    make_runs(root)
    assert (root / ".de").is_dir()
    assert cli("list", root).returncode == 0
    foreign = tmp_path / "foreign"
    instantiate_backend("json", foreign).record(
        Observation("2026-01-01_00-00-00_000000", {}, 1, {})
    )
    assert not (foreign / ".de").exists()
    done = cli("list", foreign)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "1 run (1 completed)"


def test_help_says_pickle_runs_code() -> None:
    """``--help`` explains the risk and ``--trust``."""
    done = cli("--help")
    assert "pickle" in done.stdout
    assert "runs any code" in " ".join(done.stdout.split())
    listing = " ".join(cli("list", "--help").stdout.split())
    assert "--trust" in listing
    assert "$DE_ROOT" in listing
