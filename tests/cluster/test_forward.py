"""The forwarding middleware and its kept connections against a real loopback HTTP peer
standing in for the owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
import pytest

from callstream.api.auth import ASGIApp
from callstream.cluster import peers as peers_module
from callstream.cluster.forward import FORWARDED_HEADER, OwnerForwarding
from callstream.cluster.peers import MAX_CONNECTIONS_PER_PEER, PeerConnections

OWNER_ANSWER = (b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"
                b"content-type: application/json\r\ncontent-length: 16\r\n"
                b"x-request-id: abc\r\n\r\n{\"data\":{\"a\":1}}")


class Owner:
    """A kept-alive HTTP peer standing in for the owner: records each request's bytes,
    counts the connections it accepted, and answers ``answer`` to each request."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.connections = 0
        self.answer = OWNER_ANSWER
        self.delay = 0.0  # seconds before each answer
        #: Close a kept connection at its next request without answering (as a peer
        #: closing an idle connection just as the request went out).
        self.drop_reused = False
        self.address = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed it
                if served and self.drop_reused:
                    return
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.seen.append(head + await reader.readexactly(length))
                await asyncio.sleep(self.delay)
                writer.write(self.answer)
                served += 1
        finally:
            writer.close()


@pytest.fixture
async def owner() -> AsyncIterator[Owner]:
    peer = Owner()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    peer.address = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def peers() -> AsyncIterator[PeerConnections]:
    pool = PeerConnections()
    yield pool
    await pool.close()


def _forwarding(local: ASGIApp, owner: Owner, peers: PeerConnections,
                max_body_size: int = 1024) -> OwnerForwarding:
    async def route(call_id: str) -> str | None:
        return owner.address if call_id == "v3:theirs" else None

    return OwnerForwarding(local, route, peers, "node-b", max_body_size=max_body_size)


class Local:
    """The node's own application: records that it answered."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"local"})


async def _request(app: OwnerForwarding, path: str, body: bytes = b"",
                   headers: list[tuple[bytes, bytes]] | None = None, method: str = "POST"
                   ) -> list[MutableMapping[str, Any]]:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"x=1", "headers": [(b"authorization", b"Bearer k"),
                                                 (b"connection", b"keep-alive"),
                                                 (b"expect", b"100-continue"),
                                                 *(headers or [])]}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


ANSWER_PATH = "/v2/calls/v3:theirs/actions/answer"


async def test_a_command_for_another_nodes_call_gets_the_owners_answer(
    owner: Owner, peers: PeerConnections,
) -> None:
    local = Local()
    app = _forwarding(local, owner, peers)
    sent = await _request(app, ANSWER_PATH, b'{"command_id":"c"}')
    assert local.calls == 0
    assert sent[0]["status"] == 200
    assert sent[0]["headers"] == [(b"content-type", b"application/json"),
                                  (b"content-length", b"16"), (b"x-request-id", b"abc")]
    assert sent[1]["body"] == b'{"data":{"a":1}}'
    request = owner.seen[0]
    assert request.startswith(b"POST /v2/calls/v3:theirs/actions/answer?x=1 HTTP/1.1\r\n")
    assert b"authorization: Bearer k\r\n" in request
    # Hop-by-hop headers are the forwarding node's own: the connection is kept (HTTP/1.1's
    # default), and the body was read already (no 100 Continue from the owner).
    assert b"connection:" not in request and b"expect:" not in request
    assert FORWARDED_HEADER + b": node-b\r\n" in request
    assert request.endswith(b'\r\n\r\n{"command_id":"c"}')

    # Its own calls, other paths, and forwarded requests are answered here.
    for path, extra in (("/v2/calls/v3:mine", []), ("/v2/calls", []),
                        ("/v2/calls/v3:theirs", [(FORWARDED_HEADER, b"node-a")])):
        assert (await _request(app, path, headers=extra))[1]["body"] == b"local"
    assert local.calls == 3 and len(owner.seen) == 1


async def test_forwarded_commands_share_kept_connections_to_the_owner(
    owner: Owner, peers: PeerConnections,
) -> None:
    app = _forwarding(Local(), owner, peers)
    for _ in range(50):  # one after the other: one connection
        assert (await _request(app, ANSWER_PATH))[0]["status"] == 200
    assert owner.connections == 1

    # At once: one connection per request in progress, up to the bound, reused after.
    owner.delay = 0.02
    batch = 3 * MAX_CONNECTIONS_PER_PEER
    for _ in range(2):
        sent = await asyncio.gather(*(_request(app, ANSWER_PATH) for _ in range(batch)))
        assert [s[0]["status"] for s in sent] == [200] * batch
    assert owner.connections == MAX_CONNECTIONS_PER_PEER
    assert len(owner.seen) == 50 + 2 * batch

    # At shutdown the kept connections are closed (the owner's handlers see the end).
    await peers.close()
    await asyncio.sleep(0.1)
    assert all(task.done() for task in _owner_tasks())


def _owner_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "Owner.handle"]


async def test_a_kept_connection_closed_by_the_owner_is_replaced(
    owner: Owner, peers: PeerConnections,
) -> None:
    app = _forwarding(Local(), owner, peers)
    owner.drop_reused = True  # every kept connection is closed as the request goes out
    for _ in range(3):
        assert (await _request(app, ANSWER_PATH))[1]["body"] == b'{"data":{"a":1}}'
    assert owner.connections == 3  # each reuse failed unanswered, then a new one took it
    assert len(owner.seen) == 3


@pytest.mark.parametrize(("answer", "method", "body"), [
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
     b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: t\r\n\r\n", "POST", b"hello world"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n", "HEAD", b""),
    (b"HTTP/1.1 204 No Content\r\n\r\n", "POST", b""),
])
async def test_answers_without_a_content_length_body_keep_the_connection(
    owner: Owner, peers: PeerConnections, answer: bytes, method: str, body: bytes,
) -> None:
    owner.answer = answer
    app = _forwarding(Local(), owner, peers)
    for _ in range(3):
        sent = await _request(app, ANSWER_PATH, method=method)
        assert sent[1]["body"] == body
        assert (b"transfer-encoding", b"chunked") not in sent[0]["headers"]
    assert owner.connections == 1


async def test_an_answer_that_closes_the_connection_is_not_kept(
    owner: Owner, peers: PeerConnections,
) -> None:
    owner.answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    app = _forwarding(Local(), owner, peers)
    for _ in range(2):
        sent = await _request(app, ANSWER_PATH)
        assert (sent[0]["headers"], sent[1]["body"]) == ([(b"content-length", b"2")], b"ok")
    assert owner.connections == 2


async def test_an_owner_that_does_not_answer_gets_a_503(
    unused_tcp_port: int, peers: PeerConnections,
) -> None:
    async def route(call_id: str) -> str | None:
        return f"http://127.0.0.1:{unused_tcp_port}"

    app = OwnerForwarding(Local(), route, peers, "node-b", max_body_size=1024)
    sent = await _request(app, "/v2/calls/v3:theirs/actions/hangup")
    assert sent[0]["status"] == 503
    error = orjson.loads(sent[1]["body"])["errors"][0]
    assert error["code"] == "10011" and "v3:theirs" in error["detail"]


async def test_a_garbled_answer_gets_a_503(owner: Owner, peers: PeerConnections) -> None:
    owner.answer = b"SIP/2.0 200 OK\r\n\r\n"
    sent = await _request(_forwarding(Local(), owner, peers), ANSWER_PATH)
    assert sent[0]["status"] == 503


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffff\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n",
])
async def test_an_answer_body_over_the_limit_gets_a_503(
    owner: Owner, peers: PeerConnections, answer: bytes,
) -> None:
    """A peer's answer body is bounded (MAX_BODY_SIZE) before anything is read into
    memory: a length or chunk size past it (or below zero) is refused at once."""
    owner.answer = answer
    sent = await _request(_forwarding(Local(), owner, peers), ANSWER_PATH)
    assert sent[0]["status"] == 503


async def test_a_body_over_the_limit_is_refused_by_the_local_limit(
    owner: Owner, peers: PeerConnections,
) -> None:
    local = Local()
    app = _forwarding(local, owner, peers, max_body_size=4)
    await _request(app, ANSWER_PATH, b"12345")
    assert local.calls == 1 and owner.seen == []


async def test_idle_connections_are_closed_after_their_time(
    owner: Owner, peers: PeerConnections, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_module, "IDLE_SECS", 0.2)
    other = Owner()
    server = await asyncio.start_server(other.handle, "127.0.0.1", 0)
    other.address = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        await _request(_forwarding(Local(), owner, peers), ANSWER_PATH)
        assert [t.done() for t in _owner_tasks()] == [False]  # kept
        await asyncio.sleep(0.3)
        # A request to another node closes the connection kept past its time.
        await _request(_forwarding(Local(), other, peers), ANSWER_PATH)
        await asyncio.sleep(0.1)
        assert owner.connections == 1 and other.connections == 1
        assert sum(not t.done() for t in _owner_tasks()) == 1  # the other's only
        # And the first owner gets a new one.
        await _request(_forwarding(Local(), owner, peers), ANSWER_PATH)
        assert owner.connections == 2
    finally:
        server.close()
        await peers.close()
        await server.wait_closed()
