"""Split a SIP byte stream (TCP) into messages (RFC 3261 §18.3).

On a stream, "the Content-Length header field value is used to locate the end
of each SIP message", so the framer finds the empty line that ends the
headers, reads Content-Length (full or compact ``l`` form) and waits for that
many body bytes. CRLFs between messages are keep-alives (RFC 5626 §3.5.1)
and are skipped.

    framer = StreamFramer()
    for message in framer.feed(chunk):
        endpoint.receive_datagram(message, peer, now, transport="tcp")

A :class:`~callstream.sip.exceptions.FramingError` means the stream cannot be
resynchronised: close the connection. When the Content-Length was over the body limit
its ``head`` holds the header section, enough to answer the request 513 first.
"""

from __future__ import annotations

import re

from .exceptions import FramingError
from .message import MAX_BODY_SIZE, MAX_MESSAGE_SIZE

__all__ = ["MAX_BUFFER_SIZE", "StreamFramer"]

#: Most bytes buffered while waiting for the end of the headers.
MAX_BUFFER_SIZE = MAX_MESSAGE_SIZE

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
_HEAD_END = b"\r\n\r\n"


class StreamFramer:
    """Buffer stream bytes and hand out complete messages."""

    __slots__ = ("_buffer", "_max_body_size", "_max_message_size")

    def __init__(
        self, *, max_message_size: int = MAX_MESSAGE_SIZE, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        self._buffer = bytearray()
        self._max_message_size = max_message_size
        self._max_body_size = max_body_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every message it completes, in order.

        Raises:
            FramingError: The headers are too long, Content-Length is missing
                a number or too large. The connection must be closed.
        """
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        while True:
            # RFC 3261 §7.5: "Implementations processing SIP messages over
            # stream-oriented transports MUST ignore any CRLF appearing before
            # the start-line".
            skip = 0
            while buffer[skip : skip + 2] == b"\r\n":
                skip += 2
            if skip:
                del buffer[:skip]
            if buffer == b"\r":
                break
            end = buffer.find(_HEAD_END)
            if end < 0:
                if len(buffer) > self._max_message_size:
                    raise FramingError(f"no end of headers within {self._max_message_size} bytes")
                break
            head = bytes(buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            # RFC 3261 §18.3 makes Content-Length mandatory on streams; a message
            # without one is taken to have no body.
            length = 0
            if match is not None:
                text = match.group(1).strip()
                if not text.isdigit() or len(text) > 10:
                    shown = text[:20].decode("ascii", "replace")
                    raise FramingError(f"invalid Content-Length {shown!r}")
                length = int(text)
                if length > self._max_body_size:
                    raise FramingError(
                        f"Content-Length {length} is over the {self._max_body_size}-byte limit",
                        head=head + _HEAD_END,
                    )
            total = end + len(_HEAD_END) + length
            if total > self._max_message_size:
                raise FramingError(f"message of {total} bytes is over the limit")
            if len(buffer) < total:
                break
            messages.append(bytes(buffer[:total]))
            del buffer[:total]
        return messages
