"""ASGI middleware that reports the server-side time of each request in a ``Server-Timing`` header.

Clients (the browser's devtools, benchmarks/serve_latency.py) read ``Server-Timing: app;dur=MS``
to separate compute from network and queueing.
"""

from __future__ import annotations

import time
from typing import Any


class ServerTiming:
    """Adds ``Server-Timing: app;dur=<ms>`` (from request start to response headers) to HTTP responses."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={ms:.3f}".encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
