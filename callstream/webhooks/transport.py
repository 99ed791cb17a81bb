"""httpcore's network I/O on plain asyncio protocols, for the webhook deliverer.

httpcore reaches the network through a pluggable backend; its default goes through anyio,
whose stream wrappers (a cancel scope per read and write, a readability ``poll()`` syscall
before each reuse of a keep-alive connection) took a third of the CPU of a delivery in
``bench/webhooks.py``. This backend is the same contract on ``asyncio.Protocol``: reads
come from a buffer ``data_received`` fills, a connection is known closed when the protocol
saw EOF, and TLS is ``loop.start_tls``. httpx still does everything above the socket
(HTTP/1.1 via h11, keep-alive, timeouts, error mapping).

The ``timeout`` parameters are httpcore's interface (ruff's ASYNC109 is silenced for them).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

#: Bytes buffered from a receiver before reading from its socket is paused.
READ_HIGH_WATER = 256 * 1024


class _StreamProtocol(asyncio.Protocol):
    __slots__ = ("buffer", "closed_exc", "eof", "paused", "reader", "transport", "writer")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.closed_exc: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        _wake(self.reader)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.reader)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.closed_exc = exc
        _wake(self.reader)
        _wake(self.writer)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        _wake(self.writer)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        p = self._protocol
        if not p.buffer and not p.eof:
            p.reader = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await p.reader
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"no data within {timeout} s") from exc
            finally:
                p.reader = None
        if p.buffer:
            data = bytes(p.buffer[:max_bytes])
            del p.buffer[:max_bytes]
            if len(p.buffer) <= READ_HIGH_WATER // 2 and not self._transport.is_closing():
                self._transport.resume_reading()
            return data
        if p.closed_exc is not None:
            raise httpcore.ReadError(str(p.closed_exc)) from p.closed_exc
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        p = self._protocol
        if self._transport.is_closing():
            raise httpcore.WriteError("connection closed")
        self._transport.write(buffer)
        if p.paused:
            p.writer = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await p.writer
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(f"cannot write within {timeout} s") from exc
            finally:
                p.writer = None
            if p.closed_exc is not None:
                raise httpcore.WriteError(str(p.closed_exc)) from p.closed_exc

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ConnectError(f"TLS handshake failed: {exc}") from exc
        if tls is None:
            raise httpcore.ConnectError("TLS handshake failed: connection closed")
        self._protocol.transport = tls
        return AsyncioStream(tls, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle keep-alive connection with data or EOF pending was closed by the
            # receiver (or is out of step): httpcore then opens a fresh one.
            return bool(self._protocol.buffer) or self._protocol.eof
        names = {"client_addr": "sockname", "server_addr": "peername"}
        return self._transport.get_extra_info(names.get(info, info))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections (TCP_NODELAY on)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _StreamProtocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"cannot connect within {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def single_connection_transport(
    ssl_context: ssl.SSLContext, *, keepalive_expiry: float
) -> httpx.AsyncHTTPTransport:
    """An httpx transport of one keep-alive connection over :class:`AsyncioBackend`."""
    transport = httpx.AsyncHTTPTransport(
        verify=ssl_context,
        trust_env=False,
        limits=httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry
        ),
    )
    # httpx builds its httpcore pool without a way to pass a network backend; swap in an
    # identical pool that has one. If a future httpx renames the attribute, the default
    # (anyio) pool stays: slower, still correct.
    if isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )
    return transport
