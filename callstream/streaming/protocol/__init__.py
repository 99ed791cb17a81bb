"""The media WebSocket protocol, both directions, sans-I/O (spec §5).

* :mod:`.server` — what we send: ``connected``, ``start``, ``media``, ``dtmf``,
  ``mark``, ``error``, ``stop``, numbered by one :class:`FrameBuilder` per stream;
  codec resolution for ``start.media_format``.
* :mod:`.client` — what the consumer sends: ``media``, ``mark``, ``clear``, parsed by
  :func:`parse_client_frame` into frozen dataclasses, with size limits.
* :mod:`.errors` — the ``error`` frame's codes and :class:`StreamProtocolError`.

No sockets here: :mod:`callstream.streaming.session` moves the text, and
:mod:`callstream.streaming.playback` plays what the client frames carry.
"""

from callstream.streaming.protocol.client import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_MARK_NAME_CHARS,
    ClientClear,
    ClientFrame,
    ClientMark,
    ClientMedia,
    parse_client_frame,
)
from callstream.streaming.protocol.errors import StreamErrorCode, StreamProtocolError
from callstream.streaming.protocol.server import (
    AUTH_HEADER,
    PROTOCOL_VERSION,
    STREAM_CODECS,
    SUPPORTED_STREAM_CODECS,
    ErrorReport,
    FrameBuilder,
    MarkEcho,
    MediaFormat,
    ServerEvent,
    media_format,
)

__all__ = [
    "AUTH_HEADER",
    "MAX_CLIENT_FRAME_BYTES",
    "MAX_MARK_NAME_CHARS",
    "PROTOCOL_VERSION",
    "STREAM_CODECS",
    "SUPPORTED_STREAM_CODECS",
    "ClientClear",
    "ClientFrame",
    "ClientMark",
    "ClientMedia",
    "ErrorReport",
    "FrameBuilder",
    "MarkEcho",
    "MediaFormat",
    "ServerEvent",
    "StreamErrorCode",
    "StreamProtocolError",
    "media_format",
    "parse_client_frame",
]
