"""The command line: ``digital-experiments`` (or ``python -m digital_experiments``).

Every command takes an experiment folder (``experiments/<function name>``) and
reads it through :mod:`digital_experiments.query`, the same code path as
:meth:`Experiment.observations <digital_experiments.Experiment.observations>`.
``list`` and ``show`` also take a folder of experiments (default: ``$DE_ROOT``,
else ``./experiments``).

Pickle records run code when they are loaded: the command line opens them only
in folders written by digital-experiments 3.x (they hold ``.de/``) or with
``--trust``.

Exit codes: 0 success, 1 failure (unknown id, export failed), 2 usage error
(bad arguments, no such folder, a command that would delete asked without a
terminal and without ``--yes``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from ._read import query, roots
from ._read import trash as trashcan
from ._read.compare import call_text, compare
from ._read.tables import (
    FORMATS,
    duration,
    json_text,
    pairs,
    printable,
    render,
    short,
    text,
    wants_colour,
)
from ._runs import annotations as marks
from ._runs.backends import FileBackend, root_store, yaml_text
from ._runs.observation import (
    ABANDONED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    STATUSES,
    Observation,
    notes_of,
    status_of,
    tags_of,
)
from ._store import StoreError, is_url
from .errors import RunningError, TrashError

PROG = "digital-experiments"
PRUNABLE = (FAILED, ABANDONED, INTERRUPTED)
EXPORT_FORMATS = ("csv", "json", "parquet")


def root_type(text: str) -> Path | str:
    """ROOT as given: an ``s3://`` URL stays a string (a path would fold its ``//``)."""
    return text if is_url(text) else Path(text)


# ROOT where a folder of experiments will do too
ROOTS: dict[str, Any] = {
    "metavar": "ROOT",
    "type": root_type,
    "nargs": "?",
    "help": "an experiment folder, or a folder of them, or an s3://bucket/prefix of either "
    "(default: $DE_ROOT, else ./experiments)",
}


class CommandError(Exception):
    """A failure to report on stderr, with the exit code to use."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _warnings_to_stderr():
            result: int = args.command(args)
        return result
    except CommandError as exc:
        print(f"{PROG}: error: {printable(str(exc), keep=chr(10))}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `digital-experiments list ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at, export and tidy the runs recorded by @experiment.",
        epilog="ROOT is an experiment folder, such as experiments/<function name>; list "
        "and show also take a folder of experiments (default: $DE_ROOT, else ./experiments). "
        "Safety: loading a pickle (.pkl) record runs any code it contains, so pickle "
        "records are opened only in folders written by digital-experiments 3.x (they hold "
        ".de/) or with --trust. JSON and YAML records are safe to open.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def root_argument(command: argparse.ArgumentParser, optional: bool = False) -> None:
        if optional:
            command.add_argument("root", **ROOTS)
        else:
            command.add_argument(
                "root",
                metavar="ROOT",
                type=root_type,
                help="the experiment folder (or s3://bucket/prefix/<name>)",
            )
        command.add_argument(
            "--backend",
            help="record format (pickle, json, yaml, ...) when the folder holds several",
        )
        command.add_argument(
            "--trust",
            action="store_true",
            help="open pickle records of a folder not written by digital-experiments 3.x "
            "(loading a pickle runs any code in it: only for folders you trust)",
        )

    def id_argument(command: argparse.ArgumentParser) -> None:
        command.add_argument("id", metavar="ID", help="a run id, or an unambiguous prefix of it")

    def status_argument(command: argparse.ArgumentParser, default: str) -> None:
        command.add_argument(
            "--status",
            action="append",
            metavar="STATUS",
            help=f"{', '.join(STATUSES)} or all; repeat or separate with "
            f"commas for several (default: {default})",
        )
        command.set_defaults(default_status=default)

    def filter_arguments(command: argparse.ArgumentParser, default: str) -> None:
        status_argument(command, default)
        command.add_argument("--limit", type=_non_negative, help="only the most recent N runs")
        command.add_argument(
            "--since",
            help="only runs started at or after this time: an ISO time such as "
            "'2026-11-28 23:59' or '2026-11-28T23:59+01:00' (local time unless it has an "
            "offset) or a prefix of a run id (UTC) such as 2026-11-28_12",
        )

    def query_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--where",
            help='only runs matching this query, such as "config.lr < 0.01 and '
            "status == 'completed'\" (see docs/queries.md)",
        )
        command.add_argument(
            "--sort",
            help="order by these fields, such as -result.loss (- for descending; runs "
            "without the field last; see docs/queries.md)",
        )
        command.add_argument(
            "--top", type=_non_negative, metavar="N", help="only the first N runs (with --sort)"
        )
        command.add_argument(
            "--columns", help="only these columns, comma separated (config: all config.*)"
        )

    listing = commands.add_parser(
        "list",
        help="a table of the runs (or of the experiments)",
        description="A table of the runs, oldest first. Given a folder of experiments "
        "(such as $DE_ROOT), a table of the experiments: run counts by status and the "
        "latest run.",
    )
    root_argument(listing, optional=True)
    filter_arguments(listing, "all")
    query_arguments(listing)
    listing.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default), csv, json or md (Markdown)",
    )
    listing.set_defaults(command=cmd_list)

    show = commands.add_parser(
        "show",
        help="one run in full, with its artefacts",
        description="One run in full: config, result, the last value of each metric, "
        "metadata and artefacts.",
    )
    root_argument(show, optional=True)
    id_argument(show)
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    show.add_argument(
        "--call", action="store_true", help="print a call ready to paste: train(lr=0.1, ...)"
    )
    show.set_defaults(command=cmd_show)

    diff = commands.add_parser(
        "diff",
        help="what differs between two runs",
        description="The fields where two runs differ (config, result, tags, last "
        "metrics, code, packages, git), then a unified diff of their code.",
    )
    root_argument(diff)
    diff.add_argument("ids", metavar="ID", nargs=2, help="two run ids (or unambiguous prefixes)")
    diff.set_defaults(command=cmd_diff)

    tag = commands.add_parser(
        "tag",
        help="set tags of a run",
        description="Set tags of a run: NAME=VALUE, the value read as JSON when it can "
        "be (1, 0.5, true, null removes the tag), else as text.",
    )
    root_argument(tag)
    id_argument(tag)
    tag.add_argument("tags", metavar="NAME=VALUE", nargs="+", help="tags to set")
    tag.set_defaults(command=cmd_tag)

    note = commands.add_parser("note", help="add a note to a run", description="Add a note.")
    root_argument(note)
    id_argument(note)
    note.add_argument("text", metavar="TEXT", help="the note")
    note.set_defaults(command=cmd_note)

    remove = commands.add_parser(
        "rm",
        help="move runs to the trash",
        description="Move runs (record, artefacts, metrics, tags) to the root's trash, "
        "from where `trash restore` brings them back. A running run is refused. Lists "
        "the runs and asks first on a terminal; without one, pass --yes.",
    )
    root_argument(remove)
    remove.add_argument("ids", metavar="ID", nargs="*", help="run ids (or unambiguous prefixes)")
    remove.add_argument("--where", help="the runs matching this query (see docs/queries.md)")
    remove.add_argument(
        "--yes", "-y", action="store_true", help="do not ask first (needed without a terminal)"
    )
    remove.set_defaults(command=cmd_rm, default_status="all")

    bin_ = commands.add_parser(
        "trash",
        help="list, restore or purge deleted runs",
        description="The root's trash: `list` the deleted runs, `restore ID` one, or "
        "`purge` them all for good.",
    )
    root_argument(bin_)
    bin_.add_argument("action", choices=("list", "restore", "purge"), help="what to do")
    bin_.add_argument("ids", metavar="ID", nargs="*", help="for restore: the run ids")
    bin_.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="purge without asking (needed without a terminal)",
    )
    bin_.set_defaults(command=cmd_trash)

    export = commands.add_parser(
        "export",
        help="the runs as CSV, JSON or Parquet",
        description="The runs as a table (CSV, Parquet: one flat row per run, as "
        "to_dataframe()) or as JSON records.",
    )
    root_argument(export)
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    export.add_argument("--output", "-o", type=Path, help="write here instead of to stdout")
    export.add_argument(
        "--include-metadata", action="store_true", help="add the metadata (timing, environment...)"
    )
    filter_arguments(export, COMPLETED)
    query_arguments(export)
    export.set_defaults(command=cmd_export)

    view = commands.add_parser(
        "ui",
        help="see the runs in a browser",
        description="Serve a live, read-only web view of the runs (needs the ui extra: "
        'pip install "digital-experiments[ui]"). Pickle records run code when loaded: '
        "serve only roots you trust.",
    )
    view.add_argument("root", **ROOTS)
    view.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    view.add_argument("--port", type=int, default=8765, help="default 8765")
    view.add_argument("--open", action="store_true", help="open the page in a browser")
    view.add_argument(
        "--trust",
        action="store_true",
        help="open pickle records of folders digital-experiments 3.x did not record "
        "(loading a pickle runs any code in it: only for folders you trust)",
    )
    view.set_defaults(command=cmd_ui)

    prune = commands.add_parser(
        "prune",
        help="delete failed, abandoned or interrupted runs",
        description="Delete the runs with the given status for good, with their "
        "artefacts, metrics, tags and notes (moved to the trash, then purged). Lists "
        "them and asks first on a terminal; without one, pass --yes.",
    )
    root_argument(prune)
    prune.add_argument(
        "--status",
        action="append",
        required=True,
        metavar="STATUS",
        help=f"{', '.join(PRUNABLE)}; repeat or separate with commas for several",
    )
    prune.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask before deleting (needed without a terminal)",
    )
    prune.set_defaults(command=cmd_prune)
    return parser


# ---------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    folders = _experiments_in(args)
    if folders is not None:
        return _list_experiments(folders, args)
    backend = _open(args)
    runs = _select(backend, args)
    if args.format != "table" or args.columns:
        rows = _rows(runs)
        sys.stdout.write(render(rows, _columns(rows, args.columns), args.format))
        return 0
    _print_table(runs, sys.stdout)
    counts = Counter(status_of(run) for run in runs)
    summary = ", ".join(f"{n} {status}" for status, n in counts.most_common())
    print(f"{_plural(len(runs), 'run')}" + (f" ({summary})" if summary else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    folders = _experiments_in(args)
    if folders is None:
        backend = _open(args)
        id = _resolve_id(backend, args.id)
    else:
        backend, id = _find_run(folders, args)
    runs = list(backend.iter_observations([id]))
    if not runs:
        raise CommandError(f"Could not read run {id!r} in {backend.where!r} (see above).")
    run = runs[0]
    if args.call:
        try:
            print(call_text(roots.name_of(backend.where), run.config, run.metadata.get("code")))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return 0
    record = {"id": run.id, "status": status_of(run), "config": run.config, "result": run.result}
    metrics = query.metrics_of(run)
    if metrics:
        record["metrics"] = metrics  # the last value of each, as list shows them
    record["metadata"] = run.metadata
    record["artefacts"] = [str(path.relative_to(backend.root)) for path in backend.artefacts(id)]
    if args.json:
        print(json_text(_plain(record)))
    else:
        sys.stdout.write(yaml_text(_plain(record)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        if args.output is None:
            raise CommandError("Parquet is binary: pass --output FILE.", code=2)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CommandError(
                "Parquet export needs pyarrow: pip install pyarrow (or export --format csv)."
            ) from None
    backend = _open(args)
    runs = _select(backend, args, environment=args.include_metadata)
    if args.format == "json":
        records = [_json_record(run, args.include_metadata) for run in runs]
        text = json_text(_plain(records)) + "\n"
        _write_text(text, args.output)
    else:
        frame = query.to_dataframe(
            runs, include_metadata=args.include_metadata, metrics="last", with_status=True
        )
        if args.columns:
            try:
                frame = frame[query.select_columns(list(frame.columns), _names(args.columns))]
            except ValueError as exc:
                raise CommandError(str(exc), code=2) from None
        try:
            if args.format == "csv":
                text = frame.to_csv(index=False)
                # to the terminal, as data: a file gets the values as they are
                _write_text(
                    printable(text, keep="\n\t") if args.output is None else text, args.output
                )
            else:
                frame.to_parquet(args.output, index=False)
        except (ValueError, TypeError, ImportError) as exc:  # e.g. pyarrow cannot type a column
            raise CommandError(f"Could not export to {args.format}: {exc}") from exc
    if args.output is not None:
        print(f"Wrote {_plural(len(runs), 'run')} to {args.output}", file=sys.stderr)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    statuses = _status_names(args.status)
    refused = sorted(set(statuses) - set(PRUNABLE))
    if refused:
        raise CommandError(
            f"prune deletes only {', '.join(PRUNABLE)} runs, not {refused[0]!r}.", code=2
        )
    backend = _open(args)
    runs = _prunable(backend, frozenset(statuses))
    if not runs:
        print(f"Nothing to prune: no {' or '.join(statuses)} runs in {backend.where}.")
        return 0
    if not args.yes:
        _need_terminal(f"prune would delete {_plural(len(runs), 'run')}")
    _print_table(runs, sys.stdout)
    question = (
        "Delete the run above and its artefacts? [y/N] "
        if len(runs) == 1
        else f"Delete the {len(runs):,} runs above and their artefacts? [y/N] "
    )
    if not args.yes and not _confirm(question):
        print("Nothing deleted.")
        return 0
    # the trash's delete, then a purge of those runs: record, artefacts, metrics,
    # tags and notes go, each move checked first, never leaving the root
    deleted = [run.id for run in runs if _to_trash(backend, run.id)]
    trashcan.purge(backend, deleted)
    print(f"Deleted {_plural(len(deleted), 'run')}.")
    return 0 if len(deleted) == len(runs) else 1


def _to_trash(backend: FileBackend, id: str) -> bool:
    """Move run ``id`` to the trash; ``False``, said on stderr, if it could not be."""
    try:
        return trashcan.delete(backend, id)
    except (RunningError, TrashError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return False


def _prunable(backend: FileBackend, statuses: frozenset[str]) -> list[Observation]:
    """The runs with one of ``statuses``, each under the id of the file it was read from.

    Deleting works from these file names, never from the id written inside a
    record (which a downloaded or edited record may set to another run's id or a path).
    """
    runs = []
    for id in sorted(backend.all_ids()):
        for run in backend.iter_observations([id], environment=False):
            if status_of(run) in statuses:
                runs.append(run._replace(id=id))
    return runs


def cmd_diff(args: argparse.Namespace) -> int:
    backend = _open(args)
    ids = [_resolve_id(backend, id) for id in args.ids]
    runs = [run for id in ids for run in backend.iter_observations([id])]
    if len(runs) != 2:
        raise CommandError("Could not read both runs (see above).")
    frame = compare(runs)
    if len(frame):
        rows: list[dict[str, Any]] = [
            {"field": str(name), **{str(id): text(v) for id, v in row.items()}}
            for name, row in frame.iterrows()
        ]
        sys.stdout.write(render(rows, ["field", *ids], "table"))
    else:
        print("The two runs have the same config, result, metrics, code and environment.")
    before, after = (str(run.metadata.get("code") or "") for run in runs)
    if before != after:
        lines = difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{ids[0]} code",
            tofile=f"{ids[1]} code",
        )
        sys.stdout.writelines(printable(line, keep="\n\t") for line in lines)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    backend = _open(args, check=False)
    id = _resolve_id(backend, args.id)
    values = {}
    for item in args.tags:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise CommandError(f"Tags are NAME=VALUE, not {item!r}.", code=2)
        values[name.strip()] = _tag_value(value)
    try:
        tags = marks.tag(root_store(backend), id, values, backend.key(id))
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc), code=2) from None
    shown = ", ".join(f"{printable(str(k))}={v!r}" for k, v in tags.items())
    print(f"{id}: " + (shown or "no tags"))
    return 0


def _tag_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (str, int, float, bool, type(None))) else text


def cmd_note(args: argparse.Namespace) -> int:
    backend = _open(args, check=False)
    id = _resolve_id(backend, args.id)
    try:
        notes = marks.note(root_store(backend), id, args.text, backend.key(id))
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc), code=2) from None
    print(f"{id}: {_plural(len(notes), 'note')}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    root = _root(args)
    try:
        found = roots.exists(root)
    except (StoreError, ValueError) as exc:
        raise CommandError(str(exc), code=2) from None
    if not found:
        raise CommandError(f"No folder {str(root)!r}: pass ROOT, or set $DE_ROOT.", code=2)
    try:
        from .ui import serve
    except ImportError as exc:
        raise CommandError(
            f"The web view needs the ui extra ({exc.name} is missing): "
            'pip install "digital-experiments[ui]"',
            code=2,
        ) from None
    serve(root, host=args.host, port=args.port, open_browser=args.open, trust=args.trust)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.where):
        raise CommandError("Give run ids, or --where QUERY (not both).", code=2)
    if args.where:
        backend = _open(args)
        args.status, args.since, args.limit, args.top, args.sort = None, None, None, None, None
        ids = [run.id for run in _select(backend, args)]
    else:
        backend = _open(args)  # deleting reads a record to refuse a running run
        ids = [_resolve_id(backend, id) for id in args.ids]
    if not ids:
        print("No runs match: nothing deleted.")
        return 0
    ids = list(dict.fromkeys(ids))
    if not args.yes:
        _need_terminal(f"rm would move {_plural(len(ids), 'run')} to the trash")
        # what is about to go, as prune shows it (an unreadable record is skipped
        # here with a warning, and deleted all the same)
        _print_table(list(backend.iter_observations(ids, environment=False)), sys.stdout)
        if not _confirm(f"Move {_plural(len(ids), 'run')} to the trash? [y/N] "):
            print("Nothing deleted.")
            return 0
    deleted = sum(_to_trash(backend, id) for id in ids)
    print(f"Moved {_plural(deleted, 'run')} to the trash ({PROG} trash {backend.where} list).")
    return 0 if deleted == len(ids) else 1


def cmd_trash(args: argparse.Namespace) -> int:
    backend = _open(args, check=False)
    if args.action == "list":
        ids = trashcan.trashed(backend)
        for id in ids:
            print(id)
        print(f"{_plural(len(ids), 'run')} in the trash")
    elif args.action == "restore":
        if not args.ids:
            raise CommandError("trash restore takes the ids of the runs to restore.", code=2)
        trashed = trashcan.trashed(backend)
        for given in args.ids:
            id = _resolve_id(backend, given, trashed, place="the trash of")
            try:
                trashcan.restore(backend, id)
            except (FileNotFoundError, FileExistsError) as exc:
                raise CommandError(str(exc)) from None
            print(f"Restored {id}")
    else:
        count = len(trashcan.trashed(backend))
        if count and not args.yes:
            _need_terminal(f"trash purge would delete {_plural(count, 'run')} for good")
            if not _confirm(f"Delete the {_plural(count, 'run')} in the trash for good? [y/N] "):
                print("Nothing purged.")
                return 0
        print(f"Purged {_plural(trashcan.purge(backend), 'run')}.")
    return 0


# ---------------------------------------------------------------- helpers


def _root(args: argparse.Namespace) -> Path | str:
    """ROOT as given, else ``$DE_ROOT``, else ``./experiments``."""
    if args.root is not None:
        root: Path | str = args.root
        return root
    return root_type(os.environ.get("DE_ROOT") or "experiments")


def _open(
    args: argparse.Namespace, root: Path | str | None = None, check: bool = True
) -> FileBackend:
    path = root or _root(args)
    try:
        backend = roots.open_root(path, args.backend)
        inside = [] if roots.is_experiment_folder(path) else roots.experiment_folders(path)
    except (roots.NoSuchRoot, ValueError, StoreError) as exc:
        raise CommandError(str(exc), code=2) from None
    if inside:
        names = ", ".join(roots.name_of(f) for f in inside[:5]) + (", ..." * (len(inside) > 5))
        raise CommandError(
            f"{str(path)!r} is a folder of experiments ({names}): pass one of them, "
            f"such as {str(inside[0])!r}.",
            code=2,
        )
    refusal = _untrusted(backend, args) if check else None
    if refusal:
        raise CommandError(refusal, code=2)
    return backend


def _untrusted(backend: FileBackend, args: argparse.Namespace) -> str | None:
    """Why the records of ``backend`` must not be loaded, or ``None``."""
    return roots.trust_refusal(backend, bool(getattr(args, "trust", False)))


def _experiments_in(args: argparse.Namespace) -> list[roots.Root] | None:
    """The experiment folders inside ROOT when ROOT is a folder of experiments."""
    root = _root(args)
    try:
        if not roots.exists(root):
            if args.root is None:
                raise CommandError(
                    f"No experiment folder at {str(roots.located(root))!r} (the default: "
                    "$DE_ROOT, else ./experiments). Pass ROOT, such as "
                    "experiments/<function name>.",
                    code=2,
                )
            return None  # _open says it does not exist
        if roots.is_experiment_folder(root):
            return None
        folders = roots.experiment_folders(root)
    except (OSError, ValueError) as exc:  # StoreError is an OSError
        raise CommandError(f"Could not list {str(root)!r}: {exc}", code=2) from None
    return folders or None


def _list_experiments(folders: list[roots.Root], args: argparse.Namespace) -> int:
    statuses = _status_names(args.status or [args.default_status])
    rows = []
    total = 0
    for folder in folders:
        runs: list[Observation] = []
        notes = []
        for name in roots.record_formats(folder) or {"pickle": 0}:
            backend = roots.open_root(folder, name)
            if _untrusted(backend, args):
                notes.append(f"{backend.suffix} records not opened (pass --trust)")
                continue
            try:
                runs += query.select(backend, status=statuses, since=args.since, environment=False)
            except ValueError as exc:  # an unknown status or a bad --since
                raise CommandError(str(exc), code=2) from None
        counts = Counter(status_of(run) for run in runs)
        summary = ", ".join(f"{n} {status}" for status, n in counts.most_common())
        latest = max((run.id for run in runs), default="-")
        rows.append(
            (roots.name_of(folder), f"{len(runs):,}", "; ".join([summary, *notes]) or "-", latest)
        )
        total += len(runs)
    header = ("experiment", "runs", "statuses", "latest")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print(printable("  ".join(cells).rstrip()))
    print(f"{_plural(len(folders), 'experiment')}, {_plural(total, 'run')}")
    return 0


def _find_run(folders: list[roots.Root], args: argparse.Namespace) -> tuple[FileBackend, str]:
    """The experiment holding run ``args.id`` (or a unique prefix) among ``folders``."""
    found: list[tuple[FileBackend, str]] = []
    for folder in folders:
        backend = _open(args, folder, check=False)  # ids are file names: nothing is loaded
        try:
            found.append((backend, _resolve_id(backend, args.id)))
        except CommandError as exc:
            if exc.code == 2:
                raise
    if len(found) == 1:
        refusal = _untrusted(found[0][0], args)
        if refusal:
            raise CommandError(refusal, code=2)
        return found[0]
    if found:
        names = ", ".join(roots.name_of(backend.where) for backend, _ in found)
        raise CommandError(f"{args.id!r} matches runs of several experiments ({names}).")
    raise CommandError(
        f"No run {args.id!r} in the experiments of {str(_root(args))!r}. "
        f"See the ids with: {PROG} list {folders[0]}"
    )


def _select(
    backend: FileBackend, args: argparse.Namespace, environment: bool = False
) -> list[Observation]:
    statuses = _status_names(args.status or [args.default_status])
    try:
        return query.select(
            backend,
            status=statuses,
            since=args.since,
            limit=_limit(args),
            where=getattr(args, "where", None),
            sort=getattr(args, "sort", None),
            environment=environment,
        )
    except ValueError as exc:  # an unknown status, field or sort, a bad query
        raise CommandError(str(exc), code=2) from None


def _limit(args: argparse.Namespace) -> int | None:
    top: int | None = getattr(args, "top", None)
    limit: int | None = args.limit
    if top is not None and limit is not None:
        return min(top, limit)
    return top if top is not None else limit


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _rows(runs: list[Observation]) -> list[dict[str, Any]]:
    """The runs' flat fields, as ``list --format`` and ``--columns`` show them."""
    rows = query.rows(runs, "last")
    for run, row in zip(runs, rows, strict=True):
        row["duration"] = _duration(run)
    return rows


_SHOWN = ("config", "result", "tags", "metrics")  # the namespaces list shows by default


def _columns(rows: list[dict[str, Any]], wanted: str | None) -> list[str]:
    seen: list[str] = []
    for row in rows:
        seen.extend(name for name in row if name not in seen)
    if wanted:
        try:
            chosen = query.select_columns(seen or ["id"], _names(wanted))
        except ValueError as exc:
            raise CommandError(str(exc), code=2) from None
        return chosen if "id" in chosen else ["id", *chosen]  # which run a line is
    shown = [c for c in seen if c.split(".")[0] in _SHOWN]
    return ["id", "status", "duration", *shown]


def _status_names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return value


def _resolve_id(
    backend: FileBackend, id: str, among: list[str] | None = None, place: str = "in"
) -> str:
    """The run id ``id`` names (itself, or the one id it begins), as every
    :class:`~digital_experiments.Experiment` method finds it; ``among``: the ids
    to look in (default: the runs of ``backend``)."""
    if Path(id).name != id or not id:
        raise CommandError(f"Invalid run id {id!r}: ids are names, not paths.", code=2)
    try:
        return query.find_id(backend, id, among)
    except query.NoSuchRun as exc:
        if exc.matches:
            shown = ", ".join(exc.matches[:5]) + (", ..." if len(exc.matches) > 5 else "")
            raise CommandError(
                f"{id!r} matches {len(exc.matches)} runs ({shown}): give more of the id."
            ) from None
    see = f"{PROG} list {backend.where}"
    if among is not None:
        see = f"{PROG} trash {backend.where} list"
    raise CommandError(f"No run {id!r} {place} {backend.where!r}. See the ids with: {see}")


def _need_terminal(doing: str) -> None:
    """Refuse (exit 2) to ask a question no one can answer: without a terminal on
    standard input (a script, CI, ``< /dev/null``), a command that would delete
    asks for ``--yes`` instead of reading "no" from nothing and exiting 0."""
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        interactive = False
    if not interactive:
        raise CommandError(
            f"{doing}, but standard input is not a terminal to ask on: nothing was "
            "deleted. Pass --yes to delete without asking.",
            code=2,
        )


def _confirm(question: str) -> bool:
    print(question, end="", flush=True)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        print()  # end of input: keep the terminal tidy
    return answer.strip().lower() in ("y", "yes")


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show warnings (such as an unreadable record) as one plain line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                message = printable(str(warning.message), keep="\n")
                print(f"{PROG}: warning: {message}", file=sys.stderr)


def _write_text(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- formatting


def _print_table(runs: list[Observation], out: TextIO) -> None:
    """The runs as ``list`` shows them: one line each, fitting the terminal (the id,
    status and duration whole; config, result, metrics and tags cut to fit)."""
    metrics = [
        {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
        for row in query.rows(runs, "last", metadata=False)
    ]
    tags = [tags_of(run) for run in runs]
    columns = ["id", "status", "duration", "config", "result"]
    if any(metrics):
        columns.append("metrics")
    if any(tags):
        columns.append("tags")
    rows = [
        {
            "id": run.id,
            "status": status_of(run),
            "duration": _duration(run),
            "config": _config_text(run),
            "result": _result_text(run),
            "metrics": pairs(summary),
            "tags": pairs(marks),
        }
        for run, summary, marks in zip(runs, metrics, tags, strict=True)
    ]
    if rows:
        out.write(render(rows, columns, "table", wants_colour(out)))


def _duration(run: Observation) -> str:
    timing = run.metadata.get("timing") if isinstance(run.metadata, dict) else None
    if isinstance(timing, dict) and isinstance(timing.get("total"), dict):
        timing = timing["total"]
    seconds = timing.get("duration") if isinstance(timing, dict) else None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    return duration(seconds)


def _config_text(run: Observation) -> str:
    return pairs(run.config) if isinstance(run.config, dict) else short(run.config)


def _result_text(run: Observation) -> str:
    error = run.metadata.get("error") if isinstance(run.metadata, dict) else None
    if isinstance(error, dict) and run.result is None:
        message = printable(f"{error.get('type', 'Error')}: {error.get('message', '')}")
        return message.replace("\n", " ").rstrip(": ")
    if status_of(run) in (RUNNING, ABANDONED):
        return "-"
    return pairs(run.result) if isinstance(run.result, dict) else short(run.result)


def _json_record(run: Observation, include_metadata: bool) -> dict[str, Any]:
    record = {
        "id": run.id,
        "status": status_of(run),
        "config": run.config,
        "result": run.result,
    }
    summary = query.metrics_of(run)
    if summary:
        record["metrics"] = summary
    if not include_metadata:
        for key, value in (("tags", tags_of(run)), ("notes", notes_of(run))):
            if value:
                record[key] = value
    if include_metadata:
        record["metadata"] = run.metadata
    return record


def _plain(value: Any) -> Any:
    """``value`` with every part JSON and YAML can show; anything else as its repr."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
