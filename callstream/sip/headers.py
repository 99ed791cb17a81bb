"""Structured header values: Via, name-addr (From/To/Contact/Route), CSeq.

Each type is a frozen dataclass with ``parse_*`` / ``serialize()``; parse
failures raise :class:`~callstream.sip.exceptions.InvalidHeader` naming the
header and the value, so that a UAS can answer 400 with a useful reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import InvalidHeader, InvalidUri
from .message import canonical_name
from .uri import Params, SipUri, format_host, format_params, param_value, parse_params, parse_uri

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "UA_OWNED_HEADERS",
    "CSeq",
    "NameAddr",
    "Via",
    "is_ua_owned",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
]

#: RFC 3261 §8.1.1.7: branch IDs of compliant elements "MUST always begin with
#: the characters "z9hG4bK"".
BRANCH_MAGIC_COOKIE = "z9hG4bK"
#: Largest CSeq number (RFC 3261 §8.1.1.5: "MUST be less than 2**31").
MAX_CSEQ = 2**31 - 1

#: Headers the UA writes itself: they route the request, identify the transaction
#: and dialog, frame the body, carry credentials or negotiate extensions. A second
#: copy from an application would redirect, forge or break the call, so extra
#: headers from outside (``custom_headers``) may not use these names (nor their
#: compact forms: v, f, t, i, m, l, c, e, k).
UA_OWNED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route",
        "Record-Route", "Path", "Content-Length", "Content-Type", "Content-Encoding",
        "Content-Disposition", "Authorization", "Proxy-Authorization", "WWW-Authenticate",
        "Proxy-Authenticate", "Authentication-Info", "Require", "Proxy-Require", "Supported",
        "Allow", "RAck", "RSeq",
    )
)  # fmt: skip


def is_ua_owned(name: str) -> bool:
    """Whether ``name`` (any case, long or compact form) is in :data:`UA_OWNED_HEADERS`."""
    return canonical_name(name).lower() in UA_OWNED_HEADERS


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# sent-protocol with the LWS the grammar allows around "/" (RFC 3261 §25.1 SLASH).
_VIA_PROTOCOL = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+", re.I
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42), e.g. ``SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1``.

    Attributes:
        transport: ``"UDP"``, ``"TCP"``... as written (compare case-insensitively).
        host: sent-by host, IPv6 without brackets.
        port: sent-by port or ``None``.
        params: Parameters in order (``branch``, ``rport``, ``received``...).
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        """Return parameter ``name`` (``""`` for a flag), or ``None``."""
        return param_value(self.params, name)

    @property
    def branch(self) -> str | None:
        """The branch parameter, or ``None``."""
        return self.param("branch") or None

    @property
    def received(self) -> str | None:
        """The received parameter (RFC 3261 §18.2.1), or ``None``."""
        return self.param("received") or None

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581), or ``None``."""
        value = self.param("rport")
        return int(value) if value and value.isascii() and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        """Whether the client asked for rport (RFC 3581 §3: empty ``rport``)."""
        return self.param("rport") is not None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` of sent-by."""
        return self.host, self.port

    def with_received(self, source_host: str, source_port: int) -> Via:
        """Return this Via stamped with the packet's source (RFC 3261 §18.2.1, RFC 3581 §4).

        RFC 3261: the server "MUST add a "received" parameter" when sent-by's
        host differs from the source address; RFC 3581: when ``rport`` is
        present it "MUST set the value of the "rport" parameter to the source
        port" and add ``received`` even if the address is the same.
        """
        params = [(k, v) for k, v in self.params if k.lower() not in ("received", "rport")]
        if self.wants_rport:
            params.append(("received", source_host))
            params.append(("rport", str(source_port)))
        elif self.host != source_host:
            params.append(("received", source_host))
        else:
            return self
        return Via(self.transport, self.host, self.port, tuple(params))

    def response_address(self, source: tuple[str, int]) -> tuple[str, int]:
        """Where to send responses over UDP (RFC 3261 §18.2.2, RFC 3581 §4)."""
        host = self.received or self.host
        port = self.rport or self.port or 5060
        if self.rport is None and self.wants_rport:
            port = source[1]
        return host, port

    def serialize(self) -> str:
        """Return the Via value as text."""
        port = "" if self.port is None else f":{self.port}"
        return (
            f"SIP/2.0/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"
        )


def parse_via(value: str) -> Via:
    """Parse one Via value (split comma-joined Vias first).

    Raises:
        InvalidHeader: When the value does not match RFC 3261 §25.1 ``via-parm``.
    """
    match = _VIA_PROTOCOL.match(value)
    if match is None:
        raise InvalidHeader("Via", value, "expected SIP/2.0/<transport> <sent-by>")
    transport = match.group(1)
    rest = value[match.end() :]
    rest = rest.strip(" \t")
    hostport, _, param_text = rest.partition(";")
    hostport = hostport.strip(" \t")
    if not hostport:
        raise InvalidHeader("Via", value, "missing sent-by")
    try:
        host, port = _split_sent_by(hostport)
        params = parse_params(param_text, value)
    except InvalidUri as exc:
        raise InvalidHeader("Via", value, exc.detail) from None
    return Via(transport, host, port, params)


def _split_sent_by(hostport: str) -> tuple[str, int | None]:
    # Reuse the URI grammar for host[:port].
    uri = parse_uri(f"sip:{hostport}")
    if uri.params or uri.user is not None or uri.headers is not None:
        raise InvalidUri(hostport, "invalid sent-by")
    return uri.host, uri.port


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route).

    Attributes:
        uri: The address.
        display_name: The display name without quotes, or ``None``.
        params: Header parameters (``tag``, ``expires``, ``q``...), in order.
    """

    uri: SipUri
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or ``None``."""
        return param_value(self.params, "tag") or None

    def param(self, name: str) -> str | None:
        """Return header parameter ``name`` (``""`` for a flag), or ``None``."""
        return param_value(self.params, name)

    def with_tag(self, tag: str) -> NameAddr:
        """Return a copy whose ``tag`` parameter is ``tag``."""
        params = (*tuple((k, v) for k, v in self.params if k.lower() != "tag"), ("tag", tag))
        return NameAddr(self.uri, self.display_name, params)

    def serialize(self) -> str:
        """Return the value in name-addr form (always with ``<>``)."""
        display = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri.serialize()}>{format_params(self.params)}"


def _parse_quoted(text: str, value: str, header: str) -> tuple[str, str]:
    """Parse a quoted-string at the start of ``text``; return (content, rest)."""
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), text[i + 1 :]
        out.append(char)
        i += 1
    raise InvalidHeader(header, value, "unterminated quoted display name")


def parse_name_addr(value: str, header: str = "From") -> NameAddr:
    """Parse a From/To/Contact/Route value.

    Args:
        value: One value (split comma-joined lists first).
        header: Header name, for error messages.

    Raises:
        InvalidHeader: When ``value`` is neither a name-addr nor an addr-spec.
    """
    text = value.strip(" \t")
    display: str | None = None
    if text.startswith('"'):
        display, text = _parse_quoted(text, value, header)
        text = text.lstrip(" \t")
        if not text.startswith("<"):
            raise InvalidHeader(header, value, "display name is not followed by <URI>")
    open_angle = text.find("<")
    try:
        if open_angle >= 0:
            if open_angle > 0:
                display = text[:open_angle].strip(" \t") or None
            close_angle = text.find(">", open_angle)
            if close_angle < 0:
                raise InvalidHeader(header, value, "missing '>'")
            uri = parse_uri(text[open_angle + 1 : close_angle].strip(" \t"))
            rest = text[close_angle + 1 :].strip(" \t")
        else:
            # addr-spec: RFC 3261 §20.10 - parameters after it are header parameters.
            uri_text, semicolon, param_text = text.partition(";")
            uri = parse_uri(uri_text.strip(" \t"))
            rest = f";{param_text}" if semicolon else ""
        if rest and not rest.startswith(";"):
            raise InvalidHeader(header, value, f"unexpected {rest[:20]!r} after the URI")
        params = parse_params(rest[1:], value) if rest else ()
    except InvalidUri as exc:
        raise InvalidHeader(header, value, exc.detail) from None
    return NameAddr(uri, display, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """A CSeq value (RFC 3261 §20.16): sequence number and method."""

    seq: int
    method: str

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= MAX_CSEQ:
            raise ValueError(f"CSeq number {self.seq} out of range")

    def serialize(self) -> str:
        """Return ``"<seq> <METHOD>"``."""
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """Parse a CSeq value.

    Raises:
        InvalidHeader: Unless the value is ``<number below 2**31> <method>``.
    """
    number, _, method = value.strip(" \t").partition(" ")
    method = method.strip(" \t")
    if (
        not number.isascii()
        or not number.isdigit()
        or len(number) > 10
        or not _TOKEN.fullmatch(method)
    ):
        raise InvalidHeader("CSeq", value, "expected '<number> <method>'")
    seq = int(number)
    if seq > MAX_CSEQ:
        raise InvalidHeader("CSeq", value, "number must be below 2**31")
    return CSeq(seq, method)
