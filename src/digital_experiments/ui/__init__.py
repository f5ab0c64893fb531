"""The web view of recorded runs: ``digital-experiments ui [ROOT]``.

Needs the ``ui`` extra: ``pip install "digital-experiments[ui]"`` (Starlette,
uvicorn and the plotly wheel, whose plotly.js is served from the package, so the
view works offline). :func:`create_app` returns the ASGI app, to mount elsewhere;
:func:`serve` runs it with uvicorn until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import webbrowser
from pathlib import Path

from ._app import create_app

__all__ = ["create_app", "serve"]

LOCAL = ("127.0.0.1", "localhost", "::1")


def serve(
    root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    open_browser: bool = False,
) -> None:
    """Serve the web view of ``root`` at ``http://host:port/`` until Ctrl-C.

    Listens on this machine only unless ``host`` says otherwise (then it warns:
    anyone who can reach the port can read the runs, and pickle records run code
    when the server loads them, so serve only roots you trust).
    """
    import uvicorn

    if not _is_local(host):
        print(
            f"warning: serving on {host}, reachable from other machines; the view is "
            "read-only, but anyone who can reach it can read every run.",
            file=sys.stderr,
        )
    url = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/"
    config = uvicorn.Config(create_app(Path(root)), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"digital-experiments: serving {Path(root).absolute()} at {url} (Ctrl-C to stop)")
    if open_browser:
        webbrowser.open(url)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down, then passes it on
        server.run()
    print("digital-experiments: stopped")


def _is_local(host: str) -> bool:
    if host in LOCAL:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
