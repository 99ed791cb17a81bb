"""Kept-alive HTTP/1.1 connections to the other nodes, for the commands forwarded to a
call's owner (:mod:`.forward`).

A new connection for each forwarded command cost both nodes a TCP handshake, an accept
and a teardown; now each peer (a node's address) has at most ``MAX_CONNECTIONS_PER_PEER``
connections, used one request at a time (HTTP/1.1 without pipelining) and kept between
requests for ``IDLE_SECS``, below uvicorn's keep-alive timeout (5 s by default), after
which the peer closes them itself. A request that finds every connection of its peer busy
waits for one to come free (logged at most once a minute per peer). Idle connections
past their time, or that the peer has closed, are closed when a request next passes
(any peer's), and all of them by :meth:`PeerConnections.close` at shutdown.

A kept connection can be closed by the peer just as a request goes out on it: if the
peer closes or resets it without a byte of answer, the request is sent again, once, on a
new connection. That is safe for any method: uvicorn closes only a connection with no
request in progress, so the first one was never read.

The answer is read as the peer sent it: a body of ``Content-Length`` bytes, chunked (the
chunks joined), none (``HEAD``, 204, 304), or, without any of those, what comes
until the peer closes (and the connection is not kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Most connections to one peer at once; more concurrent requests wait for one.
MAX_CONNECTIONS_PER_PEER = 16
#: Seconds an idle connection is kept: below the peer's keep-alive timeout (5 s
#: default), so the peer rarely closes one as a request goes out on it.
IDLE_SECS = 2.0
#: Seconds between two logs that a peer's connections were all busy.
WAIT_LOG_SECS = 60.0
#: Most bytes of an answer's status line and headers.
MAX_HEAD_SIZE = 64 * 1024
#: Most bytes of an answer's body (a list of every live call of a big node fits).
MAX_BODY_SIZE = 64 * 1024 * 1024
_BODILESS_STATUSES = (204, 304)


@dataclass(frozen=True, slots=True)
class Answer:
    """A peer's HTTP answer: header names lowercased, values as sent, the body whole."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: Whether the connection may carry another request.
    reusable: bool


class PeerUnanswered(ConnectionError):
    """The peer closed the connection before a byte of its answer."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return (now - self.idle_since < IDLE_SECS and not self.reader.at_eof()
                and not self.writer.is_closing())


@dataclass(slots=True)
class _Peer:
    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS_PER_PEER))
    idle: list[_Connection] = field(default_factory=list)  # the most recent last
    #: Requests holding or waiting for a connection: while any, the peer is kept.
    requests: int = 0
    waits_logged_at: float = -WAIT_LOG_SECS

    def take_idle(self, now: float) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable(now):
                return conn
            conn.writer.close()
        return None


class PeerConnections:
    """This node's connections to the other nodes, a bounded pool per peer."""

    def __init__(self) -> None:
        self._peers: dict[tuple[str, int], _Peer] = {}
        self._next_sweep = 0.0
        self._closed = False

    async def request(self, host: str, port: int, request: bytes, *,
                      head_only: bool = False) -> Answer:
        """Send ``request`` (a whole HTTP/1.1 request, as bytes) to ``host:port`` and
        return its answer; ``head_only``: a ``HEAD`` request, whose answer has no body.

        Raises:
            OSError: the peer cannot be reached, or closed the connection mid-answer.
            ValueError: the answer is not HTTP/1.1.
        """
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        peer = self._peers.get((host, port))
        if peer is None:
            peer = self._peers[host, port] = _Peer()
        if peer.slots.locked() and now - peer.waits_logged_at >= WAIT_LOG_SECS:
            peer.waits_logged_at = now
            log.warning("cluster: all %d connections to the node at %s:%d are busy; "
                        "forwarded requests wait for one", MAX_CONNECTIONS_PER_PEER, host,
                        port)
        peer.requests += 1
        try:
            async with peer.slots:
                conn = peer.take_idle(time.monotonic())  # after any wait for a slot
                if conn is not None:
                    try:
                        return await self._exchange(peer, conn, request, head_only)
                    except PeerUnanswered:
                        pass  # closed by the peer as idle: the request was not read
                reader, writer = await asyncio.open_connection(host, port,
                                                               limit=MAX_HEAD_SIZE)
                return await self._exchange(peer, _Connection(reader, writer), request,
                                            head_only)
        finally:
            peer.requests -= 1

    async def _exchange(self, peer: _Peer, conn: _Connection, request: bytes,
                        head_only: bool) -> Answer:
        kept = False
        try:
            # No drain: the request is bounded (the body limit) and read at once.
            conn.writer.write(request)
            answer = await _read_answer(conn.reader, head_only)
            if answer.reusable and not self._closed:
                conn.idle_since = time.monotonic()
                peer.idle.append(conn)
                kept = True
            return answer
        finally:
            if not kept:  # an error, a cancellation or a closing answer
                conn.writer.close()

    def _sweep(self, now: float) -> None:
        """Close the idle connections past their time or closed by their peer; forget
        the peers with none left and no request in progress."""
        self._next_sweep = now + IDLE_SECS
        for address, peer in list(self._peers.items()):
            kept = []
            for conn in peer.idle:
                if conn.usable(now):
                    kept.append(conn)
                else:
                    conn.writer.close()
            peer.idle = kept
            if not kept and not peer.requests:
                del self._peers[address]

    async def close(self) -> None:
        """Close every idle connection; those in use are closed when their answer is
        read."""
        self._closed = True
        writers = [conn.writer for peer in self._peers.values() for conn in peer.idle]
        self._peers.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):  # the peer had reset it: closed all the same
                await writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader, head_only: bool) -> Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise PeerUnanswered("the node closed the connection without answering") from None
        raise ConnectionError("the node closed the connection mid-answer") from None
    except ConnectionResetError:
        # Before the answer's head: the reset that a request sent after the peer closed
        # the connection gets (uvicorn resets no connection it is answering on).
        raise PeerUnanswered("the node reset the connection without answering") from None
    except asyncio.LimitOverrunError:
        raise ValueError("the node's answer head is over the limit") from None
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version != b"HTTP/1.1" or not code.isdigit():
        raise ValueError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
    status = int(code)
    headers = []
    length: int | None = None
    chunked = False
    reusable = True
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"a header line without a colon: {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers.append((name, value))
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
        elif name == b"connection":
            reusable = b"close" not in value.lower()
    try:
        if head_only or status in _BODILESS_STATUSES:
            body = b""
        elif chunked:
            body = await _chunks(reader)
        elif length is not None:
            if not 0 <= length <= MAX_BODY_SIZE:
                raise ValueError(f"the node's answer has a content-length of {length}, "
                                 f"outside 0 to {MAX_BODY_SIZE}")
            body = await reader.readexactly(length)
        else:  # delimited by the close
            body, reusable = await reader.read(MAX_BODY_SIZE + 1), False
            if len(body) > MAX_BODY_SIZE:
                raise ValueError(f"the node's answer body is over {MAX_BODY_SIZE} bytes")
    except asyncio.IncompleteReadError:
        raise ConnectionError("the node closed the connection mid-answer") from None
    except asyncio.LimitOverrunError:
        raise ValueError("a chunk size line of the node's answer is over the limit") from None
    return Answer(status, headers, body, reusable)


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).partition(b";")[0], 16)
        if not 0 <= size <= MAX_BODY_SIZE - len(body):
            raise ValueError(f"the node's chunked answer is over {MAX_BODY_SIZE} bytes")
        if not size:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # a trailer field
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk of the node's answer does not end with CRLF")
