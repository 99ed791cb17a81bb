"""The asyncio edge of the SIP layer: sockets and one timer around a SipEndpoint.

:class:`SipTransport` binds UDP and TCP on one ``host:port`` (IPv4 or IPv6),
feeds every datagram and every TCP-framed message to its
:class:`~callstream.sip.endpoint.SipEndpoint` with ``loop.time()``, sends what
the endpoint wants sent, keeps a single :class:`asyncio.TimerHandle` armed for
:meth:`~callstream.sip.endpoint.SipEndpoint.next_deadline`, and hands each
event to ``on_event`` synchronously, in order.

    def on_event(event: SipEvent) -> None:
        if isinstance(event, IncomingCall):
            with sip.command() as now:
                sip.endpoint.answer(event.handle, answer_sdp, now)

    sip = await SipTransport.start("127.0.0.1", 5060, on_event)
    ...
    await sip.close()

Commands go straight to ``sip.endpoint``; wrapping them in
``with sip.command() as now:`` supplies the time and sends the result when
the block ends (``on_event`` may do this too: output is flushed after the
callback returns, in order).

TCP: inbound connections are keyed by the peer's address, so responses go
back over the connection the request came on. A message for a TCP address
with no connection (``;transport=tcp`` targets, Contacts) opens one; if that
fails, the endpoint hears :meth:`~SipEndpoint.transport_failed`.

TCP limits (DESIGN rule 7): a connection that carries no bytes for
``tcp_idle_timeout`` seconds is closed (RFC 5626 CRLF keep-alives count as
bytes); at most ``max_tcp_connections`` inbound connections are held, one more
is closed as it is accepted (the ones we open to send are not counted: they are
bounded by what we send); a message over the framer's size limits closes its
connection, after a 513 when its header section could be read.

Works the same on the default loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from callstream.listening import ListenError

from .endpoint import SipEndpoint
from .events import Addr, SipEvent
from .exceptions import FramingError
from .framing import StreamFramer
from .records import TCP, UDP, Datagram

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_TCP_CONNECTIONS",
    "TCP_IDLE_TIMEOUT",
    "SipTransport",
    "TransportStats",
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
#: Tries to find a port free for both UDP and TCP when binding port 0.
BIND_ATTEMPTS = 10
#: Bind addresses that mean "every interface": no use in a Via or Contact.
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(slots=True)
class TransportStats:
    """Counters for the socket side."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    tcp_connections: int = 0
    framing_errors: int = 0
    tcp_refused: int = 0
    tcp_idle_closed: int = 0
    send_errors: int = 0
    callback_errors: int = 0


def _bind_cause(exc: OSError) -> OSError:
    """The error with an errno: uvloop raises "could not bind to local_addr" without
    one, from the bind's own error."""
    cause = exc
    while cause.errno is None and isinstance(cause.__cause__, OSError):
        cause = cause.__cause__
    return cause


def _plain_addr(addr: Any) -> Addr:
    """``(host, port)`` from a socket address, IPv4-mapped IPv6 turned back into IPv4."""
    host, port = str(addr[0]), int(addr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._received(data, _plain_addr(addr), UDP)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) carry no address we could act on.
        logger.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, owner: SipTransport, key: Addr | None = None) -> None:
        self._owner = owner
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self.key = key
        self.inbound = key is None  # accepted, not opened by us
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        if self.key is None:
            self.key = _plain_addr(transport.get_extra_info("peername"))
        if self._owner._connection_made(self.key, self):
            self._last_active = self._owner._loop.time()
            self._idle_timer = self._owner._loop.call_at(
                self._last_active + self._owner.tcp_idle_timeout, self._idle_check
            )

    def data_received(self, data: bytes) -> None:
        self._last_active = self._owner._loop.time()
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            logger.info("closing TCP %s: %s", self.key, exc)
            self._owner.stats.framing_errors += 1
            if exc.head is not None and self.key is not None:
                # The request can still be answered: the endpoint parses the head,
                # finds the body over its limit and answers 513 Message Too Large.
                self._owner._received(exc.head, self.key, TCP)
            self.close()
            return
        for message in messages:
            if self.key is not None:
                self._owner._received(message, self.key, TCP)

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

    def _idle_check(self) -> None:
        # One timer per connection, moved on only when it fires: bytes in or out just
        # note the time, so a busy connection costs no timer churn.
        timeout = self._owner.tcp_idle_timeout
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


class SipTransport:
    """UDP and TCP sockets plus one timer driving a :class:`SipEndpoint`.

    Build it with :meth:`start`.

    Attributes:
        endpoint: The user agent core; give it commands.
        local_addr: The address actually bound (the port when 0 was asked for).
        stats: Socket-side counters.
    """

    def __init__(
        self,
        on_event: Callable[[SipEvent], None],
        loop: asyncio.AbstractEventLoop,
        *,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self.local_addr: Addr = ("", 0)
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self._inbound: set[_TcpProtocol] = set()
        self.stats = TransportStats()
        self._endpoint: SipEndpoint | None = None
        self._on_event = on_event
        self._loop = loop
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._udp_family = socket.AF_INET
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._connections: dict[Addr, _TcpProtocol] = {}
        self._pending: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolved: dict[str, str] = {}
        self._flushing = False
        self._closed = False

    @property
    def endpoint(self) -> SipEndpoint:
        """The user agent core; give it commands."""
        if self._endpoint is None:
            raise RuntimeError("SipTransport is not started")
        return self._endpoint

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        on_event: Callable[[SipEvent], None],
        *,
        tcp: bool = True,
        advertised_host: str | None = None,
        make_endpoint: Callable[[Addr], SipEndpoint] = SipEndpoint,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> SipTransport:
        """Bind ``host:port`` (UDP, and TCP unless ``tcp=False``) and start serving.

        Args:
            host: Address to bind (``"127.0.0.1"``, ``"::1"``, ``"0.0.0.0"``...).
            port: Port to bind; 0 picks a port free for both UDP and TCP.
            on_event: Called with each event, synchronously.
            tcp: Also listen on TCP.
            advertised_host: The address peers reach us at, for Via and
                Contact; required when ``host`` is a wildcard.
            make_endpoint: Builds the endpoint from ``(advertised host, bound
                port)``; pass ``functools.partial(SipEndpoint, ...)`` to set
                options.
            tcp_idle_timeout: Seconds a TCP connection may carry no bytes.
            max_tcp_connections: Most inbound TCP connections held at once.

        Raises:
            OSError: The address cannot be bound.
            ValueError: ``host`` is a wildcard and ``advertised_host`` is missing.
        """
        if advertised_host is None and host in WILDCARDS:
            raise ValueError(f"binding {host!r} needs advertised_host for Via and Contact")
        transport = cls(
            on_event,
            asyncio.get_running_loop(),
            tcp_idle_timeout=tcp_idle_timeout,
            max_tcp_connections=max_tcp_connections,
        )
        await transport._bind(host, port, tcp)
        advertised = (advertised_host or transport.local_addr[0], transport.local_addr[1])
        transport._endpoint = make_endpoint(advertised)
        return transport

    async def _bind(self, host: str, port: int, tcp: bool) -> None:
        loop = self._loop
        attempts = BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, port)
                )
            except OSError as exc:
                raise ListenError("SIP", host, port, "UDP", _bind_cause(exc)) from exc
            bound = _plain_addr(udp.get_extra_info("sockname"))
            if tcp:
                try:
                    self._server = await loop.create_server(
                        lambda: _TcpProtocol(self), host, bound[1], reuse_address=True
                    )
                except OSError as exc:
                    udp.close()
                    if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                        continue  # the UDP port's TCP twin is taken: try another
                    raise ListenError("SIP", host, bound[1], "TCP",
                                      _bind_cause(exc)) from exc
            self._udp = udp
            self._udp_family = udp.get_extra_info("socket").family
            self.local_addr = bound
            return

    # ------------------------------------------------------------ commands

    def now(self) -> float:
        """The loop's clock, the time base the endpoint runs on."""
        return self._loop.time()

    @contextlib.contextmanager
    def command(self) -> Iterator[float]:
        """``with sip.command() as now:`` give endpoint commands, then send."""
        try:
            yield self._loop.time()
        finally:
            self.flush()

    def flush(self) -> None:
        """Send the endpoint's output, deliver its events, re-arm the timer."""
        if self._flushing:
            return  # the outer flush drains what this call added
        self._flushing = True
        try:
            while True:
                for datagram in self.endpoint.datagrams_to_send():
                    self._send(datagram)
                events = self.endpoint.events_received()
                if not events:
                    break
                for event in events:
                    try:
                        self._on_event(event)
                    except Exception:
                        self.stats.callback_errors += 1
                        logger.exception("on_event failed for %r", event)
        finally:
            self._flushing = False
        self._rearm()

    async def close(self) -> None:
        """Close every socket and cancel the timer and pending connects."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
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

    # -------------------------------------------------------------- inside

    def _received(self, data: bytes, addr: Addr, transport: str) -> None:
        if self._closed or self._endpoint is None:
            return  # closed, or still binding
        self.stats.datagrams_in += 1
        try:
            self._endpoint.receive_datagram(data, addr, self._loop.time(), transport=transport)
        except Exception:
            # The endpoint promises never to raise on peer input; if it does,
            # one bad message must not take the socket down.
            logger.exception("endpoint failed on a message from %s", addr)
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if self._closed:
            return
        try:
            self.endpoint.handle_timeout(self._loop.time())
        except Exception:
            logger.exception("endpoint failed in handle_timeout")
        self.flush()

    def _rearm(self) -> None:
        if self._closed:
            return
        deadline = self.endpoint.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _send(self, datagram: Datagram) -> None:
        if self._closed:
            return
        self.stats.datagrams_out += 1
        if datagram.transport == TCP:
            self._send_tcp(datagram.data, datagram.addr)
            return
        host, port = datagram.addr
        if not _is_literal(host):
            resolved = self._resolved.get(host)
            if resolved is None:
                self._spawn(self._resolve_and_send(datagram))
                return
            host = resolved
        self._sendto(datagram.data, (host, port))

    def _sendto(self, data: bytes, addr: Addr) -> None:
        host, port = addr
        if self._udp_family == socket.AF_INET6 and ":" not in host:
            host = f"::ffff:{host}"
        if self._udp is None:
            return
        try:
            self._udp.sendto(data, (host, port))
        except OSError as exc:
            self.stats.send_errors += 1
            logger.debug("UDP send to %s failed: %s", addr, exc)

    async def _resolve_and_send(self, datagram: Datagram) -> None:
        host, port = datagram.addr
        family = socket.AF_INET if self._udp_family == socket.AF_INET else socket.AF_UNSPEC
        try:
            infos = await self._loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except OSError as exc:
            logger.debug("cannot resolve %s: %s", host, exc)
            self.endpoint.transport_failed(datagram.addr, UDP, self._loop.time())
            self.flush()
            return
        address = str(infos[0][4][0])
        self._resolved[host] = address
        self._sendto(datagram.data, (address, port))

    def _send_tcp(self, data: bytes, addr: Addr) -> None:
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
        self._spawn(self._connect(addr))

    async def _connect(self, addr: Addr) -> None:
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _TcpProtocol(self, key=addr), addr[0], addr[1]
                ),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError) as exc:
            logger.debug("TCP connect to %s failed: %s", addr, exc)
            self._pending.pop(addr, None)
            if not self._closed:
                self.endpoint.transport_failed(addr, TCP, self._loop.time())
                self.flush()

    def _connection_made(self, key: Addr, connection: _TcpProtocol) -> bool:
        """Take a new connection; False when it was closed instead."""
        if self._closed:
            connection.close()
            return False
        if connection.inbound:
            if len(self._inbound) >= self.max_tcp_connections:
                self.stats.tcp_refused += 1
                logger.warning("refusing TCP %s: %d inbound connections is the limit",
                               key, self.max_tcp_connections)
                connection.close()
                return False
            self._inbound.add(connection)
        self.stats.tcp_connections += 1
        self._connections[key] = connection
        for data in self._pending.pop(key, []):
            connection.write(data)
        return True

    def _connection_lost(self, key: Addr, connection: _TcpProtocol) -> None:
        self._inbound.discard(connection)
        if self._connections.get(key) is connection:
            del self._connections[key]

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
