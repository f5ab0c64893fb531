"""The read index: many records loaded without opening each one.

Records stay the source of truth. A reader that lists a root keeps what it
decoded in *segments*, objects under ``.de/index/<ext>/`` of the same store,
each a list of ``(key, stamp, record)``, where ``stamp`` is the record's stamp
when it was read (:meth:`~digital_experiments._store.base.Store.stamped`: a
folder's inode, size and times; an S3 ETag). The next listing takes a record
from a segment only if its stamp *now* is the one the segment holds, and reads
every other record itself, so:

- a record added, removed or rewritten since (``running`` then final, edited in
  place, unpacked from a tar) is read from its file, never served stale; a
  record too fresh to vouch for (written in its mtime's last tick) is never
  indexed;
- a segment that is missing (the index deleted mid-listing), torn or foreign
  is ignored: the index can be deleted at any time, and a ``kill -9`` at any
  moment leaves it correct (segments are published atomically) or ignorable.

Writers never touch it: readers add a segment of what they had to read
(when that is worth one), and merge the segments into one now and then
(compaction: the merged one is published before the old ones are deleted).

A pickle root's segments are one pickle of the decoded records (sharing equal
strings): the same trust as its records, and the fast path. Any other format's
segments hold each record's bytes, decoded by the format again: a JSON or YAML
root never unpickles anything, its index included.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._model import layout
from .._store import faults
from .._store.base import Store
from .observation import Observation

OBJECTS = b"de-index 1 objects\n"
"""The first line of a segment of decoded records (pickle roots only)."""
BYTES = b"de-index 1 bytes\n"
"""The first line of a segment of record bytes (every format)."""

MIN_NEW = 32
"""Records read from their files that make a listing publish a segment (fewer
cost little to read again)."""
MAX_SEGMENTS = 8
"""Segments beyond which a listing merges them into one."""


def prefix(suffix: str) -> str:
    """The folder of the segments for records named ``<id><suffix>``."""
    return f"{layout.internal_prefix('index')}{suffix.lstrip('.') or '_'}/"


Loaded = Any  # what a format's loads returns (an Observation, for a sound record)
Entries = tuple[list[str], list[str], list[Any]]  # ids, their stamps, their records


def read(
    store: Store,
    suffix: str,
    listing: Mapping[str, str | None],
    ids: Sequence[str],
    loads: Callable[[bytes], Loaded],
    *,
    objects: bool,
) -> Iterator[tuple[str, Loaded | Exception]]:
    """``(id, record)`` for each of ``ids``, in order, or ``(id, error)`` for a
    record that cannot be read (an ``OSError``: a :class:`Missing` for one deleted
    since it was listed) or decoded (what ``loads`` raised).

    ``listing``: the id of every record ``<id><suffix>`` of the root, with its
    stamp now (``None``: too fresh to vouch for); ``ids`` are some of them.
    ``objects``: segments may hold decoded records (``loads`` unpickles).
    Records come from the index where their stamp matches, else from the store;
    a listing that read many publishes them as a new segment.
    """
    folder = prefix(suffix)
    segments, live, dead = _load_segments(store, folder, listing, objects)
    misses = [id for id in ids if id not in live]
    found: dict[str, Loaded | Exception] = {}
    fresh: Entries = ([], [], [])  # what a new segment would hold
    with paused_gc():
        read = decoded(store.read_many([id + suffix for id in misses]), loads)
        for id, (_, data, loaded) in zip(misses, read, strict=True):
            found[id] = loaded
            stamp = listing.get(id)
            if stamp is not None and isinstance(loaded, Observation):
                fresh[0].append(id)
                fresh[1].append(stamp)
                fresh[2].append(tuple(loaded) if objects else data)
    # published before any record is handed out: the caller may change them
    if len(segments) >= MAX_SEGMENTS or (segments and dead > len(live) + len(fresh[0])):
        merged: Entries = (
            list(live) + fresh[0],
            [stamp for id in live if (stamp := listing[id])] + fresh[1],  # live: all stamped
            list(live.values()) + fresh[2],
        )
        if _publish(store, folder, merged, objects):
            for segment in segments:
                _forget(store, segment)
    elif len(fresh[0]) >= MIN_NEW:
        _publish(store, folder, fresh, objects)
    make = tuple.__new__  # a record from a segment: a plain tuple of its four fields
    for id in ids:
        if id in found:
            yield id, found[id]
        elif objects:
            yield id, make(Observation, live[id])
        else:
            try:
                yield id, loads(live[id])
            except Exception as exc:  # the format refuses what it once read
                yield id, exc


def decoded(
    found: Iterable[tuple[str, bytes | OSError]], loads: Callable[[bytes], Loaded]
) -> Iterator[tuple[str, bytes | None, Loaded | Exception]]:
    """``(key, bytes, record)`` for each ``(key, bytes)`` of ``found`` (a
    :meth:`Store.read_many`), the record decoded by ``loads``; ``(key, None,
    error)`` for bytes that could not be read, ``(key, bytes, error)`` for bytes
    ``loads`` refused (a torn or foreign file: the caller says so)."""
    for key, data in found:
        if isinstance(data, OSError):
            yield key, None, data
            continue
        try:
            yield key, data, loads(data)
        except Exception as exc:
            yield key, data, exc


def _load_segments(
    store: Store, folder: str, listing: Mapping[str, str | None], objects: bool
) -> tuple[list[str], dict[str, Any], int]:
    """The segments under ``folder`` that could be read, the payload of each
    listed id whose stamp they hold (live), and how many entries they hold that
    are of no use (dead: the record changed or is gone)."""
    segments, live, dead = [], {}, 0
    names = [key for key in store.list(folder) if key[len(folder) :].startswith("seg-")]
    for key, data in store.read_many(names):
        if not isinstance(data, bytes):
            continue  # deleted since listed (the index removed, a compaction)
        entries = _decode(data, objects)
        if entries is None:
            continue  # torn, foreign, or of a kind this root must not decode
        segments.append(key)
        get = listing.get
        for id, stamp, payload in zip(*entries, strict=True):
            if stamp is not None and get(id, _GONE) == stamp:
                live[id] = payload
            else:
                dead += 1
    return segments, live, dead


_GONE = object()  # never a stamp


def _decode(data: bytes, objects: bool) -> Entries | None:
    """A segment's entries, or ``None`` for bytes that are none this root reads."""
    try:
        if data.startswith(OBJECTS):
            if not objects:
                return None  # a pickle in a root whose records are never unpickled
            with paused_gc():
                ids, stamps, records = pickle.loads(memoryview(data)[len(OBJECTS) :])
            sound = all(type(r) is tuple and len(r) == 4 for r in records)
            if len(ids) == len(stamps) == len(records) and sound:
                return ids, stamps, records
            return None
        if data.startswith(BYTES):
            head, _, body = data[len(BYTES) :].partition(b"\n")
            ids, stamps, sizes = json.loads(head)
            view, start, records = memoryview(body), 0, []
            for size in sizes:
                records.append(bytes(view[start : start + size]))
                start += size
            if start == len(body) and len(ids) == len(stamps) == len(records):
                return ids, stamps, records
            return None
    except Exception:  # anything torn or foreign: ignored, never trusted
        return None
    return None


def _encode(entries: Entries, objects: bool) -> bytes:
    ids, stamps, records = entries
    if objects:
        shared: dict[str, str] = {}
        for _, config, _, metadata in records:
            _share(config, shared)
            _share(metadata, shared)
        return OBJECTS + pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
    head = json.dumps([ids, stamps, [len(data) for data in records]])
    return BYTES + head.encode() + b"\n" + b"".join(records)


def _share(value: Any, shared: dict[str, str]) -> None:
    """Make equal strings among ``value``'s plain dicts and lists (keys and values)
    one object, so the segment's pickle holds each once and decoding it builds
    each once (a run's source code, its host, every field name)."""
    if type(value) is dict:
        items = list(value.items())
        value.clear()
        for name, item in items:
            if type(name) is str:
                name = shared.setdefault(name, name)
            if type(item) is str:
                item = shared.setdefault(item, item)
            else:
                _share(item, shared)
            value[name] = item
    elif type(value) is list:
        for i, item in enumerate(value):
            if type(item) is str:
                value[i] = shared.setdefault(item, item)
            else:
                _share(item, shared)


def _publish(store: Store, folder: str, entries: Entries, objects: bool) -> bool:
    """Publish ``entries`` as a new segment; whether it was. A root the reader
    cannot write (read-only, a bucket without write rights) keeps its index as
    it is: the listing is right either way."""
    try:
        data = _encode(entries, objects)
    except Exception:  # a record pickle can load but not dump: keep its bytes
        return False
    name = f"{folder}seg-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
    faults.point("index.publish", name, len(data))
    try:
        store.put(name, data, sync=False)
    except OSError:
        return False
    return True


def _forget(store: Store, segment: str) -> None:
    faults.point("index.forget", segment, 0)
    # another reader's compaction, or a read-only root: merged again later
    with contextlib.suppress(OSError):
        store.delete(segment)


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off while many objects are built at once (it would
    scan them all again and again: a bulk decode takes three times as long);
    back to how it was when the last holder leaves."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()
