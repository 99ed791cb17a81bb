"""The frames we send a stream's consumer, sans-I/O (spec §5.2).

One :class:`FrameBuilder` per stream owns the counters the frames carry:

* ``sequence_number`` — a string, ``"1"`` on ``start`` and one more on every later
  frame of the stream (``connected`` has none; ``error`` frames take one too, [impl]);
  after a reconnect the new socket's ``start`` goes on from the last number.
* ``chunk`` — per track, ``"1"`` for the first media frame of that track [impl, §12.11].
* ``timestamp`` — milliseconds since the stream began (the ``now`` given to
  :meth:`FrameBuilder.start`: the session passes when capture began, which is earlier
  than the frame when audio was buffered before the socket opened), by the hub clock
  when the audio passed [impl, §12.11].

Frames are returned as UTF-8 JSON (``bytes``), each the payload of one text message.
``media`` frames, 50 or 100 a second per stream, are filled into a byte template
(:data:`MEDIA_TEMPLATE`) instead of going through a dict and ``orjson``; the bytes are
the same as ``orjson`` makes of the dict (tests/streaming/test_protocol.py checks).

:class:`MarkEcho` and :class:`ErrorReport` are what bidirectional playback answers
with; the builder numbers them (:meth:`FrameBuilder.event`).

Codec resolution (:func:`media_format`) follows spec §5.2's table: ``default`` is the
call's codec; ``G722`` reports its 8000 Hz RTP clock rate; ``L16`` is 16 kHz
big-endian; ``OPUS`` (one packet per ``media`` frame, :mod:`callstream.media.codecs.opus`)
runs at ``stream_bidirectional_sampling_rate`` (8000 by default; 16000, 24000, 48000).
AMR-WB is refused earlier, at validation (see docs/streaming.md).
"""

from __future__ import annotations

from binascii import b2a_base64
from dataclasses import dataclass
from typing import Any

import orjson

from callstream.media.codecs import CodecInfo, get_codec, opus_codec
from callstream.streaming.protocol.errors import StreamErrorCode

__all__ = [
    "AUTH_HEADER",
    "MEDIA_TEMPLATE",
    "PROTOCOL_VERSION",
    "STREAM_CODECS",
    "SUPPORTED_STREAM_CODECS",
    "ErrorReport",
    "FrameBuilder",
    "MarkEcho",
    "MediaFormat",
    "ServerEvent",
    "media_format",
]

PROTOCOL_VERSION = "1.0.0"
#: A ``media`` frame as ``orjson`` writes its dict, key order included: sequence_number,
#: stream_id (JSON, quoted), track, chunk, timestamp, payload (base64).
MEDIA_TEMPLATE = (b'{"event":"media","sequence_number":"%d","stream_id":%b,"media":'
                  b'{"track":"%b","chunk":"%d","timestamp":"%d","payload":"%b"}}')
_TRACK_BYTES = {"inbound": b"inbound", "outbound": b"outbound"}  # plain ASCII: no escaping
AUTH_HEADER = "x-telnyx-streaming-auth-token"
#: Every value of ``stream_codec`` the API knows (spec §3.1).
STREAM_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default")
#: Those we can produce; AMR-WB gets a 422.
SUPPORTED_STREAM_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "L16", "default")


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """``start.media_format``, and the codec that makes the media payloads."""

    encoding: str
    sample_rate: int
    codec: CodecInfo

    def as_frame(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1}


def media_format(
    stream_codec: str, call_codec: CodecInfo, sampling_rate: int = 8000
) -> MediaFormat:
    """Resolve ``stream_codec`` against the call's codec.

    Args:
        sampling_rate: ``stream_bidirectional_sampling_rate``, which sets Opus's rate.

    Raises:
        ValueError: a codec or Opus rate we cannot produce (validation keeps these out).
    """
    if stream_codec == "default":
        codec = call_codec
    elif stream_codec == "OPUS":
        try:
            codec = opus_codec(sampling_rate)
        except LookupError:
            raise ValueError(f"OPUS cannot run at {sampling_rate} Hz") from None
    elif stream_codec in ("PCMU", "PCMA", "G722", "L16"):
        codec = get_codec(stream_codec)  # L16 -> its 16 kHz default
    else:
        raise ValueError(f"stream_codec {stream_codec!r} is not supported")
    return MediaFormat(codec.name, codec.clock_rate, codec)


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """``mark``: the audio queued before the consumer's mark ``name`` has played."""

    name: str

    def as_frame(self) -> dict[str, Any]:
        return {"event": "mark", "mark": {"name": self.name}}


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """``error``: a consumer frame was refused; the socket stays open."""

    code: StreamErrorCode
    detail: str

    def as_frame(self) -> dict[str, Any]:
        code = self.code
        return {"event": "error",
                "payload": {"code": int(code), "title": code.title, "detail": self.detail}}


#: What playback answers the consumer with.
ServerEvent = MarkEcho | ErrorReport


class FrameBuilder:
    """Builds one stream's server→client frames, numbering them as they go.

    Args:
        stream_id: the stream's UUID, sent at the top level of every frame but
            ``connected`` (Pipecat detects Telnyx by it).
        start_time: the hub clock media timestamps count from (``start`` sets it).
    """

    __slots__ = ("_chunks", "_sequence", "_stream_id_json", "start_time", "stream_id")

    def __init__(self, stream_id: str, start_time: float = 0.0) -> None:
        self.stream_id = stream_id
        self._stream_id_json = orjson.dumps(stream_id)  # escaped once, for the template
        self.start_time = start_time
        self._sequence = 0
        self._chunks = {"inbound": 0, "outbound": 0}

    @property
    def sequence(self) -> int:
        """The last sequence number given out (0 before ``start``)."""
        return self._sequence

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    @staticmethod
    def connected(auth_token: str | None = None) -> bytes:
        frame: dict[str, Any] = {"event": "connected", "version": PROTOCOL_VERSION}
        if auth_token:
            frame[AUTH_HEADER] = auth_token  # spec §12.8: header and top-level key
        return orjson.dumps(frame)

    def start(self, details: dict[str, Any], now: float) -> bytes:
        """The ``start`` frame; ``details`` is its ``start`` object (user_id, ids, media_format).

        ``now``: the time media timestamps count from.
        """
        self.start_time = now
        return self._dump({"event": "start", "sequence_number": self._next(),
                           "stream_id": self.stream_id, "start": details})

    def restart(self, details: dict[str, Any]) -> bytes:
        """``start`` again, on the socket of a reconnect (callstream extension).

        ``details`` get ``resumed: true``; the sequence number goes on from the last
        frame, and timestamps and chunks go on counting from the first ``start``.
        """
        return self._dump({"event": "start", "sequence_number": self._next(),
                           "stream_id": self.stream_id, "start": {**details, "resumed": True}})

    def media(self, track: str, payload: bytes, now: float) -> bytes:
        """A ``media`` frame; ``track`` is ``inbound`` or ``outbound``.

        Raises:
            KeyError: any other track (it would not need JSON escaping then).
        """
        chunk = self._chunks[track] = self._chunks[track] + 1
        self._sequence += 1
        ms = round((now - self.start_time) * 1000)
        # b2a_base64 is what b64encode calls; the template's %b takes the track as bytes.
        return MEDIA_TEMPLATE % (self._sequence, self._stream_id_json, _TRACK_BYTES[track],
                                 chunk, ms if ms > 0 else 0, b2a_base64(payload, newline=False))

    def dtmf(self, digit: str, occurred_at: str) -> bytes:
        return self._dump({"event": "dtmf", "sequence_number": self._next(),
                           "stream_id": self.stream_id, "occurred_at": occurred_at,
                           "dtmf": {"digit": digit}})

    def stop(self, user_id: str, call_control_id: str) -> bytes:
        return self._dump({"event": "stop", "sequence_number": self._next(),
                           "stream_id": self.stream_id,
                           "stop": {"user_id": user_id, "call_control_id": call_control_id}})

    def event(self, event: ServerEvent) -> bytes:
        """A ``mark`` echo or an ``error``, numbered."""
        return self.stamp(event.as_frame())

    def stamp(self, frame: dict[str, Any]) -> bytes:
        """Number a frame made elsewhere (a ``mark`` echo, an ``error``) and serialise it."""
        out = {"event": frame.get("event"), "sequence_number": self._next(),
               "stream_id": self.stream_id}
        out.update((k, v) for k, v in frame.items() if k not in out)
        return self._dump(out)

    @staticmethod
    def _dump(frame: dict[str, Any]) -> bytes:
        return orjson.dumps(frame)
