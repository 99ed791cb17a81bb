"""Connect-time checks against live loopback servers: a refused destination gets no TCP
connection at all, whichever client (the resolver, webhooks, streams) would have opened it.

This is the check DNS rebinding cannot race: each client connects to an address the
policy passed, never to a name looked up again. Here the policy denies loopback (as a
deployment that must not reach its own host would), and the servers count accepts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.outbound.connect import connect_tcp, resolve
from callstream.outbound.policy import DEFAULT_POLICY, OutboundDenied, OutboundPolicy
from callstream.store.records import CallRecord
from callstream.streaming.session import StreamParams, StreamSession, StreamState
from callstream.webhooks.delivery import HttpDeliverer
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind

NO_LOOPBACK = OutboundPolicy.from_lists(deny=["127.0.0.0/8", "::1"])
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Listener:
    port: int
    accepted: int = 0


@asynccontextmanager
async def http_listener() -> AsyncIterator[Listener]:
    """A loopback TCP server that counts connections and answers each request 200."""
    listener = Listener(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


async def test_resolve_checks_every_address_of_a_name() -> None:
    # localhost is 127.0.0.1 and often ::1 too; denying one family's loopback is enough.
    with pytest.raises(OutboundDenied, match=r"^localhost resolves to (127\.0\.0\.1|::1), "
                       r"which is denied by CALLSTREAM_OUTBOUND_DENY"):
        await resolve("localhost", 80, NO_LOOPBACK)
    assert {d.sockaddr[0] for d in await resolve("localhost", 80, DEFAULT_POLICY)} <= {
        "127.0.0.1", "::1"}


async def test_a_name_that_resolves_to_a_denied_address_is_refused() -> None:
    # 2852039166 is 169.254.169.254 written as one number; the resolver accepts it.
    with pytest.raises(OutboundDenied, match=r"^2852039166 resolves to 169\.254\.169\.254, "):
        await resolve("2852039166", 80, DEFAULT_POLICY)


async def test_connect_tcp_opens_no_connection_to_a_refused_address() -> None:
    async with http_listener() as server:
        for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
            with pytest.raises(OutboundDenied):
                await connect_tcp(host, server.port, NO_LOOPBACK)
        await asyncio.sleep(0.1)
        assert server.accepted == 0
        sock = await connect_tcp("localhost", server.port, DEFAULT_POLICY)
        sock.close()
        for _ in range(100):
            if server.accepted:
                break
            await asyncio.sleep(0.02)
        assert server.accepted == 1


async def test_webhook_attempt_to_a_refused_address_fails_like_a_connect_failure() -> None:
    async with http_listener() as server:
        refused = HttpDeliverer(2, policy=NO_LOOPBACK)
        with pytest.raises(DeliveryFailed) as info:
            await refused.send(f"http://localhost:{server.port}/hook", method="POST",
                               body=b"{}", headers={}, timeout_secs=5)
        assert info.value.kind is FailureKind.CONNECT
        assert info.value.reason.startswith(
            f"cannot connect to http://localhost:{server.port}: refused by the outbound "
            "policy: localhost resolves to ")
        assert info.value.retryable  # a name: its DNS may change
        with pytest.raises(DeliveryFailed) as info:
            await refused.send(f"http://127.0.0.1:{server.port}/hook", method="POST",
                               body=b"{}", headers={}, timeout_secs=5)
        assert info.value.reason.endswith(
            "127.0.0.1 is denied by CALLSTREAM_OUTBOUND_DENY (127.0.0.0/8)")
        assert not info.value.retryable  # a literal stays refused
        await asyncio.sleep(0.1)
        assert server.accepted == 0

        allowed = HttpDeliverer(2)
        answer = await allowed.send(f"http://localhost:{server.port}/hook", method="POST",
                                    body=b"{}", headers={}, timeout_secs=5)
        assert (answer.status_code, server.accepted) == (200, 1)
        await allowed.aclose()


@dataclass
class StreamHostStub:
    """The manager's side of a stream: records the webhooks the session emits."""

    outbound: OutboundPolicy
    account_id: str = "acct"
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def emit(self, session: StreamSession, event_type: str,
                   extra: dict[str, Any]) -> None:
        self.events.append((event_type, extra))

    def ended(self, session: StreamSession) -> None:
        pass

    def playback_targets(self, session: StreamSession) -> list[Any]:
        return []


def _session(policy: OutboundPolicy, url: str) -> tuple[StreamSession, StreamHostStub]:
    host = StreamHostStub(policy)
    record = CallRecord(
        call_control_id="v3:outbound-test", call_leg_id="leg", call_session_id="session",
        connection_id="default", direction="outgoing", from_="+15550001111",
        to="sip:bot@127.0.0.1", state="answered", is_alive=True,
        start_time="2026-12-04T00:00:00Z", owner="test")
    call = Call(record=record, state=CallState.ANSWERED)
    session = StreamSession(host, call, StreamParams(stream_id="s1", stream_url=url),
                            clock=asyncio.get_running_loop().time)
    return session, host


async def test_stream_to_a_refused_address_fails_without_connecting() -> None:
    accepted: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        accepted.append(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://localhost:{port}/agent"
        session, host = _session(NO_LOOPBACK, url)
        session.start()
        assert not await session.wait_connected()
        assert host.events == [("streaming.failed", session.failure_fields("connection_failed"))]
        assert session.state is StreamState.STOPPED
        await asyncio.sleep(0.1)
        assert accepted == []

        # The same stream under the default policy does connect (Host keeps the name).
        session, host = _session(DEFAULT_POLICY, url)
        session.start()
        assert await session.wait_connected()
        assert len(accepted) == 1
        assert accepted[0].request is not None
        assert accepted[0].request.headers["Host"] == f"localhost:{port}"
        await session.stop()


async def test_a_name_that_is_no_host_name_is_an_os_error() -> None:
    # getaddrinfo raises UnicodeError for a label over 63 characters; callers handle
    # OSError (unresolvable), so it must not escape as a 500.
    with pytest.raises(OSError, match="not a valid host name"):
        await resolve("0" * 300, 80, DEFAULT_POLICY)
