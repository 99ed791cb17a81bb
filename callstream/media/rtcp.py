"""RTCP packets (RFC 3550 §6): SR, RR, SDES and BYE; parse and build compounds.

Every packet type is a frozen dataclass with ``serialize()``; a datagram is a
compound of them, parsed by :func:`parse_rtcp` and built by
:func:`serialize_rtcp`. Types we do not interpret (APP, feedback, XR) come back
as :class:`RtcpUnknown` so a compound still round-trips.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from callstream.media.exceptions import RtcpParseError

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpSourceDescription",
    "RtcpUnknown",
    "SdesChunk",
    "SdesItem",
    "SenderInfo",
    "parse_rtcp",
    "serialize_rtcp",
]

RTCP_VERSION = 2
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

SDES_END = 0
SDES_CNAME = 1

RTCP_HEADER_LENGTH = 4
SENDER_INFO_LENGTH = 20
REPORT_BLOCK_LENGTH = 24
# The 5-bit count field limits report blocks, SDES chunks and BYE sources.
MAX_COUNT = 31
MAX_SDES_VALUE = 255
MAX_BYE_REASON = 255

_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!QIII")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} {value} is not 32 bits")


def _check_count(what: str, count: int) -> None:
    if count > MAX_COUNT:
        raise ValueError(f"more than {MAX_COUNT} {what}")


def _header(packet_type: int, count: int, body_length: int) -> bytes:
    # RFC 3550 §6.4.1: length is in 32-bit words minus one, header included.
    return _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, body_length // 4)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1).

    ``packets_lost`` is the signed 24-bit cumulative loss; ``lsr`` and
    ``dlsr`` are the middle 32 bits of the last SR's NTP time and the delay
    since it in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        _check_u32("SSRC", self.ssrc)
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"fraction lost {self.fraction_lost} is not 8 bits")
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise ValueError(f"packets lost {self.packets_lost} is not 24 bits signed")
        _check_u32("highest sequence", self.highest_sequence)
        _check_u32("jitter", self.jitter)
        _check_u32("LSR", self.lsr)
        _check_u32("DLSR", self.dlsr)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if offset + REPORT_BLOCK_LENGTH > len(data):
            raise RtcpParseError("RTCP report block is truncated")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=int.from_bytes(lost, "big", signed=True),
            highest_sequence=highest,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )

    def serialize(self) -> bytes:
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            self.packets_lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _check_extension(body: bytes, end: int) -> None:
    if end < len(body) and (len(body) - end) % 4:
        raise RtcpParseError("RTCP report has a misaligned profile extension")


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(
        ReportBlock.parse(body, offset + i * REPORT_BLOCK_LENGTH) for i in range(count)
    )


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """The sender information of an SR (RFC 3550 §6.4.1)."""

    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    def __post_init__(self) -> None:
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise ValueError(f"NTP timestamp {self.ntp_timestamp} is not 64 bits")
        _check_u32("RTP timestamp", self.rtp_timestamp)
        _check_u32("packet count", self.packet_count)
        _check_u32("octet count", self.octet_count)


@dataclass(frozen=True, slots=True)
class RtcpSenderReport:
    """SR: sender info plus reception reports (RFC 3550 §6.4.1)."""

    ssrc: int
    sender_info: SenderInfo
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_u32("SSRC", self.ssrc)
        _check_count("report blocks", len(self.reports))
        if len(self.extension) % 4:
            raise ValueError("profile extension is not a multiple of 4 bytes")

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpSenderReport:
        if len(body) < 4 + SENDER_INFO_LENGTH:
            raise RtcpParseError("RTCP sender report length is less than 24 bytes")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        end = 4 + SENDER_INFO_LENGTH + count * REPORT_BLOCK_LENGTH
        _check_extension(body, end)
        return cls(
            ssrc=ssrc,
            sender_info=SenderInfo(ntp, rtp_ts, packets, octets),
            reports=_parse_blocks(body, 4 + SENDER_INFO_LENGTH, count),
            extension=bytes(body[end:]),
        )

    def serialize(self) -> bytes:
        info = self.sender_info
        body = b"".join(
            (
                _SSRC.pack(self.ssrc),
                _SENDER_INFO.pack(
                    info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count
                ),
                *(block.serialize() for block in self.reports),
                self.extension,
            )
        )
        return _header(RTCP_SR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport:
    """RR: reception reports from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_u32("SSRC", self.ssrc)
        _check_count("report blocks", len(self.reports))
        if len(self.extension) % 4:
            raise ValueError("profile extension is not a multiple of 4 bytes")

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpReceiverReport:
        if len(body) < 4:
            raise RtcpParseError("RTCP receiver report length is less than 8 bytes")
        end = 4 + count * REPORT_BLOCK_LENGTH
        _check_extension(body, end)
        return cls(
            ssrc=_SSRC.unpack_from(body)[0],
            reports=_parse_blocks(body, 4, count),
            extension=bytes(body[end:]),
        )

    def serialize(self) -> bytes:
        body = b"".join(
            (
                _SSRC.pack(self.ssrc),
                *(block.serialize() for block in self.reports),
                self.extension,
            )
        )
        return _header(RTCP_RR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesItem:
    """One SDES item: ``kind`` 1 is CNAME (RFC 3550 §6.5.1)."""

    kind: int
    value: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.kind <= 255:
            raise ValueError(f"SDES item type {self.kind} is not 1-255")
        if len(self.value) > MAX_SDES_VALUE:
            raise ValueError("SDES item is longer than 255 bytes")


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The SDES items of one source."""

    ssrc: int
    items: tuple[SdesItem, ...] = ()

    def __post_init__(self) -> None:
        _check_u32("SSRC", self.ssrc)

    def serialize(self) -> bytes:
        items = b"".join(bytes((item.kind, len(item.value))) + item.value for item in self.items)
        # RFC 3550 §6.5: a null item ends the list, padded to a 32-bit boundary.
        terminator = bytes(4 - len(items) % 4)
        return _SSRC.pack(self.ssrc) + items + terminator


@dataclass(frozen=True, slots=True)
class RtcpSourceDescription:
    """SDES: one chunk per source."""

    chunks: tuple[SdesChunk, ...] = ()

    def __post_init__(self) -> None:
        _check_count("SDES chunks", len(self.chunks))

    def cname(self, ssrc: int) -> str | None:
        """Return the CNAME announced for ``ssrc``, if any."""
        for chunk in self.chunks:
            if chunk.ssrc == ssrc:
                for item in chunk.items:
                    if item.kind == SDES_CNAME:
                        return item.value.decode("utf-8", "replace")
        return None

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpSourceDescription:
        chunks = []
        pos = 0
        end = len(body)
        for _ in range(count):
            if pos + 4 > end:
                raise RtcpParseError("RTCP SDES chunk is truncated")
            ssrc = _SSRC.unpack_from(body, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= end:
                    raise RtcpParseError("RTCP SDES chunk is truncated")
                kind = body[pos]
                if kind == SDES_END:
                    pos = (pos + 4) & ~3  # skip the null octets up to the boundary
                    break
                if pos + 2 > end or pos + 2 + body[pos + 1] > end:
                    raise RtcpParseError("RTCP SDES item is truncated")
                length = body[pos + 1]
                items.append(SdesItem(kind, bytes(body[pos + 2 : pos + 2 + length])))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def serialize(self) -> bytes:
        body = b"".join(chunk.serialize() for chunk in self.chunks)
        return _header(RTCP_SDES, len(self.chunks), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpBye:
    """BYE: the listed sources leave, optionally saying why (RFC 3550 §6.6)."""

    sources: tuple[int, ...] = ()
    reason: bytes | None = None

    def __post_init__(self) -> None:
        _check_count("BYE sources", len(self.sources))
        for ssrc in self.sources:
            _check_u32("SSRC", ssrc)
        if self.reason is not None and len(self.reason) > MAX_BYE_REASON:
            raise ValueError("BYE reason is longer than 255 bytes")

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpBye:
        if 4 * count > len(body):
            raise RtcpParseError("RTCP BYE has truncated source list")
        sources = struct.unpack_from(f"!{count}I", body)
        pos = 4 * count
        reason = None
        if pos < len(body):
            length = body[pos]
            if pos + 1 + length > len(body):
                raise RtcpParseError("RTCP BYE reason is truncated")
            reason = bytes(body[pos + 1 : pos + 1 + length])
        return cls(sources, reason)

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason is not None:
            text = bytes((len(self.reason),)) + self.reason
            body += text + bytes(-len(text) % 4)
        return _header(RTCP_BYE, len(self.sources), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """An RTCP packet of a type we carry but do not interpret (APP, RTPFB...)."""

    packet_type: int
    count: int
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.packet_type <= 255:
            raise ValueError(f"packet type {self.packet_type} is not 8 bits")
        if not 0 <= self.count <= MAX_COUNT:
            raise ValueError(f"count {self.count} is not 5 bits")
        if len(self.body) % 4:
            raise ValueError("RTCP body is not a multiple of 4 bytes")

    def serialize(self) -> bytes:
        return _header(self.packet_type, self.count, len(self.body)) + self.body


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpUnknown


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram into its packets, in order.

    Raises:
        RtcpParseError: any packet of the compound is malformed.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    length = len(data)
    if length < RTCP_HEADER_LENGTH:
        raise RtcpParseError("RTCP packet length is less than 4 bytes")
    while pos < length:
        if pos + RTCP_HEADER_LENGTH > length:
            raise RtcpParseError("RTCP packet length is less than 4 bytes")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != RTCP_VERSION:
            raise RtcpParseError(f"RTCP packet has invalid version {first >> 6}")
        end = pos + 4 * (words + 1)
        if end > length:
            raise RtcpParseError("RTCP packet is truncated")
        body_end = end
        if first & 0x20:
            # The padding count is the last octet of this packet, itself included.
            pad = data[end - 1]
            if pad == 0 or pos + RTCP_HEADER_LENGTH + pad > end:
                raise RtcpParseError("RTCP packet padding length is invalid")
            body_end = end - pad
        body = data[pos + RTCP_HEADER_LENGTH : body_end]
        count = first & 0x1F
        packet: RtcpPacket
        if packet_type == RTCP_SR:
            packet = RtcpSenderReport.parse(count, body)
        elif packet_type == RTCP_RR:
            packet = RtcpReceiverReport.parse(count, body)
        elif packet_type == RTCP_SDES:
            packet = RtcpSourceDescription.parse(count, body)
        elif packet_type == RTCP_BYE:
            packet = RtcpBye.parse(count, body)
        else:
            packet = RtcpUnknown(packet_type, count, bytes(data[pos + RTCP_HEADER_LENGTH : end]))
        packets.append(packet)
        pos = end
    return packets


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """Return the compound datagram of ``packets`` (RFC 3550 §6.1)."""
    return b"".join(packet.serialize() for packet in packets)
