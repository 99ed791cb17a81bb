"""RTP packets (RFC 3550 §5.1): fixtures, round trips and exact errors."""

from __future__ import annotations

import pytest

from callstream.media.exceptions import RtpParseError
from callstream.media.rtp import (
    HeaderExtension,
    RtpPacket,
    RtpView,
    build_packet,
    is_rtcp,
    parse_header,
)

from .helpers import fixture

GOOD = ["rtp_pcmu.bin", "rtp_dtmf.bin", "rtp_full.bin"]


@pytest.mark.parametrize("name", GOOD)
def test_round_trip(name: str) -> None:
    data = fixture(name)
    assert RtpPacket.parse(data).serialize() == data


def test_pcmu_fields() -> None:
    packet = RtpPacket.parse(fixture("rtp_pcmu.bin"))
    assert packet.payload_type == 0
    assert packet.marker is True
    assert packet.sequence_number == 4660
    assert packet.timestamp == 0x01020304
    assert packet.ssrc == 0xDEADBEEF
    assert packet.payload == bytes(range(160))
    assert packet.csrc == ()
    assert packet.extension is None
    assert packet.padding == 0
    assert repr(packet) == (
        "RtpPacket(seq=4660, ts=16909060, pt=0, ssrc=0xdeadbeef, marker=True, payload=160 bytes)"
    )


def test_sipp_dtmf_fields() -> None:
    packet = RtpPacket.parse(fixture("rtp_dtmf.bin"))
    assert (packet.payload_type, packet.marker, packet.sequence_number) == (101, True, 7984)
    assert (packet.timestamp, packet.ssrc) == (13280, 0x0E05384E)
    assert packet.payload == bytes.fromhex("010a0000")


def test_csrc_extension_padding_fields() -> None:
    packet = RtpPacket.parse(fixture("rtp_full.bin"))
    assert packet.csrc == (0x11111111, 0x22222222)
    assert packet.extension == HeaderExtension(0xBEDE, bytes.fromhex("10ab0000"))
    assert packet.padding == 4
    assert packet.payload == b"\xd5" * 20
    assert (packet.sequence_number, packet.timestamp, packet.payload_type) == (65535, 2**32 - 1, 8)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("bad_rtp_short.bin", "RTP packet length is less than 12 bytes"),
        ("bad_rtp_version.bin", "RTP packet has invalid version 1"),
        ("bad_rtp_csrc.bin", "RTP packet has truncated CSRC"),
        ("bad_rtp_extension_header.bin", "RTP packet has truncated extension header"),
        ("bad_rtp_extension.bin", "RTP packet has truncated extension"),
        ("bad_rtp_padding.bin", "RTP packet padding length is invalid"),
        ("bad_rtp_padding_zero.bin", "RTP packet padding length is invalid"),
    ],
)
def test_bad_twins(name: str, error: str) -> None:
    data = fixture(name)
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == error
    with pytest.raises(RtpParseError, match=f"^{error}$"):
        parse_header(data)


@pytest.mark.parametrize("name", GOOD)
def test_fast_path_agrees_with_dataclass(name: str) -> None:
    data = fixture(name)
    packet = RtpPacket.parse(data)
    pt, marker, seq, ts, ssrc, start, end = parse_header(data)
    assert (pt, marker, seq, ts, ssrc) == (
        packet.payload_type,
        packet.marker,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
    )
    assert data[start:end] == packet.payload


def test_build_packet_matches_serialize() -> None:
    packet = RtpPacket(9, 65535, 0xFFFFFFFF, 0x12345678, b"\x01" * 160, marker=True)
    assert build_packet(9, True, 65535, 0xFFFFFFFF, 0x12345678, b"\x01" * 160) == (
        packet.serialize()
    )
    assert build_packet(0, False, 1, 2, 3, b"")[1] == 0


def test_rtcp_mux_detection() -> None:
    assert is_rtcp(fixture("rtcp_rr.bin"))
    assert not is_rtcp(fixture("rtp_pcmu.bin"))
    assert not is_rtcp(fixture("rtp_dtmf.bin"))
    assert not is_rtcp(b"\x80")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"sequence_number": 65536},
        {"timestamp": -1},
        {"ssrc": 2**32},
        {"csrc": tuple(range(16))},
        {"csrc": (2**32,)},
        {"padding": 256},
    ],
)
def test_invalid_packets_cannot_be_built(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        RtpPacket(**fields)  # type: ignore[arg-type]


def test_invalid_extension_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        HeaderExtension(0xBEDE, b"abc")
    with pytest.raises(ValueError, match="16 bits"):
        HeaderExtension(0x10000)


def test_view_carries_the_parsed_header_for_packet_taps() -> None:
    padded = RtpPacket(0, 7, 160, 1, b"\x01\x02\x03", csrc=(9,), padding=4).serialize()
    view = RtpView.parse(padded)
    assert (view.data, view.payload_type, view.payload) == (padded, 0, b"\x01\x02\x03")
    built = build_packet(101, True, 8, 320, 2, b"\x05\x0a\x00\xa0")
    assert RtpView.of_built(built) == RtpView.parse(built)  # marker bit not in the type
    with pytest.raises(RtpParseError):
        RtpView.parse(b"\x80")
