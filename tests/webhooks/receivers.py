"""Real HTTP/1.1 webhook receivers on 127.0.0.1 that succeed or fail in chosen ways.

Each :class:`Receiver` is an asyncio TCP server speaking just enough HTTP/1.1 (keep-alive,
``content-length`` bodies) for webhooks. What it answers is decided per request by a
``behaviour``: a :class:`Reply`, or a function of the :class:`Received` request returning
one, so a test can fail the first N attempts and accept the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() when the request was complete
    connection: int  # which TCP connection carried it (keep-alive shows as reuse)

    @property
    def query(self) -> str:
        return urlsplit(self.path).query


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    trickle: float | None = None  # seconds between body bytes (a slow body)
    hang: bool = False  # never answer
    drop: bool = False  # close the connection without answering


Behaviour = Reply | Callable[[Received], Reply]
OK = Reply()
REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


class Receiver:
    """A webhook receiver; ``url`` is valid after :meth:`start`."""

    def __init__(
        self, behaviour: Behaviour = OK, *, path: str = "/hooks",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.path = path
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{port}{self.path}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests have arrived; return them all."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        conn = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, path, headers, body, time.monotonic(), conn)
                self.requests.append(request)
                self._arrived.set()
                behaviour = self.behaviour
                reply = behaviour if isinstance(behaviour, Reply) else behaviour(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if not await self._answer(writer, reply):
                        return
                except ConnectionError:
                    return  # the sender went away (a killed process, a timeout)
                finally:
                    self.in_flight -= 1
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, reply: Reply) -> bool:
        if reply.hang:
            await asyncio.Event().wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            return False
        head = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\n"
        headers = {"content-length": str(len(reply.body)), **reply.headers}
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        if reply.trickle is None:
            writer.write(reply.body)
            await writer.drain()
            return True
        await writer.drain()
        for i in range(len(reply.body)):
            await asyncio.sleep(reply.trickle)
            writer.write(reply.body[i : i + 1])
            await writer.drain()
        return True


def closed_port_url(path: str = "/hooks") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}{path}"
