"""One webhook attempt over HTTP: send, read the answer, map failures to DeliveryFailed.

Connections are bounded and kept alive, over httpx's HTTP/1.1 transport. Rather than one
pool of N connections, :class:`HttpDeliverer` keeps N one-connection transports: httpcore's
pool re-scans every connection on each request, so its cost grows with the pool size
(encode/httpcore#929; measured here, 64 pooled connections ran at a third of the rate of
64 one-connection transports). Idle transports are filed by origin, so a request reuses a
warm connection to the same receiver when there is one. Requests go to the transport
directly: a webhook needs none of ``AsyncClient``'s redirects, cookies, auth or event
hooks, and skipping them (and re-parsing each URL) made a delivery a third cheaper. The
transports' network I/O is :mod:`callstream.webhooks.transport` (asyncio, not anyio).

Success is a 2xx status line received within the event's timeout. The answer's body is
then read, with what is left of the timeout, only to keep its beginning for the delivery
log and to leave the connection reusable; a receiver that answers 2xx and then trickles
its body has still accepted the event (its connection is dropped, not reused). Anything
else (no answer, a non-2xx status) raises :class:`DeliveryFailed`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from callstream import __version__
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from callstream.webhooks.transport import single_connection_transport

#: The start of a receiver's answer kept for the delivery log.
MAX_BODY_KEPT = 1024
#: Beyond this, the answer is not drained: the connection is dropped instead.
MAX_BODY_READ = 64 * 1024
USER_AGENT = f"callstream-webhooks/{__version__}"
_URL_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class DeliveryResponse:
    """A receiver's 2xx answer."""

    status_code: int
    body: str  # the first MAX_BODY_KEPT bytes, decoded leniently
    complete: bool  # the whole body arrived in time


class HttpDeliverer:
    """Sends webhook attempts over at most ``max_connections`` keep-alive connections.

    Args:
        max_connections: the bound on concurrent requests (and open connections).
        transport_factory: builds each connection's transport; by default an
            ``httpx.AsyncHTTPTransport`` of one connection over
            :class:`~callstream.webhooks.transport.AsyncioBackend`.
        ssl_context: TLS settings for https receivers; the system's CA bundle by default.
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self,
        max_connections: int,
        *,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 30.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[str, list[httpx.AsyncBaseTransport]] = {}
        self._all: list[httpx.AsyncBaseTransport] = []
        self._urls: dict[str, httpx.URL] = {}
        self._factory = transport_factory or self._default_transport
        self._keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        #: Requests being sent right now.
        self.in_flight = 0

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        if self._ssl is None:
            # One context for all connections: loading the CA bundle takes ~15 ms.
            self._ssl = httpx.create_ssl_context()
        return single_connection_transport(self._ssl, keepalive_expiry=self._keepalive_expiry)

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            try:
                parsed = httpx.URL(url)
            except (httpx.InvalidURL, ValueError, TypeError) as exc:
                raise DeliveryFailed(
                    FailureKind.INVALID_URL, f"invalid URL {url!r}: {exc}", retryable=False
                ) from exc
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise DeliveryFailed(
                    FailureKind.INVALID_URL,
                    f"invalid URL {url!r}: need http:// or https:// and a host",
                    retryable=False,
                )
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    def _take(self, origin: str) -> httpx.AsyncBaseTransport:
        same = self._idle.get(origin)
        if same:
            return same.pop()
        if len(self._all) < self.max_connections:
            transport = self._factory()
            self._all.append(transport)
            return transport
        # Every connection exists and none is idle towards this origin: repoint an idle
        # one (the semaphore guarantees there is one); its old connection gets closed.
        for key, idle in self._idle.items():
            if idle:
                transport = idle.pop()
                if not idle:
                    del self._idle[key]
                return transport
        raise RuntimeError("no idle connection although a slot was acquired")  # pragma: no cover

    async def send(
        self,
        url: str,
        *,
        method: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_secs: float,
    ) -> DeliveryResponse:
        """Make one attempt.

        Args:
            url: where to send it (for a form GET, the query string is already in it).
            method: ``POST`` or ``GET``.
            body: the exact signed bytes (empty for GET).
            headers: content type and signature headers.
            timeout_secs: seconds for the whole exchange up to the status line.

        Raises:
            DeliveryFailed: no 2xx answer in time, with ``retryable`` and the failure kind.
        """
        target = self._url(url)
        origin = f"{target.scheme}://{target.netloc.decode('ascii')}"
        request = httpx.Request(
            method,
            target,
            headers=[("user-agent", USER_AGENT), *headers.items()],
            content=body or None,
            extensions={"timeout": httpx.Timeout(timeout_secs).as_dict()},
        )
        await self._slots.acquire()
        transport = self._take(origin)
        self.in_flight += 1
        try:
            return await _exchange(transport, request, timeout_secs)
        finally:
            self.in_flight -= 1
            self._idle.setdefault(origin, []).append(transport)
            self._slots.release()

    async def aclose(self) -> None:
        transports, self._all, self._idle = self._all, [], {}
        for transport in transports:
            await transport.aclose()


async def _exchange(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, timeout_secs: float
) -> DeliveryResponse:
    deadline = time.monotonic() + timeout_secs
    try:
        async with asyncio.timeout(timeout_secs):
            response = await transport.handle_async_request(request)
    except TimeoutError as exc:
        raise DeliveryFailed(
            FailureKind.TIMEOUT, f"no answer within {timeout_secs:g} s"
        ) from exc
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, timeout_secs) from exc
    try:
        text, complete = await _read_start(response, deadline)
    finally:
        await response.aclose()
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResponse(status, text, complete)
    raise DeliveryFailed(
        FailureKind.HTTP_STATUS,
        response.reason_phrase or "non-2xx answer",
        status_code=status,
        body=text,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


async def _read_start(response: httpx.Response, deadline: float) -> tuple[str, bool]:
    """Read the answer's body until its end, ``MAX_BODY_READ`` bytes or the deadline."""
    kept = bytearray()
    size = 0
    complete = False
    try:
        async with asyncio.timeout_at(
            asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
        ):
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if len(kept) < MAX_BODY_KEPT:
                    kept += chunk[: MAX_BODY_KEPT - len(kept)]
                if size > MAX_BODY_READ:
                    break
            else:
                complete = True
    except (TimeoutError, httpx.HTTPError):
        pass  # the status line already decided the outcome
    return kept.decode("utf-8", "replace"), complete


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date: ignored, the schedule's own delay applies
    return seconds if seconds >= 0 else None


def map_httpx_error(exc: httpx.HTTPError, timeout: float) -> DeliveryFailed:
    """Translate an httpx error into the failure kind and whether a retry can help."""
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryFailed(FailureKind.TIMEOUT, f"no answer within {timeout:g} s ({exc!r})")
    if isinstance(exc, httpx.ConnectError):
        return DeliveryFailed(FailureKind.CONNECT, f"cannot connect: {exc}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return DeliveryFailed(FailureKind.INVALID_URL, f"unsupported URL: {exc}", retryable=False)
    if isinstance(exc, httpx.RemoteProtocolError):
        return DeliveryFailed(FailureKind.PROTOCOL, f"receiver broke HTTP: {exc}")
    if isinstance(exc, httpx.LocalProtocolError):
        return DeliveryFailed(FailureKind.PROTOCOL, f"cannot send request: {exc}", retryable=False)
    if isinstance(exc, httpx.NetworkError):
        return DeliveryFailed(FailureKind.NETWORK, f"connection error: {exc}")
    return DeliveryFailed(FailureKind.NETWORK, f"{type(exc).__name__}: {exc}")
