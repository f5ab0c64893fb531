"""A new user's first hour (issue 20): what got in the way, each fixed for good.

Section 1: regressions and wrong answers (lambdas, ``rm`` without a terminal,
missing fields, ``prune`` leaving files behind, the errors family and the docs the
help points to); section 2: the commands the demo and the README print work as
shown; section 4: ``list``, ``show``, ``to_dataframe()`` and id prefixes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digital_experiments import (
    DigitalExperimentsError,
    Observation,
    current_dir,
    experiment,
    log,
    query,
)
from digital_experiments._read import trash as trashcan
from digital_experiments.backends import instantiate_backend
from digital_experiments.errors import RunningError

from .test_cli import add_record, cli

REPO = Path(__file__).parent.parent
ID = "2026-01-01_12-00-00_000000"


def fit(lr: float, depth: int = 2) -> dict[str, float]:
    if lr > 1:
        raise ValueError(f"lr={lr} diverges")
    for step in range(3):
        log(loss=lr * depth / (step + 1))
    (current_dir() / "model.txt").write_text("weights")
    return {"loss": lr * depth}


def make(root: Path, configs: tuple[tuple[float, int], ...] = ((0.1, 2), (0.3, 1))) -> list[str]:
    """Runs of ``fit`` (then a failed one, lr=5): their ids, oldest first."""
    f = experiment(root=root)(fit)
    for lr, depth in configs:
        f(lr, depth)
    with pytest.raises(ValueError, match="diverges"):
        f(5.0)
    return [run.id for run in f.observations(status="all")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "experiments" / "fit"


# ---------------------------------------------------------------- 1.1 lambdas


def test_a_lambda_is_recorded_under_lambda() -> None:
    """``experiment(lambda x: x + 1)`` records in ``experiments/<lambda>``, as 2.0.4 did."""
    plus_one = experiment(lambda x: x + 1)
    assert plus_one(1) == 2
    (run,) = plus_one.observations()
    assert (run.config, run.result) == ({"x": 1}, 2)
    assert plus_one.backend.root == Path.cwd() / "experiments" / "<lambda>"
    assert (plus_one.backend.root / f"{run.id}.pkl").is_file()


def test_two_lambdas_share_a_folder_and_each_sees_its_own_runs() -> None:
    """Two lambdas write to one folder; each one's observations() are its own runs (by code)."""
    double = experiment(lambda x: x * 2)
    square = experiment(lambda x: x**2)
    double(3)
    square(3)
    assert double.backend.root == square.backend.root
    assert [o.result for o in double.observations()] == [6]
    assert [o.result for o in square.observations()] == [9]
    assert len(double.observations(current_code_only=False)) == 2


def test_a_partial_is_still_refused() -> None:
    """A ``functools.partial`` has no name to record under (2.0.4 failed on it too)."""
    with pytest.raises(TypeError, match=r"functools\.partial"):
        experiment(functools.partial(max, 1))


# ---------------------------------------------------------------- 1.2 rm without a terminal


def no_terminal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command line with standard input at ``/dev/null``, as in a script or CI."""
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    with open(os.devnull) as nothing:
        return subprocess.run(
            [sys.executable, "-m", "digital_experiments", *map(str, args)],
            stdin=nothing,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )


def everything_of(root: Path) -> list[str]:
    """Every file under ``root``, relative to it (locks and id reservations left out)."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and ".de/ids" not in str(path) and ".de/locks" not in str(path)
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["rm", "{root}", "{first}"], id="rm-id"),
        pytest.param(["rm", "{root}", "--where", "config.lr < 1"], id="rm-where"),
        pytest.param(["prune", "{root}", "--status", "failed"], id="prune"),
        pytest.param(["trash", "{root}", "purge"], id="trash-purge"),
    ],
)
def test_deleting_without_a_terminal_refuses_with_exit_2(root: Path, command: list[str]) -> None:
    """With ``< /dev/null`` and no ``--yes``, a deleting command deletes nothing and exits 2."""
    ids = make(root)
    f = experiment(root=root)(fit)
    f.delete(ids[1])  # something in the trash, for purge
    before = everything_of(root)
    done = no_terminal(*(part.format(root=root, first=ids[0]) for part in command))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not a terminal" in done.stderr
    assert "--yes" in done.stderr
    assert "[y/N]" not in done.stdout
    assert everything_of(root) == before


def test_rm_yes_without_a_terminal_moves_the_run_to_the_trash(root: Path) -> None:
    """``rm --yes`` needs no terminal: the run goes to the trash and the exit code is 0."""
    ids = make(root)
    done = no_terminal("rm", root, ids[0], "--yes")
    assert done.returncode == 0, done.stderr
    assert "Moved 1 run to the trash" in done.stdout
    assert not (root / f"{ids[0]}.pkl").exists()
    assert trashcan.trashed(instantiate_backend("pickle", root)) == [ids[0]]


def test_rm_on_a_terminal_lists_the_runs_then_asks(root: Path) -> None:
    """On a terminal, ``rm`` shows the runs it would move, as ``prune`` does, before asking."""
    ids = make(root)
    done = cli("rm", root, ids[0], ids[2], terminal="n\n")
    assert done.returncode == 0, done.stderr
    question = done.stdout.index("Move 2 runs to the trash? [y/N]")
    lines = done.stdout[:question].splitlines()
    assert lines[0].split()[:3] == ["id", "status", "duration"]
    assert lines[1].split()[:2] == [ids[0], "completed"]
    assert "lr=0.1, depth=2" in lines[1]
    assert lines[2].split()[:2] == [ids[2], "failed"]
    assert "ValueError: lr=5.0 diverges" in lines[2]
    assert ids[1] not in done.stdout
    assert "Nothing deleted." in done.stdout
    assert all((root / f"{id}.pkl").exists() for id in ids)


def test_rm_on_a_terminal_deletes_on_yes(root: Path) -> None:
    """Answering ``y`` on the terminal moves the listed runs to the trash."""
    ids = make(root)
    done = cli("rm", root, unique_prefix(ids[0], ids), terminal="y\n")
    assert done.returncode == 0, done.stderr
    assert "Moved 1 run to the trash" in done.stdout
    assert not (root / f"{ids[0]}.pkl").exists()
    assert (root / f"{ids[1]}.pkl").exists()


# ---------------------------------------------------------------- 1.3 missing fields


def test_sort_on_a_field_the_selected_runs_lack_is_no_error(root: Path) -> None:
    """``sort="result.loss"`` over failed runs only (no result at all) keeps them, in order."""
    make(root)
    f = experiment(root=root)(fit)
    with pytest.raises(ValueError, match="diverges"):
        f(7.0)
    failed = f.observations(status="failed")
    assert [o.config["lr"] for o in f.observations(status="failed", sort="result.loss")] == [
        o.config["lr"] for o in failed
    ]
    assert [o.config["lr"] for o in f.observations(status="failed", sort="-result.loss")] == [
        o.config["lr"] for o in failed
    ]


@pytest.mark.parametrize("sort", ["result.loss", "-result.loss", "metrics.loss", "-tags.rank"])
def test_runs_without_the_sort_field_come_last_either_way(root: Path, sort: str) -> None:
    """Runs that lack the field sort after every run that has it, ascending or descending."""
    make(root, ((0.1, 2), (0.3, 1), (0.05, 1)))
    f = experiment(root=root)(fit)
    runs = f.observations(status="all")
    f.tag(runs[0].id, rank=2)
    f.tag(runs[1].id, rank=1)
    f.tag(runs[2].id, rank=3)
    order = [o.config["lr"] for o in f.observations(status="all", sort=sort)]
    assert order[-1] == 5.0  # the failed run: no result, no metrics, no tag
    assert len(order) == 4
    if sort == "result.loss":
        assert order == [0.05, 0.1, 0.3, 5.0]
    if sort == "-result.loss":
        assert order == [0.3, 0.1, 0.05, 5.0]


def test_a_tag_no_run_has_yet_matches_nothing(root: Path) -> None:
    """``where="tags.best == true"`` before any tag is set returns no runs, not an error."""
    make(root)
    f = experiment(root=root)(fit)
    assert f.observations(where="tags.best == true") == []
    assert query.load(root, status="all", where="tags.best == true") == []
    assert len(f.observations(status="all", where="not tags.best == true")) == 3
    f.tag(f.observations()[0].id, best=True)
    assert [o.config["lr"] for o in f.observations(where="tags.best == true")] == [0.1]


def test_a_metric_some_runs_never_logged_matches_nothing_for_them(root: Path) -> None:
    """``metrics.loss < 1`` skips the runs that never logged ``loss``, without an error."""
    make(root)
    f = experiment(root=root)(fit)
    kept = f.observations(status="all", where="metrics.loss < 1")
    assert [o.config["lr"] for o in kept] == [0.1, 0.3]
    assert f.observations(status="all", where="metrics.accuracy > 0") == []


def test_queries_before_any_run_are_answered_not_refused(root: Path) -> None:
    """With no run yet, ``tags.*``, ``config.*`` and ``result.*`` fields match nothing."""
    f = experiment(root=root)(fit)
    for where in ("tags.best == true", "config.lr < 1", "result.loss > 0"):
        assert f.observations(where=where) == []
    assert f.observations(sort="-result.loss") == []


@pytest.mark.parametrize("how", ["where", "sort"])
def test_a_bare_name_suggests_the_config_field(root: Path, how: str) -> None:
    """``lr`` is unknown, and the error says ``config.lr``, in where= and sort= alike."""
    make(root)
    f = experiment(root=root)(fit)
    arguments = {"where": "lr < 0.2"} if how == "where" else {"sort": "lr"}
    with pytest.raises(ValueError, match=r"Did you mean 'config\.lr'\?"):
        f.observations(**arguments)


def test_a_typo_below_config_is_still_an_error(root: Path) -> None:
    """``config.lrr`` when the runs have ``config.lr`` is a typo, pointed out, not answered."""
    make(root)
    f = experiment(root=root)(fit)
    with pytest.raises(ValueError, match=r"Unknown field 'config\.lrr'(.|\n)*'config\.lr'"):
        f.observations(where="config.lrr < 1")


def test_the_cli_answers_queries_on_missing_fields_too(root: Path) -> None:
    """``list --where tags.best == true`` with no tags lists nothing and exits 0; ``lr`` is
    a usage error that names ``config.lr``."""
    make(root)
    done = cli("list", root, "--where", "tags.best == true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 runs"
    done = cli("list", root, "--status", "failed", "--sort=-result.loss")
    assert done.returncode == 0, done.stderr
    bare = cli("list", root, "--where", "lr < 1")
    assert bare.returncode == 2
    assert "Did you mean 'config.lr'?" in bare.stderr


# ---------------------------------------------------------------- 1.5 prune


def unstable(lr: float) -> float:
    """Logs, writes an artefact, then fails: a failed run with something of everything."""
    log(loss=lr)
    (current_dir() / "partial.txt").write_text("half done")
    if lr > 1:
        raise ValueError(f"lr={lr} diverges")
    return lr


def test_prune_deletes_metrics_and_annotations_too(root: Path) -> None:
    """``prune`` leaves nothing of a pruned run: record, artefacts, ``.de/metrics/<id>.jsonl``,
    ``.de/annotations/<id>.json``, and nothing in the trash; other runs keep theirs."""
    f = experiment(root=root)(unstable)
    f(0.5)
    with pytest.raises(ValueError, match="diverges"):
        f(5.0)
    kept, failed = (o.id for o in f.observations(status="all"))
    f.tag(failed, cause="lr")
    f.note(failed, "too big a step")
    f.tag(kept, best=True)
    for path in (
        root / ".de" / "metrics" / f"{failed}.jsonl",
        root / ".de" / "annotations" / f"{failed}.json",
        root / "storage" / failed / "partial.txt",
    ):
        assert path.is_file()
    done = cli("prune", root, "--status", "failed", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Deleted 1 run." in done.stdout
    assert [name for name in everything_of(root) if failed in name] == []
    assert not (root / "storage" / failed).exists()
    assert trashcan.trashed(instantiate_backend("pickle", root)) == []
    assert (root / ".de" / "metrics" / f"{kept}.jsonl").is_file()
    assert (root / "storage" / kept / "partial.txt").is_file()
    assert f.observations()[0].metadata["tags"] == {"best": True}


def test_prune_purges_only_what_it_deleted(root: Path) -> None:
    """Runs that ``rm`` put in the trash stay there, restorable, when ``prune`` purges its own."""
    add_record(root, ID, "failed")
    add_record(root, "2026-01-01_12-00-01_000000", "failed")
    backend = instantiate_backend("pickle", root)
    assert trashcan.delete(backend, ID)
    done = cli("prune", root, "--status", "failed", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Deleted 1 run." in done.stdout
    assert trashcan.trashed(backend) == [ID]
    assert not (root / "2026-01-01_12-00-01_000000.pkl").exists()


# ---------------------------------------------------------------- 1.6 errors and docs


def test_running_error_is_a_digital_experiments_error_and_a_value_error(root: Path) -> None:
    """Deleting a live run raises ``RunningError``: in the library's family, still a ValueError."""
    assert issubclass(RunningError, DigitalExperimentsError)
    assert issubclass(RunningError, ValueError)
    backend = instantiate_backend("pickle", root)
    me = {"pid": os.getpid()}
    backend.record(Observation(ID, {"lr": 0.5}, None, {"status": "running", "process": me}))
    f = experiment(root=root)(fit)
    with pytest.raises(DigitalExperimentsError, match="is running"):
        f.delete(ID)
    with pytest.raises(ValueError, match="is running"):
        f.delete(ID)
    assert (root / f"{ID}.pkl").exists()


def test_the_docs_the_help_points_to_exist_and_are_built() -> None:
    """``docs/queries.md``, named by the CLI help and ``observations()``, is in the docs."""
    done = cli("list", "--help")
    assert "docs/queries.md" in " ".join(done.stdout.split())
    assert "docs/queries.md" in (experiment(fit).observations.__doc__ or "")
    page = REPO / "docs" / "queries.md"
    assert page.is_file()
    assert "Missing fields" in page.read_text()
    toctree = (REPO / "docs" / "index.md").read_text()
    assert re.search(r"^queries$", toctree, re.MULTILINE)


# ---------------------------------------------------------------- 2. from the demo to the browser


def fresh_shell() -> dict[str, str]:
    """The environment of a new shell: no virtual environment active, no DE_ROOT."""
    env = {k: v for k, v in os.environ.items() if k not in ("DE_ROOT", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        part
        for part in env.get("PATH", "").split(os.pathsep)
        if part and Path(part).resolve() != Path(sys.executable).parent.resolve()
    )
    return env


def test_the_results_example_prints_commands_that_work_in_a_fresh_shell(tmp_path: Path) -> None:
    """Each command ``examples/metrics_and_queries.py`` prints runs as shown in a new shell,
    from any folder, and the last opens the web view of the demo's runs."""
    shutil.copy(REPO / "examples" / "metrics_and_queries.py", tmp_path)
    env = fresh_shell()
    done = subprocess.run(
        [sys.executable, "metrics_and_queries.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("the same from the shell:\n")[1].splitlines()
    assert len(commands) >= 4
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    *others, ui = (shlex.split(line) for line in commands)
    for command in others:
        ran = subprocess.run(
            command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, (command, ran.stderr)
    assert ui[1] == "ui"
    assert ui[0] == others[0][0]
    assert Path(ui[2]) == tmp_path / "experiments"
    assert Path(ui[0]).is_absolute()
    assert os.access(ui[0], os.X_OK)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_ends_with_commands_that_work_as_shown(tmp_path: Path) -> None:
    """``make demo`` ends by printing ``list`` and ``ui`` commands with full paths; the
    ``list`` one runs in a fresh shell from any folder."""
    demo_root = tmp_path / "demo"
    experiment(root=demo_root / "fit")(fit)(0.1)
    made = subprocess.run(
        # the examples left out (EXAMPLES=), and the install taken as done (-o)
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed-demo",
            "demo",
            "EXAMPLES=",
            f"DEMO_ROOT={demo_root}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    lines = [line.split(":", 1)[-1].strip() for line in made.stdout.splitlines()]
    listing, ui = shlex.split(lines[-3]), shlex.split(lines[-1])
    assert listing[1:] == ["list", str(demo_root)]
    assert ui[1:] == ["ui", str(demo_root)]
    assert listing[0] == ui[0] == str(REPO / ".venv" / "bin" / "digital-experiments")
    ran = subprocess.run(
        listing, cwd=tmp_path, env=fresh_shell(), capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"^fit\s+1\s+1 completed", ran.stdout, re.MULTILINE)


def test_make_demo_installs_the_ui_extra() -> None:
    """The demo's install includes the ``ui`` extra, which its last command needs."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(VENV\)/\.installed-demo:.*\n\t(.*)", makefile, re.MULTILINE)
    assert recipe is not None
    extras = re.search(r'-e "\.\[([\w,]+)\]"', recipe.group(1))
    assert extras is not None
    assert "ui" in extras.group(1).split(",")


def test_the_readme_shows_the_demo_path_and_every_extra() -> None:
    """The README's quick start shows the commands the demo prints, and lists every extra."""
    tomllib = pytest.importorskip("tomllib")
    readme = (REPO / "README.md").read_text()
    assert ".venv/bin/digital-experiments ui examples/experiments" in readme
    assert ".venv/bin/digital-experiments list examples/experiments" in readme
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    cells = re.findall(r"^\| (`[\w-]+`(?:, `[\w-]+`)*) \|", readme, re.MULTILINE)
    named = {name for cell in cells for name in re.findall(r"`([\w-]+)`", cell)}
    assert "ui" in named
    assert named >= set(extras)


# ---------------------------------------------------------------- 4. the CLI and the DataFrame


def records(root: Path, *runs: tuple[str, dict[str, Any], Any, float]) -> None:
    """Completed records ``(id, config, result, duration)`` as the library writes them."""
    backend = instantiate_backend("pickle", root)
    for id, config, result, seconds in runs:
        metadata = {"status": "completed", "timing": {"duration": seconds}}
        backend.record(Observation(id, config, result, metadata))
    (root / ".de" / "ids").mkdir(parents=True, exist_ok=True)


def test_list_fits_the_terminal_and_keeps_the_id_whole(root: Path) -> None:
    """At 80 columns every line fits, the id, status and duration whole, long configs cut."""
    long = {f"option_{i}": "a fairly long value" for i in range(8)}
    records(root, (ID, long, {"loss": 0.25, "note": "x" * 200}, 1.5))
    ids = make(root)
    done = cli("list", root, columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert [line.split()[0] for line in lines[1:-1]] == [ID, *ids]
    assert lines[1].split()[1:4] == ["completed", "1.5", "s"]
    assert "…" in lines[1]
    assert "option_0" in lines[1]
    wide = cli("list", root, columns=400)
    assert all("…" not in line for line in wide.stdout.splitlines()[2:])


def test_list_durations_are_for_people(root: Path) -> None:
    """Durations show in the unit that fits: ``52 µs``, ``3.4 ms``, ``1.2 s``, ``4 min 05 s``."""
    runs = [
        ("2026-01-01_12-00-00_000000", 52.3e-6, "52 µs"),
        ("2026-01-01_12-00-01_000000", 3.42e-3, "3.4 ms"),
        ("2026-01-01_12-00-02_000000", 1.23, "1.2 s"),
        ("2026-01-01_12-00-03_000000", 245.0, "4 min 05 s"),
        ("2026-01-01_12-00-04_000000", 7512.0, "2 h 05 min"),
    ]
    records(root, *((id, {"lr": 0.1}, 1, seconds) for id, seconds, _ in runs))
    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    for (id, _, shown), line in zip(runs, done.stdout.splitlines()[1:], strict=False):
        assert line.startswith(f"{id}  completed  {shown} ")
    columns = cli("list", root, "--columns", "config.lr,duration", "--format", "csv")
    assert [line.split(",")[-1] for line in columns.stdout.splitlines()[1:]] == [
        shown for _, _, shown in runs
    ]


def test_list_shows_numbers_with_sensible_precision(root: Path) -> None:
    """Floats as written when short, else to four significant digits; booleans as queries do."""
    records(
        root,
        (ID, {"lr": 0.1, "scale": 123.456789, "fast": True}, {"loss": 0.1 + 0.2}, 1.0),
        ("2026-01-01_12-00-01_000000", {"lr": 3.0, "scale": 1e-9, "fast": False}, 2 / 3, 1.0),
    )
    done = cli("list", root)
    first, second = done.stdout.splitlines()[1:3]
    assert "lr=0.1, scale=123.5, fast=true" in first
    assert "loss=0.3" in first
    assert "0.30000000000000004" not in first
    assert "lr=3.0, scale=1e-09, fast=false" in second
    assert second.rstrip().endswith("0.6667")
    flat = cli("list", root, "--columns", "config,result", "--format", "md").stdout.splitlines()
    assert flat[0] == "| id | config.lr | config.scale | config.fast | result.loss | result |"
    assert flat[2] == f"| {ID} | 0.1 | 123.5 | true | 0.3 | - |"
    assert flat[3].endswith("| 3.0 | 1e-09 | false | - | 0.6667 |")


def test_list_columns_always_keeps_the_id(root: Path) -> None:
    """``--columns`` without ``id`` still starts each line with the run's id; with it, as given."""
    ids = make(root)
    done = cli("list", root, "--columns", "config.lr,result.loss")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "config.lr", "result.loss"]
    assert [line.split()[0] for line in lines[1:]] == ids
    placed = cli("list", root, "--columns", "config.lr,id", "--format", "csv")
    assert placed.stdout.splitlines()[0] == "config.lr,id"


def test_list_shows_tags(root: Path) -> None:
    """A tagged run shows its tags in a ``tags`` column of ``list``."""
    ids = make(root)
    cli("tag", root, ids[1], "best=true", "owner=ana")
    lines = cli("list", root).stdout.splitlines()
    assert lines[0].split()[-1] == "tags"
    assert lines[2].rstrip().endswith("best=true, owner=ana")
    assert not lines[1].rstrip().endswith("owner=ana")


def test_show_prints_the_last_metrics(root: Path) -> None:
    """``show`` prints the last value of each metric the run logged, before its metadata."""
    ids = make(root)
    done = cli("show", root, ids[0])
    assert done.returncode == 0, done.stderr
    assert "\nmetrics:\n  loss: 0.0666" in done.stdout
    assert done.stdout.index("metrics:") < done.stdout.index("metadata:")
    shown = cli("show", root, ids[0], "--json")
    assert json.loads(shown.stdout)["metrics"] == {"loss": pytest.approx(0.2 / 3)}


def test_to_dataframe_shows_status_tags_and_notes(root: Path) -> None:
    """``to_dataframe(status="all")`` has a ``status`` column (failed rows show), and
    ``tags.*`` and ``notes`` columns named as queries name them."""
    ids = make(root)
    f = experiment(root=root)(fit)
    f.tag(ids[0], best=True)
    f.note(ids[2], "diverged")
    f.note(ids[2], "lr too big")
    frame = f.to_dataframe(status="all")
    assert list(frame.columns[:2]) == ["id", "status"]
    assert list(frame["status"]) == ["completed", "completed", "failed"]
    assert list(frame["tags.best"].fillna(False)) == [True, False, False]
    assert frame["notes"][2] == "diverged\nlr too big"
    assert not any(c.startswith("metadata.") for c in frame.columns)
    default = f.to_dataframe()
    assert "status" not in default.columns  # 2.0.4's table, for completed runs
    assert list(default.columns[:1]) == ["id"]
    assert "tags.best" in default.columns
    with_metadata = f.to_dataframe(status="all", include_metadata=True)
    assert "tags.best" in with_metadata.columns
    assert not any(c.startswith(("metadata.tags", "metadata.notes")) for c in with_metadata)
    assert list(f.to_dataframe(columns=["status", "config.lr"]).columns) == [
        "status",
        "config.lr",
    ]


def unique_prefix(id: str, ids: list[str]) -> str:
    """The shortest beginning of ``id`` that no other of ``ids`` shares, less than the id."""
    others = [other for other in ids if other != id]
    for end in range(1, len(id)):
        if not any(other.startswith(id[:end]) for other in others):
            return id[:end]
    raise AssertionError(f"{id!r} has no unique prefix")


def test_python_methods_take_id_prefixes_as_the_cli_does(root: Path) -> None:
    """``tag``, ``note``, ``compare``, ``artefacts``, ``rerun``, ``delete`` and ``restore``
    accept the unambiguous beginning of an id."""
    ids = make(root)
    f = experiment(root=root)(fit)
    prefix = {id: unique_prefix(id, ids) for id in ids}
    assert f.tag(prefix[ids[0]], best=True) == {"best": True}
    assert f.note(prefix[ids[0]], "good") == ["good"]
    assert [p.name for p in f.artefacts(prefix[ids[0]])] == ["model.txt"]
    assert list(f.compare(prefix[ids[0]], prefix[ids[1]]).columns) == ids[:2]
    again = f.rerun(prefix[ids[1]])
    assert again.metadata["rerun_of"] == ids[1]
    assert f.delete(prefix[ids[0]]) == [ids[0]]
    assert f.trash() == [ids[0]]
    assert f.restore(prefix[ids[0]]).id == ids[0]


def test_an_ambiguous_prefix_is_refused_naming_the_runs(root: Path) -> None:
    """A prefix of several ids raises ``ValueError`` listing them, and deletes nothing."""
    ids = make(root)
    f = experiment(root=root)(fit)
    common = ids[0]
    while not all(id.startswith(common) for id in ids):
        common = common[:-1]  # the beginning all three ids share
    with pytest.raises(ValueError, match=r"matches 3 runs") as raised:
        f.tag(common, best=True)
    assert isinstance(raised.value, DigitalExperimentsError)
    with pytest.raises(ValueError, match=r"give more of the id"):
        f.delete(common)
    assert f.trash() == []
    with pytest.raises(ValueError, match=r"No run '1999'"):
        f.tag("1999", best=True)
    assert f.delete("1999") == []
