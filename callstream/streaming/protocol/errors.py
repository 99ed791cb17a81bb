"""The media WebSocket's errors: the ``error`` frame's codes, and the parse error.

Codes and titles are DOC-MS's table; the code is an **integer** on the wire (unlike
the REST envelope, where codes are digit strings)::

    100002  unknown_error        anything else (our own failure)
    100003  malformed_frame      not JSON, not an object, unknown ``event``,
                                 missing or mistyped fields, over the size limit
    100004  invalid_media        ``media.payload`` not base64, not audio we can
                                 play (an undecodable MP3, an unplayable codec),
                                 more than 30 s in one ``rtp`` message
    100005  rate_limit_reached   MP3 messages faster than one per second, or a
                                 playback queue already full

Exception tree::

    StreamProtocolError        a consumer frame we answer with an ``error`` frame
"""

from __future__ import annotations

import enum

__all__ = ["StreamErrorCode", "StreamProtocolError"]


class StreamErrorCode(enum.IntEnum):
    """Error codes of the media WebSocket, with their wire titles."""

    UNKNOWN_ERROR = 100002
    MALFORMED_FRAME = 100003
    INVALID_MEDIA = 100004
    RATE_LIMIT_REACHED = 100005

    @property
    def title(self) -> str:
        return self.name.lower()


class StreamProtocolError(Exception):
    """A consumer frame refused with ``code``; ``detail`` goes into the error frame.

    The socket stays open: the refusal changes nothing but the error frame sent.
    """

    def __init__(self, code: StreamErrorCode, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code.title} ({int(self.code)}): {self.detail}"
