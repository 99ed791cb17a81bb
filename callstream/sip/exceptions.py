"""Errors raised by the SIP layer.

Remote errors mean the peer sent something we cannot accept; each carries the
status code we should answer with (``status_hint``). Local errors mean the
caller of this package made a mistake; they also inherit a builtin so that
generic handlers catch them.

.. code-block:: text

    SipError
    ├── SipParseError                 remote: malformed message (400 unless noted)
    │   ├── MessageTooLarge           whole message over MAX_MESSAGE_SIZE (513)
    │   ├── TooManyHeaders            more than MAX_HEADERS header lines (513)
    │   ├── LineTooLong               start or header line over MAX_LINE_LENGTH (513)
    │   ├── BodyTooLarge              Content-Length over MAX_BODY_SIZE (513)
    │   ├── UnsupportedVersion        not SIP/2.0 (505)
    │   ├── InvalidHeader             a header value that does not parse (400)
    │   ├── InvalidUri                a SIP URI that does not parse (400)
    │   └── SdpParseError             a session description that does not parse (400)
    ├── FramingError                  remote: a TCP byte stream that cannot be framed
    ├── NegotiationFailed             remote: offer has nothing we support (488)
    ├── DigestError                   remote: a challenge we cannot answer
    ├── InvalidHeaderField            local: a header field that would break the message
    │                                 (also ValueError)
    ├── InvalidTransactionStep        local: a transaction step the table forbids
    │                                 (also AssertionError)
    └── InvalidCallState              local: a command for a call in the wrong state
                                      (also RuntimeError)
"""

from __future__ import annotations

__all__ = [
    "BodyTooLarge",
    "DigestError",
    "FramingError",
    "InvalidCallState",
    "InvalidHeader",
    "InvalidHeaderField",
    "InvalidTransactionStep",
    "InvalidUri",
    "LineTooLong",
    "MessageTooLarge",
    "NegotiationFailed",
    "SdpParseError",
    "SipError",
    "SipParseError",
    "TooManyHeaders",
    "UnsupportedVersion",
]

#: 400 Bad Request (RFC 3261 §21.4.1).
STATUS_BAD_REQUEST = 400
#: 513 Message Too Large (RFC 3261 §21.5.8).
STATUS_MESSAGE_TOO_LARGE = 513
#: 505 Version Not Supported (RFC 3261 §21.5.6).
STATUS_VERSION_NOT_SUPPORTED = 505
#: 488 Not Acceptable Here (RFC 3261 §21.4.26).
STATUS_NOT_ACCEPTABLE_HERE = 488


class SipError(Exception):
    """Base class of every error raised by :mod:`callstream.sip`."""


class SipParseError(SipError):
    """A message, header, URI or SDP body from the peer does not parse.

    Args:
        reason: What is wrong, in words.
        line: The 1-based line of the message (or SDP body) at fault, if known.
        status_hint: The status a UAS should answer a request with.

    Attributes:
        method: Set by :func:`~callstream.sip.message.parse_message` when the
            start line was a valid request line, so that the UAS can answer.
        headers: The header fields that did parse, for building that answer.
    """

    default_status = STATUS_BAD_REQUEST

    def __init__(
        self, reason: str, *, line: int | None = None, status_hint: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.status_hint = self.default_status if status_hint is None else status_hint
        self.method: str | None = None
        self.headers: tuple[tuple[str, str], ...] | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.reason
        return f"line {self.line}: {self.reason}"


class MessageTooLarge(SipParseError):
    """The message is larger than ``MAX_MESSAGE_SIZE``."""

    default_status = STATUS_MESSAGE_TOO_LARGE


class TooManyHeaders(SipParseError):
    """The message has more than ``MAX_HEADERS`` header lines."""

    default_status = STATUS_MESSAGE_TOO_LARGE


class LineTooLong(SipParseError):
    """The start line or a header line is longer than ``MAX_LINE_LENGTH``."""

    default_status = STATUS_MESSAGE_TOO_LARGE


class BodyTooLarge(SipParseError):
    """The Content-Length is larger than ``MAX_BODY_SIZE``."""

    default_status = STATUS_MESSAGE_TOO_LARGE


class UnsupportedVersion(SipParseError):
    """The start line names a SIP version other than 2.0."""

    default_status = STATUS_VERSION_NOT_SUPPORTED


class InvalidHeader(SipParseError):
    """A header field value does not match its grammar.

    Args:
        name: The header name, canonical spelling.
        value: The offending value as received.
        reason: What is wrong with it.
    """

    def __init__(self, name: str, value: str, reason: str, *, line: int | None = None) -> None:
        super().__init__(f"invalid {name} header {value!r}: {reason}", line=line)
        self.name = name
        self.value = value


class InvalidUri(SipParseError):
    """A SIP, SIPS or tel URI does not match RFC 3261 §25.1 / RFC 3966."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"invalid URI {uri!r}: {reason}")
        self.uri = uri
        self.detail = reason


class SdpParseError(SipParseError):
    """A session description does not match RFC 4566; ``line`` is the SDP line."""


class FramingError(SipError):
    """A TCP byte stream cannot be split into messages; close the connection.

    Args:
        reason: What is wrong.
        head: The message's whole header section when it was read and only the
            size is at fault, so that the request can still be answered 513.
    """

    def __init__(self, reason: str, *, head: bytes | None = None) -> None:
        super().__init__(reason)
        self.head = head


class NegotiationFailed(SipError):
    """An SDP offer (or answer) has no media we can use.

    Attributes:
        status_hint: 488 Not Acceptable Here, the answer RFC 3261 §13.3.1.1 suggests.
    """

    status_hint = STATUS_NOT_ACCEPTABLE_HERE

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DigestError(SipError):
    """A 401/407 challenge we cannot answer (bad syntax, unknown algorithm)."""


class InvalidHeaderField(SipError, ValueError):
    """A header field handed to the serializer would break the message on the wire.

    A name that is not an RFC 3261 token, or a value with CR, LF or NUL, would
    let whoever chose it add header fields or whole messages (header injection).

    Args:
        name: The header name (as given, shortened).
        reason: What is wrong with it.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"header field {name[:40]!r}: {reason}")
        self.name = name
        self.reason = reason


class InvalidTransactionStep(SipError, AssertionError):
    """A transaction was asked to take a step its transition table forbids.

    This is a bug in the caller (the transaction user), never the peer's doing:
    every input the peer can cause has a row in the table.
    """


class InvalidCallState(SipError, RuntimeError):
    """A command was given for a call that is unknown or in the wrong state."""
