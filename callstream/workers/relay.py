"""The messages between the supervisor and a worker, over one ``AF_UNIX`` datagram pair.

One datagram is one message; its first byte says which:

- ``S`` (supervisor → worker): a SIP datagram received on the public port, with the
  address it came from: ``S`` + port (2 bytes, big-endian) + host length (1 byte) +
  host (ASCII) + the SIP bytes;
- ``R`` (worker → supervisor): started; its HTTP API listens on loopback at the port
  that follows (2 bytes);
- ``W`` (worker → supervisor): webhook rows were committed: deliver them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callstream.workers.exceptions import RelayError

SIP = b"S"[0]
READY = b"R"[0]
WAKE = b"W"[0]

WAKE_MESSAGE = b"W"

#: The largest message read: a SIP datagram (the UDP maximum) plus its header.
MAX_MESSAGE = 65_535 + 4 + 255

_PORT = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class SipDatagram:
    data: bytes
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Ready:
    http_port: int


@dataclass(frozen=True, slots=True)
class Wake:
    """A worker tells the supervisor that webhook rows wait to be delivered."""


Message = SipDatagram | Ready | Wake


def encode_sip(data: bytes, addr: tuple[str, int]) -> bytes:
    host = addr[0].encode("ascii")
    return b"S" + _PORT.pack(addr[1]) + bytes((len(host),)) + host + data


def encode_ready(http_port: int) -> bytes:
    return b"R" + _PORT.pack(http_port)


def decode(message: bytes) -> Message:
    """Raises:
        RelayError: the message is empty, of an unknown kind or truncated.
    """
    if not message:
        raise RelayError("empty relay message")
    kind = message[0]
    if kind == SIP:
        if len(message) < 4 or len(message) < 4 + message[3]:
            raise RelayError(f"truncated SIP relay message ({len(message)} bytes)")
        (port,) = _PORT.unpack_from(message, 1)
        end = 4 + message[3]
        return SipDatagram(message[end:], (message[4:end].decode("ascii"), port))
    if kind == READY:
        if len(message) != 3:
            raise RelayError(f"ready message of {len(message)} bytes, not 3")
        return Ready(_PORT.unpack_from(message, 1)[0])
    if kind == WAKE:
        return Wake()
    raise RelayError(f"unknown relay message kind {message[:1]!r}")
