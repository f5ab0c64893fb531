"""uvicorn's server, telling when it accepts connections."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class Server(uvicorn.Server):
    """uvicorn's server, calling ``ready`` once it accepts connections: after the
    app's startup (the first scan of the records) and the socket's bind, so a URL
    printed then is one that answers."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready()
