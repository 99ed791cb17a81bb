"""RTP packets (RFC 3550 §5.1): parse and serialize.

Two spellings of the same format:

* :class:`RtpPacket`, a frozen dataclass for tests, tools and anything that
  wants every field (CSRC list, header extension, padding);
* :func:`parse_header` and :func:`build_packet`, tuple-in/bytes-out functions
  for the media hot path, which allocate nothing but the result.

:class:`RtpView` carries a packet's wire bytes with the two header fields the
packet taps need (payload type, payload bounds), so a packet received is
parsed once — by the media session — however many taps read it.

Both enforce the same rules and raise :class:`RtpParseError` with the same
texts. RTCP multiplexed on the RTP port (RFC 5761 §4) is told apart with
:func:`is_rtcp`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from callstream.media.exceptions import RtpParseError

__all__ = [
    "MAX_CSRC",
    "PLAIN_FIRST_OCTET",
    "RTP_HEADER",
    "RTP_HEADER_LENGTH",
    "RTP_VERSION",
    "HeaderExtension",
    "RtpPacket",
    "RtpView",
    "build_packet",
    "is_rtcp",
    "parse_header",
    "rtp_view",
]

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12
MAX_CSRC = 15
MAX_PAYLOAD_TYPE = 127
# RFC 5761 §4: RTCP packet types 192-223 land on RTP payload types 64-95.
RTCP_MUX_FIRST = 192
RTCP_MUX_LAST = 223
#: The first octet of a plain packet: version 2, no padding, extension or CSRC, so its
#: header is the fixed 12 bytes (what nearly every packet of a call looks like).
PLAIN_FIRST_OCTET = 0x80

#: The fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
RTP_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_pack_header = RTP_HEADER.pack
_unpack_header = RTP_HEADER.unpack_from
_unpack_extension = _EXTENSION.unpack_from


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """An RTP header extension (RFC 3550 §5.3.1), kept as opaque words.

    ``profile`` is the 16-bit "defined by profile" field (0xBEDE for the
    RFC 8285 one-byte form); ``data`` is a multiple of four bytes.
    """

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError(f"extension profile {self.profile} is not 16 bits")
        if len(self.data) % 4:
            raise ValueError("extension data is not a multiple of 4 bytes")
        if len(self.data) > 0xFFFF * 4:
            raise ValueError("extension data is too long")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet.

    ``padding`` is the number of padding octets including the final count
    octet (0 for none); padding octets serialize as zeros.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: HeaderExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {self.payload_type} is not 7 bits")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence_number} is not 16 bits")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise ValueError(f"timestamp {self.timestamp} is not 32 bits")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {self.ssrc} is not 32 bits")
        if len(self.csrc) > MAX_CSRC:
            raise ValueError(f"more than {MAX_CSRC} CSRC")
        if any(not 0 <= c <= 0xFFFFFFFF for c in self.csrc):
            raise ValueError("CSRC is not 32 bits")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding {self.padding} is not 0-255")

    def __repr__(self) -> str:
        return (
            f"RtpPacket(seq={self.sequence_number}, ts={self.timestamp}, "
            f"pt={self.payload_type}, ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"payload={len(self.payload)} bytes)"
        )

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet.

        Raises:
            RtpParseError: the bytes are not a valid RTP packet.
        """
        pt, marker, seq, ts, ssrc, start, end = parse_header(data)
        first = data[0]
        csrc_count = first & 0x0F
        csrc: tuple[int, ...] = ()
        if csrc_count:
            csrc = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_LENGTH)
        extension = None
        if first & 0x10:
            pos = RTP_HEADER_LENGTH + 4 * csrc_count
            profile, words = _unpack_extension(data, pos)
            extension = HeaderExtension(profile, bytes(data[pos + 4 : pos + 4 + 4 * words]))
        padding = len(data) - end
        return cls(
            payload_type=pt,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[start:end]),
            marker=marker,
            csrc=csrc,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """Return the packet's wire bytes."""
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [
            _pack_header(
                first,
                self.payload_type | (0x80 if self.marker else 0),
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXTENSION.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse_header(data: bytes) -> tuple[int, bool, int, int, int, int, int]:
    """Validate an RTP packet and return its header fields, allocation-free.

    Returns:
        ``(payload_type, marker, sequence_number, timestamp, ssrc,
        payload_start, payload_end)``; the payload is ``data[start:end]``.

    Raises:
        RtpParseError: the bytes are not a valid RTP packet.
    """
    length = len(data)
    if length < RTP_HEADER_LENGTH:
        raise RtpParseError("RTP packet length is less than 12 bytes")
    first, second, seq, ts, ssrc = _unpack_header(data)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP packet has invalid version {first >> 6}")
    start = RTP_HEADER_LENGTH + 4 * (first & 0x0F)
    if start > length:
        raise RtpParseError("RTP packet has truncated CSRC")
    if first & 0x10:
        if start + 4 > length:
            raise RtpParseError("RTP packet has truncated extension header")
        words = _unpack_extension(data, start)[1]
        start += 4 + 4 * words
        if start > length:
            raise RtpParseError("RTP packet has truncated extension")
    end = length
    if first & 0x20:
        # RFC 3550 §5.1: the last octet counts the padding, itself included.
        pad = data[-1]
        if pad == 0 or start + pad > length:
            raise RtpParseError("RTP packet padding length is invalid")
        end = length - pad
    return second & 0x7F, second > 0x7F, seq, ts, ssrc, start, end


class RtpView(NamedTuple):
    """An RTP packet's wire bytes, its header already parsed (a hub packet tap's input).

    A NamedTuple, not a dataclass: one is made per packet on the hot path, there with
    :func:`rtp_view` (no Python-level ``__new__``).
    """

    data: bytes
    payload_type: int
    payload_start: int
    payload_end: int

    @property
    def payload(self) -> bytes:
        return self.data[self.payload_start : self.payload_end]

    @classmethod
    def parse(cls, data: bytes) -> RtpView:
        """Parse ``data``.

        Raises:
            RtpParseError: the bytes are not a valid RTP packet.
        """
        pt, _, _, _, _, start, end = parse_header(data)
        return cls(data, pt, start, end)

    @classmethod
    def of_built(cls, data: bytes) -> RtpView:
        """View a packet :func:`build_packet` made: its header is always 12 bytes."""
        return cls(data, data[1] & MAX_PAYLOAD_TYPE, RTP_HEADER_LENGTH, len(data))


#: ``rtp_view((data, payload_type, start, end))``: an :class:`RtpView` made in C.
rtp_view = partial(tuple.__new__, RtpView)


def build_packet(
    payload_type: int, marker: bool, sequence_number: int, timestamp: int, ssrc: int, payload: bytes
) -> bytes:
    """Return a plain RTP packet (no CSRC, extension or padding).

    The hot-path builder: the caller keeps the fields in range (the session
    masks ``sequence_number`` and ``timestamp``).
    """
    second = (payload_type | 0x80) if marker else payload_type
    return _pack_header(0x80, second, sequence_number, timestamp, ssrc) + payload


def is_rtcp(data: bytes) -> bool:
    """Return whether a datagram on a muxed RTP port is RTCP (RFC 5761 §4)."""
    return len(data) >= 2 and RTCP_MUX_FIRST <= data[1] <= RTCP_MUX_LAST
