"""StreamSession against a real WebSocket server and a real MediaHub (no call, no SIP):
audio captured before the socket opens, and the grace after ``stop``."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from callstream import compiled
from callstream.calls.features import LegMedia
from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.media.hub import MediaHub, Track
from callstream.media.rtp import RtpView, build_packet
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.store.records import CallRecord
from callstream.streaming.encoder import Chunk
from callstream.streaming.session import StreamParams, StreamSession

HEAD_DROPPED = "callstream_stream_frames_dropped_before_start_total"


@dataclass
class Host:
    outbound: OutboundPolicy = DEFAULT_POLICY
    account_id: str = "acct"
    events: list[str] = field(default_factory=list)
    emitted: asyncio.Event = field(default_factory=asyncio.Event)

    async def emit(self, session: StreamSession, event_type: str,
                   extra: dict[str, Any]) -> None:
        self.events.append(event_type)
        self.emitted.set()

    def ended(self, session: StreamSession) -> None:
        pass

    def playback_targets(self, session: StreamSession) -> list[Any]:
        return []


@dataclass
class Consumer:
    """A WebSocket server that completes the upgrade ``delay`` late and records frames."""

    delay: float = 0.0
    close_on_stop: bool = False
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed_by_us: bool | None = None
    stop_at: float = 0.0
    closed_at: float = 0.0
    url: str = ""

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        await asyncio.sleep(self.delay)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        async for message in ws:
            frame = json.loads(message)
            self.frames.append(frame)
            self.arrived.set()
            if frame["event"] == "stop":
                self.stop_at = loop.time()
                if self.close_on_stop:
                    await ws.close(1000)
        self.closed_at = loop.time()
        self.closed_by_us = ws.protocol.close_rcvd_then_sent is False
        self.closed.set()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["event"] == event]

    async def until(self, predicate: Callable[[Consumer], bool]) -> None:
        """Wait, at most 5 s, until ``predicate`` holds for the frames received."""
        async with asyncio.timeout(5):
            while not predicate(self):
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def consumer(**options: Any) -> AsyncIterator[Consumer]:
    c = Consumer(**options)
    async with serve(c.handler, "127.0.0.1", 0, process_request=c.process_request) as server:
        c.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/media"
        yield c


#: How long a session here waits after ``stop`` for the consumer (which never closes) to
#: close, before it closes itself: short, as the tests wait for that close (the grace
#: itself has a test of its own; the server's default is 2 s).
STOP_GRACE_SECS = 0.2


def session(url: str, *, track: str = "inbound_track", codec: str = "default",
            stop_grace: float = STOP_GRACE_SECS,
            **options: Any) -> tuple[StreamSession, LegMedia]:
    record = CallRecord(
        call_control_id="v3:stream-test", call_leg_id="leg", call_session_id="session",
        connection_id="default", direction="incoming", from_="+15550001111",
        to="sip:bot@127.0.0.1", state="answered", is_alive=True,
        start_time="2026-12-04T00:00:00Z", owner="test")
    hub = MediaHub("call")
    hub.add_leg("a", 8000)
    media = LegMedia(hub, "a", "PCMU", 8000, 0)
    stream = StreamSession(Host(), Call(record=record, state=CallState.ANSWERED),
                           StreamParams(stream_id="s1", stream_url=url, stream_track=track,
                                        stream_codec=codec),
                           clock=asyncio.get_running_loop().time, stop_grace=stop_grace,
                           **options)
    return stream, media


def talk(media: LegMedia, first: int, count: int) -> None:
    """``count`` 20 ms packets from the caller; packet ``n`` carries the byte ``n``."""
    for n in range(first, first + count):
        data = build_packet(0, False, n, 160 * n, 7, bytes([n]) * 160)
        media.hub.push_packet(media.leg, Track.INBOUND, RtpView.parse(data), 0.0)


async def test_audio_from_before_the_socket_opened_follows_start_in_order(
        caplog: pytest.LogCaptureFixture) -> None:
    """The caller talks while the upgrade takes 0.3 s: the buffer (0.1 s = 5 frames) keeps
    the newest, then live audio follows; drops counted and logged once."""
    before = REGISTRY.get_sample_value(HEAD_DROPPED) or 0.0
    async with consumer(delay=0.3) as c:
        stream, media = session(c.url, buffer_secs=0.1)
        stream.attach(media)
        stream.start()
        with caplog.at_level(logging.WARNING, "callstream.streaming.session"):
            talk(media, 1, 10)  # before the socket is open
            await c.until(lambda c: len(c.of("media")) == 5)
            talk(media, 11, 3)  # live
            await c.until(lambda c: len(c.of("media")) == 8)
        assert [f["event"] for f in c.frames[:2]] == ["connected", "start"]
        media_frames = c.of("media")
        assert [base64.b64decode(f["media"]["payload"])[0] for f in media_frames] == [
            6, 7, 8, 9, 10, 11, 12, 13]
        assert [f["media"]["chunk"] for f in media_frames] == [str(i) for i in range(1, 9)]
        assert [f["sequence_number"] for f in c.frames[1:]] == [str(i) for i in range(1, 10)]
        assert stream.counters.frames_dropped == 5
        assert (REGISTRY.get_sample_value(HEAD_DROPPED) or 0.0) - before == 5
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == ["stream s1: socket not open after 0.1 s of buffered audio; "
                            "dropping the oldest"]
        stream.detach("hangup")
        await asyncio.wait_for(c.closed.wait(), 5)


async def test_after_stop_the_consumer_may_close_or_is_closed_after_the_grace() -> None:
    loop = asyncio.get_running_loop()
    async with consumer(close_on_stop=True) as c:
        stream, media = session(c.url, stop_grace=5.0)
        stream.attach(media)
        stream.start()
        await c.until(lambda c: bool(c.of("start")))
        events = await stream.stop()  # returns once stop is out, not at the close
        assert events and not c.closed.is_set()
        await asyncio.wait_for(c.closed.wait(), 5)
        assert c.of("stop") and c.closed_by_us and c.closed_at - c.stop_at < 5.0
    async with consumer() as c:
        stream, media = session(c.url, stop_grace=0.3)
        stream.attach(media)
        stream.start()
        await c.until(lambda c: bool(c.of("start")))
        stream.detach("hangup")
        await asyncio.wait_for(c.closed.wait(), 5)
        assert c.closed_by_us is False and c.closed_at - c.stop_at >= 0.3
        assert loop.time() > c.stop_at


async def test_live_audio_older_than_the_bound_is_dropped_and_the_head_is_not() -> None:
    """The clock is the test's: frames captured 0.5 s before their turn are overdue
    (bound 0.2 s) and dropped, counted; the newer ones go; the buffered head never is.
    The socket is full (its transport paused writing: no direct write from the media
    callback), so the frames wait for the stream's task, as they do while a consumer reads
    behind."""
    now = [99.0]
    async with consumer() as c:
        stream, media = session(c.url)
        stream = StreamSession(stream.host, stream.call, stream.params, clock=lambda: now[0],
                               latency_bound=0.2)
        stream.attach(media)
        talk(media, 1, 2)  # before start: the head, kept whatever its age
        stream.start()
        await c.until(lambda c: len(c.of("media")) == 2)
        ws = stream._ws
        assert ws is not None
        ws.pause_writing()  # what the transport calls past its write buffer's high-water mark
        now[0] = 100.0
        talk(media, 3, 3)  # live, then stuck for 0.5 s (the sender does not run meanwhile)
        now[0] = 100.5
        talk(media, 6, 2)
        ws.resume_writing()
        await c.until(lambda c: len(c.of("media")) == 4)
        stamps = [int(f["media"]["timestamp"]) for f in c.of("media")]
        assert stamps[:2] == [0, 0] and stamps[2:] == [1500, 1500]  # 3-5 (at 1000) dropped
        assert stream.counters.frames_overdue == 3
        assert REGISTRY.get_sample_value("callstream_stream_frames_overdue_total",
                                         {"stream_id": "s1"}) == 3


async def test_both_tracks_go_out_one_write_per_tick_in_order() -> None:
    """Per tick the pacer sends (outbound) and the caller's packet lands (inbound): the
    pair is written once, from the media path, outbound first as it was captured; with
    the caller silent, outbound frames still go, a tick late at most."""
    async with consumer() as c:
        stream, media = session(c.url, track="both_tracks")
        stream.attach(media)
        stream.start()
        await c.until(lambda c: bool(c.of("start")))
        ws = stream._ws
        assert ws is not None
        writes = 0
        writelines = ws.transport.writelines

        def counting(data: list[bytes]) -> None:
            nonlocal writes
            writes += 1
            writelines(data)

        ws.transport.writelines = counting  # type: ignore[method-assign]
        hub = media.hub
        for n in range(1, 4):
            hub.push_packet("a", Track.OUTBOUND, RtpView.parse(
                build_packet(0, False, n, 160 * n, 9, bytes([100 + n]) * 160)), 0.0)
            assert writes == n - 1  # the outbound frame waits for its inbound partner
            talk(media, n, 1)
            assert writes == n  # written at once, from the callback
        for n in range(4, 6):  # the caller goes quiet
            hub.push_packet("a", Track.OUTBOUND, RtpView.parse(
                build_packet(0, False, n, 160 * n, 9, bytes([100 + n]) * 160)), 0.0)
        assert writes == 4
        await c.until(lambda c: len(c.of("media")) == 8)
        got = [(f["media"]["track"], f["media"]["chunk"],
                base64.b64decode(f["media"]["payload"])[0]) for f in c.of("media")]
        assert got == [("outbound", "1", 101), ("inbound", "1", 1),
                       ("outbound", "2", 102), ("inbound", "2", 2),
                       ("outbound", "3", 103), ("inbound", "3", 3),
                       ("outbound", "4", 104), ("outbound", "5", 105)]
        assert [f["sequence_number"] for f in c.frames[1:]] == [str(i) for i in range(1, 10)]
        assert stream.counters.frames_sent == 9
        stream.detach("hangup")
        await asyncio.wait_for(c.closed.wait(), 5)


@pytest.mark.skipif(compiled(), reason="spies on StreamEncoder._put, a method of a compiled "
                    "class (its calls are direct C calls, its methods read-only)")
async def test_a_pass_through_packet_goes_straight_to_the_socket() -> None:
    """The common case: no queue item, no wake of the stream's task, one write per packet;
    the frames are those the queued path makes (its ``write`` hook off: the same packets)."""
    direct = await five_packets(direct=True)
    assert direct == await five_packets(direct=False)
    assert direct == [(str(n + 1), "inbound", str(n), bytes([n]) * 160) for n in range(1, 6)]


async def five_packets(*, direct: bool) -> list[tuple[str, str, str, bytes]]:
    async with consumer() as c:
        stream, media = session(c.url)
        stream.attach(media)
        stream.start()
        await c.until(lambda c: bool(c.of("start")))
        encoder, ws = stream._encoder, stream._ws
        assert encoder is not None and ws is not None
        if not direct:
            encoder._write = None
        writes = queued = 0
        writelines, put = ws.transport.writelines, encoder._put

        def counting(data: list[bytes]) -> None:
            nonlocal writes
            writes += 1
            writelines(data)

        def counting_put(item: Chunk) -> None:
            nonlocal queued
            queued += 1
            put(item)

        ws.transport.writelines = counting  # type: ignore[method-assign]
        encoder._put = counting_put  # type: ignore[method-assign]
        for n in range(1, 6):
            talk(media, n, 1)
            assert writes == n and not len(encoder) and not stream._wakeup.is_set()
            assert queued == (0 if direct else n)
        await c.until(lambda c: len(c.of("media")) == 5)
        assert encoder.captured == 5 and stream.counters.frames_sent == 6
        stream.detach("hangup")
        await asyncio.wait_for(c.closed.wait(), 5)
        return [(f["sequence_number"], f["media"]["track"], f["media"]["chunk"],
                 base64.b64decode(f["media"]["payload"])) for f in c.of("media")]


@dataclass
class Dropper:
    """A consumer that cuts its first connection after ``start`` and refuses the rest."""

    connections: int = 0
    url: str = ""
    refused: asyncio.Event = field(default_factory=asyncio.Event)

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.connections += 1
        if self.connections > 1:
            self.refused.set()
            return ws.respond(403, "no\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            if json.loads(message)["event"] == "start":
                ws.transport.abort()
                return


@asynccontextmanager
async def dropper() -> AsyncIterator[Dropper]:
    d = Dropper()
    async with serve(d.handler, "127.0.0.1", 0, process_request=d.process_request) as server:
        d.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/media"
        yield d


def reconnecting(url: str, window: float) -> tuple[StreamSession, LegMedia]:
    stream, media = session(url)
    params = StreamParams(stream_id="s1", stream_url=url, stream_reconnect_seconds=window)
    return StreamSession(stream.host, stream.call, params,
                         clock=asyncio.get_running_loop().time), media


async def test_a_stop_while_reconnecting_ends_the_stream_at_once() -> None:
    async with dropper() as d:
        stream, media = reconnecting(d.url, 30.0)
        stream.attach(media)
        stream.start()
        await asyncio.wait_for(d.refused.wait(), 5)  # dropped, the first attempt refused
        assert stream.state.value == "reconnecting"
        assert stream.detach("hangup") == [
            ("streaming.stopped", {"stream_url": d.url, "stream_id": "s1"})]
        attempts = d.connections
        await asyncio.sleep(0.5)
        assert d.connections == attempts  # no attempt after the stop
        host = stream.host
        assert isinstance(host, Host) and host.events == ["streaming.started"]


async def test_the_window_passes_with_streaming_failed() -> None:
    loop = asyncio.get_running_loop()
    async with dropper() as d:
        stream, media = reconnecting(d.url, 0.8)
        host = stream.host
        assert isinstance(host, Host)
        stream.attach(media)
        stream.start()
        await asyncio.wait_for(d.refused.wait(), 5)
        dropped = loop.time()
        async with asyncio.timeout(5):
            while "streaming.failed" not in host.events:
                host.emitted.clear()
                await host.emitted.wait()
        assert host.events == ["streaming.started", "streaming.failed"]
        assert stream.outcome == "failed" and stream.state.value == "stopped"
        assert d.connections >= 3  # attempts from 0.1 s on (0.1, 0.3, 0.7), all refused
        assert loop.time() - dropped >= 0.8 - 0.1 - 0.05  # the window, from the drop


@dataclass
class Freezer:
    """A consumer whose first connection stops reading (no pong ever) after ``start``;
    later connections read normally."""

    url: str = ""
    sockets: list[list[dict[str, Any]]] = field(default_factory=list)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        frames: list[dict[str, Any]] = []
        self.sockets.append(frames)
        first = len(self.sockets) == 1
        async for message in ws:
            frames.append(json.loads(message))
            if first and frames[-1]["event"] == "start":
                ws.transport.pause_reading()  # nothing more is read: pings go unanswered
            if frames[-1]["event"] == "start" and not first:
                self.resumed.set()


async def test_with_a_window_a_stalled_consumer_is_reconnected() -> None:
    f = Freezer()
    async with serve(f.handler, "127.0.0.1", 0, close_timeout=0.2) as server:
        f.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/media"
        stream, media = session(f.url)
        params = StreamParams(stream_id="s1", stream_url=f.url, stream_reconnect_seconds=5)
        stream = StreamSession(stream.host, stream.call, params, stall_timeout=0.4,
                               clock=asyncio.get_running_loop().time)
        stream.attach(media)
        stream.start()
        await asyncio.wait_for(f.resumed.wait(), 5)
        start = f.sockets[1][1]
        assert start["start"]["resumed"] is True and start["sequence_number"] == "2"
        host = stream.host
        assert isinstance(host, Host) and host.events == ["streaming.started"]
        assert stream.counters.reconnects == 1
        stream.detach("hangup")


async def test_a_transcoded_stream_encodes_in_its_task_not_on_the_media_path() -> None:
    async with consumer() as c:
        stream, media = session(c.url, codec="L16")
        stream.attach(media)
        stream.start()
        await c.until(lambda c: bool(c.of("start")))
        ws = stream._ws
        assert ws is not None
        writes = 0
        writelines = ws.transport.writelines

        def counting(data: list[bytes]) -> None:
            nonlocal writes
            writes += 1
            writelines(data)

        ws.transport.writelines = counting  # type: ignore[method-assign]
        media.hub.push_inbound("a", bytes(320), 0.0)
        assert writes == 0  # left to the task
        await c.until(lambda c: len(c.of("media")) == 1)
        assert writes == 1 and len(base64.b64decode(c.of("media")[0]["media"]["payload"])) == 640
        stream.detach("hangup")
        await asyncio.wait_for(c.closed.wait(), 5)


@dataclass
class PlayingHost(Host):
    targets: list[LegMedia] = field(default_factory=list)

    def playback_targets(self, session: StreamSession) -> list[Any]:
        return self.targets


async def test_the_consumers_messages_take_effect_in_the_order_sent() -> None:
    """Read from the connection's callback, not a task: a burst of media, marks, a bad
    frame and a clear acts in order. Marks queued behind the second of audio are echoed
    by the clear (no tick plays it here), after the error for the frame before them."""
    burst = [json.dumps({"event": "media", "media": {"payload": base64.b64encode(
                 bytes(8000)).decode()}}),
             json.dumps({"event": "mark", "mark": {"name": "a"}}),
             json.dumps({"event": "nope"}),
             json.dumps({"event": "mark", "mark": {"name": "b"}}),
             json.dumps({"event": "clear"}),
             json.dumps({"event": "mark", "mark": {"name": "c"}})]
    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            frame = json.loads(message)
            if frame["event"] == "start":
                for text in burst:
                    await ws.send(text)
            elif frame["event"] in ("mark", "error"):
                received.append(frame)
                if len(received) == 4:
                    done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/media"
        plain, media = session(url)
        params = StreamParams(stream_id="s1", stream_url=url, bidirectional=True,
                              stream_bidirectional_mode="rtp",
                              stream_bidirectional_codec="PCMU")
        stream = StreamSession(PlayingHost(targets=[media]), plain.call, params,
                               clock=asyncio.get_running_loop().time)
        stream.attach(media)
        stream.start()
        async with asyncio.timeout(10):
            await done.wait()
        assert [f["event"] for f in received] == ["error", "mark", "mark", "mark"]
        assert [f["mark"]["name"] for f in received[1:]] == ["a", "b", "c"]
        numbers = [int(f["sequence_number"]) for f in received]
        assert numbers == sorted(numbers)
        stream.detach("hangup")
