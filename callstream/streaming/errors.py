"""The ``error`` frame a media stream sends its consumer (spec §5.2).

Codes and titles are DOC-MS's table; the code is an **integer** here (unlike
the REST envelope, where codes are digit strings)::

    100002  unknown_error        anything else (our own failure)
    100003  malformed_frame      not JSON, not an object, unknown ``event``,
                                 missing or mistyped fields
    100004  invalid_media        ``media.payload`` not base64, not audio we can
                                 play (an undecodable MP3, an unplayable codec),
                                 more than 30 s in one ``rtp`` message
    100005  rate_limit_reached   MP3 messages faster than one per second, or a
                                 playback queue already full

Frames are built without ``stream_id`` and ``sequence_number``; the stream's
:class:`~callstream.streaming.protocol.FrameBuilder` stamps them (``stamp()``).
The socket stays open after an error.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["StreamErrorCode", "error_frame"]


class StreamErrorCode(enum.IntEnum):
    """Error codes of the media WebSocket, with their wire titles."""

    UNKNOWN_ERROR = 100002
    MALFORMED_FRAME = 100003
    INVALID_MEDIA = 100004
    RATE_LIMIT_REACHED = 100005

    @property
    def title(self) -> str:
        return self.name.lower()


def error_frame(code: StreamErrorCode, detail: str) -> dict[str, Any]:
    """``{"event": "error", "payload": {"code", "title", "detail"}}``."""
    return {
        "event": "error",
        "payload": {"code": int(code), "title": code.title, "detail": detail},
    }
