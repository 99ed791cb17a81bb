"""Which IP addresses callstream may connect to on an API user's behalf (sans-I/O).

Every destination an API user names — webhook URLs, ``stream_url``, fork targets —
makes this server open a connection from *its* network position. Without a policy an
API key is a key to the host's private side: the cloud metadata service at
169.254.169.254, link-local devices, whatever listens on the LAN (server-side request
forgery). The policy is two lists of networks, checked against each address a
destination resolves to:

* an address is **permitted** when it is in no ``deny`` network **and** in some
  ``allow`` network; deny wins;
* the unspecified addresses (``0.0.0.0/8``, ``::``) are always refused: connecting to
  them reaches this host, whatever the lists say about 127.0.0.0/8;
* an IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as the IPv4
  address it carries, since that is where the kernel sends it.

Defaults allow everything except link-local and the cloud metadata addresses:
loopback stays allowed because a developer's webhook receiver and agent run on the
same machine (docs/security/outbound.md explains the trade-off and how to close it).

This module does no DNS and opens no socket: :mod:`callstream.outbound.connect`
resolves names and connects to the addresses checked here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALWAYS_DENIED",
    "DEFAULT_ALLOW",
    "DEFAULT_DENY",
    "DEFAULT_POLICY",
    "IPAddress",
    "IPNetwork",
    "OutboundDenied",
    "OutboundPolicy",
    "parse_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``CALLSTREAM_OUTBOUND_ALLOW`` default: every address (the deny list carves out).
DEFAULT_ALLOW = ("0.0.0.0/0", "::/0")
#: ``CALLSTREAM_OUTBOUND_DENY`` default: link-local, and each cloud's metadata service.
DEFAULT_DENY = (
    "169.254.0.0/16",  # IPv4 link-local
    "fe80::/10",  # IPv6 link-local
    # Listed on their own so that a deny list edited to let link-local through keeps
    # them when it starts from this one.
    "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean... metadata
    "169.254.170.2/32",  # AWS ECS task credentials
    "fd00:ec2::254/128",  # AWS metadata over IPv6 (Nitro)
    "100.100.100.200/32",  # Alibaba Cloud metadata
)
#: Refused whatever the lists say: "this host" in disguise.
ALWAYS_DENIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))


class OutboundDenied(ValueError):
    """An address the policy refuses.

    Attributes:
        address: the refused address, as the destination resolved to it.
        host: the host name or literal that was asked for.
        rule: why ("denied by CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"...).
    """

    def __init__(self, address: IPAddress, host: str, rule: str) -> None:
        self.address = address
        self.host = host
        self.rule = rule
        shown = str(address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            shown = f"::ffff:{address.ipv4_mapped}"  # as people write it, not ::ffff:a9fe:a9fe
        if host in (str(address), shown):
            super().__init__(f"{shown} is {rule}")
        else:
            super().__init__(f"{host} resolves to {shown}, which is {rule}")


def parse_networks(values: Iterable[str], *, setting: str) -> tuple[IPNetwork, ...]:
    """Parse CIDR networks (a bare address is a /32 or /128).

    Raises:
        ValueError: naming ``setting`` and the bad entry.
    """
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {value!r} is not an IP network ({exc})") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The allow and deny networks; :meth:`check` judges one address."""

    allow: tuple[IPNetwork, ...]
    deny: tuple[IPNetwork, ...]

    @classmethod
    def from_lists(cls, allow: Iterable[str] = DEFAULT_ALLOW,
                   deny: Iterable[str] = DEFAULT_DENY) -> OutboundPolicy:
        """Build from the settings' strings (``CALLSTREAM_OUTBOUND_ALLOW``/``_DENY``)."""
        return cls(parse_networks(allow, setting="CALLSTREAM_OUTBOUND_ALLOW"),
                   parse_networks(deny, setting="CALLSTREAM_OUTBOUND_DENY"))

    def check(self, address: IPAddress, host: str | None = None) -> None:
        """Refuse ``address`` unless the policy permits it.

        Args:
            address: one address ``host`` resolved to (or the literal itself).
            host: what the user named, for the error; defaults to the address.

        Raises:
            OutboundDenied: with the rule that refused it.
        """
        name = str(address) if host is None else host
        judged = address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            judged = address.ipv4_mapped
        for network in ALWAYS_DENIED:
            if judged in network:
                raise OutboundDenied(address, name, "an unspecified address (this host)")
        for network in self.deny:
            if judged in network:
                raise OutboundDenied(address, name,
                                     f"denied by CALLSTREAM_OUTBOUND_DENY ({network})")
        if not any(judged in network for network in self.allow):
            raise OutboundDenied(address, name, "not in CALLSTREAM_OUTBOUND_ALLOW")


#: The policy of an unconfigured server (and of parts built without settings, in tests).
DEFAULT_POLICY = OutboundPolicy.from_lists()
