"""Every reader, fed damaged files: random bytes, torn and bit-flipped records,
metrics lines cut mid-line, annotation and claim files of the wrong types.

What must hold whatever the damage: a listing (``observations()``,
``to_dataframe()``, ``list``) skips a damaged record with one warning and lists
the rest; ``show`` says it cannot read the record and exits non-zero; nothing
raises; no file is changed or deleted by reading.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digital_experiments import experiment, log, query
from digital_experiments._runs import annotations, metrics
from digital_experiments._runs.backends import yaml_text
from digital_experiments._store import lease as leases
from digital_experiments._store.files import HOST
from digital_experiments._store.local import LocalStore
from digital_experiments._sweep import claims
from digital_experiments.backends import instantiate_backend
from digital_experiments.core import Observation

from .conftest import examples

BACKENDS = ["pickle", "json", "yaml"]
SUFFIX = {"pickle": ".pkl", "json": ".json", "yaml": ".yaml"}


def train(lr: float, epochs: int = 2) -> dict[str, float]:
    for epoch in range(epochs):
        log(loss=lr / (epoch + 1))
    return {"loss": lr}


def make_root(root: Path, backend: str) -> list[str]:
    """Three completed runs that logged metrics, one tagged and noted; their ids."""
    function = experiment(root=root, backend=backend)(train)
    for lr in (0.1, 0.2, 0.3):
        function(lr)
    ids = [run.id for run in function.observations()]
    function.tag(ids[0], best=True)
    function.note(ids[0], "the first")
    return ids


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def template(tmp_path: Path, backend: str) -> tuple[Path, list[str]]:
    """An experiment folder to copy for each example."""
    root = tmp_path / "template" / "train"
    return root, make_root(root, backend)


_COPIES = itertools.count()


def fresh_copy(template: Path) -> Path:
    copy = template.parent.parent / f"copy{next(_COPIES)}" / "train"
    shutil.copytree(template, copy, symlinks=True)
    return copy


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (``.de/`` included) and its bytes."""
    return {
        os.fspath(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_unchanged(root: Path, before: dict[str, bytes]) -> None:
    """No file that was there is gone or different (reading may add caches)."""
    after = snapshot(root)
    assert {name: after.get(name) for name in before} == before


def listing(root: Path, backend: str) -> tuple[list[str], list[str]]:
    """``(ids listed, warnings)`` of every listing a user has, all of which must agree."""
    function = experiment(root=root, backend=backend)(train)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = function.observations(current_code_only=False, status="all")
        first = [str(w.message) for w in caught]
        function.to_dataframe(current_code_only=False, include_metadata=True, metrics="last")
        function.to_dataframe(current_code_only=False, status="all", metrics="min")
        function.observations(current_code_only=False, where="tags.best == true", sort="id")
        loaded = query.load(root, status="all", sort="metrics.loss")
    assert sorted(run.id for run in loaded) == [run.id for run in runs]
    return [run.id for run in runs], first


# ---------------------------------------------------------------- damaged records


def _damaged(draw: Any, data: bytes) -> bytes:
    """``data`` as a disk or a careless edit may leave it."""
    how = draw(st.sampled_from(["bytes", "truncated", "flipped", "spliced"]))
    if how == "bytes":
        return bytes(draw(st.binary(max_size=200)))
    if how == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flipped":
        damaged = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            damaged[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(damaged)
    at = draw(st.integers(0, len(data)))
    return data[:at] + bytes(draw(st.binary(min_size=1, max_size=20))) + data[at:]


@given(st.data())
@settings(max_examples=examples(40))
def test_a_damaged_record_is_skipped_with_one_warning(
    template: tuple[Path, list[str]], backend: str, data: st.DataObject
) -> None:
    """Random bytes, a torn tail, flipped bits or spliced garbage: the other runs list,
    the damaged one is skipped (one warning naming it) or, if still readable, listed."""
    root = fresh_copy(template[0])
    ids = template[1]
    victim = data.draw(st.sampled_from(ids))
    path = root / f"{victim}{SUFFIX[backend]}"
    path.write_bytes(_damaged(data.draw, path.read_bytes()))
    before = snapshot(root)
    listed, said = listing(root, backend)
    about = [message for message in said if victim in message]
    others = [i for i in ids if i != victim]
    assert [i for i in listed if i != victim] == others
    if victim in listed:
        assert len(about) <= 1, about  # still readable: at most a note about its shape
    else:
        assert len(about) == 1, said
        assert "Skipping unreadable record" in about[0]
    assert_unchanged(root, before)


# records that are well-formed files of the wrong shape: any JSON where the fields
# are, and metadata fields the readers look at holding any JSON value
_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),  # past a C long too: see test_a_pid_too_big_for_the_os_*
        st.floats(),
        st.text(max_size=5),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_METADATA_KEYS = [
    "status",
    "process",
    "timing",
    "tags",
    "notes",
    "error",
    "code",
    "code_hash",
    "environment_ref",
    "environment",
    "recorded",
]
_PROCESS = st.fixed_dictionaries(
    {},
    optional={
        "host": st.one_of(st.just(HOST), _JSON),
        "pid": st.one_of(st.integers(-5, 2**80), _JSON),
        "boot": _JSON,
        "pidns": _JSON,
        "start": _JSON,
    },
)
_ODD_METADATA = st.dictionaries(
    st.sampled_from(_METADATA_KEYS),
    st.one_of(_JSON, _PROCESS, st.sampled_from(["running", "completed", "failed"])),
    max_size=5,
)


@given(st.data())
@settings(max_examples=examples(40))
def test_a_record_of_the_wrong_shape_never_stops_a_listing(
    template: tuple[Path, list[str]], backend: str, data: st.DataObject
) -> None:
    """A readable file whose id, config, result or metadata have odd types (a
    running record naming any process) is listed or skipped, never raises."""
    root = fresh_copy(template[0])
    ids = template[1]
    victim = data.draw(st.sampled_from(ids))
    fields: dict[str, Any] = {
        "id": data.draw(st.one_of(st.just(victim), _JSON)),
        "config": data.draw(st.one_of(st.just({"lr": 0.5}), _JSON)),
        "result": data.draw(_JSON),
        "metadata": data.draw(st.one_of(_ODD_METADATA, _JSON)),
    }
    dropped = data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=1))
    for name in dropped:
        del fields[name]
    if backend == "pickle":
        whole = Observation(**fields) if len(fields) == 4 else fields
        data = pickle.dumps(whole)
    else:
        data = (json.dumps(fields) if backend == "json" else yaml_text(fields)).encode()
    (root / f"{victim}{SUFFIX[backend]}").write_bytes(data)
    before = snapshot(root)
    listed, said = listing(root, backend)
    assert [i for i in listed if i != victim] == [i for i in ids if i != victim]
    if victim not in listed:
        assert sum(victim in message for message in said) == 1, said
    assert_unchanged(root, before)


@pytest.mark.parametrize(
    ("backend", "content"),
    [
        ("json", b"[" * 100_000),
        ("json", b'{"id": "x", "config": ' + b"[" * 100_000),
        ("yaml", b"config: " + b"[" * 100_000),
        ("yaml", b"a: &a [*a, *a]\n"),
        ("pickle", b"\x80\x04" + b"]" * 100_000 + b"."),
        ("pickle", pickle.dumps(Observation("x", {"lr": 1}, None, {})).replace(b"core", b"cors")),
    ],
    ids=["json-deep", "json-deep-config", "yaml-deep", "yaml-alias", "pickle-lists", "pickle-name"],
)
def test_a_record_no_parser_can_read_is_skipped_with_one_warning(
    tmp_path: Path, backend: str, content: bytes
) -> None:
    """Nesting past a parser's limit, an alias loop, a class that is not there."""
    root = tmp_path / "train"
    good = make_root(root, backend)
    id = "2026-01-01_00-00-00_000000"
    (root / f"{id}{SUFFIX[backend]}").write_bytes(content)
    listed, said = listing(root, backend)
    assert listed == good
    assert sum(id in message for message in said) == 1, said


# ---------------------------------------------------------------- the command line


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DE_ROOT"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "digital_experiments", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_list_and_show_say_which_records_are_damaged(
    template: tuple[Path, list[str]], backend: str
) -> None:
    """``list`` warns once per damaged record and shows the rest; ``show`` of a
    damaged one says it cannot be read and exits non-zero; nothing is removed."""
    root = fresh_copy(template[0])
    ids = template[1]
    good = [id for id in make_root(root, backend) if id not in ids]  # three more, whole
    torn, garbage, flipped = ids
    record = root / f"{torn}{SUFFIX[backend]}"
    record.write_bytes(record.read_bytes()[: len(record.read_bytes()) // 2])
    (root / f"{garbage}{SUFFIX[backend]}").write_bytes(os.urandom(64))
    record = root / f"{flipped}{SUFFIX[backend]}"
    data = bytearray(record.read_bytes())
    data[0] ^= 1  # pickle's protocol opcode, JSON's "{", YAML's first key
    record.write_bytes(bytes(data))
    before = snapshot(root)

    done = cli("list", root)
    assert done.returncode == 0, done.stderr
    for id in (torn, garbage, flipped):
        assert id not in done.stdout
        assert done.stderr.count(f"Skipping unreadable record {id!r}") == 1, done.stderr
    assert all(id in done.stdout for id in good)
    assert done.stdout.splitlines()[-1] == "3 runs (3 completed)"
    for id in (torn, garbage, flipped):
        shown = cli("show", root, id)
        assert shown.returncode != 0
        assert f"Could not read run {id!r}" in shown.stderr, shown.stderr
        assert "Traceback" not in shown.stderr
    assert cli("show", root, good[0]).returncode == 0
    assert_unchanged(root, before)


# ---------------------------------------------------------------- metrics


_NEXT_WRITER = b'\n[7, "loss", 0.5, 1.0]\n'  # every append starts on a fresh line


@given(st.data())
@settings(max_examples=examples(15))
def test_a_metrics_file_cut_anywhere_keeps_its_whole_lines(
    template: tuple[Path, list[str]], backend: str, data: st.DataObject
) -> None:
    """Cut mid-line (then appended to by the next writer, or followed by garbage), a
    metrics file reads as the points whose lines are whole, in order; listings go on."""
    root = fresh_copy(template[0])
    id = template[1][0]
    path = root / ".de" / "metrics" / f"{id}.jsonl"
    original = path.read_bytes()
    points = metrics.read(LocalStore(root), id)
    assert len(points) == 2
    cut = data.draw(st.integers(0, len(original)))
    tail = data.draw(st.sampled_from([b"", _NEXT_WRITER, b"garbage"]))
    if tail == b"garbage":
        tail = b"\n" + data.draw(st.binary(max_size=40))
    path.write_bytes(original[:cut] + tail)
    before = snapshot(root)
    read = metrics.read(LocalStore(root), id)
    whole = [point for point in points if _line_of(point) in original[:cut]]
    assert read[: len(whole)] == whole
    if tail in (b"", _NEXT_WRITER):  # nothing else: a cut line is skipped, or whole
        assert set(read[len(whole) :]) <= {*points, (7, "loss", 0.5, 1.0)}
    for how in ("last", "min", "max"):
        metrics.summary(LocalStore(root), id, how)
    listed, _ = listing(root, backend)
    assert id in listed
    assert_unchanged(root, before)


def _line_of(point: tuple[Any, ...]) -> bytes:
    return metrics._encode([point]).lstrip(b"\n")


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000,
        b"[1, " + b"[" * 100_000,
        b'{"a": ' * 100_000,
        b"\xff\xfe[1, 2]",
        b'[1, "loss", 1e999, 1e999]',
        b'[1e400, "loss", 1, 2]',
        b'[1, ["loss"], 1, 2]',
    ],
    ids=["deep", "deep-inside", "deep-objects", "not-utf8", "infinities", "float-step", "odd-name"],
)
def test_a_metrics_line_no_parser_can_read_is_skipped(tmp_path: Path, line: bytes) -> None:
    """Nesting too deep for json (RecursionError), bad UTF-8 and odd values: skipped."""
    path = tmp_path / ".de" / "metrics" / "2026-01-01_00-00-00_000000.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'[0, "loss", 1.5, 1.0]\n' + line + b'\n[1, "loss", 0.5, 2.0]\n')
    points = metrics.read(LocalStore(tmp_path), "2026-01-01_00-00-00_000000")
    assert points[0] == (0, "loss", 1.5, 1.0)
    assert points[-1] == (1, "loss", 0.5, 2.0)
    assert len(points) == 2 + (line == b'[1, "loss", 1e999, 1e999]')


# ---------------------------------------------------------------- annotations


_ANNOTATIONS = st.one_of(
    _JSON,
    st.fixed_dictionaries({}, optional={"tags": _JSON, "notes": _JSON, "other": _JSON}),
    st.fixed_dictionaries(
        {"tags": st.dictionaries(st.text(max_size=5), _JSON, max_size=3)},
        optional={"notes": st.lists(_JSON, max_size=3)},
    ),
)


@given(st.data())
@settings(max_examples=examples(20))
def test_annotations_of_any_shape_never_stop_a_listing(
    template: tuple[Path, list[str]], backend: str, data: st.DataObject
) -> None:
    """Tags and notes files holding any JSON (or any bytes) are read or left out,
    and every run still lists."""
    root = fresh_copy(template[0])
    ids = template[1]
    victim = data.draw(st.sampled_from(ids))
    path = root / ".de" / "annotations" / f"{victim}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if data.draw(st.booleans()):
        path.write_bytes(json.dumps(data.draw(_ANNOTATIONS)).encode())
    else:
        path.write_bytes(_damaged(data.draw, path.read_bytes() if path.exists() else b"{}"))
    before = snapshot(root)
    found = annotations.read_annotations(LocalStore(root), victim)
    assert set(found) <= {"tags", "notes"}
    assert isinstance(found.get("tags", {}), dict)
    assert isinstance(found.get("notes", []), list)
    listed, _ = listing(root, backend)
    assert listed == ids
    assert_unchanged(root, before)


@pytest.mark.parametrize(
    "content",
    [b'{"tags": ' * 50_000, b'{"notes": ["a"], "tags": {"x": 1}}' + b"\xff", b"[" * 100_000],
    ids=["deep", "not-utf8", "deep-list"],
)
def test_an_annotation_file_no_parser_can_read_is_left_out(tmp_path: Path, content: bytes) -> None:
    """Too deep for json (a RecursionError) or not UTF-8: no tags, no crash."""
    id = "2026-01-01_00-00-00_000000"
    path = tmp_path / ".de" / "annotations" / f"{id}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert annotations.read_annotations(LocalStore(tmp_path), id) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"tags": ["a"], "notes": ["kept"]}',
        b'{"tags": {"a": 1}, "notes": "one note"}',
        b'["a"]',
        b'{"tags": {"a": 1}, "notes": ["x"], "by": "a tool of ours"}',
    ],
)
def test_tagging_never_overwrites_annotations_it_cannot_read_whole(
    tmp_path: Path, content: bytes
) -> None:
    """A tags/notes file that is not what tag() writes is refused, not replaced
    (a new tag over it would drop what it holds); fields of others are kept."""
    id = "2026-01-01_00-00-00_000000"
    path = tmp_path / ".de" / "annotations" / f"{id}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    data = json.loads(content) if content != b"not json" else None
    whole = (
        isinstance(data, dict)
        and isinstance(data.get("tags"), dict)
        and isinstance(data.get("notes"), list)
    )
    if whole:
        assert annotations.tag(LocalStore(tmp_path), id, {"b": 2}) == {"a": 1, "b": 2}
        assert json.loads(path.read_bytes())["by"] == "a tool of ours"
        return
    with pytest.raises(ValueError, match=r"annotations.*cannot be read|not tags and notes"):
        annotations.tag(LocalStore(tmp_path), id, {"b": 2})
    with pytest.raises(ValueError, match=r"annotations.*cannot be read|not tags and notes"):
        annotations.note(LocalStore(tmp_path), id, "more")
    assert path.read_bytes() == content


# ---------------------------------------------------------------- claims (leases)


def _claim_folder(root: Path, key: str) -> Path:
    return root / ".de" / "claims" / key


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["0000000000", "0000000001", "0000000001.beat", "0000000002.released"]),
            st.one_of(
                st.binary(max_size=60),
                _JSON.map(lambda value: json.dumps(value).encode()),
                st.fixed_dictionaries(
                    {},
                    optional={"token": _JSON, "generation": _JSON, "holder": _PROCESS | _JSON},
                ).map(lambda value: json.dumps(value).encode()),
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=examples(60))
def test_claim_files_of_any_type_are_read_without_error(
    tmp_path: Path, files: list[tuple[str, bytes]]
) -> None:
    """A claim's generations and heartbeats holding any bytes or JSON: who holds it,
    whether it is stale and who works on it are answered, never raised; reading
    changes nothing."""
    root = tmp_path / f"claims{next(_COPIES)}"
    folder = _claim_folder(root, "k")
    folder.mkdir(parents=True)
    for name, content in files:
        (folder / name).write_bytes(content)
    before = snapshot(root)
    claim = claims.Claim(os.fspath(root), "k", stale_after=60.0)
    lease = claim.lease
    assert isinstance(leases.holds(claim.lease), bool)
    assert isinstance(leases.holds_any(lease), bool)
    assert claims.held(os.fspath(root)) in ([], ["k"])
    worker = leases.worker(lease)
    assert worker is None or isinstance(worker, dict)
    current = leases._current(lease)
    if current is not None:
        generation, body, version = current
        observer = leases.Observer(clock=lambda: 0.0)
        assert isinstance(leases.stale(lease, generation, body, version, observer), bool)
    assert_unchanged(root, before)


@given(st.binary(max_size=60) | _JSON.map(lambda value: json.dumps(value).encode()))
@settings(max_examples=examples(30))
def test_a_claim_of_any_content_is_taken_over_or_waited_for(tmp_path: Path, content: bytes) -> None:
    """Claiming over a damaged generation either takes it (stale or garbage) or
    leaves it as it is: it never raises."""
    root = tmp_path / f"claims{next(_COPIES)}"
    folder = _claim_folder(root, "k")
    folder.mkdir(parents=True)
    (folder / "0000000000").write_bytes(content)
    claim = claims.Claim(os.fspath(root), "k", stale_after=60.0)
    if claims.try_claim(claim):
        assert leases.holds(claim.lease)
        claims.release(claim)
    else:
        assert (folder / "0000000000").read_bytes() == content


# ---------------------------------------------------------------- found by fuzzing, fixed


def test_a_pid_too_big_for_the_os_makes_a_running_record_read_as_alive_or_gone(
    tmp_path: Path,
) -> None:
    """A running record (or claim) naming pid 2**70 on this host: a status, not a crash."""
    store = instantiate_backend("json", tmp_path)
    (tmp_path / ".de" / "ids").mkdir(parents=True, exist_ok=True)
    metadata = {"status": "running", "process": {"host": HOST, "pid": 2**70}}
    store.record(Observation("2026-01-01_00-00-00_000000", {"lr": 1}, None, metadata))
    runs = query.load(tmp_path, status="all")
    assert [query.status_of(run) for run in runs] in (["running"], ["abandoned"])


def test_a_claim_nested_too_deep_for_json_reads_as_garbage(tmp_path: Path) -> None:
    """A generation of 100,000 '[' is unreadable, so anyone may take it over."""
    folder = _claim_folder(tmp_path, "k")
    folder.mkdir(parents=True)
    (folder / "0000000000").write_bytes(b"[" * 100_000)
    claim = claims.Claim(os.fspath(tmp_path), "k", stale_after=60.0)
    assert not leases.holds(claim.lease)
