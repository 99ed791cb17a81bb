"""One webhook attempt over HTTP: send, read the answer, map failures to DeliveryFailed.

Connections are bounded (``max_connections``) and kept alive; idle ones are filed by
origin, so a request reuses a warm connection to the same receiver when there is one, and
otherwise takes a new slot or repoints an idle connection of another origin. Each origin
(scheme, host, port: a *destination*) also has its own share, ``max_per_destination``
requests at once: a request first waits for its destination's share and only then for a
slot of the pool, so a receiver that hangs holds at most its share of the pool and the
other destinations' requests go on (issue #11: one hung application had raised another's
latency from 0.1 s to 6 s). The bytes
are :mod:`callstream.webhooks.http11` (sans-I/O) over
:mod:`callstream.webhooks.transport` (an asyncio Protocol): a webhook needs none of a
general HTTP client's redirects, cookies, proxies or pools, and dropping httpx/httpcore
from this path made a delivery several times cheaper (docs/benchmarks.md). A request
that finds its kept-alive connection closed by the receiver (no byte of answer) is sent
once more on a fresh connection, as browsers do; a receiver dedupes on ``data.id``.

Success is a 2xx status line received within the event's timeout. The answer's body is
then read, with what is left of the timeout, to leave the connection reusable (and, only
when configured, to keep a short textual excerpt for the delivery log: :mod:`.excerpt`);
a receiver that answers 2xx and then trickles its body has still accepted the event (its
connection is dropped, not reused). Anything else (no answer, a non-2xx status) raises
:class:`DeliveryFailed`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from callstream import __version__
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from callstream.webhooks.excerpt import MAX_EXCERPT_BYTES, response_excerpt
from callstream.webhooks.http11 import ResponseParser, build_request
from callstream.webhooks.transport import HttpConnection

USER_AGENT = f"callstream-webhooks/{__version__}"
_URL_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class DeliveryResponse:
    """A receiver's 2xx answer."""

    status_code: int
    body: str | None  # the excerpt the delivery log may keep (see .excerpt), if any
    complete: bool  # the whole body arrived in time


class _Share:
    """One destination's share of the pool: a semaphore, dropped when nobody uses it."""

    __slots__ = ("slots", "users")

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.users = 0  # requests holding or waiting for a slot


@dataclass(frozen=True, slots=True)
class _Target:
    origin: str  # scheme://host:port, the key for connection reuse
    host: str
    port: int
    tls: bool
    host_header: str
    path: str  # path and query


class HttpDeliverer:
    """Sends webhook attempts over at most ``max_connections`` keep-alive connections.

    Args:
        max_connections: the bound on concurrent requests (and open connections).
        max_per_destination: the bound on concurrent requests to one origin (at most
            ``max_connections``; the same by default).
        ssl_context: TLS settings for https receivers; the system's CA bundle by default.
        keepalive_expiry: seconds an idle connection is kept.
        policy: the addresses a connection may open to (checked at each connect).
        keep_body_bytes: how much of a textual answer to keep for the log (0: none).
    """

    def __init__(
        self,
        max_connections: int,
        *,
        max_per_destination: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 30.0,
        policy: OutboundPolicy = DEFAULT_POLICY,
        keep_body_bytes: int = 0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if not 0 <= keep_body_bytes <= MAX_EXCERPT_BYTES:
            raise ValueError(f"keep_body_bytes must be within [0, {MAX_EXCERPT_BYTES}]")
        self.keep_body_bytes = keep_body_bytes
        self.max_connections = max_connections
        self.max_per_destination = min(max_per_destination or max_connections, max_connections)
        if self.max_per_destination < 1:
            raise ValueError("max_per_destination must be >= 1")
        self._slots = asyncio.Semaphore(max_connections)
        self._shares: dict[str, _Share] = {}
        self._idle: dict[str, list[HttpConnection]] = {}
        self._open = 0  # connections that exist, idle or busy
        self._urls: dict[str, _Target] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._policy = policy
        #: Requests being sent right now.
        self.in_flight = 0

    def _target(self, url: str) -> _Target:
        target = self._urls.get(url)
        if target is not None:
            return target
        try:
            parts = urlsplit(url)
            port = parts.port
            host = parts.hostname
        except ValueError as exc:
            raise DeliveryFailed(
                FailureKind.INVALID_URL, f"invalid URL {url!r}: {exc}", retryable=False
            ) from exc
        if parts.scheme not in ("http", "https") or not host:
            raise DeliveryFailed(
                FailureKind.INVALID_URL,
                f"invalid URL {url!r}: need http:// or https:// and a host",
                retryable=False,
            )
        tls = parts.scheme == "https"
        port = port or (443 if tls else 80)
        netloc = parts.netloc.rpartition("@")[2]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = _Target(f"{parts.scheme}://{host}:{port}", host, port, tls, netloc, path)
        if len(self._urls) >= _URL_CACHE_SIZE:
            self._urls.clear()
        self._urls[url] = target
        return target

    def destination(self, url: str) -> str:
        """``host:port`` of ``url``'s origin (its share's name in logs and metrics).

        Raises:
            DeliveryFailed: the URL can never be sent to (not retryable).
        """
        target = self._target(url)
        return f"{target.host}:{target.port}"

    def _take_idle(self, origin: str) -> HttpConnection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self._keepalive_expiry:
                return conn
            self._drop(conn)
        return None

    def _drop(self, conn: HttpConnection) -> None:
        conn.close()
        self._open -= 1

    async def _connection(self, target: _Target, within: float) -> HttpConnection:
        conn = self._take_idle(target.origin)
        if conn is not None:
            return conn
        if self._open >= self.max_connections:
            # Every slot has a connection and none is idle towards this origin: close an
            # idle one elsewhere (the semaphore guarantees there is one).
            for idle in self._idle.values():
                if idle:
                    self._drop(idle.pop())
                    break
        tls = None
        if target.tls:
            if self._ssl is None:
                # One context for all connections: loading the CA bundle takes ~15 ms.
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        self._open += 1
        try:
            return await HttpConnection.open(target.origin, target.host, target.port, tls=tls,
                                             within=within, policy=self._policy)
        except BaseException:
            self._open -= 1
            raise

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
        target = self._target(url)
        try:
            request = build_request(method, target.path, target.host_header,
                                    [("user-agent", USER_AGENT), *headers.items()], body)
        except ValueError as exc:
            raise DeliveryFailed(FailureKind.PROTOCOL, f"cannot send request: {exc}",
                                 retryable=False) from exc
        share = self._shares.get(target.origin)
        if share is None:
            share = self._shares[target.origin] = _Share(self.max_per_destination)
        share.users += 1
        try:
            # The destination's share first: waiting for it holds no slot of the pool. The
            # timeout starts once it is ours, so a busy destination's queue is not turned
            # into timeouts; the worker bounds that queue (its lanes per destination).
            async with share.slots:
                deadline = time.monotonic() + timeout_secs
                await self._slots.acquire()
                self.in_flight += 1
                try:
                    return await self._exchange(target, request, deadline, timeout_secs)
                finally:
                    self.in_flight -= 1
                    self._slots.release()
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[target.origin]

    async def _exchange(
        self, target: _Target, request: bytes, deadline: float, timeout_secs: float
    ) -> DeliveryResponse:
        for attempt in (1, 2):
            conn = await self._connection(target, max(0.0, deadline - time.monotonic()))
            parser = ResponseParser(self.keep_body_bytes)
            try:
                await conn.send(request, parser, max(0.0, deadline - time.monotonic()))
            except DeliveryFailed as exc:
                self._drop(conn)
                stale = conn.requests > 1 and not conn.answered
                if attempt == 1 and stale and exc.kind is not FailureKind.TIMEOUT:
                    continue  # the receiver closed the idle connection as we wrote to it
                if exc.kind is FailureKind.TIMEOUT:
                    exc.reason = f"no answer within {timeout_secs:g} s"
                    exc.args = (exc.reason,)
                raise
            complete = await conn.finish(max(0.0, deadline - time.monotonic()))
            if conn.reusable:
                self._idle.setdefault(target.origin, []).append(conn)
            else:
                self._open -= 1
            status = parser.status
            assert status is not None
            text = response_excerpt(
                parser.headers.get("content-type"), bytes(parser.body), self.keep_body_bytes
            )
            if 200 <= status < 300:
                return DeliveryResponse(status, text, complete)
            raise DeliveryFailed(
                FailureKind.HTTP_STATUS,
                parser.reason or "non-2xx answer",
                status_code=status,
                body=text,
                retry_after=_retry_after(parser.headers.get("retry-after")),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                self._drop(conn)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date: ignored, the schedule's own delay applies
    return seconds if seconds >= 0 else None
