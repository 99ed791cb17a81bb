"""The frames a stream's consumer sends us (spec §5.3), parsed sans-I/O.

Accepted with or without ``stream_id`` / ``sequence_number`` (Pipecat and the docs'
own examples send neither); other extra keys are ignored::

    {"event": "media", "media": {"payload": "<base64>"}}
    {"event": "mark",  "mark": {"name": "greeting-done"}}
    {"event": "clear"}

:func:`parse_client_frame` turns one text frame into a :class:`ClientMedia`,
:class:`ClientMark` or :class:`ClientClear`, or raises
:class:`~callstream.streaming.protocol.errors.StreamProtocolError` with the code the
``error`` frame carries:

* ``malformed_frame`` (100003): over :data:`MAX_CLIENT_FRAME_BYTES`, not JSON, not an
  object, an ``event`` other than media/mark/clear, a missing or mistyped
  ``media.payload`` or ``mark.name``, a mark name over :data:`MAX_MARK_NAME_CHARS`;
* ``invalid_media`` (100004): a payload that is not strict base64 (standard
  alphabet, padded).

What the audio means (codec, 30 s per message, MP3 rate) is playback's business.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import orjson

from callstream.streaming.protocol.errors import StreamErrorCode, StreamProtocolError

__all__ = [
    "MAX_CLIENT_FRAME_BYTES",
    "MAX_MARK_NAME_CHARS",
    "ClientClear",
    "ClientFrame",
    "ClientMark",
    "ClientMedia",
    "parse_client_frame",
]

#: Largest consumer frame: 30 s of 48 kHz L16 (the most one ``media`` may carry) is
#: ~3.9 MB as base64. Also the WebSocket's ``max_size``, so bigger ones never arrive
#: here from the socket; the check keeps the parser safe on its own.
MAX_CLIENT_FRAME_BYTES = 8 * 1024 * 1024
#: A ``media`` message as most consumers write it, spaced as ``orjson`` / ``JSON.stringify``
#: and as Python's ``json.dumps`` do: 50 a second per stream, so read without a JSON parse
#: when all between start and end is strict base64 (then the JSON says just that).
_MEDIA_STARTS: tuple[str, ...] = ('{"event":"media","media":{"payload":"',
                                  '{"event": "media", "media": {"payload": "')
_MEDIA_END = '"}}'
# Where the payload starts in each (they part at character 9: '"' or ' '), and ends.
_COMPACT_AT, _SPACED_AT = (len(start) for start in _MEDIA_STARTS)
_END_AT = -len(_MEDIA_END)
#: A mark's name comes back in the echo; longer ones are refused, not truncated.
MAX_MARK_NAME_CHARS = 1024
#: How much of a bad value an error detail repeats.
DETAIL_VALUE_CHARS = 64


@dataclass(frozen=True, slots=True)
class ClientMedia:
    """Audio to play: the decoded ``media.payload`` (codec bytes, or an MP3 file)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientMark:
    """Echo ``name`` once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClientClear:
    """Drop the queued audio now."""


ClientFrame = ClientMedia | ClientMark | ClientClear

_CLEAR = ClientClear()


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse one consumer frame.

    Raises:
        StreamProtocolError: the frame is refused (see the module docstring).
    """
    if len(text) > MAX_CLIENT_FRAME_BYTES:
        raise StreamProtocolError(
            StreamErrorCode.MALFORMED_FRAME,
            f"A frame holds at most {MAX_CLIENT_FRAME_BYTES} bytes; this one has {len(text)}")
    if type(text) is str and text.endswith(_MEDIA_END) and text.startswith(_MEDIA_STARTS):
        at = _COMPACT_AT if text[9] == '"' else _SPACED_AT
        try:
            return ClientMedia(binascii.a2b_base64(text[at:_END_AT], strict_mode=True))
        except ValueError:
            pass  # not base64 (or JSON escapes in it): the full parse says which
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise StreamProtocolError(StreamErrorCode.MALFORMED_FRAME,
                                  "Received frame could not be parsed as JSON") from None
    if not isinstance(message, dict):
        raise StreamProtocolError(StreamErrorCode.MALFORMED_FRAME,
                                  "A frame must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str):
        raise StreamProtocolError(StreamErrorCode.MALFORMED_FRAME,
                                  'The frame has no "event" string')
    if event == "media":
        return _media(message.get("media"))
    if event == "mark":
        return _mark(message.get("mark"))
    if event == "clear":
        return _CLEAR
    raise StreamProtocolError(
        StreamErrorCode.MALFORMED_FRAME,
        f"Unknown event {shorten(event)!r}; expected media, mark or clear")


def _media(media: object) -> ClientMedia:
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise StreamProtocolError(StreamErrorCode.MALFORMED_FRAME,
                                  'A media frame needs a "media.payload" string')
    try:
        # base64.b64decode(payload, validate=True) without its wrapper: a str of ASCII
        # only (else ValueError), strict base64 (binascii.Error, a ValueError).
        return ClientMedia(binascii.a2b_base64(payload, strict_mode=True))
    except ValueError:  # binascii.Error, or non-ASCII text
        raise StreamProtocolError(StreamErrorCode.INVALID_MEDIA,
                                  "media.payload is not valid base64") from None


def _mark(mark: object) -> ClientMark:
    name = mark.get("name") if isinstance(mark, dict) else None
    if not isinstance(name, str):
        raise StreamProtocolError(StreamErrorCode.MALFORMED_FRAME,
                                  'A mark frame needs a "mark.name" string')
    if len(name) > MAX_MARK_NAME_CHARS:
        raise StreamProtocolError(
            StreamErrorCode.MALFORMED_FRAME,
            f"mark.name holds at most {MAX_MARK_NAME_CHARS} characters; "
            f"this one has {len(name)}")
    return ClientMark(name)


def shorten(value: str) -> str:
    """``value``, cut to :data:`DETAIL_VALUE_CHARS` for an error detail."""
    if len(value) <= DETAIL_VALUE_CHARS:
        return value
    return value[:DETAIL_VALUE_CHARS] + "…"
