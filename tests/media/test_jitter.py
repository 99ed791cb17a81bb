"""The jitter buffer: reorder, duplicates, loss and concealment, wraparound, re-framing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.media.codecs import G722, L16_8K, PCMA, PCMU, CodecInfo
from callstream.media.codecs.pcm import peak
from callstream.media.jitter import (
    JITTER_CAPACITY,
    MAX_CONCEAL_FRAMES,
    NO_AUDIO,
    JitterBuffer,
    PushResult,
)

from .helpers import CountingPcmu, frames, tone

# L16 at 8 kHz is lossless: a payload's PCM is recognizable after playout.
CODEC = L16_8K


def payload(n: int) -> bytes:
    """20 ms of L16 whose every sample is ``n`` (big-endian on the wire)."""
    return int(n).to_bytes(2, "big", signed=True) * 160


def level(frame: bytes | None) -> int | None:
    """The constant sample value of a frame, or None if it is not constant."""
    if frame is None:
        return None
    values = np.frombuffer(frame, dtype="<i2")
    return int(values[0]) if (values == values[0]).all() else None


def buffer(codec: CodecInfo = CODEC, **kwargs: int) -> JitterBuffer:
    return JitterBuffer(codec, codec.new_decoder(), **kwargs)


def test_waits_for_prefetch() -> None:
    jb = buffer(prefetch_ms=40)
    assert jb.pull() is None
    jb.push(1, payload(1000))
    assert jb.pull() is None  # 20 ms buffered, 40 needed
    jb.push(2, payload(2000))
    assert level(jb.pull()) == 1000
    assert jb.playing


def test_reorders() -> None:
    jb = buffer()
    for seq in (3, 1, 2, 5, 4):
        assert jb.push(seq, payload(seq * 100)) is PushResult.ACCEPTED
    assert [level(jb.pull()) for _ in range(5)] == [100, 200, 300, 400, 500]
    assert jb.lost == 0


def test_placeholders_take_a_frame_and_no_audio_takes_none() -> None:
    """None (an event instead of audio) plays a frame of silence; NO_AUDIO (an event
    between audio packets) holds its sequence number and plays as nothing."""
    jb = buffer()
    for seq, item in enumerate([payload(1), NO_AUDIO, payload(2), None, payload(3),
                                NO_AUDIO, NO_AUDIO, payload(4)], start=1):
        jb.push(seq, item)
    assert [level(jb.pull()) for _ in range(5)] == [1, 2, 0, 3, 4]
    assert (jb.lost, jb.late, jb.overflow) == (0, 0, 0)


def test_duplicates_and_late_packets() -> None:
    jb = buffer()
    jb.push(1, payload(1))
    jb.push(2, payload(2))
    assert jb.push(2, payload(2)) is PushResult.DUPLICATE
    assert level(jb.pull()) == 1
    assert jb.push(1, payload(1)) is PushResult.LATE
    assert (jb.duplicates, jb.late) == (1, 1)


def test_wraparound_at_65535() -> None:
    jb = buffer()
    order = [65533, 65535, 65534, 1, 0, 2, 3]
    for seq in order:
        jb.push(seq, payload(seq % 1000))
    played = [level(jb.pull()) for _ in range(7)]
    assert played == [533, 534, 535, 0, 1, 2, 3]
    assert jb.lost == 0


def test_loss_is_concealed_with_fading_repeats() -> None:
    jb = buffer(prefetch_ms=40)
    jb.push(1, payload(1000))
    jb.push(2, payload(2000))
    # 3 is lost; 4 and 5 arrive.
    jb.push(4, payload(4000))
    jb.push(5, payload(5000))
    out = [level(jb.pull()) for _ in range(4)]
    assert out == [1000, 2000, 1600, 4000]  # the repeat of frame 2 at 0.8
    assert jb.lost == 1
    assert jb.concealed_frames == 1


def test_waits_for_a_hole_before_declaring_loss() -> None:
    jb = buffer(prefetch_ms=40)
    jb.push(1, payload(1000))
    jb.push(2, payload(2000))
    assert [level(jb.pull()) for _ in range(2)] == [1000, 2000]
    jb.push(4, payload(4000))  # 3 is late, only 20 ms behind it
    assert level(jb.pull()) == 1600  # concealed while waiting
    jb.push(3, payload(3000))  # arrives in time after all
    assert [level(jb.pull()) for _ in range(2)] == [3000, 4000]
    assert jb.lost == 0


def test_long_silence_fades_then_stops() -> None:
    jb = buffer(prefetch_ms=20)
    jb.push(1, payload(10000))
    assert level(jb.pull()) == 10000
    out = [jb.pull() for _ in range(MAX_CONCEAL_FRAMES + 1)]
    assert [level(f) for f in out[:4]] == [8000, 5000, 2500, 0]
    assert all(level(f) == 0 for f in out[3:MAX_CONCEAL_FRAMES])
    assert out[MAX_CONCEAL_FRAMES] is None
    assert not jb.playing
    # Media resumes: prefetch again, then play.
    jb.push(2, payload(2))
    assert level(jb.pull()) == 2


def test_big_gap_is_skipped_not_concealed_packet_by_packet() -> None:
    jb = buffer(prefetch_ms=20)
    jb.push(1, payload(1))
    assert level(jb.pull()) == 1
    jb.push(200, payload(200))
    jb.push(201, payload(201))
    out = [level(jb.pull()) for _ in range(5)]
    assert out[-2:] == [200, 201]
    assert jb.lost == 198


def test_thirty_ms_packets_play_as_twenty_ms_frames() -> None:
    """SIPp's g711a.pcap uses 240-byte PCMA packets; playout must be seamless."""
    pcm = tone(440, 8000, 0.6)
    encoder = PCMA.new_encoder()
    packets = [encoder.encode(chunk) for chunk in frames(pcm, 480)]
    jb = buffer(PCMA, prefetch_ms=40)
    out = []
    # Real time in 10 ms steps: a packet every 30 ms, a pull every 20 ms.
    for t in range(0, 600, 10):
        if t % 30 == 0:
            jb.push(t // 30, packets[t // 30])
        if t % 20 == 0:
            frame = jb.pull()
            if frame is not None:
                out.append(frame)
    assert all(len(f) == 320 for f in out)
    while sum(map(len, out)) < len(pcm):  # play the tail out
        frame = jb.pull()
        assert frame is not None
        out.append(frame)
    played = b"".join(out)
    assert played[: len(pcm)] == PCMA.new_decoder().decode(b"".join(packets))
    assert (jb.lost, jb.underruns, jb.played) == (0, 0, 20)


def test_thirty_ms_loss_conceals_thirty_ms() -> None:
    jb = buffer(PCMA, prefetch_ms=60)
    enc = PCMA.new_encoder()
    loud = enc.encode(tone(440, 8000, 0.03, 8000))
    for seq in (0, 1, 3, 4, 5):  # 2 is lost
        jb.push(seq, loud)
    out = b"".join(jb.pull() or b"" for _ in range(9))
    assert len(out) == 9 * 320
    assert jb.lost == 1
    # 6 packets' worth (5 received + 1 concealed) = 180 ms = 9 frames.
    assert jb.pull() is not None  # concealment after the end
    assert jb.played == 5


def test_capacity_drops_the_oldest() -> None:
    jb = buffer(prefetch_ms=10_000)  # never starts playing
    for seq in range(JITTER_CAPACITY + 5):
        jb.push(seq, payload(seq))
    assert len(jb) == JITTER_CAPACITY
    assert jb.overflow == 5


def test_burst_beyond_max_depth_is_cut_to_prefetch() -> None:
    jb = buffer(prefetch_ms=40)
    for seq in range(30):  # 600 ms at once
        jb.push(seq, payload(seq))
    first = level(jb.pull())
    assert first == 28  # the oldest were dropped to keep 40 ms of latency
    assert jb.overflow == 28


def test_restart_needs_confirmation() -> None:
    jb = buffer(prefetch_ms=20)
    jb.push(10, payload(10))
    assert level(jb.pull()) == 10
    assert jb.push(40000, payload(1)) is PushResult.DEFERRED
    assert jb.push(40001, payload(2)) is PushResult.RESTARTED
    jb.push(40002, payload(3))
    assert [level(jb.pull()) for _ in range(2)] == [2, 3]
    assert jb.restarts == 1


def test_placeholders_play_silence_not_loss() -> None:
    jb = buffer(prefetch_ms=20)
    jb.push(1, payload(5))
    jb.push(2, None)  # a telephone-event packet took this sequence number
    jb.push(3, payload(7))
    assert [level(jb.pull()) for _ in range(3)] == [5, 0, 7]
    assert jb.lost == 0


@pytest.mark.parametrize("codec", [PCMU, G722])
def test_decoded_frames_are_20ms_pcm(codec: CodecInfo) -> None:
    jb = buffer(codec, prefetch_ms=20)
    jb.push(0, bytes(codec.frame_bytes))
    frame = jb.pull()
    assert frame is not None and len(frame) == codec.pcm_frame_bytes


def test_concealment_of_real_audio_is_quieter() -> None:
    jb = buffer(PCMU, prefetch_ms=20)
    jb.push(0, PCMU.new_encoder().encode(tone(440, 8000, 0.02, 10000)))
    first = jb.pull()
    assert first is not None
    levels = [peak(jb.pull() or b"") for _ in range(4)]
    assert levels[0] < peak(first)
    assert levels == sorted(levels, reverse=True)
    assert levels[-1] == 0


# -- the tick's fast paths: pull()'s common tick and advance() ------------------------

# One step of a stream: push (seq offset, payload kind) or a tick.
_KINDS = ("frame", "frame", "frame", "half", "one_and_half", "placeholder", "no_audio")
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(-3, 6), st.sampled_from(_KINDS), st.binary(
            min_size=1, max_size=1)),
        st.tuples(st.just("tick"), st.booleans(), st.just(""), st.just(b"")),
    ),
    max_size=120,
)


def _payload(codec: CodecInfo, kind: str, fill: bytes) -> bytes | None:
    size = {"frame": codec.frame_bytes, "half": codec.frame_bytes // 2,
            "one_and_half": codec.frame_bytes * 3 // 2}.get(kind)
    if size is None:
        return None if kind == "placeholder" else NO_AUDIO
    return (fill * size)[:size]


def _counters(jb: JitterBuffer) -> tuple[object, ...]:
    return (jb.played, jb.lost, jb.late, jb.duplicates, jb.overflow, jb.concealed_frames,
            jb.underruns, jb.restarts, jb.buffered_ms, len(jb), jb.playing)


def _run(codec: CodecInfo, steps: list[tuple[str, int, str, bytes]],
         tick: Callable[[JitterBuffer, JitterBuffer, bool], None]) -> None:
    a, b = buffer(codec, prefetch_ms=40), buffer(codec, prefetch_ms=40)
    seq = 65530  # wraps during the run
    for step, value, kind, fill in steps:
        if step == "push":
            seq = (seq + value) & 0xFFFF
            payload = _payload(codec, kind, fill)
            assert a.push(seq, payload) is b.push(seq, payload)
        else:
            tick(a, b, bool(value))
        assert _counters(a) == _counters(b)
    for _ in range(MAX_CONCEAL_FRAMES + 2):  # play out whatever is left, both ways
        tick(a, b, False)
        assert _counters(a) == _counters(b)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([PCMU, L16_8K, G722]), _steps)
def test_pulls_common_tick_equals_the_general_path(
        codec: CodecInfo, steps: list[tuple[str, int, str, bytes]]) -> None:
    def tick(fast: JitterBuffer, general: JitterBuffer, _: bool) -> None:
        assert fast.pull() == general._pull()

    _run(codec, steps, tick)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([PCMU, L16_8K, G722]), _steps)
def test_advance_keeps_pulls_books_and_the_next_pull_is_pulls(
        codec: CodecInfo, steps: list[tuple[str, int, str, bytes]]) -> None:
    # b reads its PCM on some ticks only (a tap that comes and goes); a on every one.
    def tick(a: JitterBuffer, b: JitterBuffer, heard: bool) -> None:
        frame = a.pull()
        if heard:
            assert b.pull() == frame
        else:
            assert b.advance() is (frame is not None)

    _run(codec, steps, tick)


def test_advance_skips_a_stateless_decode_until_concealment_needs_the_frame() -> None:
    decoder = CountingPcmu()
    jb = JitterBuffer(PCMU, decoder, prefetch_ms=40)
    reference = buffer(PCMU, prefetch_ms=40)
    audio = frames(tone(300, 8000, 1.0), 320)
    for seq, pcm in enumerate(audio[:30]):
        payload = PCMU.new_encoder().encode(pcm)
        jb.push(seq, payload)
        reference.push(seq, payload)
        assert jb.advance() is (reference.pull() is not None)
    assert jb.advance() and reference.pull() is not None  # the last packet, unheard
    assert decoder.calls == 1  # the general path started playout; the rest were fast
    # The stream stopped: a tap attaches, and its first frame conceals from the last
    # packet, decoded only now.
    frame = jb.pull()
    assert frame == reference.pull() and level(frame) is None  # the tone, faded
    assert decoder.calls == 2
    for _ in range(MAX_CONCEAL_FRAMES):
        assert jb.pull() == reference.pull()
