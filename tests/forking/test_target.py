"""Parsing udp:<host>:<port> fork destinations."""

from __future__ import annotations

import ipaddress

import pytest

from callstream.forking.target import ForkTarget, InvalidTarget, parse_target


@pytest.mark.parametrize(
    ("text", "host", "port", "literal", "canonical"),
    [
        ("udp:192.0.2.10:5000", "192.0.2.10", 5000, True, "udp:192.0.2.10:5000"),
        ("UDP:127.0.0.1:1", "127.0.0.1", 1, True, "udp:127.0.0.1:1"),
        ("udp:[2001:db8::7]:5000", "2001:db8::7", 5000, True, "udp:[2001:db8::7]:5000"),
        ("udp:2001:db8::7:5000", "2001:db8::7", 5000, True, "udp:[2001:db8::7]:5000"),
        ("udp:[::1]:65535", "::1", 65535, True, "udp:[::1]:65535"),
        ("udp:::1:6000", "::1", 6000, True, "udp:[::1]:6000"),
        ("udp:localhost:7000", "localhost", 7000, False, "udp:localhost:7000"),
        ("udp:rec-1.example.com.:7000", "rec-1.example.com", 7000, False,
         "udp:rec-1.example.com:7000"),
    ],
)
def test_good_targets(text: str, host: str, port: int, literal: bool, canonical: str) -> None:
    target = parse_target(text)
    assert (target.host, target.port) == (host, port)
    assert (target.literal is not None) is literal
    assert str(target) == canonical
    if literal:
        assert target.literal == ipaddress.ip_address(host)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp:127.0.0.1:5000", "must look like udp:<ip>:<port>"),
        ("127.0.0.1:5000", "must look like udp:<ip>:<port>"),
        ("udp:127.0.0.1", "must look like udp:<ip>:<port>"),
        ("udp::5000", "must look like udp:<ip>:<port>"),
        ("udp:127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("udp:127.0.0.1:65536", "port '65536' is not a number from 1 to 65535"),
        ("udp:127.0.0.1:50x", "port '50x' is not a number from 1 to 65535"),
        ("udp:127.0.0.1:", "port '' is not a number from 1 to 65535"),
        ("udp:300.1.1.1:5000", "'300.1.1.1' is not a valid IPv4 address"),
        ("udp:bad_host!:5000", "'bad_host!' is neither an IP address nor a host name"),
        ("udp:-bad.example:5000", "'-bad.example' is neither an IP address nor a host name"),
        ("udp:[127.0.0.1]:5000", "'127.0.0.1' in brackets is not an IPv6 address"),
        ("udp:[::1]5000", "a bracketed IPv6 address must be followed by :<port>"),
        ("udp:0.0.0.0:5000", "0.0.0.0 is the unspecified address; name a reachable host"),
        ("udp:[::]:5000", ":: is the unspecified address; name a reachable host"),
        ("udp:[fe80::1%eth0]:5000", "'fe80::1%eth0': IPv6 zone indexes are not supported"),
        ("udp:" + "a" * 300 + ":1", "must be at most 300 characters"),
    ],
)
def test_bad_targets(text: str, message: str) -> None:
    with pytest.raises(InvalidTarget) as info:
        parse_target(text)
    assert str(info.value) == message


def test_target_is_a_value() -> None:
    assert parse_target("udp:[::1]:5") == ForkTarget("::1", 5, ipaddress.IPv6Address("::1"))
