"""Listening sockets that fail with one clear sentence instead of a traceback.

A port someone else holds is the most common way a first ``callstream serve`` fails
(a second server, a softphone on 5060). :class:`ListenError` says which service,
which address and protocol, and why, in words; the command line adds what to do
(``--sip``, ``--http``, ``--sip-port``) and exits 1.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["ListenError", "bind_tcp"]

#: errno -> the words a user sees, and a hint for the common case.
_REASONS: dict[int, tuple[str, str]] = {
    errno.EADDRINUSE: ("address in use", "is another callstream running?"),
    errno.EACCES: ("permission denied", "ports below 1024 need privileges"),
    errno.EADDRNOTAVAIL: ("address not available", "no interface of this host has it"),
}


class ListenError(OSError):
    """A listening socket could not be opened.

    An :class:`OSError` (same ``errno``), so code that catches those still does.

    Args:
        service: what would have listened (``"SIP"``, ``"HTTP"``).
        host: the address asked for.
        port: the port asked for.
        protocol: ``"UDP"`` or ``"TCP"``.
        cause: the bind's own error.
    """

    def __init__(self, service: str, host: str, port: int, protocol: str,
                 cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.service = service
        self.host = host
        self.port = port
        self.protocol = protocol

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def reason(self) -> str:
        known = _REASONS.get(self.errno or 0)
        if known is None:
            return (self.strerror or "error").lower()
        words, hint = known
        return f"{words} — {hint}"

    def __str__(self) -> str:
        return (f"cannot listen for {self.service} on {self.address} ({self.protocol}): "
                f"{self.reason}")

    def with_advice(self, advice: str) -> str:
        """The message and what to do: ``err.with_advice("Use --sip HOST:PORT")``."""
        text = str(self)
        return f"{text} {advice}" if text.endswith("?") else f"{text}. {advice}"


def bind_tcp(service: str, host: str, port: int) -> list[socket.socket]:
    """Bound, listening-ready TCP sockets for every address ``host`` names (as asyncio's
    ``create_server`` would bind), for servers that take ready sockets (uvicorn).

    Raises:
        ListenError: one address could not be bound; none stays open.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ListenError(service, host, port, "TCP", exc) from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                (i[0], i[1], i[2], "", i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(service, host, port, "TCP", exc) from exc
    return sockets


def bound_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket, as a process on this machine reaches it
    (a socket bound on every interface is reached on loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
