"""The supervisor's HTTP listener: each request goes, bytes unchanged, to one worker.

Per client connection, an ``httptools`` parser finds where each request starts and what
its URL is; the request's bytes go to the chosen worker (:mod:`.routing`) over a
loopback connection kept for this client connection, and that worker's answer comes back
byte for byte: a worker's answer through the front is the answer a single process gives.
Clients send one request at a time per connection (HTTP/1.1 without pipelining, as every
SDK does); a connection that pipelines gets its requests answered by the first one's
worker.

The listener's limits are the single process's (:class:`HttpLimits`: connections, head
size, head timeout), applied here before anything is forwarded, the same way and with
the same answers (:mod:`callstream.api.http_protocol`): only a head's bytes count
against its size, its clock starts on connect and at the first byte of each next
request, and a connection that never sent a byte is closed without an answer.

A call whose owner is not running (restarting after a crash) gets a 503 with the Telnyx
error envelope; its calls are ended by the restarted worker.

``GET /metrics`` is asked of every running worker, the same request bytes to each, and
answered with their expositions and the supervisor's own summed (:mod:`.metrics_merge`);
a worker that refuses it (a bad key) has its answer passed on unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

import httptools
import orjson

from callstream.api.http_protocol import HttpLimits, error_message
from callstream.http_fetch import fetch
from callstream.metrics import HTTP_LIMITED
from callstream.workers.metrics_merge import merge_expositions
from callstream.workers.routing import METRICS, call_of_path, webrtc_key

log = logging.getLogger(__name__)

#: Bytes a client may send before its request's worker is connected.
MAX_BUFFERED = 1 << 20


class WorkerDirectory(Protocol):
    """What the front asks the supervisor."""

    def port_for(self, call_control_id: str | None) -> int | str:
        """The HTTP port of the worker that answers a request about this call (any
        running worker, round-robin, for ``None`` or a call no worker owns: it answers
        404 for an unknown one), or why none can."""

    def port_for_key(self, key: str) -> int | str:
        """The HTTP port of the worker a browser call's token or session names
        (:func:`~callstream.workers.routing.webrtc_key`), or why it cannot answer."""

    def running_ports(self) -> list[int]:
        """The HTTP port of every running worker."""

    def own_metrics(self) -> str:
        """The supervisor's own exposition (webhook delivery runs there)."""


def _unavailable(detail: str) -> bytes:
    body = orjson.dumps({"errors": [{"code": "10011", "title": "Service unavailable",
                                     "detail": detail}]})
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nretry-after: 1\r\n\r\n"
            + body)


class _Listener:
    """What the connections of one front share: its limits and how many are open."""

    def __init__(self, directory: WorkerDirectory, limits: HttpLimits) -> None:
        self.directory = directory
        self.limits = limits
        self.open = 0


class _Upstream(asyncio.Protocol):
    """A connection to one worker, on behalf of one client connection."""

    def __init__(self, client: FrontConnection, port: int) -> None:
        self.client = client
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.pending:
            self.transport.write(bytes(self.pending))
            self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.client.answer(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.upstream_lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending += data
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FrontConnection(asyncio.Protocol):
    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.directory = listener.directory
        self.in_head = True
        self.head_bytes = 0  # of the current request's head, fed to the parser so far
        self.head_timer: asyncio.TimerHandle | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstreams: dict[int, _Upstream] = {}
        self.target: _Upstream | None = None  # where the current request's bytes go
        self.unrouted = bytearray()  # bytes of a request whose head is not complete
        self.url = bytearray()
        self.authorization: bytes | None = None
        self.refused = False  # the current request was answered here (503)
        self.merging = False  # the current request is /metrics: asked of every worker
        self.keep_alive = True  # the current request lets the connection stay open
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        listener = self.listener
        listener.open += 1
        limits = listener.limits
        if listener.open > limits.max_connections:
            HTTP_LIMITED.labels("connections").inc()
            self._refuse_and_close(error_message(
                503, "Service Unavailable", "10015", "Too many connections",
                f"The server holds its limit of {limits.max_connections} HTTP connections; "
                "retry later."))
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self.head_timer = asyncio.get_running_loop().call_later(
            self.listener.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.in_head:
            return
        HTTP_LIMITED.labels("header_timeout").inc()
        if self.head_bytes == 0:
            self._close()  # no request begun: nothing to answer
            return
        self._refuse_and_close(error_message(
            408, "Request Timeout", "10015", "Request timeout",
            f"The request headers did not arrive within "
            f"{self.listener.limits.header_timeout:g} s."))

    def _refuse_and_close(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        max_head = self.listener.limits.max_head_size
        while data:
            if self.transport is None or self.transport.is_closing():
                return
            if not self.in_head:
                chunk, data = data, b""
            else:
                # Never feed the parser past the limit: it buffers a header until it ends.
                allowed = max_head - self.head_bytes
                if allowed <= 0:
                    HTTP_LIMITED.labels("head_size").inc()
                    self._refuse_and_close(error_message(
                        431, "Request Header Fields Too Large", "10015",
                        "Request header fields too large",
                        f"The request line and headers are over the {max_head}-byte limit."))
                    return
                chunk, data = data[:allowed], data[allowed:]
                self.head_bytes += len(chunk)
            self._feed(chunk)
            if self.in_head and self.head_bytes and self.head_timer is None:
                # A head begun and not finished on a kept-alive connection: its clock
                # starts now.
                self._arm_head_timer()

    def _feed(self, data: bytes) -> None:
        self.unrouted += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an upgraded connection's bytes go on to its worker as they come
        except httptools.HttpParserError:
            # The worker's own parser answers the error: forward what came.
            if self.target is None:
                self._forward(self.directory.port_for(None))
        if self.target is not None and self.unrouted:
            self.target.write(bytes(self.unrouted))
            self.unrouted.clear()
        elif self.refused or self.merging:
            self.unrouted.clear()
        elif len(self.unrouted) > MAX_BUFFERED:
            self._close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url.clear()
        self.authorization = None
        self.target = None
        self.refused = False
        self.merging = False
        self.keep_alive = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_message_complete(self) -> None:
        self.in_head = True
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        # Answers made here (merged /metrics, 503s) must close a `Connection: close`
        # (or HTTP/1.0) request's connection themselves: its client reads to the end.
        self.keep_alive = self.parser.should_keep_alive()
        url = bytes(self.url)
        if url.partition(b"?")[0] == METRICS:
            self.merging = True
            task = asyncio.ensure_future(self._merge_metrics(bytes(self.unrouted)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        key = webrtc_key(url, self.authorization)
        if key is not None:
            self._forward(self.directory.port_for_key(key))
        else:
            self._forward(self.directory.port_for(call_of_path(url)))

    async def _merge_metrics(self, request: bytes) -> None:
        ports = self.directory.running_ports()
        if not ports:
            self._refuse("no worker is running")
            return
        answers = await asyncio.gather(*(fetch("127.0.0.1", port, request) for port in ports),
                                       return_exceptions=True)
        heads_bodies = [a for a in answers if not isinstance(a, BaseException)]
        if not heads_bodies:
            self._refuse("no worker answered")
            return
        for head, body in heads_bodies:
            if not head.startswith(b"HTTP/1.1 200"):
                self._answer_here(head + body)
                return
        merged = merge_expositions([*(body.decode() for _, body in heads_bodies),
                                    self.directory.own_metrics()]).encode()
        head = heads_bodies[0][0]
        lines = [line for line in head.split(b"\r\n")
                 if line and not line.lower().startswith(b"content-length:")]
        self._answer_here(b"\r\n".join(lines) + b"\r\ncontent-length: "
                          + str(len(merged)).encode() + b"\r\n\r\n" + merged)

    def _forward(self, port: int | str) -> None:
        """Send the request to the worker at ``port``, or refuse it (``port`` says why)."""
        if isinstance(port, str):
            self._refuse(port)
            return
        upstream = self.upstreams.get(port)
        if upstream is None or upstream.closed:
            upstream = self.upstreams[port] = self._connect(port)
        self.target = upstream

    def _refuse(self, detail: str) -> None:
        self.refused = True
        self._answer_here(_unavailable(detail))

    def _answer_here(self, data: bytes) -> None:
        """An answer made by the front, not a worker's passed through."""
        self.answer(data)
        if not self.keep_alive:
            self._close()

    def _connect(self, port: int) -> _Upstream:
        upstream = _Upstream(self, port)
        loop = asyncio.get_running_loop()

        def connected(task: asyncio.Future[tuple[asyncio.Transport, _Upstream]]) -> None:
            if task.cancelled() or task.exception() is not None:
                log.warning("HTTP front: cannot reach the worker at port %d: %s", port,
                            None if task.cancelled() else task.exception())
                upstream.closed = True
                self._refuse("a worker did not answer")

        task = asyncio.ensure_future(
            loop.create_connection(lambda: upstream, "127.0.0.1", port))
        task.add_done_callback(connected)
        return upstream

    def answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def upstream_lost(self, upstream: _Upstream) -> None:
        if self.upstreams.get(upstream.port) is upstream:
            del self.upstreams[upstream.port]
        if self.target is upstream:
            # The worker closed mid-answer (or died): the client sees the close.
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.open -= 1
        if self.head_timer is not None:
            self.head_timer.cancel()
        for upstream in list(self.upstreams.values()):
            upstream.close()
        self.upstreams.clear()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def front_factory(directory: WorkerDirectory,
                  limits: HttpLimits = HttpLimits()) -> Callable[[], FrontConnection]:
    listener = _Listener(directory, limits)
    return lambda: FrontConnection(listener)
