"""uvicorn's httptools protocol with the limits it lacks: head size, head time, connections.

uvicorn (0.55, httptools/llhttp) accepts a request head of any size (llhttp has no
limit and httptools buffers a header until it ends: 4 connections sending 100 MB of
headers grew the server by 490 MB), waits forever for a head that never ends, and has
no cap on connections (``limit_concurrency`` answers 503 only once a head has arrived,
with the socket already held). This subclass adds, per connection:

* **head size** — bytes between the start of a request and the end of its headers are
  counted as they are fed to the parser, which never gets more than the limit:
  over it the client gets 431 and the connection is closed;
* **head time** — a deadline armed when the server starts waiting for a head (on
  connect, and at the first byte of each next request on a kept-alive connection),
  cleared when the headers are complete: on expiry a partial head gets 408, an
  untouched connection is just closed;
* **connections** — a connection over the cap is answered 503 at once and closed, so
  its file descriptor is given back instead of held.

A refused connection is half-closed after the answer and what the client still sends is
dropped for at most ``LINGER_TIMEOUT`` seconds: closing with unread input would make the
kernel send a reset, and the client could lose the answer.

Bodies are limited by :class:`callstream.api.body_limit.BodyLimit`; the idle time
between requests is uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import ClassVar, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from callstream.api.errors import error_body
from callstream.metrics import HTTP_CONNECTIONS, HTTP_LIMITED

log = logging.getLogger(__name__)

#: Defaults of the limits (settings ``http_max_head_size`` etc. override them).
MAX_HEAD_SIZE = 16 * 1024
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 1024
#: Seconds a refused connection is kept half-closed, its input read and dropped, so the
#: client reads our answer instead of a reset (nginx's "lingering close").
LINGER_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP listener allows.

    Attributes:
        max_head_size: Most bytes of request line plus headers (431 over it).
        header_timeout: Seconds a client has to send a whole head (408 after it).
        max_connections: Most connections open at once (503 and close beyond).
    """

    max_head_size: int = MAX_HEAD_SIZE
    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.max_head_size < 1 or self.header_timeout <= 0 or self.max_connections < 1:
            raise ValueError(f"HTTP limits must be positive: {self}")


def error_message(status: int, reason: str, code: str, title: str, detail: str) -> bytes:
    """A whole ``Connection: close`` response carrying the Telnyx error envelope."""
    body = orjson.dumps({"errors": [error_body(code, title, detail)]})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` under :class:`HttpLimits`; pass :meth:`with_limits`'s
    class as ``uvicorn.Config(http=...)``."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[LimitedHttpProtocol]:
        """A subclass bound to ``limits`` (uvicorn builds protocols from a class)."""
        return cast(type[LimitedHttpProtocol], type(cls.__name__, (cls,), {"limits": limits}))

    # Per connection: are we between requests or inside a head, how much of it came,
    # and the head deadline.
    _in_head = True
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    _upgraded = False
    _refused = False

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        HTTP_CONNECTIONS.inc()
        # The set includes this connection now: over the cap by one means refuse.
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                "connections", error_message(
                    503, "Service Unavailable", "10015", "Too many connections",
                    f"The server holds its limit of {self.limits.max_connections} "
                    "HTTP connections; retry later."),
            )
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not (self._upgraded or self._refused or self.transport.is_closing()):
            if not self._in_head:
                super().data_received(data)
                return
            # Never feed the parser past the limit: it buffers a header until it ends.
            allowed = self.limits.max_head_size - self._head_bytes
            if allowed <= 0:
                self._refuse(
                    "head_size", error_message(
                        431, "Request Header Fields Too Large", "10015",
                        "Request header fields too large",
                        f"The request line and headers are over the "
                        f"{self.limits.max_head_size}-byte limit."),
                )
                return
            rest = b""
            if len(data) > allowed:
                data, rest = data[:allowed], data[allowed:]
            self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes and self._head_timer is None:
                # A head begun and not finished, on a kept-alive connection: its clock
                # starts now. (A head that arrives whole costs no timer.)
                self._arm_head_timer()
            data = rest

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True
        self._cancel_head_timer()
        super().handle_websocket_upgrade()

    # ------------------------------------------------------------ inside

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            HTTP_LIMITED.labels("header_timeout").inc()
            log.info("HTTP %s: closed, no request within %.0f s", self._peer(),
                     self.limits.header_timeout)
            self.transport.close()
            return
        self._refuse(
            "header_timeout", error_message(
                408, "Request Timeout", "10015", "Request timeout",
                f"The request headers did not arrive within {self.limits.header_timeout:g} s."),
        )

    def _refuse(self, limit: str, response: bytes) -> None:
        HTTP_LIMITED.labels(limit).inc()
        log.warning("HTTP %s: refused by the %s limit (%s)", self._peer(), limit,
                    response[9:12].decode())
        self._cancel_head_timer()
        self._refused = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_TIMEOUT, self.transport.close)
        else:
            self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"
