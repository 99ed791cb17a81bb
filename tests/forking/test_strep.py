"""STREP header: layout, round trips, and the exact error of each malformed datagram."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstream.forking.strep import (
    STREP_HEADER_LEN,
    StrepDirection,
    StrepError,
    StrepHeader,
    StrepLeg,
    parse,
)

LEG_ID = uuid.UUID("1b0e6c3e-8f1a-11f0-9a1c-02420a0b0c01")
RTP = bytes.fromhex("8000 03e8 00000000 1234abcd") + b"\xff" * 160


def test_layout_of_first_word() -> None:
    """Bits 11, Version 1, L, D, HeaderLen 24, then reserved zeros and the UUID."""
    header = StrepHeader(LEG_ID, StrepDirection.OUTBOUND, StrepLeg.B).serialize()
    assert len(header) == STREP_HEADER_LEN
    assert header[0] == 0b11_0001_1_1
    assert header[1] == 24
    assert header[2:8] == bytes(6)
    assert header[8:] == LEG_ID.bytes
    inbound_a = StrepHeader(LEG_ID, StrepDirection.INBOUND, StrepLeg.A).serialize()
    assert inbound_a[0] == 0b11_0001_0_0


def test_parse_returns_the_rtp_packet_unchanged() -> None:
    datagram = StrepHeader(LEG_ID, StrepDirection.INBOUND).serialize() + RTP
    header, packet = parse(datagram)
    assert header == StrepHeader(LEG_ID, StrepDirection.INBOUND, StrepLeg.A)
    assert packet == RTP


def test_longer_header_is_skipped_by_header_len() -> None:
    datagram = StrepHeader(LEG_ID, StrepDirection.INBOUND, header_len=32).serialize() + RTP
    header, packet = parse(datagram)
    assert header.header_len == 32 and packet == RTP


@given(
    leg_id=st.uuids(),
    direction=st.sampled_from(StrepDirection),
    leg=st.sampled_from(StrepLeg),
    version=st.integers(0, 15),
    header_len=st.integers(24, 255),
    payload=st.binary(max_size=1500),
)
def test_round_trip(leg_id: uuid.UUID, direction: StrepDirection, leg: StrepLeg, version: int,
                   header_len: int, payload: bytes) -> None:
    header = StrepHeader(leg_id, direction, leg, version, header_len)
    wire = header.serialize() + payload
    assert parse(wire) == (header, payload)
    assert parse(wire)[0].serialize() + payload == wire


@given(st.binary(max_size=64))
def test_parse_never_fails_otherwise(data: bytes) -> None:
    try:
        header, packet = parse(data)
    except StrepError:
        return
    assert len(packet) == len(data) - header.header_len


@pytest.mark.parametrize(
    ("datagram", "message"),
    [
        (b"\xc4\x18" + bytes(20), "STREP datagram of 22 bytes is shorter than 24"),
        (b"\x84\x18" + bytes(22), "STREP header does not start with bits 11"),
        (b"\xc4\x10" + bytes(22), "STREP HeaderLen 16 is below 24"),
        (b"\xc4\x20" + bytes(26), "STREP HeaderLen 32 exceeds the 28-byte datagram"),
    ],
)
def test_bad_datagrams(datagram: bytes, message: str) -> None:
    with pytest.raises(StrepError) as info:
        parse(datagram)
    assert str(info.value) == message


def test_header_fields_are_checked() -> None:
    with pytest.raises(StrepError, match="does not fit in 4 bits"):
        StrepHeader(LEG_ID, StrepDirection.INBOUND, version=16)
    with pytest.raises(StrepError, match=r"outside 24\.\.255"):
        StrepHeader(LEG_ID, StrepDirection.INBOUND, header_len=23)
