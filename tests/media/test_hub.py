"""The media hub: fan-out to taps, drop-oldest queues, mixing, ticks and bridges."""

from __future__ import annotations

import random

import numpy as np
import pytest

from callstream.media.codecs import G722, PCMU, CodecInfo
from callstream.media.exceptions import MediaStateError
from callstream.media.hub import (
    BRIDGE_MAX_FRAMES,
    TAP_QUEUE_FRAMES,
    AudioFrame,
    BridgeSource,
    MediaHub,
    QueueSource,
    Track,
    bridge,
)
from callstream.media.rtp import RtpPacket, RtpView, build_packet
from callstream.media.session import Address, RtpSession

from .helpers import A_ADDR, B_ADDR, frames, samples, tone, tone_snr

TICK = 0.02


def const(value: int, n: int = 160) -> bytes:
    return np.full(n, value, dtype="<i2").tobytes()


def hub_with(*legs: tuple[str, int]) -> MediaHub:
    hub = MediaHub("call")
    for name, rate in legs:
        hub.add_leg(name, rate)
    return hub


def test_slow_tap_drops_the_oldest_and_counts() -> None:
    hub = hub_with(("a", 8000))
    tap = hub.open_tap("a", "inbound")
    for n in range(TAP_QUEUE_FRAMES + 10):
        hub.push_inbound("a", const(n), n * TICK)
    assert len(tap) == TAP_QUEUE_FRAMES
    assert tap.dropped == 10
    assert hub.tap_drops == 10
    first = tap.get_nowait()
    assert first is not None and first.sequence == 11
    assert [f.sequence for f in tap.drain()] == list(range(12, TAP_QUEUE_FRAMES + 11))
    tap.close()
    assert hub.tap_drops == 10  # closed taps still count
    hub.push_inbound("a", const(0), 9.0)
    assert len(tap) == 0


def test_frames_carry_leg_track_rate_and_time() -> None:
    hub = hub_with(("a", 16000))
    tap = hub.open_tap("a", Track.BOTH)
    source = QueueSource(16000)
    source.feed(const(7, 320))
    hub.add_source("a", source)
    hub.push_inbound("a", const(1, 320), 1.0)
    hub.tick(1.0)
    inbound, outbound = tap.drain()
    assert inbound == AudioFrame("a", "inbound", const(1, 320), 16000, 1, 1.0)
    assert outbound == AudioFrame("a", "outbound", const(7, 320), 16000, 1, 1.0)


@pytest.mark.parametrize(
    ("text", "track"),
    [
        ("inbound_track", Track.INBOUND),
        ("outbound_track", Track.OUTBOUND),
        ("both_tracks", Track.BOTH),
        ("both", Track.BOTH),
        ("Inbound", Track.INBOUND),
    ],
)
def test_track_names(text: str, track: Track) -> None:
    assert Track.parse(text) is track


def test_unknown_track() -> None:
    with pytest.raises(ValueError, match="unknown track 'sideways'"):
        Track.parse("sideways")


def test_mixing_saturates() -> None:
    hub = hub_with(("a", 8000))
    for value in (30000, 10000, -5000):
        source = QueueSource(8000)
        source.feed(const(value))
        hub.add_source("a", source)
    ((leg, pcm),) = hub.tick(0.0)
    assert leg == "a"
    assert pcm == const(32767)  # summed first (35000), clipped once


def test_mix_does_not_depend_on_order() -> None:
    hub = hub_with(("a", 8000))
    for value in (30000, 10000, -15000):
        source = QueueSource(8000)
        source.feed(const(value))
        hub.add_source("a", source)
    assert hub.tick(0.0) == [("a", const(25000))]


def test_mixing_negative_saturates() -> None:
    hub = hub_with(("a", 8000))
    for value in (-30000, -30000):
        source = QueueSource(8000)
        source.feed(const(value))
        hub.add_source("a", source)
    assert hub.tick(0.0) == [("a", const(-32768))]


def test_idle_leg_sends_silence_or_nothing() -> None:
    hub = MediaHub()
    hub.add_leg("quiet", 8000)
    hub.add_leg("hissy", 8000, send_silence_when_idle=True)
    tap = hub.open_tap("hissy", "outbound")
    assert hub.tick(0.0) == [("quiet", None), ("hissy", bytes(320))]
    assert hub.counters("quiet")["idle_ticks"] == 1
    assert len(tap) == 1
    hub.set_send_silence_when_idle("quiet", True)
    assert hub.tick(0.02)[0] == ("quiet", bytes(320))


def test_tick_order() -> None:
    """Each tick reads every source once, in order, and legs come out in order."""
    hub = hub_with(("a", 8000), ("b", 8000))
    reads: list[tuple[str, float]] = []

    class Probe:
        def __init__(self, name: str) -> None:
            self.name = name

        def read(self, now: float) -> bytes | None:
            reads.append((self.name, now))
            return None

        def skip(self, frames: int) -> int:
            return 0

    hub.add_source("a", Probe("a1"))
    hub.add_source("a", Probe("a2"))
    hub.add_source("b", Probe("b1"))
    assert [leg for leg, _ in hub.tick(0.0)] == ["a", "b"]
    hub.tick(0.02)
    assert reads == [(name, t) for t in (0.0, 0.02) for name in ("a1", "a2", "b1")]
    assert hub.ticks == 2


def test_bridge_crosses_within_one_tick() -> None:
    hub = hub_with(("a", 8000), ("b", 8000))
    bridged = bridge(hub, "a", hub, "b")
    hub.push_inbound("a", const(111), 0.0)  # tick phase 1: inbound of every leg
    hub.push_inbound("b", const(222), 0.0)
    assert hub.tick(0.0) == [("a", const(222)), ("b", const(111))]  # phase 2
    assert hub.tick(0.02) == [("a", None), ("b", None)]
    bridged.close()
    hub.push_inbound("a", const(1), 0.04)
    assert hub.tick(0.04) == [("a", None), ("b", None)]


def test_bridge_source_bounds_delay() -> None:
    source = BridgeSource(8000, 8000)
    for n in range(10):
        source.feed_frame(AudioFrame("a", "inbound", const(n), 8000, n + 1, 0.0))
    assert source.dropped_bytes == 5 * 320
    got = [source.read(0.0) for _ in range(BRIDGE_MAX_FRAMES + 1)]
    assert got[:-1] == [const(n) for n in range(5, 10)]
    assert got[-1] is None


IN_PACKET = RtpView.of_built(build_packet(0, False, 1, 0, 7, b"in"))
OUT_PACKET = RtpView.of_built(build_packet(0, False, 1, 0, 8, b"out"))


def test_callbacks_and_packet_taps() -> None:
    hub = hub_with(("a", 8000))
    seen: list[tuple[str, str, RtpView]] = []
    frames_seen: list[AudioFrame] = []

    def broken(frame: AudioFrame) -> None:
        raise RuntimeError("tap bug")

    hub.add_frame_callback("a", "inbound", broken)
    sub = hub.add_frame_callback("a", "inbound", frames_seen.append)
    hub.add_packet_callback("a", "both", lambda leg, track, data: seen.append((leg, track, data)))
    hub.push_packet("a", Track.INBOUND, IN_PACKET, 0.0)
    hub.push_packet("a", Track.OUTBOUND, OUT_PACKET, 0.0)
    hub.push_inbound("a", const(1), 0.0)
    assert seen == [("a", "inbound", IN_PACKET), ("a", "outbound", OUT_PACKET)]
    assert len(frames_seen) == 1
    assert hub.callback_errors == 1
    sub.close()
    sub.close()  # idempotent
    hub.push_inbound("a", const(1), 0.02)
    assert len(frames_seen) == 1
    assert hub.counters("a")["packets_in"] == 1


def test_tap_waker_fires_on_empty_to_ready() -> None:
    hub = hub_with(("a", 8000))
    tap = hub.open_tap("a")
    wakes = []
    tap.waker = lambda: wakes.append(1)
    hub.push_inbound("a", const(1), 0.0)
    hub.push_inbound("a", const(2), 0.02)
    assert len(wakes) == 1
    tap.drain()
    hub.push_inbound("a", const(3), 0.04)
    assert len(wakes) == 2
    tap.close()
    assert len(wakes) == 3 and tap.closed


def test_legs_are_checked() -> None:
    hub = hub_with(("a", 8000))
    with pytest.raises(MediaStateError, match="already"):
        hub.add_leg("a", 8000)
    with pytest.raises(MediaStateError, match="no leg 'zz'"):
        hub.push_inbound("zz", b"", 0.0)
    with pytest.raises(MediaStateError, match="no leg 'zz'"):
        hub.open_tap("zz")
    tap = hub.open_tap("a")
    hub.remove_leg("a")
    assert tap.closed and hub.legs == ()


def test_queue_source_frames_marks_and_clear() -> None:
    source = QueueSource(8000)
    marks: list[str] = []
    source.mark(lambda: marks.append("idle"))  # nothing queued: at once
    assert marks == ["idle"]
    source.feed(const(5, 400))  # 50 ms
    source.mark(lambda: marks.append("end"))
    assert source.read(0.0) == const(5)
    assert source.read(0.0) == const(5)
    assert marks == ["idle"]
    assert source.read(0.0) == const(5, 80) + bytes(160)  # tail padded
    assert marks == ["idle", "end"]
    assert source.read(0.0) is None
    source.feed(const(1, 1600))
    source.mark(lambda: marks.append("cleared"))
    source.clear()
    assert marks[-1] == "cleared"
    assert source.read(0.0) is None
    assert source.buffered_ms == 0


def test_queue_source_skips_overdue_audio_and_fires_its_marks_in_order() -> None:
    """Missed ticks drop their audio from the head (partial frames too); what follows plays
    on time; marks inside the dropped audio fire now, in order, later ones wait."""
    source = QueueSource(8000)
    marks: list[str] = []
    for n in range(1, 6):
        source.feed(const(n))  # frame n holds the value n
        source.mark(lambda n=n: marks.append(f"after {n}"))
    assert source.skip(3) == 3
    assert marks == ["after 1", "after 2", "after 3"] and source.skipped_frames == 3
    assert source.read(0.0) == const(4)
    assert marks[-1] == "after 4"
    source.feed(const(7, 100))  # half a frame after frame 5
    assert source.skip(4) == 2  # only what was there: frame 5 and the half
    assert marks[-1] == "after 5" and source.buffered_ms == 0
    assert source.read(0.0) is None and source.skip(1) == 0


def test_bridge_source_skips_overdue_audio() -> None:
    source = BridgeSource(8000, 8000)
    for n in range(4):
        source.feed_frame(AudioFrame("a", "inbound", const(n), 8000, n + 1, 0.0))
    assert source.skip(3) == 3
    assert source.read(0.0) == const(3) and source.skip(2) == 0


def test_hub_skip_reaches_every_source_of_every_leg() -> None:
    hub = hub_with(("a", 8000), ("b", 16000))
    sources = [QueueSource(8000), QueueSource(8000), QueueSource(16000)]
    for source in sources:
        source.feed(bytes(source.sample_rate // 50 * 2 * 10))  # 10 frames each
    hub.add_source("a", sources[0])
    hub.add_source("a", sources[1])
    hub.add_source("b", sources[2])
    assert hub.skip(4) == 12
    assert [s.buffered_ms for s in sources] == [120.0, 120.0, 120.0]


def test_queue_source_resamples_and_bounds() -> None:
    source = QueueSource(8000, max_seconds=1)
    source.feed(tone(1000, 24000, 0.2), sample_rate=24000)
    assert source.buffered_ms == pytest.approx(200, abs=1)
    source.feed(bytes(16000))
    assert source.overflow_bytes == 16000
    source.feed(b"\x01", sample_rate=24000)  # an odd byte is no sample
    out = b"".join(iter(lambda: source.read(0.0), None))
    assert tone_snr(samples(out), 1000, 8000, skip=400) > 40


def leg_session(codec: CodecInfo, remote: Address, seed: int) -> RtpSession:
    return RtpSession(codec, remote_address=remote, rng=random.Random(seed), jitter_prefetch_ms=20)


def test_bridge_pcmu_to_g722_both_ways() -> None:
    """Two calls bridged: PCMU caller <-> our hub A <-> hub B <-> G.722 callee.

    Each remote party sends a tone; each must hear the other's, transcoded.
    """
    hub_a, hub_b = MediaHub("a"), MediaHub("b")
    hub_a.add_leg("a", PCMU.sample_rate)
    hub_b.add_leg("b", G722.sample_rate)
    bridge(hub_a, "a", hub_b, "b")
    leg_a = leg_session(PCMU, A_ADDR, 1)
    leg_b = leg_session(G722, B_ADDR, 2)
    # The remote parties: a PCMU phone sending 500 Hz, a G.722 phone sending 1 kHz.
    caller_pcm = frames(tone(500, 8000, 1.0), 320)
    callee_pcm = frames(tone(1000, 16000, 1.0), 640)
    caller_enc, callee_enc = PCMU.new_encoder(), G722.new_encoder()
    caller_dec, callee_dec = PCMU.new_decoder(), G722.new_decoder()
    heard_by_caller, heard_by_callee = [], []
    for n in range(50):
        now = n * TICK
        leg_a.receive_rtp(
            RtpPacket(0, n, n * 160, 0xA, caller_enc.encode(caller_pcm[n])).serialize(), A_ADDR, now
        )
        leg_b.receive_rtp(
            RtpPacket(9, n, n * 160, 0xB, callee_enc.encode(callee_pcm[n])).serialize(), B_ADDR, now
        )
        # The pacer's tick: every inbound first, then every hub's outbound.
        for hub, leg, session in ((hub_a, "a", leg_a), (hub_b, "b", leg_b)):
            pcm = session.playout(now)
            if pcm is not None:
                hub.push_inbound(leg, pcm, now)
        for hub, session in ((hub_a, leg_a), (hub_b, leg_b)):
            for _, pcm in hub.tick(now):
                if pcm is None:
                    session.skip_frame(now)
                else:
                    session.send_frame(pcm, now)
        for data, _ in leg_a.datagrams_to_send():
            heard_by_caller.append(caller_dec.decode(RtpPacket.parse(data).payload))
        for data, _ in leg_b.datagrams_to_send():
            heard_by_callee.append(callee_dec.decode(RtpPacket.parse(data).payload))
    caller_hears = samples(b"".join(heard_by_caller))
    callee_hears = samples(b"".join(heard_by_callee))
    assert len(heard_by_caller) >= 45 and len(heard_by_callee) >= 45
    snr_caller = tone_snr(caller_hears, 1000, 8000, skip=800)
    snr_callee = tone_snr(callee_hears, 500, 16000, skip=1600)
    assert snr_caller > 25, snr_caller
    assert snr_callee > 25, snr_callee
