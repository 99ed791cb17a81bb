"""L16: big-endian on the wire, little-endian inside."""

from __future__ import annotations

import struct

from callstream.media.codecs import L16, L16_8K, get_codec
from callstream.media.codecs.l16 import L16Decoder, L16Encoder


def test_wire_is_big_endian() -> None:
    pcm = struct.pack("<3h", 0x0102, -2, 0)
    assert L16Encoder().encode(pcm) == bytes.fromhex("0102fffe0000")
    assert struct.unpack(">3h", L16Encoder().encode(pcm)) == (0x0102, -2, 0)


def test_round_trip() -> None:
    pcm = bytes(range(256)) * 5
    assert L16Decoder().decode(L16Encoder().encode(pcm)) == pcm


def test_odd_byte_is_dropped() -> None:
    assert L16Decoder().decode(b"\x01\x02\x03") == b"\x02\x01"


def test_rates() -> None:
    assert get_codec("L16") is L16
    assert (L16.clock_rate, L16.sample_rate, L16.frame_bytes) == (16000, 16000, 640)
    assert get_codec("l16", 8000) is L16_8K
    assert (L16_8K.frame_bytes, L16_8K.frame_ticks) == (320, 160)
