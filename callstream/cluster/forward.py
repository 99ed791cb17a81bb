"""Any node answers any request: a command for another node's call is forwarded there.

A pure ASGI middleware, outermost: for a call's own resources (the paths the
``--workers`` front routes by owner, :func:`callstream.workers.routing.call_of_path`) of
a call this node does not hold, it asks the cluster where the call lives and, if another
live node owns it, sends the request there as bytes on a kept-alive connection to that
node (:class:`callstream.cluster.peers.PeerConnections`) and answers with the owner's
status, headers and body unchanged but for the ``date`` and ``server`` headers, which
uvicorn writes itself, and the hop-by-hop ones. So the answer, authentication included,
is the owner's. The forwarded request carries ``FORWARDED_HEADER`` and is never
forwarded again (two nodes that disagree answer, they do not loop).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson

from callstream.api.auth import ASGIApp, Receive, Scope, Send
from callstream.api.body_limit import replay
from callstream.api.errors import error_body
from callstream.cluster.peers import PeerConnections
from callstream.metrics import HTTP_FORWARDED
from callstream.workers.routing import call_of_path

log = logging.getLogger(__name__)

FORWARDED_HEADER = b"x-callstream-forwarded-by"
#: Headers uvicorn writes on every answer: the owner's are dropped, not doubled.
_OWN_HEADERS = (b"date", b"server")
#: Hop-by-hop: each connection's own, never passed on. (``expect``: the body was read
#: here already, so the owner must not answer ``100 Continue`` first.)
_HOP_HEADERS = (b"connection", b"keep-alive", b"transfer-encoding", b"expect")


class OwnerForwarding:
    def __init__(self, app: ASGIApp, route: Callable[[str], Awaitable[str | None]],
                 peers: PeerConnections, node_id: str, max_body_size: int) -> None:
        self.app = app
        self.route = route
        self.peers = peers
        self.node_id = node_id.encode()
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call_id = (call_of_path(scope["raw_path"] or scope["path"].encode())
                   if scope["type"] == "http" else None)
        if call_id is None or any(name == FORWARDED_HEADER for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        address = await self.route(call_id)
        if address is None:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > self.max_body_size:
                break
        if len(body) > self.max_body_size:
            # Over the limit: the local BodyLimit answers, as the owner's would.
            await self.app(scope, replay(bytes(body), receive), send)
            return
        target = urlsplit(address)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        try:
            answer = await self.peers.request(host, port,
                                              _request(scope, bytes(body), self.node_id),
                                              head_only=scope["method"] == "HEAD")
        except (OSError, ValueError) as exc:  # ValueError: a garbled answer
            HTTP_FORWARDED.labels("failed").inc()
            log.warning("HTTP %s %s: the owner of call %s at %s did not answer: %s",
                        scope["method"], scope["path"], call_id, address, exc)
            await _unavailable(send, f"The node that holds call {call_id} did not answer; "
                                     "retry.")
            return
        HTTP_FORWARDED.labels("ok").inc()
        headers = [(name, value) for name, value in answer.headers
                   if name not in _OWN_HEADERS and name not in _HOP_HEADERS]
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def _request(scope: Scope, body: bytes, node_id: bytes) -> bytes:
    target = scope["raw_path"] or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    lines = [scope["method"].encode() + b" " + target + b" HTTP/1.1"]
    for name, value in scope["headers"]:
        if name not in _HOP_HEADERS and name != b"content-length":
            lines.append(name + b": " + value)
    lines += [b"content-length: " + str(len(body)).encode(),
              FORWARDED_HEADER + b": " + node_id]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _unavailable(send: Send, detail: str) -> None:
    body = orjson.dumps({"errors": [error_body("10011", "Service unavailable", detail)]})
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})
