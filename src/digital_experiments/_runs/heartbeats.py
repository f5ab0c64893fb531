"""Heartbeats of running runs, so that readers on other hosts can tell a run
whose host died (``abandoned``) from one still running.

On one host a ``running`` record names its process, and a reader asks the
kernel whether that process lives. A reader on another host (or in another PID
namespace) cannot; where other hosts may share the root (an ``s3://`` root, a
folder on a network filesystem) each running run therefore shows it is alive
by the age of its objects: its ``running`` record when it begins, then
``.de/heartbeats/<id>``, rewritten every :data:`EVERY` seconds by one thread
per process. The age is measured by the store's own clock
(:meth:`Store.age <digital_experiments._store.Store.age>`), never by
comparing two hosts' clocks; a run silent for :data:`ABANDONED_AFTER` seconds
reads as ``abandoned``. A run shorter than one beat writes no heartbeat at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading

from .._model import layout
from .._store import files as storage
from .._store.base import Store
from .._store.lease import DEFAULT_LENGTH

ABANDONED_AFTER = DEFAULT_LENGTH
"""Seconds a running run on a shared root may stay silent before readers where
its pid cannot be checked call it abandoned."""

EVERY = DEFAULT_LENGTH / 4
"""Seconds between two heartbeats of a running run."""

_lock = threading.Lock()
_beating: dict[tuple[Store, str], bool] = {}  # (store, run id) -> whether it has beaten
_wake = threading.Event()
_thread: tuple[int, threading.Thread] | None = None  # (pid, thread): none survives a fork


def start(store: Store, id: str) -> None:
    """Beat for run ``id`` while it runs (its record was just written: the first beat)."""
    global _thread
    with _lock:
        _beating[(store, id)] = False
        if _thread is None or _thread[0] != os.getpid() or not _thread[1].is_alive():
            thread = threading.Thread(
                target=_beat, name="digital-experiments-heartbeat", daemon=True
            )
            _thread = (os.getpid(), thread)
            thread.start()


def stop(store: Store, id: str) -> None:
    """Stop beating for run ``id`` (its final record follows); its heartbeat goes."""
    with _lock:
        beaten = _beating.pop((store, id), None)
    if beaten:
        with contextlib.suppress(OSError):  # a leftover heartbeat ages, harmless
            store.delete(layout.heartbeat_key(id))


def silent_for(store: Store, id: str, record: str | None) -> float | None:
    """How long run ``id`` has given no sign of life in ``store``: the age of its
    newest heartbeat, or of its record (key ``record``) when it has none."""
    age = store.age(layout.heartbeat_key(id))
    if age is None and record is not None:
        age = store.age(record)
    return age


def _beat() -> None:
    while True:
        _wake.wait(EVERY)
        with _lock:
            runs = list(_beating)
        body = json.dumps({"holder": storage.process_info()}).encode()
        for store, id in runs:
            try:
                store.put(layout.heartbeat_key(id), body)
            except OSError:
                continue  # a store hiccup: the next beat
            with _lock:
                if (store, id) in _beating:
                    _beating[(store, id)] = True
                else:  # stopped while it beat: take the heartbeat back
                    with contextlib.suppress(OSError):
                        store.delete(layout.heartbeat_key(id))
