"""The command line's results commands, run for real: list queries and formats, show
--call, diff, tag, note, rm and trash."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from digital_experiments import experiment, log

from .test_cli import cli


def fit(lr: float, depth: int = 2) -> dict[str, float]:
    log(loss=lr * depth)
    return {"loss": lr * depth}


def make(root: Path) -> list[str]:
    f = experiment(root=root, backend="json")(fit)
    for lr, depth in [(0.1, 2), (0.3, 1), (0.01, 4)]:
        f(lr, depth)
    return [run.id for run in f.observations()]


def test_list_where_sort_top_columns_and_formats(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    ids = make(root)
    done = cli("list", root, "--where", "config.lr < 0.2", "--sort=-result.loss", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [row["id"] for row in rows] == [ids[0], ids[2]]
    assert list(rows[0]) == [
        "id",
        "status",
        "duration",
        "config.lr",
        "config.depth",
        "result.loss",
        "metrics.loss",
    ]
    assert rows[0]["metrics.loss"] == "0.2"
    top = cli(
        "list",
        root,
        "--sort",
        "result.loss",
        "--top",
        "1",
        "--columns",
        "id,config",
        "--format",
        "json",
    )
    assert json.loads(top.stdout) == [{"id": ids[2], "config.lr": 0.01, "config.depth": 4}]
    md = cli("list", root, "--columns", "id,result.loss", "--format", "md")
    assert md.stdout.splitlines()[:2] == ["| id | result.loss |", "|---|---|"]
    assert len(md.stdout.splitlines()) == 5
    table = cli("list", root)
    assert "metrics" in table.stdout.splitlines()[0]
    assert "loss=0.3" in table.stdout
    assert "\x1b[" not in table.stdout  # not a terminal: no colour


def test_list_errors_point_at_the_query(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    make(root)
    done = cli("list", root, "--where", "config.lr <")
    assert done.returncode == 2
    assert "Expected a value after '<'" in done.stderr
    assert "  config.lr <\n" in done.stderr
    unknown = cli("list", root, "--where", "config.rate > 1")
    assert unknown.returncode == 2
    assert "Unknown field 'config.rate'" in unknown.stderr
    bad_column = cli("list", root, "--columns", "nope")
    assert bad_column.returncode == 2
    assert "Unknown column 'nope'" in bad_column.stderr


def test_list_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`list | head -1`: the reader goes away early; no traceback, no error output."""
    root = tmp_path / "many"
    f = experiment(root=root, backend="json")(fit)
    for i in range(300):
        f(i / 1000)
    env = {**os.environ, "COLUMNS": "200"}
    lister = subprocess.Popen(
        [sys.executable, "-m", "digital_experiments", "list", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert lister.stdout is not None
    assert lister.stderr is not None
    first = lister.stdout.readline()
    lister.stdout.close()  # as head does after its lines
    error = lister.stderr.read()
    lister.stderr.close()
    lister.wait(60)
    assert first.startswith(b"id")
    assert error == b""


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path: Path) -> None:
    import pty

    root = tmp_path / "fit"
    make(root)

    def on_a_terminal(extra: dict[str, str]) -> bytes:
        leader, follower = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | extra
        done = subprocess.run(
            [sys.executable, "-m", "digital_experiments", "list", str(root)],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        assert done.returncode == 0
        return output

    assert b"\x1b[32mcompleted" in on_a_terminal({})
    assert b"\x1b[" not in on_a_terminal({"NO_COLOR": "1"})


def test_show_call_diff_tag_note(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    ids = make(root)
    call = cli("show", root, ids[0][:25], "--call")
    assert call.stdout == "fit(lr=0.1, depth=2)\n"
    diff = cli("diff", root, ids[0], ids[1])
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert lines[0].split() == ["field", ids[0], ids[1]]
    assert any(line.split()[:3] == ["config.lr", "0.1", "0.3"] for line in lines)
    assert not any(
        line.startswith("config.depth") is False and line.split()[0] == "code" for line in lines[1:]
    )
    tagged = cli("tag", root, ids[1], "best=true", "owner=ana", "score=0.5")
    assert tagged.returncode == 0, tagged.stderr
    assert "best=True" in tagged.stdout
    noted = cli("note", root, ids[1], "looks good")
    assert "1 note" in noted.stdout
    shown = json.loads(cli("show", root, ids[1], "--json").stdout)
    assert shown["metadata"]["tags"] == {"best": True, "owner": "ana", "score": 0.5}
    assert shown["metadata"]["notes"] == ["looks good"]
    found = cli("list", root, "--where", "tags.best == true", "--format", "json", "--columns", "id")
    assert json.loads(found.stdout) == [{"id": ids[1]}]
    bad = cli("tag", root, ids[1], "oops")
    assert bad.returncode == 2
    assert "NAME=VALUE" in bad.stderr


def test_rm_and_trash(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    ids = make(root)
    refused = cli("rm", root)
    assert refused.returncode == 2
    asked = cli("rm", root, ids[0], terminal="n\n")
    assert "Nothing deleted" in asked.stdout
    removed = cli("rm", root, "--where", "config.lr > 0.05", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "Moved 2 runs to the trash" in removed.stdout
    listed = cli("trash", root, "list")
    assert listed.stdout.splitlines()[:2] == [ids[0], ids[1]]
    remaining = json.loads(cli("list", root, "--format", "json", "--columns", "id").stdout)
    assert remaining == [{"id": ids[2]}]
    restored = cli("trash", root, "restore", ids[1])
    assert restored.returncode == 0, restored.stderr
    assert json.loads(cli("list", root, "--format", "json", "--columns", "id").stdout) == [
        {"id": ids[1]},
        {"id": ids[2]},
    ]
    purged = cli("trash", root, "purge", "--yes")
    assert "Purged 1 run" in purged.stdout
    assert cli("trash", root, "list").stdout.strip() == "0 runs in the trash"
    missing = cli("trash", root, "restore", ids[0])
    assert missing.returncode == 1
    assert "No run" in missing.stderr


def test_export_shows_tags_notes_and_last_metrics(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    ids = make(root)
    cli("tag", root, ids[0], "best=true")
    cli("note", root, ids[0], "first")
    rows = list(csv.DictReader(io.StringIO(cli("export", root, "--format", "csv").stdout)))
    assert rows[0]["tags.best"] == "True"
    assert rows[0]["notes"] == "first"
    assert rows[1]["tags.best"] == ""
    assert rows[0]["metrics.loss"] == "0.2"
    records = json.loads(cli("export", root, "--format", "json").stdout)
    assert records[0]["tags"] == {"best": True}
    assert records[0]["notes"] == ["first"]
    assert records[0]["metrics"] == {"loss": 0.2}
    assert "tags" not in records[1]
