"""The request body limit: a pure ASGI middleware answering 413 with the Telnyx envelope.

A ``Content-Length`` over the limit is answered at once, before any of the body is read
(the server discards what the client still sends, so the connection stays usable). A
declared length within the limit needs no counting: the HTTP parser never delivers more.
A chunked body is read and counted up to the limit, then handed to the application.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from callstream.api.auth import ASGIApp, Receive, Scope, Send
from callstream.api.errors import error_body
from callstream.metrics import HTTP_LIMITED

log = logging.getLogger(__name__)

#: Default of the ``http_max_body_size`` setting: the API's JSON bodies are a few KiB.
MAX_BODY_SIZE = 1024 * 1024
#: The code of the 413 error in the envelope.
BODY_TOO_LARGE_CODE = "10015"


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body``, already read, as one message, then
    passes on what ``receive`` says (the disconnect)."""
    replayed = False

    async def replayer() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return dict(await receive())
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayer


class BodyLimit:
    """Refuse request bodies over ``max_size`` bytes with 413."""

    def __init__(self, app: ASGIApp, max_size: int = MAX_BODY_SIZE) -> None:
        self.app = app
        self.max_size = max_size
        self._refusal = orjson.dumps({"errors": [error_body(
            BODY_TOO_LARGE_CODE, "Request body too large",
            f"The request body is over the {max_size}-byte limit.")]})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and not chunked:
            if length.isdigit() and int(length) > self.max_size:
                await self._refuse(scope, send, f"Content-Length {int(length)}")
                return
            await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_size:
                await self._refuse(scope, send, "a chunked body")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        HTTP_LIMITED.labels("body_size").inc()
        client = scope.get("client") or ("?", 0)
        log.warning("HTTP %s:%s %s %s: %s is over the %d-byte body limit (413)", client[0],
                    client[1], scope["method"], scope["path"], what, self.max_size)
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self._refusal)).encode()),
            ],
        })
        await send({"type": "http.response.body", "body": self._refusal})
