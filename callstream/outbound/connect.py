"""Resolve a destination, check every address it resolves to, connect only to those.

The check and the connection use the same addresses: a host name is resolved once, and
the socket is connected to an address that passed — never to the name, which a second
lookup could turn into a forbidden address (DNS rebinding). A name is refused when *any*
of its addresses is: one answer that mixes a public and a private address is a probe,
not a configuration to work around.

Callers hand the connected socket to ``loop.create_connection(sock=...)`` (webhooks) or
``websockets``' ``connect(sock=...)`` (streams), which keep the name for ``Host`` and
TLS (SNI, certificate check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from callstream.outbound.policy import IPAddress, OutboundPolicy

__all__ = ["Destination", "connect_tcp", "literal_address", "resolve"]


@dataclass(frozen=True, slots=True)
class Destination:
    """One checked address, as ``socket.connect`` takes it (2-tuple v4, 4-tuple v6)."""

    family: int
    sockaddr: tuple[Any, ...]


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is a literal (brackets allowed), else None."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


async def resolve(host: str, port: int, policy: OutboundPolicy, *,
                  kind: int = socket.SOCK_STREAM) -> list[Destination]:
    """The addresses of ``host``, each one checked; a literal is checked without DNS.

    The caller bounds the time (``asyncio.timeout``).

    Raises:
        OutboundDenied: an address the policy refuses (the first one found).
        OSError: the name does not resolve, is not a valid host name, or has no
            IPv4/IPv6 address.
    """
    literal = literal_address(host)
    if literal is not None:
        policy.check(literal, host)
        if literal.version == 4:
            return [Destination(socket.AF_INET, (str(literal), port))]
        return [Destination(socket.AF_INET6, (str(literal), port, 0, 0))]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    except UnicodeError as exc:  # a label over 63 characters, or not IDNA-encodable
        raise OSError(f"{host[:80]!r} is not a valid host name ({exc})") from None
    out = []
    for family, _kind, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            policy.check(ipaddress.ip_address(sockaddr[0]), host)
            out.append(Destination(family, tuple(sockaddr)))
    if not out:
        raise OSError(f"{host} has no IPv4 or IPv6 address")
    return out


async def connect_tcp(host: str, port: int, policy: OutboundPolicy) -> socket.socket:
    """A non-blocking TCP socket connected to a checked address of ``host``.

    Addresses are tried in the resolver's order until one accepts. The caller bounds the
    time (``asyncio.timeout``); a cancelled attempt closes its socket.

    Raises:
        OutboundDenied: ``host`` is or resolves to a refused address; nothing was sent.
        OSError: resolution failed, or no address accepted (the last error).
    """
    loop = asyncio.get_running_loop()
    destinations = await resolve(host, port, policy)
    error = OSError(f"cannot connect to {host}")  # replaced by each address's own error
    for dest in destinations:
        sock = socket.socket(dest.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, dest.sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    raise error
