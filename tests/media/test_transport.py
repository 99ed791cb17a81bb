"""The asyncio edge over real loopback sockets, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from callstream import compiled
from callstream.media.clock import unix_from_ntp
from callstream.media.codecs import G722, PCMU
from callstream.media.dtmf import DtmfDigit
from callstream.media.exceptions import MediaStateError, PortsExhaustedError
from callstream.media.hub import AudioFrame, MediaHub, QueueSource, Track
from callstream.media.rtcp import RtcpSenderReport, parse_rtcp
from callstream.media.rtp import RtpPacket, build_packet
from callstream.media.session import RtpSession, SessionEvent
from callstream.media.transport import Pacer, PortAllocator, TapReader, open_rtp_endpoint

from .helpers import CountingPcmu, frames, samples, tone, tone_snr

LOCALHOST = "127.0.0.1"


def run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_port_range(pairs: int = 8) -> tuple[int, int]:
    """A stretch of ports that were free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        base = s.getsockname()[1]
    base = min(base, 65000 - 2 * pairs) & ~1
    return base, base + 2 * pairs - 1


def test_port_allocator_hands_out_even_pairs() -> None:
    ports = PortAllocator(10001, 10008)
    assert ports.capacity == 3  # 10002, 10004, 10006 (10008 has no odd partner)
    got = [ports.allocate() for _ in range(3)]
    assert sorted(got) == [10002, 10004, 10006]
    with pytest.raises(PortsExhaustedError, match=r"^no free RTP port pair in 10001-10008$"):
        ports.allocate()
    ports.release(10004)
    assert ports.allocate() == 10004
    assert ports.in_use == 3


def test_port_allocator_is_round_robin() -> None:
    ports = PortAllocator(20000, 20009)
    first = ports.allocate()
    ports.release(first)
    assert ports.allocate() != first  # a released port rests


def test_port_allocator_starts_at_a_random_pair() -> None:
    # Two servers (or a restart) must not all start at the bottom of a shared range.
    first = PortAllocator(20000, 21999, rng=random.Random(5)).allocate()
    assert first == 20000 + 2 * random.Random(5).randrange(1000)
    firsts = {PortAllocator(20000, 21999).allocate() for _ in range(20)}
    assert len(firsts) > 1


def test_port_allocator_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="no even/odd pair"):
        PortAllocator(5001, 5002)
    with pytest.raises(ValueError):
        PortAllocator(0, 10)


def test_two_legs_exchange_rtp_over_udp(loop_kind: str) -> None:
    """Two legs on real sockets, paced: a's source is heard at b; b answers a."""

    async def main() -> None:
        start, end = free_port_range()
        ports = PortAllocator(start, end)
        pacer = Pacer()
        hub_a, hub_b = MediaHub("a"), MediaHub("b")
        hub_a.add_leg("a", 8000)
        hub_b.add_leg("b", 8000, send_silence_when_idle=True)
        events: list[SessionEvent] = []
        session_a = RtpSession(PCMU, rng=random.Random(1), name="a", rtcp_interval=0.2)
        session_b = RtpSession(PCMU, rng=random.Random(2), name="b", rtcp_interval=0.2)
        endpoint_a = await open_rtp_endpoint(
            session_a, hub_a, "a", host=LOCALHOST, ports=ports, pacer=pacer
        )
        endpoint_b = await open_rtp_endpoint(
            session_b, hub_b, "b", host=LOCALHOST, ports=ports, pacer=pacer,
            on_event=events.append,
        )
        try:
            # Only a knows where to send; b learns a's address from its packets.
            session_a.set_remote_address((LOCALHOST, endpoint_b.local_port))
            source = QueueSource(8000)
            source.feed(tone(440, 8000, 0.6))
            hub_a.add_source("a", source)
            tap = hub_b.open_tap("b", Track.INBOUND)
            wire: list[bytes] = []
            hub_b.add_packet_callback("b", "inbound",
                                      lambda leg, track, packet: wire.append(packet.data))
            received: list[AudioFrame] = []

            async def consume() -> None:
                async for frame in TapReader(tap):
                    received.append(frame)

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0.8)
            session_a.send_dtmf("7", duration_ms=60)
            await asyncio.sleep(0.3)
            assert session_b.remote_address == (LOCALHOST, endpoint_a.local_port)
            assert session_a.packets_received > 10  # b's silence came back
            assert session_b.packets_received >= 30
            assert len(wire) == session_b.packets_received
            pcm = b"".join(f.pcm for f in received[2:28])
            assert tone_snr(samples(pcm), 440, 8000) > 30
            assert [e.digit for e in events if isinstance(e, DtmfDigit)] == ["7"]
            # RTCP flowed on the odd ports, both ways.
            assert session_a.rtcp_received >= 2 and session_b.rtcp_received >= 2
            assert session_b.remote_cname == session_a.cname
            assert session_a.rtt is not None and session_a.rtt < 0.1
            assert pacer.errors == 0
        finally:
            endpoint_a.close()
            endpoint_b.close()
        tap.close()
        await asyncio.wait_for(consumer, 1)
        assert not pacer.running
        assert ports.in_use == 0
        assert endpoint_a.icmp_errors == 0

    run(loop_kind, main)


def test_unreachable_peer_does_not_raise(loop_kind: str) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCALHOST, 0))
            dead = s.getsockname()[1]  # closed again below: ICMP port unreachable
        start, end = free_port_range()
        pacer = Pacer()
        hub = MediaHub()
        hub.add_leg("a", 8000, send_silence_when_idle=True)
        session = RtpSession(PCMU, remote_address=(LOCALHOST, dead))
        endpoint = await open_rtp_endpoint(
            session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end), pacer=pacer
        )
        await asyncio.sleep(0.2)
        endpoint.error_received(ConnectionRefusedError(111, "Connection refused"))
        assert endpoint.icmp_errors >= 1
        assert session.packets_sent >= 5
        assert pacer.errors == 0 and not endpoint.closed
        endpoint.close()

    run(loop_kind, main)


def test_pacer_keeps_time_and_skips_after_a_stall(loop_kind: str) -> None:
    async def main() -> None:
        start, end = free_port_range()
        pacer = Pacer()
        hub = MediaHub()
        hub.add_leg("a", 8000)
        endpoint = await open_rtp_endpoint(
            RtpSession(PCMU), hub, "a", host=LOCALHOST, ports=PortAllocator(start, end),
            pacer=pacer,
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0.5)
        elapsed = loop.time() - t0
        assert abs(pacer.ticks - elapsed / 0.02) <= 2  # no drift
        # Queued playback (a stream's audio) plays on through the stall: every tick, run
        # or skipped, takes one frame of it, so it ends when it would have without one.
        source = QueueSource(8000)
        source.feed(bytes(320 * 100))  # 2 s
        hub.add_source("a", source)
        ticks, skipped = pacer.ticks, pacer.skipped_ticks
        time.sleep(0.2)  # noqa: ASYNC251 - a deliberate blocking stall of 10 ticks
        await asyncio.sleep(0.05)
        assert pacer.skipped_ticks >= 5
        assert pacer.late_ticks >= 1
        missed = pacer.skipped_ticks - skipped
        assert source.skipped_frames == pacer.discarded_frames == missed
        assert source.played_frames + source.skipped_frames == pacer.ticks - ticks + missed
        endpoint.close()

    run(loop_kind, main)


@pytest.mark.skipif(compiled(), reason="breaks RtpEndpoint.pull_inbound by assigning it: "
                    "the compiled Pacer calls the class's method directly")
def test_a_failing_leg_does_not_stop_the_others() -> None:
    async def main() -> None:
        start, end = free_port_range()
        ports = PortAllocator(start, end)
        pacer = Pacer()
        hub = MediaHub()
        hub.add_leg("bad", 8000)
        hub.add_leg("good", 8000, send_silence_when_idle=True)
        bad = await open_rtp_endpoint(
            RtpSession(PCMU), hub, "bad", host=LOCALHOST, ports=ports, pacer=pacer
        )
        good_session = RtpSession(PCMU, remote_address=(LOCALHOST, 9))
        good = await open_rtp_endpoint(
            good_session, hub, "good", host=LOCALHOST, ports=ports, pacer=pacer
        )

        def broken(now: float) -> None:
            raise RuntimeError("bug")

        bad.pull_inbound = broken  # type: ignore[method-assign]
        await asyncio.sleep(0.1)
        assert pacer.errors >= 3
        assert good_session.packets_sent >= 3
        bad.close()
        good.close()

    asyncio.run(main())


def test_endpoint_supplies_wall_clock_and_takes_a_new_session() -> None:
    """RTCP needs Unix time; the endpoint maps loop.time() to it for its sessions."""

    async def main() -> None:
        start, end = free_port_range()
        hub = MediaHub()
        hub.add_leg("a", 8000)
        session = RtpSession(PCMU, remote_address=(LOCALHOST, 9))
        assert session.wallclock_offset is None
        endpoint = await open_rtp_endpoint(
            session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end)
        )
        loop = asyncio.get_running_loop()
        assert session.wallclock_offset is not None
        assert loop.time() + session.wallclock_offset == pytest.approx(time.time(), abs=0.5)
        session.send_frame(bytes(320), loop.time())
        session.handle_timeout(loop.time() + 100)
        (data, _), = session.rtcp_datagrams_to_send()
        sr = parse_rtcp(data)[0]
        assert isinstance(sr, RtcpSenderReport)
        assert unix_from_ntp(sr.sender_info.ntp_timestamp) == pytest.approx(
            time.time() + 100, abs=1
        )
        # The answer picked another codec: a new session replaces the old one.
        hub.remove_leg("a")
        hub.add_leg("a", 16000)
        replacement = RtpSession(G722, remote_address=(LOCALHOST, 9), rtcp_interval=0.05)
        endpoint.session = replacement
        assert replacement.wallclock_offset == session.wallclock_offset
        assert replacement.next_deadline() is not None
        endpoint.service_timers(loop.time() + 1)
        assert replacement.rtcp_sent == 1
        endpoint.close()

    asyncio.run(main())


def test_busy_port_is_skipped(loop_kind: str) -> None:
    async def main() -> None:
        start, end = free_port_range()
        ports = PortAllocator(start, end, rng=random.Random(4))
        first = PortAllocator(start, end, rng=random.Random(4)).allocate()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind((LOCALHOST, first))
            hub = MediaHub()
            hub.add_leg("a", 8000)
            endpoint = await open_rtp_endpoint(
                RtpSession(PCMU), hub, "a", host=LOCALHOST, ports=ports
            )
            assert endpoint.local_port == (start if first + 2 > end else first + 2)
            assert ports.in_use == 1
            endpoint.close()

    run(loop_kind, main)


def squat(ports: list[int]) -> list[socket.socket]:
    """Bind ``ports`` as another program on the host would."""
    held = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCALHOST, port))
        held.append(sock)
    return held


def test_a_range_mostly_held_by_others_still_yields_its_free_pair(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program holds all but one pair of the range (beyond the 16 pairs tried
    before): the allocator tries every pair, finds it, and says how many were busy."""

    async def main() -> None:
        start, end = free_port_range(pairs=40)
        # The allocator starts at a random pair: put the free one 17-39 pairs after it.
        seed = random.randrange(1 << 16)
        first = PortAllocator(start, end, rng=random.Random(seed)).allocate()
        free = start + (first - start + 2 * random.randrange(17, 40)) % (2 * 40)
        held = squat([p for p in range(start, end, 2) if p != free])
        try:
            hub = MediaHub()
            hub.add_leg("a", 8000)
            with caplog.at_level("WARNING", logger="callstream.media.transport"):
                endpoint = await open_rtp_endpoint(
                    RtpSession(PCMU), hub, "a", host=LOCALHOST,
                    ports=PortAllocator(start, end, rng=random.Random(seed)))
            # Closed whatever the asserts say: uvloop's loop.close() waits for open sockets.
            try:
                assert endpoint.local_port == free
                assert "RTP port pairs of" in caplog.text and "were busy" in caplog.text
            finally:
                endpoint.close()
        finally:
            for sock in held:
                sock.close()

    run(loop_kind, main)


def test_a_range_held_by_others_fails_after_trying_every_pair(loop_kind: str) -> None:
    async def main() -> None:
        start, end = free_port_range(pairs=100)
        held = squat(list(range(start, end, 2)))
        try:
            hub = MediaHub()
            hub.add_leg("a", 8000)
            with pytest.raises(PortsExhaustedError) as info:
                await open_rtp_endpoint(
                    RtpSession(PCMU), hub, "a", host=LOCALHOST, ports=PortAllocator(start, end)
                )
            assert info.value.busy == 100
            assert str(info.value) == (
                f"no free RTP port pair in {start}-{end} (100 pairs held by other programs)"
            )
        finally:
            for sock in held:
                sock.close()

    run(loop_kind, main)


def test_leg_rate_must_match_codec() -> None:
    async def main() -> None:
        hub = MediaHub()
        hub.add_leg("a", 8000)
        with pytest.raises(MediaStateError, match="runs at 8000 Hz but its codec G722"):
            await open_rtp_endpoint(
                RtpSession(G722), hub, "a", host=LOCALHOST, ports=PortAllocator(40000, 40010)
            )

    asyncio.run(main())


def test_tap_reader_ends_when_the_tap_closes() -> None:
    async def main() -> None:
        hub = MediaHub()
        hub.add_leg("a", 8000)
        tap = hub.open_tap("a")
        reader = TapReader(tap)
        waiter = asyncio.create_task(reader.get())
        await asyncio.sleep(0)
        hub.push_inbound("a", bytes(320), 1.0)
        frame = await asyncio.wait_for(waiter, 1)
        assert frame is not None and frame.time == 1.0
        waiter = asyncio.create_task(reader.get())
        await asyncio.sleep(0)
        tap.close()
        assert await asyncio.wait_for(waiter, 1) is None

    asyncio.run(main())


def test_a_leg_nobody_hears_is_not_decoded_and_a_tap_hears_from_the_next_tick() -> None:
    """The inbound tick of a stream that forwards packets only: the jitter buffer plays
    out unheard (no decode); once a tap attaches, its PCM is what it would have been."""

    async def main() -> None:
        start, end = free_port_range()
        decoders: list[CountingPcmu] = []

        def decoder() -> CountingPcmu:
            decoders.append(CountingPcmu())
            return decoders[-1]

        codec = dataclasses.replace(PCMU, decoder_factory=decoder)
        hub = MediaHub()
        hub.add_leg("a", 8000)
        session = RtpSession(codec, remote_address=(LOCALHOST, 9))
        endpoint = await open_rtp_endpoint(
            session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end))
        reference = RtpSession(PCMU, remote_address=(LOCALHOST, 9))
        encode = PCMU.new_encoder().encode
        audio = frames(tone(440, 8000, 1.0), 320)
        heard: list[AudioFrame] = []
        played = 0
        try:
            for n in range(40):
                now = n * 0.02
                if n < 30:  # the caller stops talking at 30: concealment, then silence
                    packet = build_packet(0, n == 0, n, n * 160, 0x1234, encode(audio[n]))
                    endpoint.datagram_received(packet, (LOCALHOST, 9))
                    reference.receive_rtp(packet, (LOCALHOST, 9), now)
                if n == 20:
                    assert decoders[0].calls == 1  # playout's start only
                    hub.add_frame_callback("a", Track.INBOUND, heard.append)
                if n == 31:
                    heard.clear()
                    tap = hub.open_tap("a", Track.INBOUND)  # a new tap, mid-concealment
                endpoint.pull_inbound(now)
                expected = reference.playout(now)
                played += expected is not None
                if n >= 20:
                    assert heard[-1].pcm == expected and heard[-1].sequence == played
            assert hub.counters("a")["frames_in"] == played
            assert [f.pcm for f in tap.drain()] == [f.pcm for f in heard]
            ours, theirs = session.jitter_buffer, reference.jitter_buffer
            assert (ours.played, ours.lost, ours.concealed_frames, ours.underruns) == (
                theirs.played, theirs.lost, theirs.concealed_frames, theirs.underruns)
            assert ours.concealed_frames > 0
        finally:
            endpoint.close()

    asyncio.run(main())


def test_outbound_packets_no_tap_wants_are_counted_and_sent_alike() -> None:
    async def main() -> None:
        start, end = free_port_range()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LOCALHOST, 0))
            peer.settimeout(5)
            hub = MediaHub()
            hub.add_leg("a", 8000, send_silence_when_idle=True)
            session = RtpSession(PCMU, remote_address=peer.getsockname())
            endpoint = await open_rtp_endpoint(
                session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end))
            tapped: list[bytes] = []
            for n in range(10):
                if n == 5:
                    hub.add_packet_callback("a", Track.OUTBOUND,
                                            lambda leg, track, packet: tapped.append(packet.data))
                ((_, pcm),) = hub.tick(n * 0.02)
                endpoint.send_outbound(pcm, n * 0.02)
            sent = [peer.recv(2048) for _ in range(10)]
            endpoint.close()
        assert hub.counters("a")["packets_out"] == session.packets_sent == 10
        assert tapped == sent[5:]
        assert [RtpPacket.parse(data).payload for data in sent] == [b"\xff" * 160] * 10

    asyncio.run(main())


@pytest.mark.skipif(compiled(), reason="spies on RtpEndpoint.service_timers by assigning it: "
                    "the compiled Pacer calls the class's method directly")
def test_the_pacer_runs_a_legs_timers_only_when_due() -> None:
    async def main() -> None:
        start, end = free_port_range()
        hub = MediaHub()
        hub.add_leg("a", 8000)
        session = RtpSession(PCMU, remote_address=(LOCALHOST, 9), rtcp_interval=0.2,
                             media_timeout=None)
        pacer = Pacer()
        endpoint = await open_rtp_endpoint(
            session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end), pacer=pacer)
        pacer.stop()  # ticked by hand below
        serviced: list[float] = []
        service_timers = endpoint.service_timers

        def spy(now: float) -> None:
            serviced.append(now)
            service_timers(now)

        endpoint.service_timers = spy  # type: ignore[method-assign]
        deadline = session.next_deadline()
        assert deadline is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        ticks = 0
        while now < deadline:
            pacer.tick(now)
            now += 0.02
            ticks += 1
        assert serviced == [] and ticks >= 5
        pacer.tick(now)
        assert serviced == [now] and session.rtcp_sent == 1
        pacer.tick(now + 0.02)
        assert serviced == [now]  # the next report is due seconds later
        endpoint.close()


def test_a_paced_leg_sends_a_g711_queue_as_it_came_and_dtmf_takes_its_ticks() -> None:
    """The hub's outlet: a PCMU queue on a PCMU leg goes out byte for byte (0x7F, -0,
    included: the PCM path would send 0xFF); DTMF events take their ticks and mute the
    audio, its gaps carry it, as without the outlet."""

    async def main() -> None:
        start, end = free_port_range()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((LOCALHOST, 0))
        peer.settimeout(2)
        pacer = Pacer()
        hub = MediaHub()
        hub.add_leg("a", 8000)
        session = RtpSession(PCMU, remote_address=peer.getsockname())
        endpoint = await open_rtp_endpoint(
            session, hub, "a", host=LOCALHOST, ports=PortAllocator(start, end), pacer=pacer)
        pacer.stop()  # ticked by hand below
        try:
            frames = [bytes([0x7F, k + 1]) * 80 for k in range(30)]
            source = QueueSource(8000, codec=PCMU)
            for frame in frames:
                source.feed(frame)
            hub.add_source("a", source)
            now = asyncio.get_running_loop().time()
            for k in range(30):
                if k == 5:
                    session.send_dtmf("1", duration_ms=60, gap_ms=60)  # 3 ticks each
                pacer.tick(now + 0.02 * k)
            got = [peer.recv(2048) for _ in range(30)]
        finally:
            endpoint.close()
            peer.close()
        types = [packet[1] & 0x7F for packet in got]
        assert types == [0] * 5 + [101] * 5 + [0] * 20  # 3 end packets (RFC 4733 §2.5.1.4)
        audio = [packet for packet in got if packet[1] & 0x7F == 0]
        assert [packet[12:] for packet in audio] == frames[:5] + frames[10:]
        stamps = [int.from_bytes(packet[4:8], "big") for packet in audio]
        assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)] == (
            [160] * 4 + [6 * 160] + [160] * 19)
        numbers = [int.from_bytes(packet[2:4], "big") for packet in got]
        assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(numbers)] == [1] * 29

    asyncio.run(main())
