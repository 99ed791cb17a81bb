"""SIP messages on the wire: parse and serialize (RFC 3261 §7, §18.3, §20).

:func:`parse_message` turns one datagram (or one message framed off a TCP
stream by :mod:`callstream.sip.framing`) into a :class:`SipRequest` or
:class:`SipResponse`. It raises :class:`~callstream.sip.exceptions.SipParseError`
(or a subclass) for any input it rejects and never any other exception.

What the parser accepts, beyond the strict grammar:

* header names in any case and in compact form (``v``, ``i``, ``m``...), which
  it stores under their canonical spelling (``Via``, ``Call-ID``, ``Contact``);
* folded header lines (RFC 3261 §7.3.1), joined with a single space;
* bare LF line ends, when the message uses them throughout;
* CRLFs before the start line (RFC 3261 §7.5, stream keep-alives).

:meth:`Headers.get_all` splits the comma-joined values of list headers (Via,
Route, Record-Route, Contact...) at commas outside quoted strings and ``<>``.

Header values stay strings here; :mod:`callstream.sip.headers` parses the ones
the UA needs. :meth:`SipRequest.serialize` writes headers in order as stored,
so a canonical message (canonical names, ``Name: value``, one value per line,
no folding) survives ``serialize(parse(b)) == b``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .exceptions import (
    BodyTooLarge,
    InvalidHeader,
    InvalidHeaderField,
    LineTooLong,
    MessageTooLarge,
    SipParseError,
    TooManyHeaders,
    UnsupportedVersion,
)

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_HEADERS",
    "MAX_LINE_LENGTH",
    "MAX_MESSAGE_SIZE",
    "SIP_VERSION",
    "Headers",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "canonical_name",
    "check_header_field",
    "parse_message",
    "split_comma_list",
]

#: The only version we speak (RFC 3261 §7.1).
SIP_VERSION = "SIP/2.0"
#: Largest message accepted: the largest UDP payload.
MAX_MESSAGE_SIZE = 65_535
#: Most header lines in one message (folded continuations count).
MAX_HEADERS = 128
#: Longest start line or header line, in characters.
MAX_LINE_LENGTH = 8_192
#: Largest body accepted, in bytes.
MAX_BODY_SIZE = 32_768
#: Most values one comma-joined list header may carry.
MAX_LIST_VALUES = 64

#: Headers that RFC 3261 §8.1.1 makes mandatory and we need to answer at all.
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")
#: Headers that must appear once only.
SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Content-Length", "Max-Forwards")

# Canonical spellings; lookups are by lower-case name.
_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
    "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "From", "Identity", "Identity-Info",
    "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
    "Reject-Contact", "Remote-Party-ID", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires",
    "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
_CANONICAL.update({name: name for name in _KNOWN_NAMES})
# RFC 3261 §7.3.3 and later RFCs (IANA "Header Fields" compact forms).
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type",
    "d": "Request-Disposition", "e": "Content-Encoding", "f": "From",
    "i": "Call-ID", "j": "Reject-Contact", "k": "Supported", "l": "Content-Length",
    "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}  # fmt: skip
_CANONICAL.update(_COMPACT)
_CANONICAL.update({name.upper(): value for name, value in _COMPACT.items()})
# Any known spelling -> the lower-case index key (the hot path of Headers.get).
_KEYS: dict[str, str] = {name: value.lower() for name, value in _CANONICAL.items()}

#: Headers whose values are comma-joined lists (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset(
    {"Via", "Route", "Record-Route", "Contact", "Path", "Allow", "Supported", "Require",
     "Proxy-Require", "Unsupported", "Accept", "Allow-Events"}
)  # fmt: skip

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_STATUS_CODE = re.compile(r"[1-6][0-9][0-9]")
_DIGITS = re.compile(r"[0-9]{1,10}")
_LWS = " \t"
# Characters that end or corrupt a header line (RFC 3261 §7.3.1, §25.1 TEXT-UTF8char).
_LINE_BREAKING = re.compile(r"[\r\n\x00]")
_CHAR_NAMES = {"\r": "a CR", "\n": "an LF", "\x00": "a NUL"}


def canonical_name(name: str) -> str:
    """Return the canonical spelling of a header name (``"i"`` → ``"Call-ID"``).

    Unknown names come back as given.
    """
    return _CANONICAL.get(name) or _CANONICAL.get(name.lower()) or name


def _key(name: str) -> str:
    return _KEYS.get(name) or canonical_name(name).lower()


def split_comma_list(value: str) -> list[str]:
    """Split a comma-joined header value, ignoring commas in quotes and ``<>``.

    >>> split_comma_list('"Doe, J" <sip:j@h>;q=1, <sip:k@h>')
    ['"Doe, J" <sip:j@h>;q=1', '<sip:k@h>']
    """
    if "," not in value:
        return [value]
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, char in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            angle += 1
        elif char == ">":
            angle = max(angle - 1, 0)
        elif char == "," and angle == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


class Headers:
    """An ordered, immutable list of header fields with case-insensitive lookup.

    Names are stored canonically (see :func:`canonical_name`); values are
    stripped strings with folding undone.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        pairs = tuple((canonical_name(name), value) for name, value in items)
        index: dict[str, list[int]] = {}
        for position, (name, _) in enumerate(pairs):
            index.setdefault(name.lower(), []).append(position)
        self._items = pairs
        self._index = index

    @classmethod
    def _trusted(cls, pairs: tuple[tuple[str, str], ...], index: dict[str, list[int]]) -> Headers:
        # The parser has canonicalised names and built the index already.
        headers = cls.__new__(cls)
        headers._items = pairs
        headers._index = index
        return headers

    def get(self, name: str) -> str | None:
        """Return the first value of ``name`` (any spelling), or ``None``."""
        positions = self._index.get(_key(name))
        return self._items[positions[0]][1] if positions else None

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; list headers are split at commas.

        Raises:
            InvalidHeader: A list header carries more than ``MAX_LIST_VALUES`` values.
        """
        canonical = canonical_name(name)
        positions = self._index.get(canonical.lower(), ())
        values = [self._items[p][1] for p in positions]
        if canonical not in LIST_HEADERS:
            return values
        parts = [part for value in values for part in split_comma_list(value)]
        if len(parts) > MAX_LIST_VALUES:
            raise InvalidHeader(canonical, values[0][:40], f"more than {MAX_LIST_VALUES} values")
        return parts

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def items(self) -> tuple[tuple[str, str], ...]:
        """Return the ``(name, value)`` pairs in order."""
        return self._items

    def without(self, *names: str) -> Headers:
        """Return a copy without any field named in ``names``."""
        drop = {canonical_name(name).lower() for name in names}
        return Headers((n, v) for n, v in self._items if n.lower() not in drop)

    def replaced(self, name: str, value: str) -> Headers:
        """Return a copy where the first ``name`` field has ``value`` (appended if absent)."""
        canonical = canonical_name(name)
        key = canonical.lower()
        if key not in self._index:
            return Headers((*self._items, (canonical, value)))
        first = self._index[key][0]
        return Headers((n, value) if i == first else (n, v) for i, (n, v) in enumerate(self._items))


def check_header_field(name: str, value: str) -> None:
    """Check that ``name: value`` is one header line on the wire.

    RFC 3261 §7.3.1: a field name is a token and a line ends at CRLF, so a CR
    or LF in a value would start a new header (or a new message, on TCP) of
    the writer's choosing; NUL is no TEXT-UTF8 character at all.

    Raises:
        InvalidHeaderField: ``name`` is not a token, or ``value`` has CR, LF or NUL.
    """
    if not _TOKEN.fullmatch(name):
        raise InvalidHeaderField(name, "the name is not an RFC 3261 token")
    bad = _LINE_BREAKING.search(value)
    if bad is not None:
        raise InvalidHeaderField(name, f"the value has {_CHAR_NAMES[bad.group()]}")


def _serialize_head(start_line: str, headers: Headers) -> bytes:
    lines = [start_line]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("")
    lines.append("")
    text = "\r\n".join(lines)
    # Every CR and LF must be one of the separators just written: one C-level
    # count each instead of a scan per field; find the culprit only on failure.
    breaks = len(lines) - 1
    if text.count("\r") != breaks or text.count("\n") != breaks or "\0" in text:
        for name, value in headers.items():
            check_header_field(name, value)
        raise InvalidHeaderField(start_line[:40], "the start line has CR, LF or NUL")
    token = _TOKEN.fullmatch
    for name, value in headers.items():
        if not token(name):
            check_header_field(name, value)
    return text.encode()


def _check_content_length(headers: Headers, body: bytes) -> None:
    value = headers.get("Content-Length")
    if value is not None and _DIGITS.fullmatch(value) and int(value) != len(body):
        raise ValueError(f"Content-Length {value} does not match a {len(body)}-byte body")


@dataclass(frozen=True, slots=True)
class SipRequest:
    """A SIP request (RFC 3261 §7.1).

    Attributes:
        method: Upper-case method name (``"INVITE"``).
        uri: The Request-URI as written; parse it with :func:`~callstream.sip.uri.parse_uri`.
        headers: Header fields in order.
        body: The message body (already trimmed to Content-Length).
    """

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"method {self.method!r} is not a token")
        if not self.uri or " " in self.uri:
            raise ValueError(f"Request-URI {self.uri!r} is empty or has a space")
        _check_content_length(self.headers, self.body)

    def serialize(self) -> bytes:
        """Return the message as bytes for the wire."""
        return _serialize_head(f"{self.method} {self.uri} {SIP_VERSION}", self.headers) + self.body


@dataclass(frozen=True, slots=True)
class SipResponse:
    """A SIP response (RFC 3261 §7.2).

    Attributes:
        status: Status code, 100-699.
        reason: Reason phrase (may be empty).
        headers: Header fields in order.
        body: The message body (already trimmed to Content-Length).
    """

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise ValueError(f"status {self.status} is outside 100-699")
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError("reason phrase has a line break")
        _check_content_length(self.headers, self.body)

    def serialize(self) -> bytes:
        """Return the message as bytes for the wire."""
        return (
            _serialize_head(f"{SIP_VERSION} {self.status} {self.reason}", self.headers) + self.body
        )


SipMessage = SipRequest | SipResponse


def _split_head(data: bytes) -> tuple[bytes, bytes, str]:
    """Return (head, body, line separator) after skipping leading CRLFs."""
    start = 0
    while data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        start += 2 if data.startswith(b"\r\n", start) else 1
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        return data[start:end], data[end + 4 :], "\r\n"
    end = data.find(b"\n\n", start)
    if end >= 0 and b"\r" not in data[start:end]:
        return data[start:end], data[end + 2 :], "\n"
    if start == len(data):
        raise SipParseError("message is empty")
    raise SipParseError("message has no empty line after the headers")


def _parse_start_line(line: str) -> tuple[str, str, int, str]:
    """Return (method, uri, status, reason); method is "" for a response."""
    if len(line) > MAX_LINE_LENGTH:
        raise LineTooLong(f"start line is longer than {MAX_LINE_LENGTH} characters", line=1)
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        if version.upper() != SIP_VERSION:
            raise UnsupportedVersion(f"unsupported version {version!r}", line=1)
        code, _, reason = rest.partition(" ")
        if not _STATUS_CODE.fullmatch(code):
            raise SipParseError(f"invalid status code {code!r}", line=1)
        if any(ord(c) < 32 and c != "\t" for c in reason):
            raise SipParseError("reason phrase has control characters", line=1)
        return "", "", int(code), reason
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"malformed request line {line[:80]!r}", line=1)
    method, uri, version = parts
    if not _TOKEN.fullmatch(method):
        raise SipParseError(f"invalid method {method[:40]!r}", line=1)
    if ":" not in uri or any(ord(c) <= 32 or ord(c) == 127 for c in uri):
        raise SipParseError(f"invalid Request-URI {uri[:80]!r}", line=1)
    if version.upper() != SIP_VERSION:
        if version[:4].upper() == "SIP/":
            raise UnsupportedVersion(f"unsupported version {version!r}", line=1)
        raise SipParseError(f"malformed request line {line[:80]!r}", line=1)
    return method, uri, 0, ""


def _parse_header_lines(
    lines: list[str], dirty: bool = False
) -> tuple[tuple[tuple[str, str], ...], dict[str, list[int]], SipParseError | None]:
    """Parse header lines; return the good fields and the first error, if any.

    Bad lines are skipped rather than fatal so that a UAS can still echo Via,
    From, To, Call-ID and CSeq into a 400 response (RFC 3261 §8.2). ``dirty``
    says the head has a CR, LF or NUL that is no line separator: the lines
    holding one are refused, so no parsed value can break a message it is
    copied into.
    """
    if len(lines) - 1 > MAX_HEADERS:
        return (), {}, TooManyHeaders(f"more than {MAX_HEADERS} header lines")
    names: list[str] = []
    values: list[str] = []
    error: SipParseError | None = None
    canonical = _CANONICAL
    for number in range(1, len(lines)):
        line = lines[number]
        if len(line) > MAX_LINE_LENGTH:
            error = error or LineTooLong(
                f"header line is longer than {MAX_LINE_LENGTH} characters", line=number + 1
            )
            continue
        if dirty and (bad := _LINE_BREAKING.search(line)) is not None:
            error = error or SipParseError(
                f"header line has {_CHAR_NAMES[bad.group()]}", line=number + 1
            )
            continue
        if line[:1] in (" ", "\t"):
            # RFC 3261 §7.3.1: "...the line break and the whitespace at the
            # beginning of the next line [are] treated as a single SP character."
            if not values:
                error = error or SipParseError(
                    "continuation line before the first header", line=number + 1
                )
                continue
            values[-1] = f"{values[-1]} {line.strip(_LWS)}".strip(_LWS)
            continue
        colon = line.find(":")
        if colon < 0:
            error = error or SipParseError(
                f"header line has no colon: {line[:40]!r}", line=number + 1
            )
            continue
        raw_name = line[:colon]
        name = canonical.get(raw_name)
        if name is None:
            raw_name = raw_name.rstrip(_LWS)
            if not _TOKEN.fullmatch(raw_name):
                error = error or SipParseError(
                    f"invalid header name {raw_name[:40]!r}", line=number + 1
                )
                continue
            name = canonical.get(raw_name.lower(), raw_name)
        names.append(name)
        values.append(line[colon + 1 :].strip(_LWS))
    pairs = tuple(zip(names, values, strict=True))
    index: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        key = name.lower()
        if key in index:
            index[key].append(position)
        else:
            index[key] = [position]
    return pairs, index, error


def _check_headers(headers: Headers, method: str, body: bytes, stream: bool) -> bytes:
    """Check mandatory and single headers; return the body trimmed to Content-Length."""
    for name in MANDATORY_HEADERS:
        if name not in headers:
            raise SipParseError(f"missing mandatory header {name}")
    for name in SINGLE_HEADERS:
        values = headers.get_all(name)
        if len(values) > 1 and any(value != values[0] for value in values):
            raise SipParseError(f"conflicting {name} headers")
    for name in ("From", "To", "Call-ID"):
        if not headers.get(name):
            raise InvalidHeader(name, "", "empty value")
    cseq = headers.get("CSeq") or ""
    number, _, cseq_method = cseq.partition(" ")
    cseq_method = cseq_method.strip(_LWS)
    if not _DIGITS.fullmatch(number) or int(number) >= 2**31 or not _TOKEN.fullmatch(cseq_method):
        raise InvalidHeader("CSeq", cseq, "expected '<number below 2**31> <method>'")
    # RFC 3261 §8.1.1.5: "The method MUST match that of the request."
    if method and cseq_method != method:
        raise InvalidHeader("CSeq", cseq, f"method does not match {method}")
    length_value = headers.get("Content-Length")
    if length_value is None:
        return body
    if not _DIGITS.fullmatch(length_value):
        raise InvalidHeader("Content-Length", length_value, "not a number")
    length = int(length_value)
    if length > MAX_BODY_SIZE:
        raise BodyTooLarge(f"Content-Length {length} is over the {MAX_BODY_SIZE}-byte limit")
    if len(body) < length:
        # RFC 3261 §18.3: "If the transport packet ends before the end of the
        # message body, this is considered an error."
        raise SipParseError(f"Content-Length {length} is larger than the {len(body)}-byte body")
    if len(body) > length:
        if stream:
            raise SipParseError(f"{len(body) - length} bytes after the body on a stream")
        # RFC 3261 §18.3: "Any additional bytes in the transport packet beyond
        # the end of the body MUST be discarded."
        return body[:length]
    return body


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one SIP message.

    Args:
        data: The whole datagram, or one message framed off a stream.
        stream: True for a message framed off TCP (bytes after the body are
            then an error rather than trimmed).

    Returns:
        A :class:`SipRequest` or :class:`SipResponse`.

    Raises:
        SipParseError: For any malformed input. When the start line was a
            valid request line, ``exc.method`` and ``exc.headers`` hold what
            did parse so that a UAS can answer 400 (RFC 3261 §8.2).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(
            f"message of {len(data)} bytes is over the {MAX_MESSAGE_SIZE}-byte limit"
        )
    head, body, separator = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise SipParseError("header section is not valid UTF-8", line=line) from None
    lines = text.split(separator)
    if separator == "\n":
        lines = [line.rstrip("\r") for line in lines]
    try:
        method, uri, status, reason = _parse_start_line(lines[0])
    except UnsupportedVersion as exc:
        # RFC 3261 §21.5.6: a request in a version we do not speak gets 505, so
        # keep what the UAS needs to send one.
        first = lines[0].split(" ", 1)[0]
        if first[:4].upper() != "SIP/" and _TOKEN.fullmatch(first):
            exc.method = first
            exc.headers = _parse_header_lines(lines)[0]
        raise
    breaks = len(lines) - 1
    dirty = "\0" in text or (
        separator == "\r\n" and (text.count("\r") != breaks or text.count("\n") != breaks)
    )
    pairs, index, error = _parse_header_lines(lines, dirty)
    headers = Headers._trusted(pairs, index)
    try:
        if error is not None:
            raise error
        body = _check_headers(headers, method, body, stream)
        if method:
            return SipRequest(method, uri, headers, body)
        return SipResponse(status, reason, headers, body)
    except SipParseError as exc:
        if method:
            exc.method = method
            exc.headers = pairs
        raise
