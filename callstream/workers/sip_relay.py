"""A :class:`SipTransport` for a worker: SIP in from the supervisor, out on the public port.

The supervisor reads the public SIP socket and relays each datagram to the worker that
owns its Call-ID (:mod:`callstream.workers.dispatch`); this transport feeds them to its
endpoint as if they came from the caller, and sends on its copy of the public socket,
so Via, Contact and the source port of every answer are the server's public ones. Its
endpoint draws its tokens so that its own calls' Call-IDs hash to this worker.

SIP over TCP: the supervisor holds every connection (one reader per connection), frames
its messages and relays each the same way; what this worker sends over TCP goes to the
supervisor, which writes it on the connection to that address or opens one, and says
so when it could not (docs/architecture.md, "Processes").
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from typing import Any, ClassVar, cast

from callstream.sip.endpoint import Addr, SipEndpoint, SipEvent
from callstream.sip.transport import SipTransport
from callstream.workers.dispatch import owned_token
from callstream.workers.exceptions import RelayError
from callstream.workers.relay import (
    MAX_MESSAGE,
    SipDatagram,
    TcpFailed,
    decode,
    encode_tcp_send,
)
from callstream.workers.seat import WorkerSeat

log = logging.getLogger(__name__)

#: Relay messages read per wake-up before the loop runs other work (RTP included).
READ_BATCH = 64


class RelayedSipTransport(SipTransport):
    """Use :meth:`for_seat` to get the class a worker's switch starts."""

    seat: ClassVar[WorkerSeat]

    @classmethod
    def for_seat(cls, seat: WorkerSeat) -> type[RelayedSipTransport]:
        return type(cls.__name__, (cls,), {"seat": seat})

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
        **options: Any,
    ) -> SipTransport:
        token = owned_token(cls.seat.index, cls.seat.count)
        make = cast(Callable[..., SipEndpoint], make_endpoint)  # SipEndpoint or a partial
        return await super().start(
            host, port, on_event, tcp=tcp, advertised_host=advertised_host,
            make_endpoint=functools.partial(make, token=token), **options)

    async def _bind(self, host: str, port: int, tcp: bool) -> None:
        # Nothing to bind: the supervisor holds the public sockets, UDP and TCP.
        sip = self.seat.sip
        sip.setblocking(False)
        self._udp_family = sip.family
        self.local_addr = sip.getsockname()[:2]
        relay = self.seat.relay
        relay.setblocking(False)
        self._loop.add_reader(relay.fileno(), self._relay_readable)

    def _relay_readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                message = self.seat.relay.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("relay from the supervisor failed: %s", exc)
                self._loop.remove_reader(self.seat.relay.fileno())
                return
            try:
                decoded = decode(message)
            except RelayError as exc:
                log.warning("dropped a relay message: %s", exc)
                continue
            if isinstance(decoded, SipDatagram):
                self._received(decoded.data, decoded.addr, decoded.transport)
            elif isinstance(decoded, TcpFailed):
                self._tcp_failed(decoded.addr)

    def _sendto(self, data: bytes, addr: Addr) -> None:
        host, port = addr
        if self._udp_family == socket.AF_INET6 and ":" not in host:
            host = f"::ffff:{host}"
        try:
            self.seat.sip.sendto(data, (host, port))
        except OSError as exc:  # a full send buffer included: UDP, retransmitted
            self.stats.send_errors += 1
            log.debug("UDP send to %s failed: %s", addr, exc)

    def _send_tcp(self, data: bytes, addr: Addr) -> None:
        try:
            self.seat.relay.send(encode_tcp_send(data, addr))
        except OSError as exc:  # the supervisor is gone or its queue is full
            self.stats.send_errors += 1
            log.warning("TCP send to %s through the supervisor failed: %s", addr, exc)
            self._loop.call_soon(self._tcp_failed, addr)

    async def close(self) -> None:
        if not self._closed:
            self._loop.remove_reader(self.seat.relay.fileno())
        await super().close()
