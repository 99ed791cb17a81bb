"""The HTTP front over real loopback sockets: two upstream 'workers' that answer who they
are, a directory that routes one call to each."""

from __future__ import annotations

import asyncio

import orjson

from callstream.api.http_protocol import HttpLimits
from callstream.workers.http_front import front_factory


async def _worker(name: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                writer.close()
                return
            path = head.split(b" ", 2)[1]
            if path == b"/metrics" and b"bad-key" in head:
                body = b"who are you"
                writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 11\r\n\r\n" + body)
                continue
            if path == b"/metrics":
                body = b"# TYPE calls gauge\ncalls 2.0\nonly_" + name + b" 1.0\n"
            else:
                body = name + b" " + path
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode()
                         + b"\r\nx-odd:  kept  as is\r\n\r\n" + body)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class Directory:
    def __init__(self, ports: dict[str | None, int | str],
                 keys: dict[str, int | str] | None = None) -> None:
        self.ports = ports
        self.keys = keys or {}

    def port_for(self, call_control_id: str | None) -> int | str:
        return self.ports.get(call_control_id, self.ports[None])

    def port_for_key(self, key: str) -> int | str:
        return self.keys.get(key, "no worker has it")

    def running_ports(self) -> list[int]:
        return sorted({p for p in self.ports.values() if isinstance(p, int)})

    def own_metrics(self) -> str:
        return "# TYPE calls gauge\ncalls 1.0\n"


async def _ask(port: int, *paths: str, key: str = "k") -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for path in paths:  # one connection, one request at a time
        writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {key}\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answers.append(head + await reader.readexactly(length))
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.05)  # the front closes its upstream connections
    return answers


async def test_requests_reach_their_worker_and_answers_pass_unchanged() -> None:
    w0, p0 = await _worker(b"w0")
    w1, p1 = await _worker(b"w1")
    directory = Directory({None: p0, "v3:a": p0, "v3:b": p1, "v3:dead": "worker restarting"},
                          {"tok1": p1, "sess1": p1})
    front = await asyncio.get_running_loop().create_server(
        front_factory(directory), "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    try:
        answers = await _ask(port, "/v2/calls/v3:b/actions/hangup", "/v2/calls/v3:a",
                             "/v2/calls", "/v2/calls/v3:b", "/v2/calls/v3:dead")
        assert answers[0] == (b"HTTP/1.1 200 OK\r\ncontent-length: 32\r\nx-odd:  kept  as is"
                              b"\r\n\r\nw1 /v2/calls/v3:b/actions/hangup")
        assert answers[1].endswith(b"\r\n\r\nw0 /v2/calls/v3:a")
        assert answers[2].endswith(b"\r\n\r\nw0 /v2/calls")
        assert answers[3].endswith(b"\r\n\r\nw1 /v2/calls/v3:b")
        head, _, body = answers[4].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert orjson.loads(body) == {"errors": [{
            "code": "10011", "title": "Service unavailable", "detail": "worker restarting"}]}
        # A browser call's token and session name their worker; an API key does not.
        (offer,) = await _ask(port, "/v2/webrtc/sessions", key="Bearer wrt_tok1")
        assert offer.endswith(b"\r\n\r\nw1 /v2/webrtc/sessions")
        (keyed,) = await _ask(port, "/v2/webrtc/sessions", key="Bearer KEY123")
        assert keyed.endswith(b"\r\n\r\nw0 /v2/webrtc/sessions")
        (hangup,) = await _ask(port, "/v2/webrtc/sessions/sess1")
        assert hangup.endswith(b"\r\n\r\nw1 /v2/webrtc/sessions/sess1")
        # /metrics: every worker's samples, summed; a refusal passes through unchanged.
        (metrics,) = await _ask(port, "/metrics")
        head, _, body = metrics.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 53" in head
        assert body.startswith(b"# TYPE calls gauge\ncalls 5.0\n")
        assert sorted(body.splitlines()[2:]) == [b"only_w0 1.0", b"only_w1 1.0"]
        (refused,) = await _ask(port, "/metrics", key="bad-key")
        assert refused == b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 11\r\n\r\nwho are you"
        # Answers the front makes itself close a `Connection: close` request's
        # connection, as a worker's do: a client reading to the end gets its end.
        for path, status in (("/metrics", b"200"), ("/v2/calls/v3:dead", b"503")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: k\r\n"
                         "connection: close\r\n\r\n".encode())
            whole = await asyncio.wait_for(reader.read(), 5)
            assert whole.startswith(b"HTTP/1.1 " + status + b" ")
            writer.close()
            await writer.wait_closed()
    finally:
        for server in (front, w0, w1):
            server.close()
            await server.wait_closed()


async def test_the_fronts_limits_answer_before_anything_is_forwarded() -> None:
    w0, p0 = await _worker(b"w0")
    limits = HttpLimits(max_head_size=200, header_timeout=0.2, max_connections=2)
    front = await asyncio.get_running_loop().create_server(
        front_factory(Directory({None: p0}), limits), "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]

    async def answer_to(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        return got

    try:
        too_big = await answer_to(b"GET /v2/calls HTTP/1.1\r\nx-pad: " + b"a" * 300 + b"\r\n\r\n")
        assert too_big.startswith(b"HTTP/1.1 431 ")
        slow = await answer_to(b"GET /v2/calls HTTP/1.1\r\nhost:")
        assert slow.startswith(b"HTTP/1.1 408 ")
        assert await answer_to(b"") == b"", "no request begun: closed, no answer"
        # Only the head counts against its limit: a body ten times the size is forwarded.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v2/calls HTTP/1.1\r\ncontent-length: 2000\r\n\r\n" + b"a" * 2000)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 200 OK")
        writer.close()
        await writer.wait_closed()
        # A kept-alive connection's next head has its own clock, from its first byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/calls HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(reader.readexactly(len(b"w0 /v2/calls")), 5)
        writer.write(b"GET /v2/calls HTTP/1.1\r\n")
        late = await asyncio.wait_for(reader.read(), 5)
        assert late.startswith(b"HTTP/1.1 408 "), late
        writer.close()
        await writer.wait_closed()
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        over = await answer_to(b"")
        assert over.startswith(b"HTTP/1.1 503 ") and b"Too many connections" in over
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
    finally:
        for server in (front, w0):
            server.close()
            await server.wait_closed()
