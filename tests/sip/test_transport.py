"""Tests for callstream.sip.transport: real sockets on loopback, default loop and uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import pytest
import uvloop

from callstream.sip.endpoint import (
    CallAnswered,
    CallFailed,
    DialogEnded,
    DtmfReceived,
    EndReason,
    IncomingCall,
    SipEndpoint,
    SipEvent,
)
from callstream.sip.transaction import TimerConfig
from callstream.sip.transport import SipTransport

from .helpers import ANSWER, OFFER, EventLog, fixture

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
TIMEOUT = 10.0


def run(loop: str, coroutine: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(coroutine, TIMEOUT))


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class Answering(EventLog):
    """An on_event callback that answers every call at once."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: SipTransport | None = None

    def __call__(self, event: SipEvent) -> None:
        super().__call__(event)
        if isinstance(event, IncomingCall) and self.transport is not None:
            with self.transport.command() as now:
                self.transport.endpoint.ring(event.handle, now)
                self.transport.endpoint.answer(event.handle, ANSWER, now)


async def call_over(host: str, transport_param: str) -> None:
    caller_log = EventLog()
    caller_events = caller_log.events
    answering = Answering()
    callee = await SipTransport.start(host, 0, answering)
    answering.transport = callee
    caller = await SipTransport.start(host, 0, caller_log)
    try:
        assert callee.local_addr[1] != 0
        target_host = f"[{host}]" if ":" in host else host
        target = f"sip:service@{target_host}:{callee.local_addr[1]}{transport_param}"
        with caller.command() as now:
            handle = caller.endpoint.invite(
                target, from_uri=f"sip:me@{target_host}", sdp=OFFER, now=now
            )
        await caller_log.wait_for_type(CallAnswered)
        with caller.command() as now:
            caller.endpoint.send_info(handle, "application/dtmf", b"7", now)
        await answering.wait_for_type(DtmfReceived)
        with caller.command() as now:
            caller.endpoint.bye(handle, now)
        await answering.wait_for_type(DialogEnded)
        await caller_log.wait_for_type(DialogEnded)
        assert caller_events[-1] == DialogEnded(handle, EndReason.LOCAL_BYE, 200)
        incoming = answering.events[0]
        assert isinstance(incoming, IncomingCall)
        assert incoming.transport == ("tcp" if transport_param else "udp")
        assert incoming.source[0] == host
    finally:
        await caller.close()
        await callee.close()
    assert caller.stats.callback_errors == callee.stats.callback_errors == 0


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("transport_param", ["", ";transport=tcp"])
def test_call_over_loopback(loop: str, transport_param: str) -> None:
    run(loop, call_over("127.0.0.1", transport_param))


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_call_over_ipv6(loop: str) -> None:
    run(loop, call_over("::1", ""))


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_tcp_connect_failure_fails_the_call(loop: str) -> None:
    async def scenario() -> None:
        log = EventLog()
        events = log.events
        caller = await SipTransport.start("127.0.0.1", 0, log, tcp=False)
        with socket.socket() as closed:  # a port nobody listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        try:
            with caller.command() as now:
                caller.endpoint.invite(
                    f"sip:x@127.0.0.1:{port};transport=tcp",
                    from_uri="sip:me@127.0.0.1",
                    sdp=OFFER,
                    now=now,
                )
            await log.wait_for(bool)
            assert [(type(e).__name__, getattr(e, "status", None)) for e in events] == [
                ("CallFailed", 503)
            ]
        finally:
            await caller.close()

    run(loop, scenario())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_garbage_and_timers_over_udp(loop: str) -> None:
    async def scenario() -> None:
        server = await SipTransport.start("127.0.0.1", 0, EventLog())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.setblocking(False)
            loop_ = asyncio.get_running_loop()
            client.sendto(b"\x00\xffgarbage", server.local_addr)
            client.sendto(
                b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bK1\r\n"  # noqa: E501
                b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"  # noqa: E501
                b"Content-Length: 0\r\n\r\n",
                server.local_addr,
            )
            data = await loop_.sock_recv(client, 4096)
            assert data.startswith(b"SIP/2.0 200 OK\r\n")
        # The NIST waits for Timer J (32 s) on a single armed TimerHandle.
        assert server.endpoint.next_deadline() is not None
        assert server._timer is not None
        assert server.endpoint.stats.parse_errors == 1
        await server.close()
        await server.close()  # idempotent

    run(loop, scenario())


def test_flush_survives_a_failing_callback() -> None:
    async def scenario() -> None:
        called = asyncio.Event()

        def boom(event: SipEvent) -> None:
            called.set()
            raise RuntimeError("callback bug")

        callee = await SipTransport.start("127.0.0.1", 0, boom)
        caller_events: list[SipEvent] = []
        caller = await SipTransport.start("127.0.0.1", 0, caller_events.append)
        try:
            with caller.command() as now:
                caller.endpoint.invite(
                    f"sip:s@127.0.0.1:{callee.local_addr[1]}",
                    from_uri="sip:me@127.0.0.1",
                    sdp=OFFER,
                    now=now,
                )
            await called.wait()
            assert callee.stats.callback_errors == 1
        finally:
            await caller.close()
            await callee.close()

    logging_disabled = pytest.MonkeyPatch()
    logging_disabled.setattr("callstream.sip.transport.logger.exception", lambda *a, **k: None)
    try:
        run("asyncio", scenario())
    finally:
        logging_disabled.undo()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_timers_fire_on_the_loop(loop: str) -> None:
    """A silent peer: the INVITE is retransmitted on Timer A and fails on Timer B."""

    async def scenario() -> None:
        log = EventLog()
        fast = TimerConfig(t1=0.02)
        caller = await SipTransport.start(
            "127.0.0.1", 0, log, tcp=False, make_endpoint=partial(SipEndpoint, timers=fast)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            silent.setblocking(False)
            try:
                with caller.command() as now:
                    handle = caller.endpoint.invite(
                        f"sip:x@localhost:{silent.getsockname()[1]}",  # resolved by the transport
                        from_uri="sip:me@127.0.0.1",
                        sdp=OFFER,
                        now=now,
                    )
                await log.wait_for(bool)
                assert log.events == [CallFailed(handle, 408, "Request Timeout")]
                copies = 0
                with contextlib.suppress(BlockingIOError):
                    while silent.recv(4096):
                        copies += 1
                # The INVITE and 6 retransmissions before 64*T1 (a busy machine
                # may fire timers late and squeeze out the last one).
                assert 5 <= copies <= 7
            finally:
                await caller.close()

    run(loop, scenario())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_unframeable_tcp_stream_is_closed(loop: str) -> None:
    async def scenario() -> None:
        server = await SipTransport.start("127.0.0.1", 0, EventLog())
        try:
            reader, writer = await asyncio.open_connection(*server.local_addr)
            writer.write(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: lots\r\n\r\n")
            await writer.drain()
            assert await reader.read() == b""  # the server hung up
            writer.close()
            await writer.wait_closed()
            assert server.stats.framing_errors == 1
        finally:
            await server.close()

    run(loop, scenario())


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6")
def test_dual_stack_bind_serves_ipv4() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="needs advertised_host"):
            await SipTransport.start("::", 0, EventLog())
        server = await SipTransport.start("::", 0, EventLog(), tcp=False, advertised_host="::1")
        assert server.endpoint.local_addr == ("::1", server.local_addr[1])
        try:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind(("127.0.0.1", 0))
                client.setblocking(False)
                options = fixture("asterisk_options.sip").replace(
                    b"192.168.1.10:5060;rport", b"127.0.0.1:1;rport"
                )
                client.sendto(options, ("127.0.0.1", server.local_addr[1]))
                data = await loop.sock_recv(client, 4096)
            assert data.startswith(b"SIP/2.0 200 OK")
            assert b"received=127.0.0.1" in data  # not ::ffff:127.0.0.1
        finally:
            await server.close()

    run("asyncio", scenario())


def test_endpoint_before_start_is_an_error() -> None:
    transport = SipTransport(EventLog(), asyncio.new_event_loop())
    with pytest.raises(RuntimeError, match="not started"):
        transport.endpoint  # noqa: B018
    transport._loop.close()
