"""Request guards: a body size limit enforced while the body streams in, and content-type checks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a request body above ``max_bytes``.

    A declared Content-Length above the limit is refused before anything is read; a body sent
    without one (chunked) is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body above the limit of {self.max_bytes} bytes (--max-upload-mb)"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return msg

        async def guarded_send(msg: Message) -> None:
            # The body parser may turn _TooLarge into its own 4xx: answer 413 instead, once.
            nonlocal exceeded
            if exceeded:
                if msg["type"] == "http.response.start":
                    await self._refuse(send)
                return
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            await guarded_send({"type": "http.response.start"})


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def require_json(request: Request) -> None:
    """415 unless the request body is declared as application/json."""
    if _media_type(request) != "application/json":
        raise HTTPException(415, "send the request body as JSON with Content-Type: application/json")


async def require_multipart(request: Request) -> None:
    """415 unless the request is a multipart/form-data upload."""
    if _media_type(request) != "multipart/form-data":
        raise HTTPException(
            415, "upload the image as multipart/form-data with a 'file' field (Content-Type multipart)"
        )
