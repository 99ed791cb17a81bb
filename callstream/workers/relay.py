"""The messages between the supervisor and a worker, over one ``AF_UNIX`` datagram pair.

One datagram is one message; its first byte says which:

- ``S`` (supervisor → worker): a SIP datagram received on the public port, with the
  address it came from: ``S`` + port (2 bytes, big-endian) + host length (1 byte) +
  host (ASCII) + the SIP bytes;
- ``T`` (supervisor → worker): a SIP message received over TCP, laid out as ``S``; the
  address is the connection's peer;
- ``O`` (worker → supervisor): send this SIP message over TCP to this address (on its
  connection, or on one the supervisor opens), laid out as ``S``;
- ``F`` (supervisor → worker): a TCP connection to this address could not be opened:
  laid out as ``S`` with no SIP bytes;
- ``R`` (worker → supervisor): started; its HTTP API listens on loopback at the port
  that follows (2 bytes);
- ``W`` (worker → supervisor): webhook rows were committed: deliver them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callstream.sip.records import TCP, UDP
from callstream.workers.exceptions import RelayError

SIP = b"S"[0]
SIP_TCP = b"T"[0]
TCP_SEND = b"O"[0]
TCP_FAILED = b"F"[0]
READY = b"R"[0]
WAKE = b"W"[0]

WAKE_MESSAGE = b"W"

#: The largest message read: a SIP datagram (the UDP maximum) plus its header.
MAX_MESSAGE = 65_535 + 4 + 255

_PORT = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class SipDatagram:
    """A SIP message from ``addr``: a UDP datagram, or a message framed off a TCP
    connection (``transport`` is ``TCP``)."""

    data: bytes
    addr: tuple[str, int]
    transport: str = UDP


@dataclass(frozen=True, slots=True)
class TcpSend:
    """A worker asks the supervisor to send ``data`` over TCP to ``addr``."""

    data: bytes
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class TcpFailed:
    """The supervisor could not open a TCP connection to ``addr``."""

    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Ready:
    http_port: int


@dataclass(frozen=True, slots=True)
class Wake:
    """A worker tells the supervisor that webhook rows wait to be delivered."""


Message = SipDatagram | TcpSend | TcpFailed | Ready | Wake

_ADDRESSED = {SIP, SIP_TCP, TCP_SEND, TCP_FAILED}


def _addressed(kind: bytes, data: bytes, addr: tuple[str, int]) -> bytes:
    host = addr[0].encode("ascii")
    return kind + _PORT.pack(addr[1]) + bytes((len(host),)) + host + data


def encode_sip(data: bytes, addr: tuple[str, int], transport: str = UDP) -> bytes:
    return _addressed(b"T" if transport == TCP else b"S", data, addr)


def encode_tcp_send(data: bytes, addr: tuple[str, int]) -> bytes:
    return _addressed(b"O", data, addr)


def encode_tcp_failed(addr: tuple[str, int]) -> bytes:
    return _addressed(b"F", b"", addr)


def encode_ready(http_port: int) -> bytes:
    return b"R" + _PORT.pack(http_port)


def decode(message: bytes) -> Message:
    """Raises:
        RelayError: the message is empty, of an unknown kind or truncated.
    """
    if not message:
        raise RelayError("empty relay message")
    kind = message[0]
    if kind in _ADDRESSED:
        if len(message) < 4 or len(message) < 4 + message[3]:
            raise RelayError(f"truncated {message[:1].decode()!r} relay message "
                             f"({len(message)} bytes)")
        (port,) = _PORT.unpack_from(message, 1)
        end = 4 + message[3]
        try:
            addr = (message[4:end].decode("ascii"), port)
        except UnicodeDecodeError:
            raise RelayError("relay message with a non-ASCII host") from None
        data = message[end:]
        if kind == SIP:
            return SipDatagram(data, addr)
        if kind == SIP_TCP:
            return SipDatagram(data, addr, TCP)
        if kind == TCP_SEND:
            return TcpSend(data, addr)
        if data:
            raise RelayError(f"TCP failure message with {len(data)} bytes after the address")
        return TcpFailed(addr)
    if kind == READY:
        if len(message) != 3:
            raise RelayError(f"ready message of {len(message)} bytes, not 3")
        return Ready(_PORT.unpack_from(message, 1)[0])
    if kind == WAKE:
        return Wake()
    raise RelayError(f"unknown relay message kind {message[:1]!r}")
