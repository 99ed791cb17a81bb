"""Tests for callstream.sip.offer_answer (RFC 3264, RFC 4733)."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import NegotiationFailed
from callstream.sip.offer_answer import (
    G722,
    L16_16K,
    PCMA,
    PCMU,
    MediaParams,
    accept_answer,
    answer_offer,
    build_offer,
    is_hold,
    negotiate,
)
from callstream.sip.sdp import Direction, SdpSession, parse_sdp

from .helpers import fixture, request_of


def offer_of(name: str) -> SdpSession:
    return parse_sdp(request_of(fixture(name)).body)


def sdp(m_line: str, *attributes: str, c: str = "IN IP4 192.0.2.1") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", f"c={c}", "t=0 0", m_line, *attributes]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_linphone_offer_picks_pcmu_and_8k_telephone_event() -> None:
    # m=audio 12000 RTP/AVP 96 97 98 0 8 18 99 100 101, telephone-event at 48k/16k/8k.
    params = negotiate(offer_of("linphone_invite.sip"))
    assert params == MediaParams(
        remote_addr="127.0.0.1",
        remote_port=12000,
        codec="PCMU",
        payload_type=0,
        clock_rate=8000,
        channels=1,
        telephone_event_pt=101,
        ptime=20,
        remote_ptime=None,
        direction=Direction.SENDRECV,
        remote_hold=False,
    )


def test_offerer_order_wins_by_default() -> None:
    params = negotiate(offer_of("baresip_invite.sip"))  # 9 0 8 101
    assert (params.codec, params.payload_type, params.clock_rate) == ("G722", 9, 8000)
    assert params.telephone_event_pt == 101


def test_our_preference_when_given() -> None:
    params = negotiate(offer_of("baresip_invite.sip"), prefer=[PCMA, PCMU])
    assert (params.codec, params.payload_type) == ("PCMA", 8)


def test_dynamic_l16_keeps_the_offerers_number() -> None:
    offer = parse_sdp(
        sdp(
            "m=audio 4000 RTP/AVP 112 113",
            "a=rtpmap:112 L16/16000",
            "a=rtpmap:113 telephone-event/8000",
        )
    )
    params = negotiate(offer)
    assert (params.codec, params.payload_type, params.clock_rate) == ("L16", 112, 16000)
    assert params.telephone_event_pt == 113


def test_answer_offer_builds_a_matching_answer() -> None:
    offer = parse_sdp(
        sdp(
            "m=audio 4000 RTP/AVP 18 8 101",
            "a=rtpmap:101 telephone-event/8000",
            "a=ptime:30",
            "a=sendonly",
        )
        + b"m=video 4002 RTP/AVP 31\r\n"
    )
    answer, params = answer_offer(offer, local_addr="127.0.0.1", local_port=30000, session_id=42)
    assert params.codec == "PCMA" and params.remote_ptime == 30
    assert params.direction is Direction.RECVONLY and params.remote_hold
    assert answer.serialize() == (
        b"v=0\r\n"
        b"o=callstream 42 1 IN IP4 127.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 30000 RTP/AVP 8 101\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=recvonly\r\n"
        b"m=video 0 RTP/AVP 31\r\n"
    )


def test_answer_direction_can_be_forced() -> None:
    offer = parse_sdp(sdp("m=audio 4000 RTP/AVP 0"))
    answer, params = answer_offer(
        offer, local_addr="::1", local_port=1, session_id=1, direction=Direction.SENDONLY
    )
    assert params.direction is Direction.SENDONLY
    assert b"c=IN IP6 ::1" in answer.serialize()
    assert b"a=sendonly" in answer.serialize()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sdp("m=audio 4000 RTP/AVP 18 4"), "no common codec in offer formats 18 4"),
        (sdp("m=audio 0 RTP/AVP 0"), "offer has no RTP/AVP audio stream"),
        (sdp("m=audio 4000 RTP/SAVP 0"), "offer has no RTP/AVP audio stream"),
        (sdp("m=video 4000 RTP/AVP 31"), "offer has no RTP/AVP audio stream"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
         "offer has no c= line for the audio stream"),
    ],
)  # fmt: skip
def test_negotiation_failures(body: bytes, message: str) -> None:
    with pytest.raises(NegotiationFailed) as info:
        negotiate(parse_sdp(body))
    assert str(info.value) == message
    assert info.value.status_hint == 488


@pytest.mark.parametrize(
    ("body", "held"),
    [
        (sdp("m=audio 4000 RTP/AVP 0", "a=sendonly"), True),
        (sdp("m=audio 4000 RTP/AVP 0", "a=inactive"), True),
        (sdp("m=audio 4000 RTP/AVP 0", c="IN IP4 0.0.0.0"), True),
        (sdp("m=audio 4000 RTP/AVP 0", "a=recvonly"), False),
        (sdp("m=audio 4000 RTP/AVP 0", "a=sendrecv"), False),
        (sdp("m=audio 4000 RTP/AVP 0"), False),
        (sdp("m=audio 0 RTP/AVP 0", "a=sendonly"), False),
    ],
)
def test_is_hold(body: bytes, held: bool) -> None:
    assert is_hold(parse_sdp(body)) is held


def test_old_style_hold_does_not_send() -> None:
    params = negotiate(parse_sdp(sdp("m=audio 4000 RTP/AVP 0", c="IN IP4 0.0.0.0")))
    assert params.remote_hold and params.direction is Direction.RECVONLY


def test_build_offer() -> None:
    offer = build_offer(local_addr="127.0.0.1", local_port=20000, session_id=7, session_version=2)
    assert offer.serialize() == (
        b"v=0\r\n"
        b"o=callstream 7 2 IN IP4 127.0.0.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 8 9 96 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:9 G722/8000\r\n"
        b"a=rtpmap:96 L16/16000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )
    held = build_offer(
        local_addr="127.0.0.1",
        local_port=1,
        session_id=7,
        codecs=[G722],
        telephone_event=False,
        direction=Direction.SENDONLY,
    )
    assert is_hold(held)


def test_accept_answer() -> None:
    offer = build_offer(
        local_addr="127.0.0.1", local_port=20000, session_id=7, codecs=[PCMU, L16_16K]
    )
    answer = parse_sdp(
        sdp(
            "m=audio 6000 RTP/AVP 97 101",
            "a=rtpmap:97 L16/16000",
            "a=rtpmap:101 telephone-event/8000",
        )
    )
    params = accept_answer(offer, answer)
    assert (params.codec, params.payload_type, params.remote_port) == ("L16", 97, 6000)
    assert params.telephone_event_pt == 101 and params.direction is Direction.SENDRECV


def test_accept_answer_failures() -> None:
    offer = build_offer(local_addr="127.0.0.1", local_port=20000, session_id=7, codecs=[PCMU])
    with pytest.raises(NegotiationFailed, match="answer rejected the audio stream"):
        accept_answer(offer, parse_sdp(sdp("m=audio 0 RTP/AVP 0")))
    with pytest.raises(NegotiationFailed, match="answer formats 8 were not offered"):
        accept_answer(offer, parse_sdp(sdp("m=audio 6000 RTP/AVP 8")))
