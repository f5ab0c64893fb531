"""``_runs/annotations.py`` on its own: reading tags and notes, listing the runs
that have them, and the read-modify-write that adds to them, on a folder and on
a store with compare-and-swap only (most tests elsewhere reach it through
``tag``/``note`` of an experiment or the command line).

These pin what mutation testing of the module showed no other test checked
(docs/testing.md, "Mutation testing").
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digital_experiments._model import layout
from digital_experiments._runs import annotations
from digital_experiments._store import files as storage
from digital_experiments._store.local import LocalStore
from digital_experiments._store.memory import MemoryStore

ID = "2026-01-01_00-00-00_000000"
OTHER = "2026-01-01_00-00-00_000001"


def _plant(store: Any, id: str, content: object) -> None:
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    store.put(layout.annotations_key(id), body)


@pytest.fixture(params=["folder", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A folder (tags under a lock) and a remote-like store (compare-and-swap alone)."""
    return LocalStore(tmp_path) if request.param == "folder" else MemoryStore("annotations")


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ({"tags": {"a": 1}, "notes": ["n"]}, {"tags": {"a": 1}, "notes": ["n"]}),
        ({"tags": {"a": 1}}, {"tags": {"a": 1}}),
        ({"notes": ["n"]}, {"notes": ["n"]}),
        ({"tags": {}, "notes": []}, {}),  # empty: nothing to show
        ({"tags": {"a": 1}, "notes": []}, {"tags": {"a": 1}}),
        ({"tags": {}, "notes": ["n"]}, {"notes": ["n"]}),
        ({"tags": ["a"], "notes": ["n"]}, {"notes": ["n"]}),  # the wrong shape is left out
        ({"tags": {"a": 1}, "notes": "n"}, {"tags": {"a": 1}}),
        ({"tags": {"a": 1}, "by": "another tool"}, {"tags": {"a": 1}}),
        (["tags"], {}),
        ("tags", {}),
        (None, {}),
    ],
)
def test_read_annotations_keeps_only_tags_and_notes_of_their_shape(
    store: Any, content: object, found: dict[str, Any]
) -> None:
    _plant(store, ID, content)
    assert annotations.read_annotations(store, ID) == found


def test_a_run_without_annotations_reads_as_none(store: Any) -> None:
    assert annotations.read_annotations(store, ID) == {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inside", [["inside"], []], ids=["full", "empty"])
def test_a_folder_in_place_of_the_file_is_refused_not_tried_forever(
    tmp_path: Path, inside: list[str]
) -> None:
    """A folder reads as no object, yet no file can be created in its place: tagging
    refuses, as for any file it cannot read (it used to retry forever)."""
    folder = layout.annotation_file(tmp_path, ID)
    folder.mkdir(parents=True)
    for name in inside:
        (folder / name).mkdir()
    store = LocalStore(tmp_path)
    assert annotations.read_annotations(store, ID) == {}
    with pytest.raises(ValueError, match="cannot be read") as raised:
        annotations.tag(store, ID, {"a": 1})
    key = layout.annotations_key(ID)
    assert str(raised.value).startswith(f"The tags and notes of run {ID!r} ({key!r} in ")
    with pytest.raises(ValueError, match="cannot be read"):
        annotations.note(store, ID, "n")
    assert folder.is_dir()
    assert [p.name for p in folder.iterdir()] == inside


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    annotations.tag(store, ID, {"a": 1})
    path = layout.annotation_file(tmp_path, ID)
    path.chmod(0)
    try:
        assert annotations.read_annotations(store, ID) == {}
        with pytest.raises(ValueError, match="cannot be read"):
            annotations.tag(store, ID, {"b": 1})
    finally:
        path.chmod(0o644)
    assert annotations.read_annotations(store, ID) == {"tags": {"a": 1}}


def test_a_store_error_reading_the_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any ``OSError`` reading it (no permission, a failing disk or network) is
    "cannot be read", not "none yet": no new file is written over it."""
    store = MemoryStore()
    _plant(store, ID, {"tags": {"a": 1}})

    def failing(key: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "get_or_none", failing)
    assert annotations.read_annotations(store, ID) == {}
    with pytest.raises(ValueError, match="cannot be read"):
        annotations.tag(store, ID, {"b": 1})
    monkeypatch.undo()
    assert annotations.read_annotations(store, ID) == {"tags": {"a": 1}}


@pytest.mark.parametrize("content", [b"not json", b"\xff\xfe", b"[" * 100_000])
def test_a_file_that_does_not_parse_is_refused_not_replaced(store: Any, content: bytes) -> None:
    _plant(store, ID, content)
    assert annotations.read_annotations(store, ID) == {}
    with pytest.raises(ValueError, match="cannot be read") as raised:
        annotations.note(store, ID, "more")
    key = layout.annotations_key(ID)
    assert str(raised.value) == (
        f"The tags and notes of run {ID!r} ({key!r} in {store.url!r}) cannot be read: it is "
        'not {"tags": {...}, "notes": [...]}. Fix or remove it, then tag again.'
    )
    assert store.get(key)[0] == content


# ---------------------------------------------------------------- listing


def test_annotated_lists_the_ids_with_a_file(store: Any) -> None:
    assert annotations.annotated(store) == set()
    _plant(store, ID, {"tags": {"a": 1}})
    _plant(store, OTHER, {"notes": ["n"]})
    prefix = layout.internal_prefix("annotations")
    store.put(f"{prefix}{ID}.json.tmp", b"{}")  # not .json
    store.put(f"{prefix}notes.json", b"{}")  # not an id
    store.put(f"{prefix}{ID}x.json", b"{}")  # not an id either
    store.put(f"{layout.internal_prefix('metrics')}2026-01-01_00-00-00_000002.json", b"{}")
    assert annotations.annotated(store) == {ID, OTHER}


def test_annotated_of_a_folder_that_cannot_be_listed_is_empty(tmp_path: Path) -> None:
    """The annotations folder is a file here: listing it fails, the runs list untagged."""
    folder = layout.internal(tmp_path, "annotations")
    folder.parent.mkdir(parents=True)
    folder.write_bytes(b"")
    assert annotations.annotated(LocalStore(tmp_path)) == set()


# ---------------------------------------------------------------- the lock


def test_a_folder_tags_under_the_runs_lock(tmp_path: Path) -> None:
    lock = layout.lock(tmp_path, f"annotations-{ID}")
    with annotations.locked(LocalStore(tmp_path), ID):
        other = storage.make_lock(lock)
        assert not storage.try_acquire(other)  # held
    assert storage.try_acquire(other)  # let go
    other.release()


def test_a_change_is_read_and_written_under_the_runs_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock of that run (a delete takes it too), held across the read and the write."""
    events: list[object] = []
    file_lock = storage.file_lock

    @contextlib.contextmanager
    def lock(path: Path) -> Iterator[None]:
        if not path.name.startswith("annotations-"):  # the folder's own (put_if takes one)
            with file_lock(path):
                yield
            return
        events.append(("lock", path))
        yield
        events.append("unlock")

    class Watched(LocalStore):
        def get_or_none(self, key: str) -> tuple[bytes, str] | None:
            events.append("read")
            return super().get_or_none(key)

        def put_new(self, key: str, data: bytes) -> str | None:
            events.append("create")
            return super().put_new(key, data)

        def put_if(self, key: str, data: bytes, version: str) -> str | None:
            events.append("replace")
            return super().put_if(key, data, version)

    monkeypatch.setattr(storage, "file_lock", lock)
    store = Watched(tmp_path)
    held = ("lock", layout.lock(tmp_path, f"annotations-{ID}"))
    annotations.tag(store, ID, {"a": 1})
    annotations.note(store, ID, "n")
    assert events == [held, "read", "create", "unlock", held, "read", "replace", "unlock"]


def test_a_remote_store_takes_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with annotations.locked(MemoryStore(), ID):
        pass
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- tag and note


@pytest.mark.parametrize("value", ["x", 1, 1.5, True, False])
def test_every_json_scalar_is_a_tag(store: Any, value: object) -> None:
    assert annotations.tag(store, ID, {"t": value}) == {"t": value}
    assert annotations.read_annotations(store, ID) == {"tags": {"t": value}}


@pytest.mark.parametrize("value", [[1], {"a": 1}, (1,), b"x", object()])
def test_other_values_are_refused_with_what_to_do(store: Any, value: object) -> None:
    with pytest.raises(TypeError) as raised:
        annotations.tag(store, ID, {"ok": 1, "t": value})
    assert str(raised.value) == (
        f"Tag t={value!r}: tags are str, int, float, bool or None (which removes the "
        "tag). Keep other values in an artefact or a note."
    )
    assert annotations.read_annotations(store, ID) == {}  # nothing written, not even "ok"


def test_none_removes_a_tag_and_a_missing_one_quietly(store: Any) -> None:
    assert annotations.tag(store, ID, {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert annotations.tag(store, ID, {"a": None, "c": None}) == {"b": 2}
    assert annotations.tag(store, ID, {"b": None}) == {}
    assert annotations.tag(store, OTHER, {"x": None}) == {}  # a first change removing one


def test_tags_and_notes_are_kept_side_by_side_in_sorted_json(store: Any) -> None:
    assert annotations.note(store, ID, "first") == ["first"]
    assert annotations.tag(store, ID, {"z": 1, "a": "x"}) == {"a": "x", "z": 1}
    assert annotations.note(store, ID, "second") == ["first", "second"]
    assert store.get(layout.annotations_key(ID))[0] == (
        b'{"notes": ["first", "second"], "tags": {"a": "x", "z": 1}}'
    )


def test_a_change_returns_a_copy(store: Any) -> None:
    tags = annotations.tag(store, ID, {"a": 1})
    tags["b"] = 2
    notes = annotations.note(store, ID, "n")
    notes.append("not saved")
    assert annotations.read_annotations(store, ID) == {"tags": {"a": 1}, "notes": ["n"]}


@pytest.mark.parametrize("text", ["", "   \n", None, 3, ["n"]])
def test_a_note_is_non_empty_text(store: Any, text: Any) -> None:
    with pytest.raises(TypeError) as raised:
        annotations.note(store, ID, text)
    assert str(raised.value) == f"A note is non-empty text, not {text!r}."
    assert annotations.annotated(store) == set()


def test_a_run_deleted_meanwhile_is_not_tagged(store: Any) -> None:
    record = f"{ID}.pkl"
    store.put(record, b"the record")
    assert annotations.tag(store, ID, {"a": 1}, record) == {"a": 1}
    store.delete(record)
    for change in (
        lambda: annotations.tag(store, ID, {"b": 2}, record),
        lambda: annotations.note(store, ID, "n", record),
    ):
        with pytest.raises(ValueError, match="deleted") as raised:
            change()
        assert str(raised.value) == f"No run {ID!r} in {store.url!r} (deleted?)."
    assert annotations.read_annotations(store, ID) == {"tags": {"a": 1}}


class _Racing(MemoryStore):
    """Another tagger writes just before each of the first ``races`` writes here."""

    def __init__(self, races: int, other: bytes, delete_record: str | None = None) -> None:
        super().__init__("racing")
        self.races, self.other, self.delete_record = races, other, delete_record
        self.tries = 0

    def _race(self, key: str) -> None:
        self.tries += 1
        if self.races:
            self.races -= 1
            self.put(key, self.other)
            if self.delete_record is not None:
                self.delete(self.delete_record)

    def put_new(self, key: str, data: bytes) -> str | None:
        self._race(key)
        return super().put_new(key, data)

    def put_if(self, key: str, data: bytes, version: str) -> str | None:
        self._race(key)
        return super().put_if(key, data, version)


def test_a_tagger_that_comes_second_merges_into_the_firsts() -> None:
    """Compare-and-swap refuses a write over a change made since the read: the
    change is made again on what the other tagger wrote."""
    store = _Racing(2, b'{"tags": {"theirs": 1}, "notes": ["their note"]}')
    assert annotations.tag(store, ID, {"mine": 2}) == {"theirs": 1, "mine": 2}
    assert store.tries == 3  # new (taken), replace (changed meanwhile), replace
    assert annotations.read_annotations(store, ID) == {
        "tags": {"mine": 2, "theirs": 1},
        "notes": ["their note"],
    }


def test_a_run_deleted_during_a_retry_is_not_tagged() -> None:
    record = f"{ID}.pkl"
    store = _Racing(1, b'{"tags": {"theirs": 1}}', delete_record=record)
    store.put(record, b"the record")
    with pytest.raises(ValueError, match="deleted"):
        annotations.tag(store, ID, {"mine": 2}, record)
    assert annotations.read_annotations(store, ID) == {"tags": {"theirs": 1}}


def test_annotations_are_a_file_per_run_under_de(tmp_path: Path) -> None:
    annotations.tag(LocalStore(tmp_path), ID, {"a": 1})
    path = tmp_path / ".de" / "annotations" / f"{ID}.json"
    assert json.loads(path.read_bytes()) == {"tags": {"a": 1}}
    assert sorted(os.listdir(tmp_path)) == [".de"]
