"""A real WebSocket server playing a media-stream consumer, in a background thread.

It records every connection (request headers, each text frame parsed, how it ended)
and can be told to refuse the upgrade, to complete it late, to die without a close frame
after N frames (or at once: :meth:`Consumer.abort`), to stop reading for a while after N
frames, to close once it gets ``stop``, or to answer frames (bidirectional tests) from a
callback run on its own loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class Connection:
    path: str
    headers: dict[str, str]
    frames: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic arrival of each frame
    closed_code: int | None = None
    closed_by_server: bool | None = None  # callstream sent the first close frame
    closed_at: float | None = None  # monotonic
    paused: tuple[float, float] | None = None  # monotonic: when it stopped reading, resumed
    done: threading.Event = field(default_factory=threading.Event)
    ws: ServerConnection | None = None

    def events(self) -> list[str]:
        return [f["event"] for f in list(self.frames)]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [f for f in list(self.frames) if f["event"] == event]

    def wait_for(self, predicate: Callable[[Connection], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"consumer: condition not met in {timeout}s; events "
                             f"{self.events()[:8]}... ({len(self.frames)} frames)")


Reply = Callable[["Consumer", Connection, dict[str, Any]], list[str]]


class Consumer:
    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.refuse = False
        self.die_after: int | None = None  # frames, then the TCP connection is cut
        self.close_after: int | None = None  # frames, then a clean close 1000
        #: Seconds after ``stop``, then close 1000, as real consumers do; None: stay open
        #: (callstream then closes after its stop grace).
        self.close_on_stop: float | None = 0.0
        self.accept_delay = 0.0  # seconds before the upgrade completes
        self.pause_after: int | None = None  # frames, then it stops reading ...
        self.pause_secs = 0.0  # ... for this long
        self.reply: Reply | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    def wait_connection(self, index: int = 0, timeout: float = 20.0) -> Connection:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.connections) > index:
                    return self.connections[index]
            time.sleep(0.02)
        raise AssertionError(f"consumer: no connection #{index} within {timeout}s")

    def send(self, conn: Connection, *frames: dict[str, Any]) -> None:
        """Send frames to the server over ``conn`` (from the test thread)."""
        assert self.loop is not None and conn.ws is not None
        ws = conn.ws

        async def go() -> None:
            for frame in frames:
                await ws.send(json.dumps(frame))

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def abort(self, conn: Connection) -> None:
        """Cut ``conn``'s TCP connection now: no close frame (the server sees 1006)."""
        assert self.loop is not None and conn.ws is not None
        ws = conn.ws
        self.loop.call_soon_threadsafe(ws.transport.abort)
        assert conn.done.wait(10)

    def send_text(self, conn: Connection, text: str) -> None:
        assert self.loop is not None and conn.ws is not None
        asyncio.run_coroutine_threadsafe(conn.ws.send(text), self.loop).result(5)

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.refuse:
            return Response(HTTPStatus.FORBIDDEN, "Forbidden", Headers(), b"no\n")
        if self.accept_delay:
            await asyncio.sleep(self.accept_delay)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        conn = Connection(request.path, {k.lower(): v for k, v in request.headers.raw_items()},
                          ws=ws)
        with self._lock:
            self.connections.append(conn)
        try:
            async for message in ws:
                frame = json.loads(message)
                conn.frames.append(frame)
                conn.times.append(time.monotonic())
                if self.reply is not None:
                    for text in self.reply(self, conn, frame):
                        await ws.send(text)
                if self.pause_after is not None and len(conn.frames) == self.pause_after:
                    paused = time.monotonic()
                    await asyncio.sleep(self.pause_secs)
                    conn.paused = (paused, time.monotonic())
                if self.die_after is not None and len(conn.frames) >= self.die_after:
                    ws.transport.abort()
                    break
                if self.close_after is not None and len(conn.frames) >= self.close_after:
                    await ws.close(1000)
                    break
                if self.close_on_stop is not None and frame["event"] == "stop":
                    await asyncio.sleep(self.close_on_stop)
                    await ws.close(1000)
                    break
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        conn.closed_code = rcvd.code if rcvd is not None else 1006
        conn.closed_by_server = ws.protocol.close_rcvd_then_sent
        conn.closed_at = time.monotonic()
        conn.done.set()


@contextmanager
def ws_consumer(*, rcvbuf: int | None = None, max_queue: int = 16) -> Iterator[Consumer]:
    """A consumer on a loopback port; ``rcvbuf`` (SO_RCVBUF) and ``max_queue`` (frames
    the library reads ahead) small make a pause back up to callstream quickly."""
    consumer = Consumer()
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def main() -> None:
        nonlocal stop
        consumer.loop = asyncio.get_running_loop()
        stop = consumer.loop.create_future()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # accept() inherits
        sock.bind(("127.0.0.1", 0))
        async with serve(consumer._handler, sock=sock, compression=None,
                         process_request=consumer._process_request,
                         max_size=None, max_queue=max_queue) as server:
            consumer.port = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await stop

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10), "consumer did not start"
    try:
        yield consumer
    finally:
        assert consumer.loop is not None and stop is not None
        consumer.loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
