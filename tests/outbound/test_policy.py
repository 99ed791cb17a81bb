"""The outbound policy core: which addresses pass, and the exact reason for each refusal."""

from __future__ import annotations

import ipaddress
import re

import pytest

from callstream.outbound.policy import (
    DEFAULT_POLICY,
    OutboundDenied,
    OutboundPolicy,
    parse_networks,
)

DENY = "denied by CALLSTREAM_OUTBOUND_DENY"

# (address, the refusal's text or None when permitted) under the default lists.
DEFAULT_CASES = [
    ("127.0.0.1", None),  # loopback: a developer's receiver on the same machine
    ("::1", None),
    ("10.1.2.3", None),
    ("192.168.1.10", None),
    ("203.0.113.7", None),
    ("2001:db8::1", None),
    ("169.254.169.254", f"169.254.169.254 is {DENY} (169.254.0.0/16)"),
    ("169.254.170.2", f"169.254.170.2 is {DENY} (169.254.0.0/16)"),
    ("169.254.1.1", f"169.254.1.1 is {DENY} (169.254.0.0/16)"),
    ("fe80::1", f"fe80::1 is {DENY} (fe80::/10)"),
    ("fd00:ec2::254", f"fd00:ec2::254 is {DENY} (fd00:ec2::254/128)"),
    ("100.100.100.200", f"100.100.100.200 is {DENY} (100.100.100.200/32)"),
    # IPv4-mapped IPv6 reaches the IPv4 address: judged as it.
    ("::ffff:169.254.169.254", f"::ffff:169.254.169.254 is {DENY} (169.254.0.0/16)"),
    ("::ffff:127.0.0.1", None),
    # "This host" in disguise, whatever the lists say.
    ("0.0.0.0", "0.0.0.0 is an unspecified address (this host)"),
    ("0.1.2.3", "0.1.2.3 is an unspecified address (this host)"),
    ("::", ":: is an unspecified address (this host)"),
    ("::ffff:0.0.0.0", "::ffff:0.0.0.0 is an unspecified address (this host)"),
]


@pytest.mark.parametrize(("address", "refusal"), DEFAULT_CASES)
def test_default_policy(address: str, refusal: str | None) -> None:
    ip = ipaddress.ip_address(address)
    if refusal is None:
        DEFAULT_POLICY.check(ip)
        return
    with pytest.raises(OutboundDenied) as info:
        DEFAULT_POLICY.check(ip)
    assert str(info.value) == refusal
    assert info.value.address == ip


def test_error_names_the_host_and_what_it_resolved_to() -> None:
    with pytest.raises(OutboundDenied) as info:
        DEFAULT_POLICY.check(ipaddress.ip_address("169.254.169.254"), "metadata.internal")
    assert str(info.value) == (
        f"metadata.internal resolves to 169.254.169.254, which is {DENY} (169.254.0.0/16)")
    assert info.value.host == "metadata.internal"


CUSTOM = OutboundPolicy.from_lists(deny=["10.0.0.0/8", "127.0.0.0/8", "::1"])
ALLOW_LIST = OutboundPolicy.from_lists(allow=["192.0.2.0/24", "2001:db8::/32"],
                                       deny=["192.0.2.13"])


@pytest.mark.parametrize(("policy", "address", "refusal"), [
    (CUSTOM, "10.9.9.9", f"10.9.9.9 is {DENY} (10.0.0.0/8)"),
    (CUSTOM, "127.0.0.1", f"127.0.0.1 is {DENY} (127.0.0.0/8)"),
    (CUSTOM, "::ffff:127.0.0.1", f"::ffff:127.0.0.1 is {DENY} (127.0.0.0/8)"),
    (CUSTOM, "::1", f"::1 is {DENY} (::1/128)"),
    (CUSTOM, "169.254.169.254", None),  # a deny list replaces the default one
    (CUSTOM, "192.168.0.1", None),
    # Allow-list mode: only the listed networks, and deny still wins inside them.
    (ALLOW_LIST, "192.0.2.10", None),
    (ALLOW_LIST, "2001:db8::5", None),
    (ALLOW_LIST, "192.0.2.13", f"192.0.2.13 is {DENY} (192.0.2.13/32)"),
    (ALLOW_LIST, "198.51.100.1", "198.51.100.1 is not in CALLSTREAM_OUTBOUND_ALLOW"),
    (ALLOW_LIST, "127.0.0.1", "127.0.0.1 is not in CALLSTREAM_OUTBOUND_ALLOW"),
    (OutboundPolicy.from_lists(allow=[]), "203.0.113.7",
     "203.0.113.7 is not in CALLSTREAM_OUTBOUND_ALLOW"),
    (OutboundPolicy.from_lists(deny=[]), "0.0.0.0",
     "0.0.0.0 is an unspecified address (this host)"),
])
def test_configured_policy(policy: OutboundPolicy, address: str, refusal: str | None) -> None:
    ip = ipaddress.ip_address(address)
    if refusal is None:
        policy.check(ip)
        return
    with pytest.raises(OutboundDenied, match=f"^{re.escape(refusal)}$"):
        policy.check(ip)


def test_networks_parse_with_host_bits_and_bare_addresses() -> None:
    assert parse_networks(["10.1.2.3/8", " ::1 "], setting="X") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "localhost", ""])
def test_bad_network_names_the_setting_and_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=f"^CALLSTREAM_OUTBOUND_DENY: {bad!r} is not an IP"):
        OutboundPolicy.from_lists(deny=[bad])
