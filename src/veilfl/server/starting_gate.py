"""What the coordinator serves while it sets its run up.

A secure run's id is the hash of its settings, and the settings are fitted to the
aggregators' signed minimum cohorts first, so the run (and the app that serves it)
exists only once every aggregator has answered. The coordinator listens from the start
all the same, so that whoever started it can see it is up and the parties can be
started in any order: until the run's app is set, :class:`StartingGate` answers
``GET /v1/status`` with ``{"opened": false, "phase": "starting"}`` and every other
request with 503 and ``Retry-After`` (clients retry those).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["StartingGate"]

_WAITING = (
    "The coordinator is setting up its run (it waits for its aggregators' signed "
    "policies); ask again shortly."
)


class StartingGate:
    """An ASGI app that answers "starting" until :attr:`app` is set, then is that app."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the run's app is started by its owner, not here
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets while starting
        if scope["method"] == "GET" and scope["path"] == "/v1/status":
            await _answer(send, 200, {"opened": False, "phase": "starting"})
        else:
            await _answer(send, 503, {"error": "Starting", "message": _WAITING})


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
