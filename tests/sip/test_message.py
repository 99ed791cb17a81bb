"""Wire tests for callstream.sip.message (RFC 3261 §7, §18.3, §20)."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import (
    BodyTooLarge,
    InvalidHeader,
    LineTooLong,
    MessageTooLarge,
    SipParseError,
    TooManyHeaders,
    UnsupportedVersion,
)
from callstream.sip.message import (
    MAX_BODY_SIZE,
    MAX_HEADERS,
    MAX_LINE_LENGTH,
    MAX_LIST_VALUES,
    MAX_MESSAGE_SIZE,
    Headers,
    SipRequest,
    SipResponse,
    canonical_name,
    parse_message,
    split_comma_list,
)

from .helpers import fixture, request_of, response_of

CANONICAL = [
    "sipp_invite.sip",
    "sipp_ack.sip",
    "asterisk_invite.sip",
    "asterisk_options.sip",
    "asterisk_401.sip",
    "freeswitch_200.sip",
    "freeswitch_bye.sip",
    "baresip_invite.sip",
    "linphone_invite.sip",
    "ringing_180.sip",
    "info_dtmf_relay.sip",
    "cancel.sip",
    "ipv6_invite.sip",
]


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_fixture_round_trips(name: str) -> None:
    data = fixture(name)
    assert parse_message(data).serialize() == data


# (fixture, kind, first-line value, Call-ID, CSeq, number of Vias, body length)
FIELDS = [
    ("sipp_invite.sip", "INVITE", "sip:service@127.0.0.1:5060", "1-4711@127.0.0.1", "1 INVITE", 1, 208),  # noqa: E501
    ("sipp_ack.sip", "ACK", "sip:service@127.0.0.1:5060", "1-4711@127.0.0.1", "1 ACK", 1, 0),
    ("asterisk_invite.sip", "INVITE", "sip:2000@192.168.1.20:5060",
     "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a", "12345 INVITE", 1, 285),
    ("asterisk_401.sip", 401, "Unauthorized", "9c8b7a6f@192.168.1.20", "1 INVITE", 1, 0),
    ("freeswitch_200.sip", 200, "OK", "4c5d6e7f8a9b@10.0.0.5", "1 INVITE", 1, 254),
    ("freeswitch_bye.sip", "BYE", "sip:callstream@10.0.0.5:5060", "4c5d6e7f8a9b@10.0.0.5",
     "88207151 BYE", 1, 0),
    ("baresip_invite.sip", "INVITE", "sip:bob@127.0.0.1:5060", "3a9d2e7c1b6f4a08", "4242 INVITE", 1,
     352),
    ("linphone_invite.sip", "INVITE", "sip:service@127.0.0.1:5060", "dTnLQ3b6Gq", "20 INVITE", 1, 531),  # noqa: E501
    ("ringing_180.sip", 180, "Ringing", "1-4711@127.0.0.1", "1 INVITE", 1, 0),
    ("ipv6_invite.sip", "INVITE", "sip:service@[::1]:5060", "1-6@::1", "1 INVITE", 1, 0),
    ("compact_folded.sip", "INVITE", "sip:bob@biloxi.example.com", "a84b4c76e66710",
     "314159 INVITE", 2, 147),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kind", "first", "call_id", "cseq", "vias", "body"), FIELDS)
def test_fixture_fields(
    name: str, kind: str | int, first: str, call_id: str, cseq: str, vias: int, body: int
) -> None:
    message = parse_message(fixture(name))
    if isinstance(kind, str):
        assert isinstance(message, SipRequest)
        assert (message.method, message.uri) == (kind, first)
    else:
        assert isinstance(message, SipResponse)
        assert (message.status, message.reason) == (kind, first)
    assert message.headers.get("Call-ID") == call_id
    assert message.headers.get("cseq") == cseq
    assert len(message.headers.get_all("Via")) == vias
    assert len(message.body) == body
    assert message.headers.get("Content-Length") in (str(body), None)


def test_compact_names_folding_and_lists() -> None:
    message = request_of(fixture("compact_folded.sip"))
    names = [name for name, _ in message.headers]
    assert names[:9] == [
        "Via", "Max-Forwards", "To", "From", "Call-ID", "CSeq", "Contact", "Subject",
        "Content-Type",
    ]  # fmt: skip
    # RFC 3261 §7.3.1: the fold becomes a single space.
    assert (
        message.headers.get("From")
        == '"Doe, Alice" <sip:alice@atlanta.example.com> ;tag=1928301774'
    )
    assert message.headers.get("Subject") == "a folded subject line"
    assert message.headers.get_all("v") == [
        "SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1",
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;received=192.0.2.1",
    ]
    assert message.headers.get_all("Contact") == [
        '"Doe, Alice" <sip:alice@pc33.atlanta.example.com>',
        "<sip:alice@192.0.2.1;transport=tcp>;q=0.5",
    ]
    assert message.headers.get("Content-Length") == "147"


# (fixture, exception type, exact text, status hint, method kept for a 400)
BAD = [
    ("bad_missing_call_id.sip", SipParseError, "missing mandatory header Call-ID", 400, "INVITE"),
    ("bad_cseq_method.sip", InvalidHeader,
     "invalid CSeq header '1 BYE': method does not match INVITE", 400, "INVITE"),
    ("bad_content_length.sip", SipParseError,
     "Content-Length 500 is larger than the 208-byte body", 400, "INVITE"),
    ("bad_request_line.sip", SipParseError,
     "line 1: malformed request line 'INVITE sip:service@127.0.0.1:5060 SIP/2.0 now'", 400, None),
    ("bad_version.sip", UnsupportedVersion, "line 1: unsupported version 'SIP/3.0'", 505, "INVITE"),
    ("bad_no_colon.sip", SipParseError,
     "line 4: header line has no colon: 'This line is not a header'", 400, "OPTIONS"),
    ("bad_status_code.sip", SipParseError, "line 1: invalid status code '99'", 400, None),
    ("bad_fold_first.sip", SipParseError, "line 2: continuation line before the first header", 400,
     "BYE"),
    ("bad_conflicting_from.sip", SipParseError, "conflicting From headers", 400, "BYE"),
    ("bad_header_name.sip", SipParseError, "line 7: invalid header name 'X Bad(Name)'", 400, "BYE"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "error", "text", "status", "method"), BAD)
def test_bad_fixture(
    name: str, error: type[SipParseError], text: str, status: int, method: str | None
) -> None:
    with pytest.raises(error) as info:
        parse_message(fixture(name))
    assert type(info.value) is error
    assert str(info.value) == text
    assert info.value.status_hint == status
    assert info.value.method == method
    if method is not None:
        assert info.value.headers is not None
        assert "From" in dict(info.value.headers)


def test_bad_no_colon_keeps_the_other_headers() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(fixture("bad_no_colon.sip"))
    assert info.value.headers is not None
    assert [name for name, _ in info.value.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Content-Length",
    ]  # fmt: skip


INVITE = fixture("sipp_invite.sip")
HEAD, BODY = INVITE.split(b"\r\n\r\n", 1)


# (bytes, exception type, exact text)
INLINE_BAD = [
    (b"", SipParseError, "message is empty"),
    (b"\r\n\r\n", SipParseError, "message is empty"),
    (HEAD + b"\r\n", SipParseError, "message has no empty line after the headers"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nVia: \xff\r\n\r\n", SipParseError,
     "line 2: header section is not valid UTF-8"),
    (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", SipParseError,
     "line 1: malformed request line 'INVITE  sip:a@b SIP/2.0'"),
    (b"INV@TE sip:a@b SIP/2.0\r\n\r\n", SipParseError, "line 1: invalid method 'INV@TE'"),
    (b"INVITE service SIP/2.0\r\n\r\n", SipParseError, "line 1: invalid Request-URI 'service'"),
    (b"SIP/2.0 2000 OK\r\n\r\n", SipParseError, "line 1: invalid status code '2000'"),
    (b"SIP/1.0 200 OK\r\n\r\n", UnsupportedVersion, "line 1: unsupported version 'SIP/1.0'"),
    (b"SIP/2.0 200 O\x01K\r\n\r\n", SipParseError, "line 1: reason phrase has control characters"),
    (HEAD.replace(b"Content-Length: 208", b"Content-Length: 20x") + b"\r\n\r\n" + BODY,
     InvalidHeader, "invalid Content-Length header '20x': not a number"),
    (HEAD.replace(b"Content-Length: 208", b"Content-Length: 40000") + b"\r\n\r\n" + BODY,
     BodyTooLarge, f"Content-Length 40000 is over the {MAX_BODY_SIZE}-byte limit"),
    (HEAD.replace(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE") + b"\r\n\r\n" + BODY,
     InvalidHeader, "invalid CSeq header '2147483648 INVITE': expected '<number below 2**31> <method>'"),  # noqa: E501
    (HEAD.replace(b"Call-ID: 1-4711@127.0.0.1", b"Call-ID:") + b"\r\n\r\n" + BODY,
     InvalidHeader, "invalid Call-ID header '': empty value"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "error", "text"), INLINE_BAD)
def test_inline_bad(data: bytes, error: type[SipParseError], text: str) -> None:
    with pytest.raises(error) as info:
        parse_message(data)
    assert str(info.value) == text


def test_message_size_limit() -> None:
    data = INVITE + b" " * (MAX_MESSAGE_SIZE - len(INVITE) + 1)
    with pytest.raises(MessageTooLarge) as info:
        parse_message(data)
    assert (
        str(info.value) == f"message of {MAX_MESSAGE_SIZE + 1} bytes is over the 65535-byte limit"
    )
    assert info.value.status_hint == 513


def test_too_many_headers() -> None:
    extra = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(MAX_HEADERS))
    with pytest.raises(TooManyHeaders) as info:
        parse_message(HEAD + b"\r\n" + extra + b"\r\n" + BODY)
    assert str(info.value) == f"more than {MAX_HEADERS} header lines"
    assert info.value.status_hint == 513
    assert info.value.method == "INVITE"


def test_header_line_too_long() -> None:
    long_line = b"X-Long: " + b"a" * MAX_LINE_LENGTH
    with pytest.raises(LineTooLong) as info:
        parse_message(HEAD + b"\r\n" + long_line + b"\r\n\r\n" + BODY)
    assert str(info.value) == f"line 13: header line is longer than {MAX_LINE_LENGTH} characters"


def test_start_line_too_long() -> None:
    data = b"INVITE sip:" + b"a" * MAX_LINE_LENGTH + b"@b SIP/2.0\r\n\r\n"
    with pytest.raises(LineTooLong) as info:
        parse_message(data)
    assert str(info.value) == f"line 1: start line is longer than {MAX_LINE_LENGTH} characters"


def test_too_many_list_values() -> None:
    vias = ", ".join(["SIP/2.0/UDP h;branch=z9hG4bK1"] * (MAX_LIST_VALUES + 1))
    message = parse_message(
        HEAD.replace(b"Via: ", b"Via: " + vias.encode() + b", ") + b"\r\n\r\n" + BODY
    )
    with pytest.raises(InvalidHeader) as info:
        message.headers.get_all("Via")
    assert str(info.value).endswith(f"more than {MAX_LIST_VALUES} values")


def test_udp_body_is_trimmed_to_content_length() -> None:
    # RFC 3261 §18.3: "Any additional bytes in the transport packet beyond the
    # end of the body MUST be discarded."
    message = parse_message(INVITE + b"trailing garbage")
    assert message.body == BODY
    assert message.serialize() == INVITE


def test_stream_rejects_bytes_after_body() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE + b"xx", stream=True)
    assert str(info.value) == "2 bytes after the body on a stream"


def test_missing_content_length_takes_the_rest() -> None:
    data = HEAD.replace(b"Content-Length: 208\r\n", b"").replace(b"\r\nContent-Length: 208", b"")
    message = parse_message(data + b"\r\n\r\n" + BODY)
    assert message.body == BODY


def test_leading_crlf_and_bare_lf() -> None:
    assert parse_message(b"\r\n\r\n" + INVITE).serialize() == INVITE
    # Some peers end lines with LF alone; the body keeps its own bytes.
    lf = HEAD.replace(b"\r\n", b"\n") + b"\n\n" + BODY
    message = request_of(lf)
    assert message.headers.get("Call-ID") == "1-4711@127.0.0.1"
    assert message.body == BODY


def test_names_are_case_insensitive_and_whitespace_tolerated() -> None:
    data = HEAD.replace(b"Call-ID: ", b"CALL-id  :  ") + b"\r\n\r\n" + BODY
    message = parse_message(data)
    assert message.headers.get("call-id") == "1-4711@127.0.0.1"
    assert message.headers.get("i") == "1-4711@127.0.0.1"
    assert ("Call-ID", "1-4711@127.0.0.1") in message.headers.items()


def test_unknown_header_keeps_its_spelling() -> None:
    data = HEAD + b"\r\nX-Custom-thing: 1\r\n\r\n" + BODY
    message = parse_message(data)
    assert message.headers.get("x-custom-THING") == "1"
    assert message.serialize() == data


def test_response_with_empty_reason() -> None:
    data = fixture("ringing_180.sip").replace(b"180 Ringing", b"180 ")
    message = response_of(data)
    assert (message.status, message.reason) == (180, "")
    assert message.serialize() == data


def test_reason_phrase_may_have_tabs_and_utf8() -> None:
    data = fixture("ringing_180.sip").replace(b"180 Ringing", "180 Ça\tsonne".encode())
    assert response_of(data).reason == "Ça\tsonne"


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a, b,c", ["a", "b", "c"]),
        ('"Doe, J" <sip:j@h>;q=1, <sip:k@h>', ['"Doe, J" <sip:j@h>;q=1', "<sip:k@h>"]),
        ('"a \\" , b" <sip:x@y>, <sip:z@w>', ['"a \\" , b" <sip:x@y>', "<sip:z@w>"]),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ("a,,b, ", ["a", "b"]),
    ],
)
def test_split_comma_list(value: str, parts: list[str]) -> None:
    assert split_comma_list(value) == parts


def test_headers_api() -> None:
    headers = Headers(
        [("v", "SIP/2.0/UDP a"), ("via", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("m", "<sip:x@y>")]
    )
    assert list(headers) == [
        ("Via", "SIP/2.0/UDP a"),
        ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c"),
        ("Contact", "<sip:x@y>"),
    ]
    assert headers.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert "contact" in headers and "m" in headers and "Route" not in headers
    assert headers.get("Route") is None and headers.get_all("Route") == []
    assert headers.replaced("Contact", "<sip:z@w>").get("m") == "<sip:z@w>"
    assert headers.replaced("Expires", "60").get("Expires") == "60"
    assert list(headers.without("Via")) == [("Contact", "<sip:x@y>")]
    assert headers == Headers(headers.items()) and hash(headers) == hash(Headers(headers.items()))
    assert len(headers) == 3
    assert canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"
    assert canonical_name("X-Thing") == "X-Thing"


def test_constructed_messages_check_themselves() -> None:
    with pytest.raises(ValueError, match="Content-Length 5 does not match a 2-byte body"):
        SipRequest("INFO", "sip:a@b", Headers([("Content-Length", "5")]), b"hi")
    with pytest.raises(ValueError, match="not a token"):
        SipRequest("IN FO", "sip:a@b")
    with pytest.raises(ValueError, match="outside 100-699"):
        SipResponse(99, "x")
    with pytest.raises(ValueError, match="line break"):
        SipResponse(200, "O\r\nK")
