"""Tests for callstream.sip.sdp (RFC 4566)."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import SdpParseError
from callstream.sip.sdp import MAX_SDP_SIZE, Connection, Direction, RtpMap, parse_sdp

from .helpers import fixture, request_of, response_of


def body_of(name: str) -> bytes:
    data = fixture(name)
    return data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "name",
    [
        "sipp_invite.sip",
        "asterisk_invite.sip",
        "baresip_invite.sip",
        "linphone_invite.sip",
        "freeswitch_200.sip",
        "compact_folded.sip",
    ],
)
def test_peer_sdp_round_trips(name: str) -> None:
    body = body_of(name)
    assert parse_sdp(body).serialize() == body


def test_linphone_offer_fields() -> None:
    session = parse_sdp(request_of(fixture("linphone_invite.sip")).body)
    assert session.origin.username == "linphone"
    assert session.origin.session_version == 1804
    assert session.session_name == "Talk"
    assert session.connection == Connection("IN", "IP4", "127.0.0.1")
    assert (
        session.attribute("rtcp-xr")
        == "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics"
    )
    (audio,) = session.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 12000, "RTP/AVP")
    assert audio.payload_types == [96, 97, 98, 0, 8, 18, 99, 100, 101]
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000, 1)  # static, no a=rtpmap
    assert audio.rtpmap(18) == RtpMap(18, "G729", 8000, 1)
    assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000, 1)
    assert audio.rtpmap(120) is None
    assert audio.fmtp(18) == "annexb=yes"
    assert audio.fmtp(0) is None
    assert audio.ptime is None
    assert session.media_direction(audio) is Direction.SENDRECV


def test_freeswitch_answer_fields() -> None:
    session = parse_sdp(response_of(fixture("freeswitch_200.sip")).body)
    (audio,) = session.media
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert audio.attribute("rtcp") == "24543 IN IP4 10.0.0.9"
    assert audio.attribute_values("rtpmap") == ["0 PCMU/8000", "101 telephone-event/8000"]


def test_media_level_connection_and_direction() -> None:
    body = (
        b"v=0\r\no=- 1 2 IN IP6 ::1\r\ns=-\r\nt=0 0\r\na=sendonly\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP6 ::1\r\nb=AS:64\r\n"
        b"m=video 0 RTP/AVP 31\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n"
    )
    session = parse_sdp(body)
    audio, video = session.media
    assert session.connection is None
    assert session.media_connection(audio) == Connection("IN", "IP6", "::1")
    assert session.media_direction(audio) is Direction.SENDONLY  # from the session level
    assert session.media_direction(video) is Direction.INACTIVE
    assert audio.bandwidths == ("AS:64",)
    assert video.connection is not None and video.connection.is_null
    assert session.serialize() == body


def test_extra_lines_are_kept_in_rfc_order() -> None:
    body = (
        b"v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=call\r\ni=info\r\nu=http://x\r\ne=a@b\r\np=+1\r\n"
        b"c=IN IP4 1.2.3.4/127\r\nb=CT:128\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=0 -1h\r\nk=prompt\r\n"
        b"a=tool:x\r\nm=audio 5004/2 RTP/AVP 0\r\ni=voice\r\nk=prompt\r\na=recvonly\r\n"
    )
    session = parse_sdp(body)
    assert session.connection is not None and session.connection.host == "1.2.3.4"
    assert session.media[0].port_count == 2
    assert session.serialize() == body
    assert session.with_version(3).origin.session_version == 3


def test_lf_only_body() -> None:
    body = b"v=0\no=- 1 2 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 8\n"
    assert parse_sdp(body).media[0].payload_types == [8]


BAD = [
    (b"", "SDP body is empty"),
    (b"o=- 1 1 IN IP4 h\r\n", "line 1: first line must be v=0, not 'o=- 1 1 IN IP4 h'"),
    (b"v=0\r\ns=-\r\n", "missing o= line"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\n", "missing s= line"),
    (b"v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "line 2: o= line needs 6 fields, has 5"),
    (b"v=0\r\no=- 1 x IN IP4 h\r\ns=-\r\n", "line 2: invalid session version 'x'"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\n", "line 4: c= line needs 3 fields, has 2"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=ATM NSAP x\r\n", "line 4: unsupported connection ATM NSAP"),  # noqa: E501
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio\r\n", "line 4: m= line needs <media> <port> <proto> <fmt>..."),  # noqa: E501
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n", "line 4: invalid port '70000'"),  # noqa: E501
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 5/x RTP/AVP 0\r\n", "line 4: invalid port count '5/x'"),  # noqa: E501
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nx=1\r\n", "line 4: unknown line type x="),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nbogus\r\n", "line 4: malformed line 'bogus'"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\ns=again\r\n",
     "line 5: s= line is not allowed in a media section"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n", "SDP body is not valid UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad(body: bytes, message: str) -> None:
    with pytest.raises(SdpParseError) as info:
        parse_sdp(body)
    assert str(info.value) == message


def test_limits() -> None:
    with pytest.raises(SdpParseError, match="over the"):
        parse_sdp(b"v=0\r\n" + b"a=x\r\n" * (MAX_SDP_SIZE // 5))
    many = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 17
    with pytest.raises(SdpParseError, match="more than 16 m= sections"):
        parse_sdp(many)
    with pytest.raises(SdpParseError, match="more than 64 formats"):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP " + b"0 " * 65 + b"\r\n")


def test_direction_reversed() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.RECVONLY.reversed() is Direction.SENDONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.SENDRECV.reversed() is Direction.SENDRECV
