"""SIP over TCP: the connections, accepted and opened, each framed into messages.

:class:`TcpConnections` keys every connection by the peer's address, so an answer goes
back over the connection its request came on; a message for an address with no
connection (``;transport=tcp`` targets, Contacts) opens one, and ``on_failed`` hears
when that fails. It hands each whole message to ``on_message``; it knows nothing of
what the messages say, so one process's :class:`~callstream.sip.transport.SipTransport`
and the supervisor of ``serve --workers`` (which relays each message to the worker that
owns its Call-ID) both use it.

Limits (DESIGN rule 7): a connection that carries no bytes for ``idle_timeout`` seconds
is closed (RFC 5626 CRLF keep-alives count as bytes); at most ``max_inbound``
accepted connections are held, one more is closed as it is accepted (the ones opened
to send are not counted: they are bounded by what is sent); a message over the
framer's size limits closes its connection; when its header section could be read,
``on_message`` gets it first (the endpoint answers it 513) and the connection closes
once that answer is written, or after ``ANSWER_GRACE`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from .events import Addr
from .exceptions import FramingError
from .framing import StreamFramer
from .transport_stats import TransportStats

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_PENDING_PER_CONNECTION",
    "MAX_TCP_CONNECTIONS",
    "TCP_IDLE_TIMEOUT",
    "TcpConnections",
    "plain_addr",
]

logger = logging.getLogger(__name__)

#: Seconds to wait for an outbound TCP connection.
CONNECT_TIMEOUT = 5.0
#: Default seconds a TCP connection may carry no bytes before it is closed (Kamailio's
#: and OpenSIPS's connection lifetime is 120 s too).
TCP_IDLE_TIMEOUT = 120.0
#: Default most inbound TCP connections held at once.
MAX_TCP_CONNECTIONS = 256
#: Most messages queued for a TCP connection that is still being opened.
MAX_PENDING_PER_CONNECTION = 64
#: Seconds a connection whose stream could not be framed waits for the answer to the
#: head it still had (a 513) before it is closed: the answer may come from another
#: process (``serve --workers``).
ANSWER_GRACE = 2.0


def plain_addr(addr: Any) -> Addr:
    """``(host, port)`` from a socket address, IPv4-mapped IPv6 turned back into IPv4."""
    host, port = str(addr[0]), int(addr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpConnections, key: Addr | None = None) -> None:
        self._owner = owner
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self.key = key
        self.inbound = key is None  # accepted, not opened by us
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._close_after_answer = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        if self.key is None:
            self.key = plain_addr(transport.get_extra_info("peername"))
        if self._owner._connection_made(self.key, self):
            loop = self._owner._loop
            self._last_active = loop.time()
            self._idle_timer = loop.call_at(
                self._last_active + self._owner.idle_timeout, self._idle_check
            )

    def data_received(self, data: bytes) -> None:
        self._last_active = self._owner._loop.time()
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            logger.info("closing TCP %s: %s", self.key, exc)
            self._owner.stats.framing_errors += 1
            if exc.head is not None and self.key is not None and self._transport is not None:
                # The request can still be answered: the endpoint parses the head,
                # finds the body over its limit and answers 513 Message Too Large;
                # the connection reads no more and closes once that is written.
                self._transport.pause_reading()
                self._close_after_answer = True
                self._owner.on_message(exc.head, self.key)
                if not self._transport.is_closing():
                    self._owner._loop.call_later(ANSWER_GRACE, self.close)
                return
            self.close()
            return
        for message in messages:
            if self.key is not None:
                self._owner.on_message(message, self.key)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.key is not None:
            self._owner._connection_lost(self.key, self)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._last_active = self._owner._loop.time()
            self._transport.write(data)
            if self._close_after_answer:
                self.close()

    def _idle_check(self) -> None:
        # One timer per connection, moved on only when it fires: bytes in or out just
        # note the time, so a busy connection costs no timer churn.
        timeout = self._owner.idle_timeout
        due = self._last_active + timeout
        if due > self._owner._loop.time():
            self._idle_timer = self._owner._loop.call_at(due, self._idle_check)
            return
        self._idle_timer = None
        self._owner.stats.tcp_idle_closed += 1
        logger.info("closing TCP %s: idle for %.0f s", self.key, timeout)
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpConnections:
    """Every SIP connection of one listener: see the module's doc.

    Args:
        on_message: Called with each whole message and the peer's address.
        on_failed: Called with an address a connection could not be opened to; the
            messages queued for it are dropped.
        stats: Where the TCP counters go (shared with the UDP side's).
        idle_timeout: Seconds a connection may carry no bytes.
        max_inbound: Most accepted connections held at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_message: Callable[[bytes, Addr], None],
        on_failed: Callable[[Addr], None],
        stats: TransportStats,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_inbound: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self.on_message = on_message
        self.on_failed = on_failed
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.max_inbound = max_inbound
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._inbound: set[_Connection] = set()
        self._connections: dict[Addr, _Connection] = {}
        self._pending: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def listen(self, host: str, port: int) -> None:
        """Accept connections on ``host:port`` (the UDP port's twin).

        Raises:
            OSError: The address cannot be bound.
        """
        self._server = await self._loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )

    def send(self, data: bytes, addr: Addr) -> None:
        """Write ``data`` on the connection to ``addr``, opening one if there is none."""
        if self._closed:
            return
        connection = self._connections.get(addr)
        if connection is not None:
            connection.write(data)
            return
        pending = self._pending.get(addr)
        if pending is not None:
            if len(pending) < MAX_PENDING_PER_CONNECTION:
                pending.append(data)
            return
        self._pending[addr] = [data]
        task = self._loop.create_task(self._connect(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close the listener, every connection and the connects under way."""
        if self._closed:
            return
        self._closed = True
        for connection in list(self._connections.values()):
            connection.close()
        self._connections.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connect(self, addr: Addr) -> None:
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: _Connection(self, key=addr), *addr),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError) as exc:
            logger.debug("TCP connect to %s failed: %s", addr, exc)
            self._pending.pop(addr, None)
            if not self._closed:
                self.on_failed(addr)

    def _connection_made(self, key: Addr, connection: _Connection) -> bool:
        """Take a new connection; False when it was closed instead."""
        if self._closed:
            connection.close()
            return False
        if connection.inbound:
            if len(self._inbound) >= self.max_inbound:
                self.stats.tcp_refused += 1
                logger.warning("refusing TCP %s: %d inbound connections is the limit",
                               key, self.max_inbound)
                connection.close()
                return False
            self._inbound.add(connection)
        self.stats.tcp_connections += 1
        self._connections[key] = connection
        for data in self._pending.pop(key, []):
            connection.write(data)
        return True

    def _connection_lost(self, key: Addr, connection: _Connection) -> None:
        self._inbound.discard(connection)
        if self._connections.get(key) is connection:
            del self._connections[key]
