"""The forwarding middleware against a real loopback HTTP peer standing in for the owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
import pytest

from callstream.cluster.forward import FORWARDED_HEADER, OwnerForwarding

OWNER_ANSWER = (b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"
                b"content-type: application/json\r\ncontent-length: 16\r\n"
                b"x-request-id: abc\r\n\r\n{\"data\":{\"a\":1}}")


@pytest.fixture
async def owner() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP peer that records each request's bytes and gives one fixed answer."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        seen.append(head + await reader.readexactly(length))
        writer.write(OWNER_ANSWER)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


class Local:
    """The node's own application: records that it answered."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"local"})


async def _request(app: OwnerForwarding, path: str, body: bytes = b"",
                   headers: list[tuple[bytes, bytes]] | None = None
                   ) -> list[MutableMapping[str, Any]]:
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"x=1", "headers": [(b"authorization", b"Bearer k"),
                                                 (b"connection", b"keep-alive"),
                                                 *(headers or [])]}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_command_for_another_nodes_call_gets_the_owners_answer(
    owner: tuple[str, list[bytes]],
) -> None:
    address, seen = owner
    local = Local()

    async def route(call_id: str) -> str | None:
        return address if call_id == "v3:theirs" else None

    app = OwnerForwarding(local, route, "node-b", max_body_size=1024)
    sent = await _request(app, "/v2/calls/v3:theirs/actions/answer", b'{"command_id":"c"}')
    assert local.calls == 0
    assert sent[0]["status"] == 200
    assert sent[0]["headers"] == [(b"content-type", b"application/json"),
                                  (b"content-length", b"16"), (b"x-request-id", b"abc")]
    assert sent[1]["body"] == b'{"data":{"a":1}}'
    request = seen[0]
    assert request.startswith(b"POST /v2/calls/v3:theirs/actions/answer?x=1 HTTP/1.1\r\n")
    assert b"authorization: Bearer k\r\n" in request
    assert b"connection: close\r\n" in request and b"keep-alive" not in request
    assert FORWARDED_HEADER + b": node-b\r\n" in request
    assert request.endswith(b'\r\n\r\n{"command_id":"c"}')

    # Its own calls, other paths, and forwarded requests are answered here.
    for path, extra in (("/v2/calls/v3:mine", []), ("/v2/calls", []),
                        ("/v2/calls/v3:theirs", [(FORWARDED_HEADER, b"node-a")])):
        assert (await _request(app, path, headers=extra))[1]["body"] == b"local"
    assert local.calls == 3 and len(seen) == 1


async def test_an_owner_that_does_not_answer_gets_a_503(unused_tcp_port: int) -> None:
    async def route(call_id: str) -> str | None:
        return f"http://127.0.0.1:{unused_tcp_port}"

    app = OwnerForwarding(Local(), route, "node-b", max_body_size=1024)
    sent = await _request(app, "/v2/calls/v3:theirs/actions/hangup")
    assert sent[0]["status"] == 503
    error = orjson.loads(sent[1]["body"])["errors"][0]
    assert error["code"] == "10011" and "v3:theirs" in error["detail"]


async def test_a_body_over_the_limit_is_refused_by_the_local_limit(
    owner: tuple[str, list[bytes]],
) -> None:
    address, seen = owner
    local = Local()

    async def route(call_id: str) -> str | None:
        return address

    app = OwnerForwarding(local, route, "node-b", max_body_size=4)
    await _request(app, "/v2/calls/v3:theirs/actions/answer", b"12345")
    assert local.calls == 1 and seen == []
