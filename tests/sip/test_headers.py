"""Tests for callstream.sip.headers: Via, name-addr, CSeq."""

from __future__ import annotations

import pytest

from callstream.sip.exceptions import InvalidHeader
from callstream.sip.headers import CSeq, NameAddr, parse_cseq, parse_name_addr, parse_via
from callstream.sip.uri import parse_uri


def test_via_fields() -> None:
    via = parse_via("SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bKPj6f1e;received=10.1.1.1")
    assert (via.transport, via.host, via.port) == ("UDP", "192.168.1.10", 5060)
    assert via.branch == "z9hG4bKPj6f1e"
    assert via.received == "10.1.1.1"
    assert via.wants_rport and via.rport is None
    assert via.sent_by == ("192.168.1.10", 5060)
    assert (
        via.serialize()
        == "SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bKPj6f1e;received=10.1.1.1"
    )


def test_via_ipv6_and_lws() -> None:
    via = parse_via("SIP / 2.0 / TCP   [2001:db8::1]:5070 ; branch=z9hG4bK1")
    assert (via.transport, via.host, via.port, via.branch) == (
        "TCP",
        "2001:db8::1",
        5070,
        "z9hG4bK1",
    )
    assert via.serialize() == "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK1"


def test_via_without_port() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.9;rport;branch=z9hG4bKQ5m1")
    assert via.port is None
    assert via.response_address(("10.0.0.9", 5060)) == ("10.0.0.9", 5060)


def test_with_received_rfc3581() -> None:
    # RFC 3581 §4: rport present -> received and rport always added.
    via = parse_via("SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff")
    stamped = via.with_received("192.0.2.1", 9988)
    assert stamped.serialize() == (
        "SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bKkjshdyff;received=192.0.2.1;rport=9988"
    )
    assert stamped.response_address(("192.0.2.1", 9988)) == ("192.0.2.1", 9988)
    # RFC 3261 §18.2.1: no rport, host differs -> received only.
    plain = parse_via("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK1")
    assert plain.with_received("192.0.2.4", 5066).serialize() == (
        "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK1;received=192.0.2.4"
    )
    assert plain.with_received("192.0.2.4", 1).response_address(("192.0.2.4", 1)) == (
        "192.0.2.4",
        5066,
    )
    # Same host and no rport: untouched.
    same = parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")
    assert same.with_received("127.0.0.1", 5070) is same


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SIP/2.0/UDP", "invalid Via header 'SIP/2.0/UDP': expected SIP/2.0/<transport> <sent-by>"),
        (
            "SIP/3.0/UDP h",
            "invalid Via header 'SIP/3.0/UDP h': expected SIP/2.0/<transport> <sent-by>",
        ),
        ("SIP/2.0/UDP h:99999", "invalid Via header 'SIP/2.0/UDP h:99999': invalid port '99999'"),
        ("SIP/2.0/UDP ;branch=x", "invalid Via header 'SIP/2.0/UDP ;branch=x': missing sent-by"),
        ("SIP/2.0/UDP user@h", "invalid Via header 'SIP/2.0/UDP user@h': invalid sent-by"),
    ],
)
def test_via_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_via(value)
    assert str(info.value) == message


# (value, display name, uri, params, serialized)
NAME_ADDRS = [
    ('"sipp" <sip:sipp@127.0.0.1:5070>;tag=4711SIPpTag001', "sipp", "sip:sipp@127.0.0.1:5070",
     (("tag", "4711SIPpTag001"),), '"sipp" <sip:sipp@127.0.0.1:5070>;tag=4711SIPpTag001'),
    ("<sip:service@127.0.0.1:5060>", None, "sip:service@127.0.0.1:5060", (),
     "<sip:service@127.0.0.1:5060>"),
    ("Bob <sip:bob@biloxi.example.com>", "Bob", "sip:bob@biloxi.example.com", (),
     '"Bob" <sip:bob@biloxi.example.com>'),
    ("sip:service@127.0.0.1;tag=abc", None, "sip:service@127.0.0.1", (("tag", "abc"),),
     "<sip:service@127.0.0.1>;tag=abc"),
    ('"Doe, \\"J\\"" <sip:j@h;transport=tcp>;q=0.5;expires=60', 'Doe, "J"', "sip:j@h;transport=tcp",
     (("q", "0.5"), ("expires", "60")), '"Doe, \\"J\\"" <sip:j@h;transport=tcp>;q=0.5;expires=60'),
    ('<sip:linphone@127.0.0.1:5064;transport=udp>;+sip.instance="<urn:uuid:a1b2>"', None,
     "sip:linphone@127.0.0.1:5064;transport=udp", (("+sip.instance", '"<urn:uuid:a1b2>"'),),
     '<sip:linphone@127.0.0.1:5064;transport=udp>;+sip.instance="<urn:uuid:a1b2>"'),
    ("<tel:+15551234>", None, "tel:+15551234", (), "<tel:+15551234>"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "display", "uri", "params", "serialized"), NAME_ADDRS)
def test_name_addr(
    value: str,
    display: str | None,
    uri: str,
    params: tuple[tuple[str, str | None], ...],
    serialized: str,
) -> None:
    parsed = parse_name_addr(value)
    assert parsed == NameAddr(parse_uri(uri), display, params)
    assert parsed.serialize() == serialized


def test_name_addr_tags() -> None:
    parsed = parse_name_addr("<sip:a@b>;tag=1;x=y")
    assert parsed.tag == "1"
    assert parsed.param("x") == "y"
    assert parsed.with_tag("2").serialize() == "<sip:a@b>;x=y;tag=2"
    assert parse_name_addr("<sip:a@b>").tag is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"unterminated <sip:a@b>', "invalid From header '\"unterminated <sip:a@b>': unterminated quoted display name"),  # noqa: E501
        ('"x" sip:a@b', "invalid From header '\"x\" sip:a@b': display name is not followed by <URI>"),  # noqa: E501
        ("<sip:a@b", "invalid From header '<sip:a@b': missing '>'"),
        ("<sip:a@b> junk", "invalid From header '<sip:a@b> junk': unexpected 'junk' after the URI"),
        ("<mailto:a@b>", "invalid From header '<mailto:a@b>': scheme is not sip, sips or tel"),
        ("", "invalid From header '': scheme is not sip, sips or tel"),
    ],
)  # fmt: skip
def test_name_addr_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_name_addr(value)
    assert str(info.value) == message


def test_cseq() -> None:
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert parse_cseq(" 1   BYE ") == CSeq(1, "BYE")
    assert CSeq(2, "ACK").serialize() == "2 ACK"
    for bad in ("INVITE", "1", "x INVITE", "99999999999 INVITE", "-1 BYE", "\u0661 BYE"):
        with pytest.raises(InvalidHeader):
            parse_cseq(bad)
    with pytest.raises(InvalidHeader, match="below 2"):
        parse_cseq("2147483648 INVITE")
    with pytest.raises(ValueError):
        CSeq(-1, "BYE")
