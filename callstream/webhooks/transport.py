"""One keep-alive HTTP/1.1 connection to a webhook receiver, on a plain asyncio Protocol.

The bytes are :mod:`callstream.webhooks.http11`'s; this module only moves them: it
connects (to an address the outbound policy passed; TCP_NODELAY, TLS through the loop),
writes a request in one ``write``, feeds what arrives to a
:class:`~callstream.webhooks.http11.ResponseParser` and wakes the waiting attempt when
the status line is in and again when the body is. Failures raise
:class:`~callstream.webhooks.exceptions.DeliveryFailed` with their kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable

from callstream.outbound.connect import connect_tcp, literal_address
from callstream.outbound.metrics import OUTBOUND_DENIED
from callstream.outbound.policy import OutboundDenied, OutboundPolicy
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from callstream.webhooks.http11 import HttpProtocolError, ResponseParser

log = logging.getLogger(__name__)

#: Bytes of a body read (and dropped) to keep a connection reusable; beyond, it closes.
MAX_DRAIN = 64 * 1024


class HttpConnection(asyncio.Protocol):
    """A connection carrying one exchange at a time."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.requests = 0  # exchanges started on this connection
        self.idle_since = time.monotonic()
        self._parser: ResponseParser | None = None
        self._received = False  # any byte of the current answer arrived
        self._error: DeliveryFailed | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._stray = False  # bytes arrived while no exchange was running

    @classmethod
    async def open(
        cls, origin: str, host: str, port: int, *, tls: ssl.SSLContext | None, within: float,
        policy: OutboundPolicy,
    ) -> HttpConnection:
        """Connect to a checked address of ``host`` (see :mod:`callstream.outbound.connect`).

        Raises:
            DeliveryFailed: CONNECT (refused by the outbound policy, DNS, refused, TLS)
                or TIMEOUT.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                sock = await connect_tcp(host, port, policy)
                try:
                    _, conn = await loop.create_connection(
                        lambda: cls(origin), sock=sock, ssl=tls,
                        server_hostname=host if tls is not None else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except OutboundDenied as exc:
            OUTBOUND_DENIED.labels("connect").inc()
            log.warning("webhook to %s refused: %s", origin, exc)
            # A literal address stays refused; a name may resolve elsewhere later.
            raise DeliveryFailed(
                FailureKind.CONNECT, f"cannot connect to {origin}: refused by the outbound "
                f"policy: {exc}", retryable=literal_address(host) is None,
            ) from exc
        except TimeoutError as exc:
            raise DeliveryFailed(
                FailureKind.TIMEOUT, f"cannot connect to {origin} within {within:g} s"
            ) from exc
        except ssl.SSLError as exc:
            raise DeliveryFailed(FailureKind.CONNECT, f"TLS handshake failed: {exc}") from exc
        except OSError as exc:
            # uvloop's refusal reads "Connect call failed (addr)": say what it means.
            why = "connection refused (nothing listens there)" if isinstance(
                exc, ConnectionRefusedError) else exc.strerror or exc
            raise DeliveryFailed(FailureKind.CONNECT, f"cannot connect to {origin}: {why}"
                                 ) from exc
        return conn

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            self._stray = True  # an answer to nothing: this connection is out of step
            return
        self._received = True
        had_status = parser.status is not None
        try:
            parser.feed(data)
        except HttpProtocolError as exc:
            self._fail(DeliveryFailed(FailureKind.PROTOCOL, f"receiver broke HTTP: {exc}"))
            return
        if parser.body_size > MAX_DRAIN:
            self._fail(None)  # the attempt has what it keeps; the rest isn't worth reading
        elif parser.complete or (parser.status is not None and not had_status):
            self._wake()

    def eof_received(self) -> bool:
        self._eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self._parser is not None and self._parser.status is None:
            self._fail(DeliveryFailed(FailureKind.NETWORK, f"connection error: {exc}"))
        else:
            self._eof()

    # -- exchanges ---------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return not (self.closed or self._stray or self.transport is None
                    or self.transport.is_closing())

    @property
    def answered(self) -> bool:
        """Whether any byte of the current answer arrived (a stale connection sends none)."""
        return self._received

    async def send(self, request: bytes, parser: ResponseParser, within: float) -> None:
        """Write ``request``; return once ``parser`` has the final status line."""
        if not self.reusable or self.transport is None:
            raise DeliveryFailed(FailureKind.NETWORK, "connection closed")
        self.requests += 1
        self._parser, self._received, self._error = parser, False, None
        self.transport.write(request)
        await self._wait(within, lambda: parser.status is not None,
                         f"no answer within {within:g} s")

    async def finish(self, within: float) -> bool:
        """Read the rest of the answer; whether it all came (else the connection closes)."""
        parser = self._parser
        assert parser is not None
        with contextlib.suppress(DeliveryFailed):
            await self._wait(within, lambda: parser.complete, "")
        done = parser.complete
        self._parser = None
        self.idle_since = time.monotonic()
        if not done or not parser.keep_alive:
            self.close()
        return done

    async def _wait(self, within: float, ready: Callable[[], bool], timeout_text: str) -> None:
        while not ready():
            if self._error is not None:
                raise self._error
            if self.closed:
                raise DeliveryFailed(
                    FailureKind.PROTOCOL,
                    "receiver broke HTTP: connection closed without an answer",
                )
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(within):
                    await self._waiter
            except TimeoutError:
                self.close()
                raise DeliveryFailed(FailureKind.TIMEOUT, timeout_text) from None
            finally:
                self._waiter = None

    def _eof(self) -> None:
        self.closed = True
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_eof()
            except HttpProtocolError as exc:
                self._error = DeliveryFailed(FailureKind.PROTOCOL, f"receiver broke HTTP: {exc}")
        self._wake()

    def _fail(self, error: DeliveryFailed | None) -> None:
        self._error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
