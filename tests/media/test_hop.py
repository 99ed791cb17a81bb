"""The bridge hop: its datagrams, its offers, and two endpoints on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstream.media.hop import (
    HOP_PAYLOAD_TYPE,
    HopEndpoint,
    HopError,
    HopOffer,
    decode_frame,
    encode_frame,
    open_hop,
)
from callstream.media.hub import AudioFrame

FRAME = 320  # 20 ms at 8 kHz


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
       st.binary(min_size=FRAME, max_size=FRAME))
def test_a_frame_decodes_to_its_pcm(sequence: int, timestamp: int, ssrc: int,
                                    pcm: bytes) -> None:
    data = encode_frame(sequence, timestamp, ssrc, pcm)
    assert data[0] == 0x80 and data[1] == HOP_PAYLOAD_TYPE
    assert decode_frame(data, ssrc, FRAME) == pcm


@given(st.binary(max_size=400), st.integers(0, 0xFFFFFFFF))
def test_any_bytes_decode_or_raise_hop_error(data: bytes, ssrc: int) -> None:
    try:
        pcm = decode_frame(data, ssrc, FRAME)
    except HopError:
        return
    assert len(pcm) == FRAME and data[12:] == pcm


@pytest.mark.parametrize(("data", "why"), [
    (b"\x80\x7f", "shorter than its header"),
    (b"\x90" + encode_frame(1, 2, 7, bytes(FRAME))[1:], "not 0x80"),
    (encode_frame(1, 2, 7, bytes(FRAME))[:1] + b"\x00" + encode_frame(1, 2, 7, bytes(FRAME))[2:],
     "payload type 0"),
    (encode_frame(1, 2, 8, bytes(FRAME)), "not the peer's"),
    (encode_frame(1, 2, 7, bytes(FRAME - 2)), "not a frame's 320"),
])
def test_a_bad_datagram_is_named(data: bytes, why: str) -> None:
    with pytest.raises(HopError, match=why):
        decode_frame(data, 7, FRAME)


def test_an_offer_round_trips_and_bad_ones_are_refused() -> None:
    offer = HopOffer("127.0.0.1", 40000, 16000, 0xFFFFFFFF)
    assert HopOffer.from_json(offer.as_json()) == offer
    good = offer.as_json()
    for bad in ([], {**good, "host": ""}, {**good, "port": 0}, {**good, "port": True},
                {**good, "port": "1"}, {**good, "sample_rate": 11025},
                {**good, "sample_rate": 8000.0}, {**good, "ssrc": -1},
                {k: v for k, v in good.items() if k != "ssrc"}):
        with pytest.raises(HopError):
            HopOffer.from_json(bad)


def _frame(pcm: bytes) -> AudioFrame:
    return AudioFrame("a", "inbound", pcm, 8000, 1, 0.0)


async def _until(check: object, what: str) -> None:
    for _ in range(200):  # 2 s at most
        if callable(check) and check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_two_endpoints_carry_frames_and_drop_strangers() -> None:
    one, two = await open_hop("127.0.0.1"), await open_hop("127.0.0.1")
    heard: list[bytes] = []
    try:
        def offer(end: HopEndpoint) -> HopOffer:
            return HopOffer(*end.address, 8000, end.ssrc)

        one.send_frame(_frame(b"\x01" * FRAME))  # not connected: nothing goes out
        assert one.frames_sent == 0
        one.connect(offer(two), FRAME, lambda pcm: None)
        one.send_frame(_frame(b"\x07" * FRAME))  # before two knows one: counted, not heard
        await _until(lambda: two.early == 1, "an early frame")
        two.connect(offer(one), FRAME, heard.append)
        for i in range(3):
            one.send_frame(_frame(bytes([i]) * FRAME))
        await _until(lambda: len(heard) == 3, "three frames")
        assert heard == [bytes([i]) * FRAME for i in range(3)]
        # A stranger with the right SSRC, from another port: dropped, counted.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(encode_frame(9, 9, one.ssrc, b"\x09" * FRAME), two.address)
        # The peer itself, but not a frame: dropped too.
        assert one._transport is not None
        one._transport.sendto(b"garbage", two.address)
        await _until(lambda: two.dropped == 2, "two drops")
        assert two.frames_received == 3 and heard[-1] == b"\x02" * FRAME
        assert two.early == 1 and one.dropped == 0
    finally:
        one.close()
        two.close()
