"""The serializer refuses header fields that would break the message (RFC 3261 §7.3.1).

A CR, LF or NUL in a value, or a name that is not a token, would let whoever
chose the field add headers or whole messages; no code path may emit one.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.sip.exceptions import InvalidHeaderField, SipParseError
from callstream.sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    check_header_field,
    parse_message,
)

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
BASE = (
    ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc"),
    ("From", "<sip:a@127.0.0.1>;tag=1"),
    ("To", "<sip:b@127.0.0.1>"),
    ("Call-ID", "c1@127.0.0.1"),
    ("CSeq", "1 INVITE"),
    ("Max-Forwards", "70"),
)


def invite_with(name: str, value: str) -> SipRequest:
    headers = Headers((*BASE, (name, value), ("Content-Length", "0")))
    return SipRequest("INVITE", "sip:b@127.0.0.1", headers)


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("X-A", "a\r\nP-Asserted-Identity: <sip:boss@x>", "the value has a CR"),
        ("X-A", "a\nRecord-Route: <sip:evil>", "the value has an LF"),
        ("X-A", "a\rb", "the value has a CR"),
        ("X-A", "a\x00b", "the value has a NUL"),
        ("X-A: b\r\nVia", "x", "the name is not an RFC 3261 token"),
        ("X A", "x", "the name is not an RFC 3261 token"),
        ("", "x", "the name is not an RFC 3261 token"),
    ],
)
def test_serializer_refuses_line_breaking_fields(name: str, value: str, text: str) -> None:
    with pytest.raises(InvalidHeaderField, match=text):
        invite_with(name, value).serialize()
    with pytest.raises(InvalidHeaderField, match=text):
        check_header_field(name, value)


def test_response_serializer_refuses_too() -> None:
    headers = Headers((*BASE, ("Warning", "399 h \"x\r\nBYE sip:x SIP/2.0\""),
                       ("Content-Length", "0")))
    with pytest.raises(InvalidHeaderField, match="has a CR"):
        SipResponse(200, "OK", headers).serialize()


def test_smuggled_bye_on_tcp_cannot_be_written() -> None:
    value = "1\r\nContent-Length: 0\r\n\r\nBYE sip:b@127.0.0.1 SIP/2.0"
    with pytest.raises(InvalidHeaderField):
        invite_with("X-Smuggle", value).serialize()


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"X-A: a\nb", "header line has an LF"),
        (b"X-A: a\rb", "header line has a CR"),
        (b"X-A: a\x00b", "header line has a NUL"),
    ],
)
def test_parser_refuses_stray_breaks(line: bytes, text: str) -> None:
    # A parsed value is copied into answers (Via, From, To...): it must not
    # carry a break the serializer would then refuse.
    head = b"\r\n".join(f"{n}: {v}".encode() for n, v in BASE)
    data = b"INVITE sip:b@127.0.0.1 SIP/2.0\r\n" + head + b"\r\n" + line + b"\r\n\r\n"
    with pytest.raises(SipParseError, match=text) as caught:
        parse_message(data)
    assert caught.value.line == len(BASE) + 2


@settings(max_examples=400, deadline=None)
@given(value=st.text(max_size=60), name_tail=st.text(max_size=8))
def test_any_value_is_one_header_or_refused(value: str, name_tail: str) -> None:
    """Whatever the text, the wire carries exactly that one field, or nothing at all."""
    name = f"X-{name_tail}"
    try:
        data = invite_with(name, value).serialize()
    except InvalidHeaderField:
        assert set(value) & set("\r\n\x00") or not TOKEN.fullmatch(name)
        return
    message = parse_message(data)
    fields = [(n, v) for n, v in message.headers.items() if n not in dict(BASE)]
    assert fields == [(name, value.strip(" \t")), ("Content-Length", "0")]
