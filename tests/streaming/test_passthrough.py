"""The G.711 pass-through: a consumer's PCMU played to a PCMU leg as it came.

Every scenario runs twice on real hubs and Playbacks, ticked by hand: once with the
leg's outlet (what a paced RTP endpoint registers, so the hub may hand it the queued
bytes) and once without (the PCM path: decode, mix, encode). What each tick sends and
the ticks marks and errors come back on must agree; with the outlet the payloads are
the consumer's bytes exactly.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.calls.features import LegMedia
from callstream.media.codecs import PCMA, PCMU, CodecInfo
from callstream.media.hub import BridgeSource, MediaHub, Track
from callstream.streaming.playback import Playback

TICK = 0.02


@dataclass
class Echo:
    """One leg, one Playback on it, and what the leg sent each tick (as a G.711 payload)."""

    outlet: bool
    codec: CodecInfo = PCMU
    leg_codec: CodecInfo = PCMU
    hub: MediaHub = field(default_factory=lambda: MediaHub("call"))
    now: float = 100.0
    ticks: int = 0
    passed: int = 0  # frames the outlet sent
    sent: list[bytes | None] = field(default_factory=list)
    echoed: list[tuple[int, str, Any]] = field(default_factory=list)  # (tick, event, what)

    def __post_init__(self) -> None:
        self.hub.add_leg("a", 8000)
        if self.outlet:
            self.hub.set_outlet("a", self.leg_codec.name, self._send)
        self._encoder = self.leg_codec.new_encoder()
        self._outlet_payload: bytes | None = None
        self.playback = Playback(
            [LegMedia(self.hub, "a", "PCMU", 8000, 0)], mode="rtp", codec=self.codec.name,
            sampling_rate=8000, emit=self._emit, clock=lambda: self.now)

    def _send(self, payload: bytes, now: float) -> None:
        self.passed += 1
        self._outlet_payload = payload

    def _emit(self, event: Any) -> None:
        frame = event.as_frame()
        what = frame["mark"]["name"] if frame["event"] == "mark" else frame["payload"]["code"]
        self.echoed.append((self.ticks, frame["event"], what))

    def media(self, data: bytes) -> None:
        self.playback.on_text(orjson.dumps(
            {"event": "media", "media": {"payload": base64.b64encode(data).decode()}}).decode())

    def mark(self, name: str) -> None:
        self.playback.on_text(orjson.dumps({"event": "mark", "mark": {"name": name}}).decode())

    def clear(self) -> None:
        self.playback.on_text('{"event": "clear"}')

    def tick(self) -> bytes | None:
        self.ticks += 1
        self.now += TICK
        self._outlet_payload = None
        frames = dict(self.hub.tick(self.now))
        if "a" in frames:
            assert self._outlet_payload is None  # a leg's frame goes one way a tick
            pcm = frames["a"]
            sent = None if pcm is None else self._encoder.encode(pcm)
        else:
            sent = self._outlet_payload
        self.sent.append(sent)
        return sent

    def skip(self, ticks: int) -> None:
        """A stall of the pacer: ``ticks`` ticks missed."""
        self.ticks += ticks
        self.now += ticks * TICK
        self.hub.skip(ticks)


def decoded(codec: CodecInfo, frames: list[bytes | None]) -> list[bytes | None]:
    decoder = codec.new_decoder()
    return [None if f is None else decoder.decode(f) for f in frames]


Step = tuple[str, Any]

steps = st.lists(st.one_of(
    st.tuples(st.just("media"), st.binary(min_size=0, max_size=700)),
    st.tuples(st.just("mark"), st.text("abc", min_size=1, max_size=3)),
    st.tuples(st.just("clear"), st.none()),
    st.tuples(st.just("tick"), st.integers(1, 8)),
    st.tuples(st.just("skip"), st.integers(1, 6)),
), max_size=40)


def run(echo: Echo, script: list[Step]) -> Echo:
    for kind, arg in script:
        if kind == "media":
            echo.media(arg)
        elif kind == "mark":
            echo.mark(arg)
        elif kind == "clear":
            echo.clear()
        elif kind == "tick":
            for _ in range(arg):
                echo.tick()
        else:
            echo.skip(arg)
    for _ in range(60):  # play out what is left (at most 40 * 700 bytes: 35 frames)
        echo.tick()
    return echo


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_pass_through_plays_what_the_pcm_path_plays_tick_for_tick(script: list[Step]) -> None:
    fast = run(Echo(outlet=True), script)
    slow = run(Echo(outlet=False), script)
    assert fast.echoed == slow.echoed  # marks and errors, on the same ticks
    assert decoded(PCMU, fast.sent) == decoded(PCMU, slow.sent)
    assert fast.passed == sum(f is not None for f in fast.sent)  # every frame went through
    assert slow.passed == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=20))
def test_the_wire_carries_the_consumers_bytes_exactly(messages: list[bytes]) -> None:
    echo = Echo(outlet=True)
    for data in messages:
        echo.media(data)
    sent = b"".join(f for f in run(echo, []).sent if f is not None)
    wire = b"".join(messages)
    pad = -len(wire) % 160
    assert sent == wire + b"\xff" * pad  # the tail padded with PCMU silence


def test_minus_zero_goes_out_as_sent_where_the_pcm_path_rewrote_it() -> None:
    """PCMU 0x7F is -0: decoded and encoded again it comes back as 0xFF (+0)."""
    frame = bytes([0x7F, 0x00, 0x80, 0xFF]) * 40
    fast, slow = Echo(outlet=True), Echo(outlet=False)
    for echo in (fast, slow):
        echo.media(frame)
    assert fast.tick() == frame
    assert slow.tick() == frame.replace(b"\x7f", b"\xff")


def test_pcma_goes_through_and_a_codec_mismatch_takes_the_pcm_path() -> None:
    frame = PCMA.new_encoder().encode(bytes(range(256)) + bytes(64))
    same = Echo(outlet=True, codec=PCMA, leg_codec=PCMA)
    same.media(frame)
    assert same.tick() == frame and same.passed == 1
    other = Echo(outlet=True, codec=PCMU, leg_codec=PCMA)  # a PCMU stream on a PCMA leg
    ulaw = PCMU.new_encoder().encode(bytes(range(256)) + bytes(64))
    other.media(ulaw)
    assert other.tick() == PCMA.new_encoder().encode(PCMU.new_decoder().decode(ulaw))
    assert other.passed == 0


def test_a_standing_echo_is_trimmed_alike() -> None:
    """An echo one frame a tick, a stall of 8 ticks, the burst answering it: the
    standing-queue bound trims the same frames on the same tick both ways."""
    results = []
    for outlet in (True, False):
        echo = Echo(outlet=outlet)
        frames = [bytes([k % 120 + 1]) * 160 for k in range(200)]
        for k in range(20):
            echo.media(frames[k])
            echo.tick()
        echo.skip(8)
        for k in range(20, 28):  # the answer to the stall comes in a burst
            echo.media(frames[k])
        for k in range(28, 120):
            echo.media(frames[k])
            echo.tick()
        results.append(echo)
    fast, slow = results
    assert decoded(PCMU, fast.sent) == decoded(PCMU, slow.sent)
    trimmed = [source.trimmed_frames for echo in results for source in echo.playback._sources]
    assert trimmed[0] == trimmed[1] > 0


def test_hold_tick_waits_for_the_rest_of_a_frame_then_pads() -> None:
    for outlet in (True, False):
        echo = Echo(outlet=outlet)
        echo.media(b"\x10" * 100)
        assert echo.tick() is None  # held: the rest may be on its way
        echo.media(b"\x20" * 100)
        assert echo.tick() == b"\x10" * 100 + b"\x20" * 60
        assert echo.tick() is None  # 40 bytes left: held once more
        assert echo.tick() == b"\x20" * 40 + b"\xff" * 120


def test_the_30_s_limit_refuses_alike() -> None:
    for outlet in (True, False):
        echo = Echo(outlet=outlet)
        echo.media(bytes(8000 * 31))
        assert echo.echoed == [(0, "error", 100004)]
        for _ in range(5):
            echo.media(bytes(8000 * 29))
        assert echo.echoed[1:] == [(0, "error", 100005)]  # 120 s queue: the 5th is refused
        assert echo.playback.buffered_ms == 4 * 29_000


def test_the_120_s_limit_counts_what_played_meanwhile() -> None:
    """Fed 116 s, played 60 s of it: 56 s are queued, so two more 29 s messages fit and
    a third does not (the playback looks at the queues only when one might not fit)."""
    echo = Echo(outlet=True)
    for _ in range(4):
        echo.media(bytes(8000 * 29))
    for _ in range(3000):
        echo.tick()
    echo.media(bytes(8000 * 29))
    echo.media(bytes(8000 * 29))
    assert echo.echoed == []
    echo.media(bytes(8000 * 29))
    assert echo.echoed == [(3000, "error", 100005)]
    assert echo.playback.buffered_ms == 114_000


def test_a_tap_or_a_second_source_mid_stream_keeps_the_order_of_the_audio() -> None:
    """The pass-through stops the tick a frame tap or a bridge attaches, and resumes
    when it goes: every queued frame plays once, in order, and the tap hears its share."""
    echo = Echo(outlet=True)
    frames = [bytes([k + 1]) * 160 for k in range(60)]
    for frame in frames:
        echo.media(frame)
    for _ in range(10):
        echo.tick()
    assert echo.passed == 10
    tap = echo.hub.open_tap("a", Track.OUTBOUND)
    for _ in range(10):
        echo.tick()
    assert echo.passed == 10  # the tap needs PCM: the PCM path
    tap.close()
    for _ in range(10):
        echo.tick()
    assert echo.passed == 20
    bridge_source = BridgeSource(8000, 8000)  # a bridged peer, silent here
    subscription = echo.hub.add_source("a", bridge_source)
    for _ in range(10):
        echo.tick()
    assert echo.passed == 20
    subscription.close()
    for _ in range(25):
        echo.tick()
    assert echo.passed == 40
    assert echo.sent[:60] == frames
    assert echo.sent[60:] == [None] * 5
    decoder = PCMU.new_decoder()
    assert [f.pcm for f in tap.drain()] == [decoder.decode(f) for f in frames[10:20]]


def test_outlet_removed_plays_on_through_the_pcm_path() -> None:
    echo = Echo(outlet=True)
    for k in range(4):
        echo.media(bytes([k + 1]) * 160)
    echo.tick()
    echo.hub.set_outlet("a", None, None)
    for _ in range(3):
        echo.tick()
    assert echo.sent == [bytes([k + 1]) * 160 for k in range(4)] and echo.passed == 1
