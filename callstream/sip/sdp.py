"""Session descriptions (SDP, RFC 4566 / RFC 8866): parse and serialize.

Only what a voice UA needs is modelled (``v o s c t m a`` and ``b``); any
other line (``i u e p z k r``) is kept verbatim in ``extra`` so that nothing a
peer sent is lost. Serialization writes lines in the order RFC 4566 §5
prescribes, so a description written in that order survives
``parse_sdp(b).serialize() == b``.

Parse errors raise :class:`~callstream.sip.exceptions.SdpParseError` naming
the SDP line (1-based).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .exceptions import SdpParseError

__all__ = [
    "MAX_SDP_LINES",
    "MAX_SDP_SIZE",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpSession",
    "parse_sdp",
]

#: Largest SDP body accepted, in bytes.
MAX_SDP_SIZE = 16_384
#: Most lines one SDP body may have.
MAX_SDP_LINES = 512
#: Most m= sections one SDP body may have.
MAX_MEDIA = 16
#: Most formats one m= line may list.
MAX_FORMATS = 64

# RFC 4566 §5: session-level lines in order; "m" starts the media sections.
_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "micbka"
_EXTRA_SESSION = frozenset("iuepzkr")
_EXTRA_MEDIA = frozenset("ik")

#: RFC 3551 §6 static payload types an offer may use without a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}


class Direction(enum.Enum):
    """Media direction attribute (RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction an answerer takes for this offered direction (RFC 3264 §6.1)."""
        return _REVERSED[self]


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}
_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line: ``<username> <sess-id> <sess-version> IN IP4 <address>``."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def serialize(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line: ``IN IP4 <address>`` (TTL/count suffixes kept in ``address``)."""

    nettype: str
    addrtype: str
    address: str

    @property
    def host(self) -> str:
        """The address without a ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_null(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 way of putting a call on hold."""
        return self.host in ("0.0.0.0", "::")

    def serialize(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """One ``a=rtpmap`` (or the static default): encoding, clock rate, channels."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


Attribute = tuple[str, str | None]


def _attribute(attributes: tuple[Attribute, ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return "" if value is None else value
    return None


def _direction(attributes: tuple[Attribute, ...]) -> Direction | None:
    for key, value in attributes:
        if value is None and key in _DIRECTIONS:
            return _DIRECTIONS[key]
    return None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section.

    Attributes:
        media: ``"audio"``, ``"video"``...
        port: Transport port; 0 means the stream is rejected or disabled.
        proto: ``"RTP/AVP"``, ``"RTP/SAVP"``...
        formats: Format list as written (payload type numbers for RTP).
        port_count: The ``/<n>`` after the port, when present.
        connection: The media-level ``c=`` line, if any.
        bandwidths: ``b=`` values in order.
        attributes: ``a=`` lines as ``(name, value)``; flags have value ``None``.
        extra: Other lines (``i``, ``k``) as ``(type, value)``.
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str | None:
        """Return the first ``a=name`` value (``""`` for a flag), or ``None``."""
        return _attribute(self.attributes, name)

    def attribute_values(self, name: str) -> list[str]:
        """Return every ``a=name:value`` value in order."""
        return [value for key, value in self.attributes if key == name and value is not None]

    @property
    def payload_types(self) -> list[int]:
        """Numeric formats in order (RTP payload types); others are skipped."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and int(f) < 128]

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The ``a=rtpmap`` for ``payload_type``, else the RFC 3551 static one, else ``None``."""
        prefix = f"{payload_type} "
        for value in self.attribute_values("rtpmap"):
            if value.startswith(prefix):
                parsed = _parse_rtpmap(value)
                if parsed is not None:
                    return parsed
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        if static is None:
            return None
        return RtpMap(payload_type, *static)

    def fmtp(self, payload_type: int) -> str | None:
        """The ``a=fmtp`` parameters for ``payload_type``, or ``None``."""
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds, or ``None`` when absent or malformed."""
        value = self.attribute("ptime")
        if value and value.isascii() and value.isdigit() and 0 < int(value) <= 1000:
            return int(value)
        return None

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, or ``None`` when absent."""
        return _direction(self.attributes)

    def serialize_lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()]
        lines.extend(f"{key}={value}" for key, value in self.extra if key == "i")
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines.extend(f"b={value}" for value in self.bandwidths)
        lines.extend(f"{key}={value}" for key, value in self.extra if key == "k")
        lines.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        return lines


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 10


def _parse_rtpmap(value: str) -> RtpMap | None:
    # "<pt> <encoding>/<clock>[/<channels>]"
    pt_text, _, encoding_text = value.partition(" ")
    parts = encoding_text.strip().split("/")
    if not _is_number(pt_text) or len(parts) < 2 or not _is_number(parts[1]):
        return None
    channels = 1
    if len(parts) > 2:
        if not _is_number(parts[2]):
            return None
        channels = int(parts[2])
    pt, clock = int(pt_text), int(parts[1])
    if pt > 127 or clock == 0 or not parts[0]:
        return None
    return RtpMap(pt, parts[0], clock, channels)


@dataclass(frozen=True, slots=True)
class SdpSession:
    """A whole session description.

    Attributes:
        origin: The ``o=`` line.
        session_name: The ``s=`` line (``"-"`` when unnamed).
        connection: Session-level ``c=``, if any.
        times: ``t=`` values in order (usually ``("0 0",)``).
        bandwidths: Session-level ``b=`` values.
        attributes: Session-level ``a=`` lines.
        media: The ``m=`` sections.
        extra: Other session-level lines (``i u e p z k r``) as ``(type, value)``.
        version: The ``v=`` value (always 0).
    """

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: tuple[str, ...] = ("0 0",)
    bandwidths: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    version: int = 0

    def attribute(self, name: str) -> str | None:
        """Return the first session-level ``a=name`` (``""`` for a flag), or ``None``."""
        return _attribute(self.attributes, name)

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, or ``None`` when absent."""
        return _direction(self.attributes)

    def media_direction(self, media: MediaDescription) -> Direction:
        """Effective direction of ``media``: its own, else the session's, else sendrecv."""
        return media.direction or self.direction or Direction.SENDRECV

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """Effective connection of ``media``: its own ``c=``, else the session's."""
        return media.connection or self.connection

    def with_version(self, session_version: int) -> SdpSession:
        """Return a copy whose ``o=`` sess-version is ``session_version``."""
        return replace(self, origin=replace(self.origin, session_version=session_version))

    def serialize(self) -> bytes:
        """Return the description as CRLF-terminated lines."""
        lines = [f"v={self.version}", f"o={self.origin.serialize()}", f"s={self.session_name}"]
        for kind in "iuep":
            lines.extend(f"{key}={value}" for key, value in self.extra if key == kind)
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines.extend(f"b={value}" for value in self.bandwidths)
        for index, time in enumerate(self.times):
            lines.append(f"t={time}")
            # r= lines belong after their t=; we keep them after the first.
            if index == 0:
                lines.extend(f"r={value}" for key, value in self.extra if key == "r")
        for kind in "zk":
            lines.extend(f"{key}={value}" for key, value in self.extra if key == kind)
        lines.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        for media in self.media:
            lines.extend(media.serialize_lines())
        return ("\r\n".join(lines) + "\r\n").encode()


def _split_fields(value: str, count: int, kind: str, number: int) -> list[str]:
    fields = value.split()
    if len(fields) != count:
        raise SdpParseError(f"{kind}= line needs {count} fields, has {len(fields)}", line=number)
    return fields


def _parse_connection(value: str, number: int) -> Connection:
    nettype, addrtype, address = _split_fields(value, 3, "c", number)
    if nettype != "IN" or addrtype not in ("IP4", "IP6"):
        raise SdpParseError(f"unsupported connection {nettype} {addrtype}", line=number)
    return Connection(nettype, addrtype, address)


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    return (name, rest if colon else None)


def _parse_media_line(value: str, number: int) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise SdpParseError("m= line needs <media> <port> <proto> <fmt>...", line=number)
    media, port_text, proto = fields[0], fields[1], fields[2]
    formats = tuple(fields[3:])
    if len(formats) > MAX_FORMATS:
        raise SdpParseError(f"m= line lists more than {MAX_FORMATS} formats", line=number)
    port_only, slash, count_text = port_text.partition("/")
    if not port_only.isascii() or not port_only.isdigit() or int(port_only) > 65535:
        raise SdpParseError(f"invalid port {port_text[:12]!r}", line=number)
    port_count: int | None = None
    if slash:
        if not count_text.isascii() or not count_text.isdigit() or not count_text:
            raise SdpParseError(f"invalid port count {port_text[:12]!r}", line=number)
        port_count = int(count_text)
    return MediaDescription(media, int(port_only), proto, formats, port_count)


def parse_sdp(data: bytes) -> SdpSession:
    """Parse a session description.

    Args:
        data: The SDP body (CRLF or LF line ends).

    Raises:
        SdpParseError: When the body is not valid SDP, naming the line.
    """
    if len(data) > MAX_SDP_SIZE:
        raise SdpParseError(f"SDP body of {len(data)} bytes is over the {MAX_SDP_SIZE}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpParseError("SDP body is not valid UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SdpParseError("SDP body is empty")
    if len(lines) > MAX_SDP_LINES:
        raise SdpParseError(f"SDP body has more than {MAX_SDP_LINES} lines")
    if lines[0].strip() != "v=0":
        raise SdpParseError(f"first line must be v=0, not {lines[0][:20]!r}", line=1)

    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    times: list[str] = []
    bandwidths: list[str] = []
    attributes: list[Attribute] = []
    extra: list[tuple[str, str]] = []
    media: list[MediaDescription] = []
    current: MediaDescription | None = None
    m_connection: Connection | None = None
    m_bandwidths: list[str] = []
    m_attributes: list[Attribute] = []
    m_extra: list[tuple[str, str]] = []

    def close_media() -> None:
        nonlocal current
        if current is not None:
            media.append(
                replace(
                    current,
                    connection=m_connection,
                    bandwidths=tuple(m_bandwidths),
                    attributes=tuple(m_attributes),
                    extra=tuple(m_extra),
                )
            )
        current = None

    for number, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpParseError(f"malformed line {line[:40]!r}", line=number)
        kind, value = line[0], line[2:]
        if kind == "m":
            close_media()
            if len(media) >= MAX_MEDIA:
                raise SdpParseError(f"more than {MAX_MEDIA} m= sections", line=number)
            current = _parse_media_line(value, number)
            m_connection, m_bandwidths, m_attributes, m_extra = None, [], [], []
        elif current is not None:
            if kind == "c":
                m_connection = _parse_connection(value, number)
            elif kind == "b":
                m_bandwidths.append(value)
            elif kind == "a":
                m_attributes.append(_parse_attribute(value))
            elif kind in _EXTRA_MEDIA:
                m_extra.append((kind, value))
            else:
                raise SdpParseError(f"{kind}= line is not allowed in a media section", line=number)
        elif kind == "o":
            username, session_id, version, nettype, addrtype, address = _split_fields(
                value, 6, "o", number
            )
            if not version.isascii() or not version.isdigit():
                raise SdpParseError(f"invalid session version {version[:20]!r}", line=number)
            origin = Origin(username, session_id, int(version), nettype, addrtype, address)
        elif kind == "s":
            session_name = value
        elif kind == "c":
            connection = _parse_connection(value, number)
        elif kind == "t":
            times.append(value)
        elif kind == "b":
            bandwidths.append(value)
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind in _EXTRA_SESSION:
            extra.append((kind, value))
        else:
            # RFC 4566 §5: "An SDP parser MUST completely ignore any session
            # description that contains a type letter that it does not understand."
            raise SdpParseError(f"unknown line type {kind}=", line=number)
    close_media()
    if origin is None:
        raise SdpParseError("missing o= line")
    if session_name is None:
        raise SdpParseError("missing s= line")
    return SdpSession(
        origin,
        session_name,
        connection,
        tuple(times),
        tuple(bandwidths),
        tuple(attributes),
        tuple(media),
        tuple(extra),
    )
