"""Property tests: hostile bytes never escape as anything but our parse errors."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.media.codecs import G722, PCMU, CodecInfo
from callstream.media.dtmf import TelephoneEvent
from callstream.media.exceptions import DtmfParseError, RtcpParseError, RtpParseError
from callstream.media.jitter import JitterBuffer
from callstream.media.rtcp import parse_rtcp, serialize_rtcp
from callstream.media.rtp import RtpPacket, parse_header
from callstream.media.session import RtpSession

from .helpers import A_ADDR, fixture

RTP_SEEDS = [fixture(n) for n in ("rtp_pcmu.bin", "rtp_dtmf.bin", "rtp_full.bin")]
RTCP_SEEDS = [
    fixture(n) for n in ("rtcp_sr_sdes.bin", "rtcp_rr.bin", "rtcp_bye.bin", "rtcp_rr_app.bin")
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes overwritten, then maybe truncated or extended."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    tail = draw(st.binary(max_size=8))
    return bytes(data[:cut]) + tail if draw(st.booleans()) else bytes(data)


rtp_inputs = st.one_of(st.binary(max_size=200), mutated(RTP_SEEDS))
rtcp_inputs = st.one_of(st.binary(max_size=200), mutated(RTCP_SEEDS))


@settings(max_examples=400)
@given(rtp_inputs)
def test_rtp_parsers_raise_only_parse_errors(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        try:
            parse_header(data)
        except RtpParseError:
            return
        raise AssertionError("fast path accepted what the dataclass refused") from None
    # Whatever parses re-parses to the same packet.
    assert RtpPacket.parse(packet.serialize()) == packet
    assert parse_header(data)[2] == packet.sequence_number


@settings(max_examples=400)
@given(rtcp_inputs)
def test_rtcp_parser_raises_only_parse_errors(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtcpParseError:
        return
    assert parse_rtcp(serialize_rtcp(packets)) == packets


@given(st.binary(max_size=8))
def test_telephone_event_parser(data: bytes) -> None:
    try:
        event = TelephoneEvent.parse(data)
    except DtmfParseError:
        return
    assert TelephoneEvent.parse(event.serialize()) == event


def session_for(codec: CodecInfo) -> RtpSession:
    session = RtpSession(codec, remote_address=A_ADDR, rng=random.Random(0), rtcp_interval=0.1)
    session.start(0.0)
    return session


@settings(max_examples=200)
@given(
    st.sampled_from([PCMU, G722]),
    st.lists(st.one_of(rtp_inputs, rtcp_inputs), max_size=30),
)
def test_session_survives_anything(codec: CodecInfo, datagrams: list[bytes]) -> None:
    session = session_for(codec)
    for n, data in enumerate(datagrams):
        now = n * 0.02
        session.receive_rtp(data, A_ADDR, now)
        session.receive_rtcp(data, A_ADDR, now)
        frame = session.playout(now)
        assert frame is None or len(frame) == codec.pcm_frame_bytes
        session.send_frame(bytes(codec.pcm_frame_bytes), now)
        session.handle_timeout(now + 0.2)
    session.events_received()
    session.quality().as_webhook()
    accepted = session.packets_received
    assert accepted + session.malformed_dropped + session.foreign_dropped >= 0
    assert accepted <= len(datagrams)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.sampled_from([0, 80, 160, 240, 1]), st.booleans()),
        max_size=80,
    )
)
def test_jitter_buffer_always_gives_whole_frames(pushes: list[tuple[int, int, bool]]) -> None:
    jb = JitterBuffer(PCMU, PCMU.new_decoder(), prefetch_ms=20)
    for seq, size, pull in pushes:
        jb.push(seq, bytes(size) if size else None)
        if pull:
            frame = jb.pull()
            assert frame is None or len(frame) == 320
    for _ in range(100):
        frame = jb.pull()
        assert frame is None or len(frame) == 320
    assert len(jb) <= 50
