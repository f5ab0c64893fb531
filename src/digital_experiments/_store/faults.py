"""Fault-injection points for tests: ``point(name)`` is a no-op unless armed.

``DE_FAULTS`` is a comma-separated list of ``name=action`` (read once, at
import). Actions:

``kill``
    ``SIGKILL`` this process at the point.
``pause``
    Append ``name detail`` as one line to the file ``$DE_FAULTS_SIGNAL``, then
    block forever (the test kills the process there).
``wait``
    Append the line as ``pause`` does, then block until the file
    ``$DE_FAULTS_SIGNAL.go`` exists (the test acts on the process there, a
    signal say, and then lets it go on).

``name=action@N`` acts only on the N-th time the point is reached (1-based).
With ``DE_FAULTS_MIN_BYTES`` set, only writes of at least that many bytes
count (a test then stops at its N-th *large* record, whatever small files,
such as sweep claims and ``running`` records, are written in between).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_SPEC = {
    name.strip(): action.strip()
    for name, _, action in (
        item.partition("=") for item in os.environ.get("DE_FAULTS", "").split(",") if item
    )
}
# hot path: one frozenset membership test when nothing is armed
ARMED = frozenset(_SPEC)
_MIN_BYTES = int(os.environ.get("DE_FAULTS_MIN_BYTES", "0") or 0)
_hits: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str, detail: str = "", size: int = 0) -> None:
    """Act as ``$DE_FAULTS`` says when it names ``name``; otherwise do nothing.

    ``size`` is how many bytes the write at this point holds.
    """
    if name not in ARMED or size < _MIN_BYTES:
        return
    action, _, nth = _SPEC[name].partition("@")
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if nth and _hits[name] != int(nth):
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in ("pause", "wait"):
        with open(os.environ["DE_FAULTS_SIGNAL"], "a") as file:
            file.write(f"{name} {detail}\n")
        if action == "pause":
            threading.Event().wait()
        go = os.environ["DE_FAULTS_SIGNAL"] + ".go"
        while not os.path.exists(go):  # bytecodes between naps: signal handlers run here
            time.sleep(0.005)
    else:
        raise ValueError(
            f"unknown fault action {action!r} for {name!r}; use 'kill', 'pause' or 'wait'"
        )
