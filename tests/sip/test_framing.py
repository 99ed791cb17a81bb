"""Tests for callstream.sip.framing (RFC 3261 §18.3 stream framing)."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import FramingError
from callstream.sip.framing import StreamFramer
from callstream.sip.message import parse_message

from .helpers import fixture

INVITE = fixture("sipp_invite.sip")
BYE = fixture("freeswitch_bye.sip")


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(INVITE)):
        out.extend(framer.feed(INVITE[i : i + 1]))
    assert out == [INVITE]
    assert framer.buffered == 0


def test_several_messages_and_keepalives_in_one_chunk() -> None:
    framer = StreamFramer()
    # RFC 5626 §3.5.1 keep-alives between messages.
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + BYE + b"\r\n\r\n" + INVITE[:10]
    assert framer.feed(stream) == [INVITE, BYE]
    assert framer.buffered == 10
    assert framer.feed(INVITE[10:]) == [INVITE]
    for message in (INVITE, BYE):
        parse_message(message, stream=True)


def test_compact_content_length_and_missing_one() -> None:
    framer = StreamFramer()
    compact = fixture("compact_folded.sip")
    assert framer.feed(compact) == [compact]
    no_length = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"
    assert framer.feed(no_length + no_length) == [no_length, no_length]


def test_lone_cr_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + BYE) == [BYE]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: abc\r\n\r\n", "invalid Content-Length 'abc'"),
        (b"INVITE sip:a@b SIP/2.0\r\nl: 99999\r\n\r\n", "Content-Length 99999 is over the 32768-byte limit"),  # noqa: E501
        (b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 70000, "no end of headers within 65535 bytes"),
    ],
)  # fmt: skip
def test_errors(data: bytes, message: str) -> None:
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(data)
    assert str(info.value) == message


def test_total_size_limit() -> None:
    framer = StreamFramer(max_message_size=100, max_body_size=1000)
    with pytest.raises(FramingError, match="over the limit"):
        framer.feed(b"INFO sip:a@b SIP/2.0\r\nContent-Length: 500\r\n\r\n")


def test_body_over_the_limit_keeps_the_head_for_a_513() -> None:
    head = b"INVITE sip:a@b SIP/2.0\r\nl: 99999\r\n\r\n"
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(head + b"body")
    assert info.value.head == head


def test_unreadable_head_has_no_head() -> None:
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 70000)
    assert info.value.head is None
