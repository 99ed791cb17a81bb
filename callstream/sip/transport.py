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

TCP (:mod:`~callstream.sip.tcp`): connections are keyed by the peer's address, so
responses go back over the connection the request came on; a message for a TCP
address with no connection opens one, and if that fails the endpoint hears
:meth:`~SipEndpoint.transport_failed`. ``tcp_idle_timeout`` and
``max_tcp_connections`` are that module's limits.

Works the same on the default loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from callstream.listening import ListenError

from .endpoint import SipEndpoint
from .events import Addr, SipEvent
from .records import TCP, UDP, Datagram
from .tcp import CONNECT_TIMEOUT, MAX_TCP_CONNECTIONS, TCP_IDLE_TIMEOUT, TcpConnections, plain_addr
from .transport_stats import TransportStats

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_TCP_CONNECTIONS",
    "TCP_IDLE_TIMEOUT",
    "SipTransport",
    "TransportStats",
]

logger = logging.getLogger(__name__)

#: Tries to find a port free for both UDP and TCP when binding port 0.
BIND_ATTEMPTS = 10
#: Bind addresses that mean "every interface": no use in a Via or Contact.
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _bind_cause(exc: OSError) -> OSError:
    """The error with an errno: uvloop raises "could not bind to local_addr" without
    one, from the bind's own error."""
    cause = exc
    while cause.errno is None and isinstance(cause.__cause__, OSError):
        cause = cause.__cause__
    return cause


@functools.lru_cache(maxsize=4096)
def _is_literal(host: str) -> bool:
    # Cached: it is asked on every send, and peers are few.
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._received(data, plain_addr(addr), UDP)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) carry no address we could act on.
        logger.debug("UDP error: %s", exc)


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
        self.stats = TransportStats()
        self._tcp = TcpConnections(
            loop, on_message=self._received_tcp, on_failed=self._tcp_failed, stats=self.stats,
            idle_timeout=tcp_idle_timeout, max_inbound=max_tcp_connections)
        self._endpoint: SipEndpoint | None = None
        self._on_event = on_event
        self._loop = loop
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_family = socket.AF_INET
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
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
            bound = plain_addr(udp.get_extra_info("sockname"))
            if tcp:
                try:
                    await self._tcp.listen(host, bound[1])
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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tcp.close()

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
        self._tcp.send(data, addr)

    def _received_tcp(self, data: bytes, addr: Addr) -> None:
        self._received(data, addr, TCP)

    def _tcp_failed(self, addr: Addr) -> None:
        if not self._closed:
            self.endpoint.transport_failed(addr, TCP, self._loop.time())
            self.flush()

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
