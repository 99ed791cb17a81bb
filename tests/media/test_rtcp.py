"""RTCP compounds (RFC 3550 §6): fixtures, round trips and exact errors."""

from __future__ import annotations

import pytest

from callstream.media.exceptions import RtcpParseError
from callstream.media.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknown,
    SdesChunk,
    SdesItem,
    SenderInfo,
    parse_rtcp,
    serialize_rtcp,
)

from .helpers import fixture

BLOCK = ReportBlock(
    ssrc=0xDEADBEEF,
    fraction_lost=12,
    packets_lost=-3,
    highest_sequence=70000,
    jitter=45,
    lsr=0x12345678,
    dlsr=65536,
)


@pytest.mark.parametrize(
    "name", ["rtcp_sr_sdes.bin", "rtcp_rr.bin", "rtcp_bye.bin", "rtcp_rr_app.bin"]
)
def test_round_trip(name: str) -> None:
    data = fixture(name)
    assert serialize_rtcp(parse_rtcp(data)) == data


def test_sender_report_and_sdes() -> None:
    sr, sdes = parse_rtcp(fixture("rtcp_sr_sdes.bin"))
    assert sr == RtcpSenderReport(
        ssrc=0x0A0B0C0D,
        sender_info=SenderInfo(0xE4F1B2C3_80000000, 160000, 500, 80000),
        reports=(BLOCK,),
    )
    assert isinstance(sdes, RtcpSourceDescription)
    assert sdes.cname(0x0A0B0C0D) == "callstream@127.0.0.1"
    assert sdes.cname(1) is None


def test_receiver_report() -> None:
    (rr,) = parse_rtcp(fixture("rtcp_rr.bin"))
    assert rr == RtcpReceiverReport(0x01020304, (BLOCK,))


def test_bye_with_reason() -> None:
    (bye,) = parse_rtcp(fixture("rtcp_bye.bin"))
    assert bye == RtcpBye((0x0A0B0C0D,), b"hangup")


def test_unknown_types_are_carried() -> None:
    rr, app = parse_rtcp(fixture("rtcp_rr_app.bin"))
    assert rr == RtcpReceiverReport(9)
    assert app == RtcpUnknown(204, 3, b"\x00\x00\x00\x07NAMEdata")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("bad_rtcp_short.bin", "RTCP packet length is less than 4 bytes"),
        ("bad_rtcp_version.bin", "RTCP packet has invalid version 1"),
        ("bad_rtcp_truncated.bin", "RTCP packet is truncated"),
        ("bad_rtcp_sr_short.bin", "RTCP sender report length is less than 24 bytes"),
        ("bad_rtcp_rr_block.bin", "RTCP report block is truncated"),
        ("bad_rtcp_sdes_item.bin", "RTCP SDES item is truncated"),
        ("bad_rtcp_bye_sources.bin", "RTCP BYE has truncated source list"),
        ("bad_rtcp_bye_reason.bin", "RTCP BYE reason is truncated"),
        ("bad_rtcp_padding.bin", "RTCP packet padding length is invalid"),
    ],
)
def test_bad_twins(name: str, error: str) -> None:
    with pytest.raises(RtcpParseError) as info:
        parse_rtcp(fixture(name))
    assert str(info.value) == error


def test_padding_is_stripped() -> None:
    # RR with P set: 4 octets of padding, the last one counting them.
    data = bytes.fromhex("a0c90002") + bytes.fromhex("00000009") + bytes.fromhex("00000004")
    assert parse_rtcp(data) == [RtcpReceiverReport(9)]


def test_sdes_chunks_pad_to_32_bits() -> None:
    for length in range(1, 9):
        sdes = RtcpSourceDescription((SdesChunk(7, (SdesItem(1, b"x" * length),)),))
        data = sdes.serialize()
        assert len(data) % 4 == 0
        assert parse_rtcp(data) == [sdes]


def test_bye_without_reason_and_several_sources() -> None:
    bye = RtcpBye((1, 2, 3))
    assert parse_rtcp(bye.serialize()) == [bye]
    assert len(RtcpBye((1,), b"").serialize()) == 12


def test_built_compound_round_trips() -> None:
    packets: list[RtcpPacket] = [
        RtcpSenderReport(1, SenderInfo(2**63, 1, 2, 3), (BLOCK, BLOCK)),
        RtcpSourceDescription((SdesChunk(1, (SdesItem(1, b"a@b"), SdesItem(6, b"tool"))),)),
        RtcpBye((1,), b"bye"),
    ]
    assert parse_rtcp(serialize_rtcp(packets)) == packets


def test_invalid_blocks_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="24 bits"):
        ReportBlock(1, 0, 0x800000, 0, 0)
    with pytest.raises(ValueError, match="8 bits"):
        ReportBlock(1, 256, 0, 0, 0)
    with pytest.raises(ValueError, match="more than 31"):
        RtcpReceiverReport(1, (BLOCK,) * 32)
    with pytest.raises(ValueError, match="255"):
        SdesItem(1, b"x" * 256)
