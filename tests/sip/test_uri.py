"""Tests for callstream.sip.uri (RFC 3261 §19.1, §25.1; RFC 3966)."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import InvalidUri
from callstream.sip.uri import SipUri, format_host, parse_uri

# (text, scheme, user, password, host, port, params, headers)
GOOD = [
    ("sip:alice@atlanta.example.com", "sip", "alice", None, "atlanta.example.com", None, (), None),
    ("sip:alice:secretword@atlanta.com;transport=tcp", "sip", "alice", "secretword", "atlanta.com",
     None, (("transport", "tcp"),), None),
    ("sips:alice@atlanta.com?subject=project%20x&priority=urgent", "sips", "alice", None,
     "atlanta.com", None, (), "subject=project%20x&priority=urgent"),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone", "sip", "+1-212-555-1212", "1234",
     "gateway.com", None, (("user", "phone"),), None),
    ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com", "sip", None, None, "atlanta.com",
     None, (("method", "REGISTER"),), "to=alice%40atlanta.com"),
    ("sip:service@127.0.0.1:5060", "sip", "service", None, "127.0.0.1", 5060, (), None),
    ("sip:service@[::1]:5060", "sip", "service", None, "::1", 5060, (), None),
    ("sip:[2001:db8::10]", "sip", None, None, "2001:db8::10", None, (), None),
    ("sip:10.0.0.1;lr;ftag=gc8Ht0Xj", "sip", None, None, "10.0.0.1", None,
     (("lr", None), ("ftag", "gc8Ht0Xj")), None),
    ("sip:+4930123;npdi;rn=+4930999@gw.example.com", "sip", "+4930123;npdi;rn=+4930999", None,
     "gw.example.com", None, (), None),
    ("tel:+1-201-555-0123;phone-context=example.com", "tel", "+1-201-555-0123", None, "", None,
     (("phone-context", "example.com"),), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "scheme", "user", "password", "host", "port", "params", "headers"), GOOD
)
def test_parse_and_serialize(
    text: str,
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    headers: str | None,
) -> None:
    uri = parse_uri(text)
    assert uri == SipUri(scheme, user, host, port, password, params, headers)
    assert uri.serialize() == text
    assert str(uri) == text


def test_scheme_is_case_insensitive() -> None:
    assert parse_uri("SIP:bob@example.com").scheme == "sip"


def test_helpers() -> None:
    uri = parse_uri("sip:bob@[::1];TRANSPORT=TCP;lr")
    assert uri.transport == "tcp"
    assert uri.param("lr") == ""
    assert uri.param("maddr") is None
    assert uri.port_or_default == 5060
    assert parse_uri("sips:bob@h").port_or_default == 5061
    assert parse_uri("sips:bob@h").transport == "tls"
    assert parse_uri("sip:bob@h").transport == "udp"
    assert uri.with_params(()).serialize() == "sip:bob@[::1]"
    assert format_host("::1") == "[::1]" and format_host("h") == "h"


BAD = [
    ("http://example.com", "invalid URI 'http://example.com': scheme is not sip, sips or tel"),
    ("alice@example.com", "invalid URI 'alice@example.com': scheme is not sip, sips or tel"),
    ("sip:", "invalid URI 'sip:': empty host"),
    ("sip:@host", "invalid URI 'sip:@host': invalid user part"),
    ("sip:bob@host:0", "invalid URI 'sip:bob@host:0': invalid port '0'"),
    ("sip:bob@host:70000", "invalid URI 'sip:bob@host:70000': invalid port '70000'"),
    ("sip:bob@host:5o60", "invalid URI 'sip:bob@host:5o60': invalid port '5o60'"),
    ("sip:bob@[::1", "invalid URI 'sip:bob@[::1': unterminated IPv6 reference"),
    ("sip:bob@[::g]", "invalid URI 'sip:bob@[::g]': invalid IPv6 address '::g'"),
    ("sip:bob@[::1]x", "invalid URI 'sip:bob@[::1]x': unexpected 'x' after IPv6 reference"),
    (
        "sip:bob@ho st",
        "invalid URI 'sip:bob@ho st': whitespace, quote or angle bracket inside the URI",
    ),
    ("sip:bob@host;;lr", "invalid URI 'sip:bob@host;;lr': empty parameter"),
    ("sip:bob@-host-", "invalid URI 'sip:bob@-host-': invalid host '-host-'"),
    ("tel:", "invalid URI 'tel:': empty telephone number"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad(text: str, message: str) -> None:
    with pytest.raises(InvalidUri) as info:
        parse_uri(text)
    assert str(info.value) == message


def test_too_long() -> None:
    with pytest.raises(InvalidUri, match="longer than 2048 characters"):
        parse_uri("sip:" + "a" * 3000 + "@h")


def test_uri_checks_itself() -> None:
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        SipUri("http", None, "h")
    with pytest.raises(ValueError, match="needs a host"):
        SipUri("sip", "bob", "")
