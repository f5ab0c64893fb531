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

from .._read.roots import located
from ._app import LOOPBACK, create_app

__all__ = ["create_app", "serve"]

LOCAL = ("127.0.0.1", "localhost", "::1")


def serve(
    root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    open_browser: bool = False,
    trust: bool = False,
) -> None:
    """Serve the web view of ``root`` at ``http://host:port/`` until Ctrl-C.

    Listens on this machine only unless ``host`` says otherwise (then it warns:
    anyone who can reach the port can read the runs). It answers only requests
    addressed to ``host`` or a loopback name (``127.0.0.1``, ``localhost``,
    ``::1``), so a web page elsewhere cannot read it through DNS rebinding.

    Parameters
    ----------
    root : str or os.PathLike
        An experiment folder, or a folder of them.
    host, port : str, int
        Where to listen.
    open_browser : bool
        Open the page in the default browser.
    trust : bool
        Load pickle records even in folders digital-experiments 3.x did not
        record (loading a pickle runs any code in it); see
        :func:`~digital_experiments.ui.create_app`.
    """
    import uvicorn

    from ._server import Server

    if not _is_local(host):
        print(
            f"warning: serving on {host}, reachable from other machines; the view is "
            "read-only, but anyone who can reach it can read every run. It answers "
            f"requests addressed to {host} or a loopback name only.",
            file=sys.stderr,
        )
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    url = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"
    app = create_app(root, trust=trust, hosts=[*LOOPBACK, host])
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")

    def ready() -> None:
        print(
            f"digital-experiments: serving {located(root)} at {url} (Ctrl-C to stop)",
            flush=True,
        )
        if open_browser:
            webbrowser.open(url)

    server = Server(config, ready)
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
