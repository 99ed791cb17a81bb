"""STREP: the 24-byte header a legacy ``target`` fork puts before each RTP packet.

STREP (Simple Telnyx RTP Encapsulation Protocol) lets one UDP port receive both
directions of many calls: each datagram is a STREP header followed by the RTP
packet exactly as it was on the wire (spec §6)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |1 1|Version|L|D|   HeaderLen   |           reserved            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           reserved                            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                                                               |
    +                  call_leg_id (16-byte UUID)                   +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    RTP packet (header + payload)              |

``L`` is the leg (0: A-leg, 1: B-leg) and ``D`` the direction (0: the RTP the
call received, 1: the RTP it sent). Telnyx's published diagram stops after the
first word; the reserved second word and the binary ``call_leg_id`` follow from
the 24-byte length. We send ``Version`` :data:`STREP_VERSION`; a parser honours
``HeaderLen`` so a longer future header still yields the RTP packet.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

__all__ = [
    "STREP_HEADER_LEN",
    "STREP_VERSION",
    "StrepDirection",
    "StrepError",
    "StrepHeader",
    "StrepLeg",
    "parse",
]

STREP_HEADER_LEN = 24
STREP_VERSION = 1
_MARKER = 0b11


class StrepError(ValueError):
    """A datagram that is not a STREP-encapsulated packet."""


class StrepDirection(enum.IntEnum):
    INBOUND = 0  # RTP the call received (a fork's rx)
    OUTBOUND = 1  # RTP the call sent (a fork's tx)


class StrepLeg(enum.IntEnum):
    A = 0
    B = 1


@dataclass(frozen=True, slots=True)
class StrepHeader:
    call_leg_id: uuid.UUID
    direction: StrepDirection
    leg: StrepLeg = StrepLeg.A
    version: int = STREP_VERSION
    header_len: int = STREP_HEADER_LEN

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 15:
            raise StrepError(f"STREP version {self.version} does not fit in 4 bits")
        if not STREP_HEADER_LEN <= self.header_len <= 255:
            raise StrepError(f"STREP header length {self.header_len} is outside 24..255")

    def serialize(self) -> bytes:
        """The header bytes; a longer ``header_len`` is padded with zeros."""
        first = (_MARKER << 6) | (self.version << 2) | (self.leg << 1) | self.direction
        head = bytes((first, self.header_len, 0, 0, 0, 0, 0, 0)) + self.call_leg_id.bytes
        return head + bytes(self.header_len - STREP_HEADER_LEN)


def parse(datagram: bytes) -> tuple[StrepHeader, bytes]:
    """Split a STREP datagram into its header and the RTP packet it carries.

    Raises:
        StrepError: too short, the leading ``11`` bits are missing, or
            ``HeaderLen`` is below 24 or beyond the datagram.
    """
    if len(datagram) < STREP_HEADER_LEN:
        raise StrepError(f"STREP datagram of {len(datagram)} bytes is shorter than 24")
    first, header_len = datagram[0], datagram[1]
    if first >> 6 != _MARKER:
        raise StrepError("STREP header does not start with bits 11")
    if header_len < STREP_HEADER_LEN:
        raise StrepError(f"STREP HeaderLen {header_len} is below 24")
    if header_len > len(datagram):
        raise StrepError(f"STREP HeaderLen {header_len} exceeds the {len(datagram)}-byte datagram")
    header = StrepHeader(
        call_leg_id=uuid.UUID(bytes=bytes(datagram[8:24])),
        direction=StrepDirection(first & 1),
        leg=StrepLeg((first >> 1) & 1),
        version=(first >> 2) & 0x0F,
        header_len=header_len,
    )
    return header, bytes(datagram[header_len:])
