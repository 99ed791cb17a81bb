"""Fork destinations: the ``udp:<host>:<port>`` strings of ``rx``, ``tx`` and ``target``.

Accepted forms (spec §3.3 names ``udp:<ip>:<port>``; host names and IPv6 are ours)::

    udp:192.0.2.10:5000        IPv4 literal
    udp:[2001:db8::7]:5000     IPv6 literal, bracketed as in URIs (RFC 3986 §3.2.2)
    udp:2001:db8::7:5000       IPv6 literal without brackets: the last ``:`` starts the port
    udp:recorder.internal:5000 a host name, resolved once when the fork starts

Parsing is pure; resolving a host name is the caller's (asynchronous) business.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["MAX_TARGET_LENGTH", "ForkTarget", "InvalidTarget", "parse_target"]

MAX_TARGET_LENGTH = 300
_SCHEME = "udp:"
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_DOTTED = re.compile(r"^[0-9.]+$")  # looks like IPv4 but did not parse as one


class InvalidTarget(ValueError):
    """A fork destination that is not ``udp:<host>:<port>``; the message says why."""


@dataclass(frozen=True, slots=True)
class ForkTarget:
    """A parsed destination.

    Attributes:
        host: an IP literal (without brackets) or a host name.
        port: 1..65535.
        literal: the host as an IP address, or None for a host name.
    """

    host: str
    port: int
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        return f"udp:{host}:{self.port}"


def parse_target(value: str) -> ForkTarget:
    """Parse ``udp:<host>:<port>``.

    Raises:
        InvalidTarget: wrong scheme, missing or out-of-range port, a host that is
            neither an IP literal nor a host name, or an unspecified address
            (``0.0.0.0``, ``::``) that no packet can reach.
    """
    if len(value) > MAX_TARGET_LENGTH:
        raise InvalidTarget(f"must be at most {MAX_TARGET_LENGTH} characters")
    if not value[: len(_SCHEME)].lower() == _SCHEME:
        raise InvalidTarget("must look like udp:<ip>:<port>")
    rest = value[len(_SCHEME) :]
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise InvalidTarget("a bracketed IPv6 address must be followed by :<port>")
        literal = _ip(host)
        if not isinstance(literal, ipaddress.IPv6Address):
            raise InvalidTarget(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise InvalidTarget("must look like udp:<ip>:<port>")
        literal = _ip(host)
        if literal is None and _DOTTED.match(host):
            raise InvalidTarget(f"{host!r} is not a valid IPv4 address")
        if literal is None and (":" in host or not _HOSTNAME.match(host)):
            raise InvalidTarget(f"{host!r} is neither an IP address nor a host name")
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        raise InvalidTarget(f"port {port!r} is not a number from 1 to 65535")
    if literal is not None and literal.is_unspecified:
        raise InvalidTarget(f"{host} is the unspecified address; name a reachable host")
    return ForkTarget(host=str(literal) if literal else host.rstrip("."), port=int(port),
                      literal=literal)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "%" in host:  # a zone index ties the address to this machine's interface names
        raise InvalidTarget(f"{host!r}: IPv6 zone indexes are not supported")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
