"""Bidirectional playback: what a stream's consumer sends back, played into the call.

A :class:`Playback` takes the consumer's text frames (spec §5.3) one at a time
(:meth:`Playback.on_text`) and plays their audio to the target legs through
each leg's :class:`~callstream.media.hub.MediaHub`, paced by the hub's 20 ms
tick. It is sans-I/O: frames in, ``emit(frame)`` out, and the hub clock only
for the MP3 rate limit.

Client frames are parsed by :func:`~callstream.streaming.protocol.parse_client_frame`
(media, mark, clear; spec §5.3); this module gives them their meaning.

Modes (``stream_bidirectional_mode``, spec §5.4)
------------------------------------------------
* ``rtp`` — the payload is raw codec bytes (no RTP header) in ``codec`` at
  ``sampling_rate``: PCMU, PCMA, L16 (big-endian) at that rate, G722 always
  16 kHz audio (its 8000 is the RTP clock, spec §12.13). A message may carry
  any amount up to 30 s — not only whole 20 ms frames: the bytes of one
  message continue the previous one (an odd L16 byte waits for its other
  half), and a partial frame at the end of the queue waits one tick for the
  rest before it is padded with silence. ``OPUS`` is the exception: each message
  is one whole Opus packet (as Telnyx and Pipecat frame it), decoded at
  ``sampling_rate``; a malformed packet gets ``invalid_media`` and the decoder
  carries on. AMR-WB is not played: each ``media`` gets ``invalid_media`` (the API
  refuses it earlier).
* ``mp3`` — each payload is a whole MP3 file (:mod:`callstream.streaming.mp3`);
  files queue and play FIFO. At most one ``media`` message per second by the
  hub clock; a faster one is refused with ``rate_limit_reached`` (100005) and
  does not restart the one-second window.

Audio is converted to each target leg's own rate (libswresample, 1-2 ms of delay);
targets at the same rate share one conversion. Every target leg gets its own
:class:`~callstream.media.hub.QueueSource`. PCMU and PCMA in ``rtp`` mode are not
decoded for 8 kHz targets: their queues hold the consumer's bytes (the source's codec
mode), which a leg of the same codec sends as they came (the hub's pass-through) and
any other decodes at its tick; where every target is such, a message is checked and
queued inside :meth:`Playback.on_text` itself, as it comes 50 times a second.

Marks and clear
---------------
* ``mark`` is echoed (``{"event": "mark", "mark": {"name": ...}}``) from the
  hub tick that plays the last frame of the audio queued before it — on every
  target leg — or at once when nothing is queued. Where the audio is
  resampled, the mark sits after the resampler's delay, so it waits for the
  real end of the audio rather than the end of what has come out so far.
* ``clear`` drops every queue (the next tick is silent), resets the decoder
  and resamplers, and echoes every pending mark at once, in order.

Standing delay
--------------
A consumer that answers each frame in real time (an echo) answers the burst that
follows a stall (or any late answer) with a burst, and from then on keeps the queue as
deep as the burst made it. With ``standing_ms`` > 0 (default 20) each target's queue is
watched (:class:`~callstream.media.standing.StandingQueue`): when, within 2 s of the
queue running short while it played, it stayed above ``standing_ms`` for 0.3 s while
the consumer fed it at about real time, the oldest audio is dropped, at most what was
owed. Marks
within it are echoed, in order, as for ``clear``. A lead a bot keeps while pacing, a
clip sent ahead and a stream faster than real time are not trimmed. Each trim is
counted on ``callstream_media_playback_discarded_frames_total{reason="standing"}`` and
logged at debug level.

Errors (spec §5.2, :mod:`callstream.streaming.protocol.errors`)
---------------------------------------------------------------
A bad frame gets one ``error`` frame and changes nothing else; the stream
stays up. ``malformed_frame`` (100003) and a payload that is not base64: the
parser's (:mod:`callstream.streaming.protocol.client`). ``invalid_media``
(100004): an MP3 that does not decode, an ``rtp`` message over 30 s,
an unplayable codec. ``rate_limit_reached`` (100005): MP3 faster than 1/s, or
the queue would exceed :data:`~callstream.media.hub.SOURCE_MAX_SECONDS`.
``unknown_error`` (100002): our own failure (logged). An empty ``rtp`` payload
is accepted and plays nothing; shorter-than-20 ms payloads are fine (Pipecat
sends any length).

Contract with the stream session
--------------------------------
* ``targets`` are the legs that hear the audio, already resolved from
  ``stream_bidirectional_target_legs``: ``self`` → the stream's own leg,
  ``opposite`` → its bridged peer, ``both`` → both; for an unbridged leg every
  value means the leg itself (spec §5.4 [impl]).
* ``emit(event)`` gets a :class:`~callstream.streaming.protocol.MarkEcho` or an
  :class:`~callstream.streaming.protocol.ErrorReport` (``FrameBuilder.event``
  numbers it). Mark echoes are emitted from inside ``hub.tick()``: ``emit`` must
  only queue.
* ``on_text`` never raises; after :meth:`Playback.close` it ignores input and
  emits nothing.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from callstream.calls.features import LegMedia
from callstream.media.codecs import FRAMES_PER_SECOND, CodecInfo, Decoder, get_codec, opus_codec
from callstream.media.codecs.opus import OPUS_CLOCK, packet_samples
from callstream.media.codecs.resample import SUPPORTED_RATES, Resampler
from callstream.media.exceptions import MediaParseError
from callstream.media.hub import PASSTHROUGH_CODECS, SOURCE_MAX_SECONDS, QueueSource, Subscription
from callstream.media.metrics import PLAYBACK_DISCARDED_STANDING
from callstream.streaming.mp3 import Mp3Error, decode_mp3
from callstream.streaming.protocol import (
    ClientMark,
    ClientMedia,
    ErrorReport,
    MarkEcho,
    ServerEvent,
    StreamErrorCode,
    StreamProtocolError,
    parse_client_frame,
)

__all__ = [
    "HOLD_TICKS",
    "MAX_MESSAGE_SECONDS",
    "MODES",
    "MP3_MIN_INTERVAL",
    "PLAYBACK_CODECS",
    "STANDING_MS",
    "Playback",
]

logger = logging.getLogger(__name__)

MODES = ("rtp", "mp3")
#: ``stream_bidirectional_codec`` values we can play (AMR-WB is not).
PLAYBACK_CODECS = ("PCMU", "PCMA", "G722", "OPUS", "L16")
MAX_MESSAGE_SECONDS = 30.0  # one rtp message carries 20 ms to 30 s (DOC-MS)
MP3_MIN_INTERVAL = 1.0  # at most one mp3 message per second (DOC-MS)
HOLD_TICKS = 1  # ticks a partial frame waits for the rest of it
#: Default of ``CALLSTREAM_PLAYBACK_STANDING_MS``: queued audio a consumer refilling at
#: real time may keep for good (see :mod:`callstream.media.standing`).
STANDING_MS = 20

Emit = Callable[[ServerEvent], None]


@functools.cache
def _resampler_delay(in_rate: int, out_rate: int) -> int:
    """Output samples between feeding a sample to a fresh Resampler and hearing it."""
    impulse = np.zeros(in_rate // 10, dtype="<i2")
    impulse[0] = 16384
    out = np.frombuffer(Resampler(in_rate, out_rate).process(impulse.tobytes()), dtype="<i2")
    return int(np.argmax(np.abs(out.astype(np.int32))))


def _convert_whole(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a complete clip, trimmed to exactly its own duration (no delay, no tail)."""
    if in_rate == out_rate:
        return pcm
    delay = _resampler_delay(in_rate, out_rate)
    pad = 2 * (math.ceil(delay * in_rate / out_rate) + in_rate // FRAMES_PER_SECOND)
    out = Resampler(in_rate, out_rate).process(pcm + bytes(pad))
    length = round(len(pcm) // 2 * out_rate / in_rate)
    return out[2 * delay : 2 * (delay + length)]


def _too_long(seconds: float) -> StreamProtocolError:
    return StreamProtocolError(
        StreamErrorCode.INVALID_MEDIA,
        f"A media message carries at most {MAX_MESSAGE_SECONDS:g} s of audio; "
        f"this one carries {seconds:.1f} s",
    )


def _no_room(queued: float, seconds: float) -> StreamProtocolError:
    return StreamProtocolError(
        StreamErrorCode.RATE_LIMIT_REACHED,
        f"The playback queue holds at most {SOURCE_MAX_SECONDS} s of audio; "
        f"{queued:.1f} s are queued and this message adds {seconds:.1f} s",
    )


class _Lane:
    """The target legs that share one PCM rate, and the conversion that feeds them.

    In ``rtp`` mode a lane keeps a streaming resampler (when the client's rate
    differs), whose filter holds the last 1-2 ms back; :meth:`drain` pushes
    that tail out with silence when a queue runs short, and :meth:`mark_offset`
    places marks after it.
    """

    __slots__ = ("_delay", "_in_samples", "_out_bytes", "_resampler", "_tail", "in_rate",
                 "rate", "sources")

    def __init__(self, rate: int, in_rate: int | None) -> None:
        self.rate = rate
        self.in_rate = in_rate  # None: whole clips (mp3), converted one by one
        self.sources: list[QueueSource] = []
        self._resampler: Resampler | None = None
        self._delay = 0
        self._in_samples = 0
        self._out_bytes = 0
        self._tail = False
        self.reset()

    def reset(self) -> None:
        """Forget buffered conversion state (``clear``)."""
        if self.in_rate is not None and self.in_rate != self.rate:
            self._resampler = Resampler(self.in_rate, self.rate)
            self._delay = _resampler_delay(self.in_rate, self.rate)
        self._in_samples = 0
        self._out_bytes = 0
        self._tail = False

    def feed(self, pcm: bytes) -> None:
        """Queue PCM at ``in_rate`` (a stream, continuing the previous call)."""
        if self._resampler is not None:
            self._in_samples += len(pcm) // 2
            self._tail = True
            pcm = self._resampler.process(pcm)
        self._push(pcm)

    def feed_clip(self, pcm: bytes, rate: int) -> None:
        """Queue a whole clip at ``rate`` (an MP3 file)."""
        self._push(_convert_whole(pcm, rate, self.rate))

    def _push(self, pcm: bytes) -> None:
        if not pcm:
            return
        self._out_bytes += len(pcm)
        for source in self.sources:
            source.feed(pcm)

    def drain(self) -> None:
        """Push the resampler's held-back tail into the queues (they ran short)."""
        if not self._tail or self._resampler is None or self.in_rate is None:
            return
        self._tail = False
        frame = self.in_rate // FRAMES_PER_SECOND
        zeros = math.ceil(self._delay * self.in_rate / self.rate) + frame
        self._push(self._resampler.process(bytes(2 * zeros)))

    def mark_offset(self) -> int:
        """Bytes from the end of the queues to the end of the audio fed so far."""
        if self._resampler is None or self.in_rate is None:
            return 0
        end = round(self._in_samples * self.rate / self.in_rate) + self._delay
        return 2 * end - self._out_bytes


class Playback:
    """Plays one bidirectional stream's client audio to its target legs.

    Args:
        targets: the legs that hear the audio (``stream_bidirectional_target_legs``
            resolved by the caller; see the module docstring).
        mode: ``"rtp"`` or ``"mp3"`` (``stream_bidirectional_mode``).
        codec: ``stream_bidirectional_codec`` (``rtp`` mode).
        sampling_rate: ``stream_bidirectional_sampling_rate`` (``rtp`` mode;
            ignored for G722, which is always 16 kHz audio).
        emit: takes each server→client frame (``mark`` echo, ``error``).
        clock: the hub clock (``loop.time()``), for the MP3 rate limit.
        standing_ms: the standing depth a real-time consumer may keep (0: never trimmed).

    Raises:
        ValueError: ``mode`` is not rtp/mp3, or ``sampling_rate`` is not one we
            convert from (the API's enum values all are).
    """

    def __init__(
        self,
        targets: Sequence[LegMedia],
        *,
        mode: str,
        codec: str,
        sampling_rate: int,
        emit: Emit,
        clock: Callable[[], float],
        standing_ms: int = STANDING_MS,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"bidirectional mode must be rtp or mp3, not {mode!r}")
        self.mode = mode
        self.codec = codec
        self._emit = emit
        self._clock = clock
        self._closed = False
        self._last_mp3: float | None = None
        self._carry = b""  # an odd L16 byte waiting for its other half
        self._decoder: Decoder | None = None
        self._codec_info: CodecInfo | None = None
        self._unplayable: str | None = None
        in_rate: int | None = None
        if mode == "rtp":
            if codec in PLAYBACK_CODECS:
                in_rate = 16000 if codec == "G722" else sampling_rate
                if in_rate not in SUPPORTED_RATES:
                    raise ValueError(f"sampling rate {sampling_rate} Hz is not supported")
                try:
                    self._codec_info = opus_codec(in_rate) if codec == "OPUS" else get_codec(codec)
                except LookupError:
                    raise ValueError(f"OPUS cannot run at {sampling_rate} Hz") from None
                self._decoder = self._codec_info.new_decoder()
            else:
                self._unplayable = (
                    f"stream_bidirectional_codec {codec!r} cannot be played; "
                    f"use one of {', '.join(PLAYBACK_CODECS)}"
                )
        self.in_rate = in_rate
        # Wire bytes per second of audio, for the 30 s limit of one rtp message.
        self._bytes_per_second = {"L16": 2 * (in_rate or 1), "G722": 8000}.get(codec, in_rate or 1)
        self._lanes: dict[int, _Lane] = {}
        self._subscriptions: list[Subscription] = []
        # G.711 at the legs' own rate is queued as it came (QueueSource's codec mode):
        # a leg in that codec sends it untouched, any other leg decodes it at its tick.
        self._passthrough: CodecInfo | None = None
        if (mode == "rtp" and self._codec_info is not None
                and self._codec_info.name in PASSTHROUGH_CODECS):
            self._passthrough = self._codec_info
        sources: list[QueueSource] = []
        seen: set[tuple[int, str]] = set()
        for target in targets:
            key = (id(target.hub), target.leg)
            if key in seen:
                continue
            seen.add(key)
            rate = target.sample_rate
            lane = self._lanes.get(rate)
            if lane is None:
                lane = self._lanes[rate] = _Lane(rate, in_rate)
            queued_as = self._passthrough if rate == in_rate else None
            source = QueueSource(rate, hold_ticks=HOLD_TICKS, drain=lane.drain,
                                 standing_bytes=2 * rate * standing_ms // 1000,
                                 on_trim=self._trimmed, codec=queued_as)
            lane.sources.append(source)
            sources.append(source)
            self._subscriptions.append(target.hub.add_source(target.leg, source))
        self._sources = tuple(sources)
        # Every target queues the consumer's bytes: a message needs no decode at all.
        self._raw = self._passthrough is not None and all(
            source.payload_codec is not None for source in sources)
        # Seconds queued on the fullest target at most: what was there when last looked
        # at, plus all fed since (queues only shrink meanwhile). The look, a property
        # read per target, then waits until a message might not fit (raw messages only).
        self._queued_bound = 0.0
        self.messages = 0  # media messages accepted
        self.errors = 0  # error frames sent

    # -- the consumer's frames -------------------------------------------------------

    def on_text(self, text: str) -> None:
        """Handle one text frame from the consumer. Never raises."""
        if self._closed:
            return
        try:
            frame = parse_client_frame(text)
            if type(frame) is ClientMedia:  # 50 a second; marks and clears are rare
                data = frame.payload
                if self._raw:
                    # G.711 that every target queues as it came: _play_rtp inline (a
                    # byte a sample, no decoder, no lanes), as this runs for every message.
                    seconds = len(data) / self._bytes_per_second
                    if seconds > MAX_MESSAGE_SECONDS:
                        raise _too_long(seconds)
                    bound = self._queued_bound + seconds
                    if bound > SOURCE_MAX_SECONDS - 0.1:  # it may not fit: look
                        queued = self.buffered_ms / 1000.0
                        self._queued_bound = queued
                        if queued + seconds > SOURCE_MAX_SECONDS - 0.1:
                            raise _no_room(queued, seconds)
                        bound = queued + seconds
                    self._queued_bound = bound
                    for source in self._sources:
                        source.feed(data)
                elif self.mode == "mp3":
                    self._play_mp3(data)
                else:
                    self._play_rtp(data)
                self.messages += 1
            elif type(frame) is ClientMark:
                self.mark(frame.name)
            else:
                self.clear()
        except StreamProtocolError as refusal:
            self._error(refusal.code, refusal.detail)
        except Exception:  # our bug: answer, log, keep the stream up
            logger.exception("bidirectional frame failed")
            self._error(StreamErrorCode.UNKNOWN_ERROR, "The frame could not be processed")

    def _play_rtp(self, data: bytes) -> None:
        if self._unplayable is not None:
            raise StreamProtocolError(StreamErrorCode.INVALID_MEDIA, self._unplayable)
        seconds = self._duration(data)
        if seconds > MAX_MESSAGE_SECONDS:
            raise _too_long(seconds)
        decoder = self._decoder
        if decoder is None:  # not reached: _unplayable is set whenever it is None
            raise StreamProtocolError(StreamErrorCode.UNKNOWN_ERROR, "No decoder for this stream")
        self._check_room(seconds)
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if self.codec == "L16" and len(data) & 1:
            data, self._carry = data[:-1], data[-1:]
        if not data:
            return
        try:
            pcm = decoder.decode(data)
        except MediaParseError as exc:  # a bad Opus packet
            raise StreamProtocolError(
                StreamErrorCode.INVALID_MEDIA, f"media.payload: {exc}") from None
        for lane in self._lanes.values():
            lane.feed(pcm if lane.sources[0].payload_codec is None else data)

    def _duration(self, data: bytes) -> float:
        """Seconds of audio in an rtp payload (an Opus packet says; the others are CBR)."""
        if self.codec != "OPUS" or not data:
            return len(data) / self._bytes_per_second
        try:
            return packet_samples(data) / OPUS_CLOCK
        except MediaParseError as exc:
            raise StreamProtocolError(
                StreamErrorCode.INVALID_MEDIA, f"media.payload: {exc}") from None

    def _play_mp3(self, data: bytes) -> None:
        now = self._clock()
        if self._last_mp3 is not None and now - self._last_mp3 < MP3_MIN_INTERVAL:
            raise StreamProtocolError(
                StreamErrorCode.RATE_LIMIT_REACHED,
                f"MP3 media messages are limited to one per second; this one came "
                f"{now - self._last_mp3:.3f} s after the previous one",
            )
        self._last_mp3 = now
        try:
            pcm, rate = decode_mp3(data)
        except Mp3Error as exc:
            raise StreamProtocolError(StreamErrorCode.INVALID_MEDIA,
                                      f"media.payload: {exc}") from None
        self._check_room(len(pcm) / (2 * rate))
        for lane in self._lanes.values():
            lane.feed_clip(pcm, rate)

    def _check_room(self, seconds: float) -> None:
        queued = self.buffered_ms / 1000.0
        # A little headroom for a resampler's tail, which QueueSource also counts.
        if queued + seconds > SOURCE_MAX_SECONDS - 0.1:
            raise _no_room(queued, seconds)

    # -- commands (also usable directly) ------------------------------------------------

    def mark(self, name: str) -> None:
        """Echo ``name`` once everything queued so far has played on every target."""
        placements = [(source, lane.mark_offset())
                      for lane in self._lanes.values() for source in lane.sources]
        if not placements:
            self._emit_mark(name)
            return
        waiting = len(placements)

        def played() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                self._emit_mark(name)

        for source, offset in placements:
            source.mark(played, offset)

    def clear(self) -> None:
        """Stop playback now, drop the queues and echo every pending mark."""
        for lane in self._lanes.values():
            for source in lane.sources:
                source.clear()
            lane.reset()
        self._carry = b""
        if self._codec_info is not None:
            self._decoder = self._codec_info.new_decoder()  # G.722 and Opus keep state

    def close(self) -> None:
        """Detach every source from its hub; later frames are ignored, marks never echo."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions = []

    # -- state ---------------------------------------------------------------------

    @property
    def buffered_ms(self) -> float:
        """Audio queued and not yet played, on the fullest target."""
        fullest = 0.0  # a loop, not max() over a generator: read for every media message
        for source in self._sources:
            ms = source.buffered_ms
            if ms > fullest:
                fullest = ms
        return fullest

    @property
    def closed(self) -> bool:
        return self._closed

    @staticmethod
    def _trimmed(frames: int) -> None:
        PLAYBACK_DISCARDED_STANDING.inc(frames)
        logger.debug("bidirectional playback: dropped %d ms of standing delay", 20 * frames)

    def _emit_mark(self, name: str) -> None:
        if not self._closed:
            self._emit(MarkEcho(name))

    def _error(self, code: StreamErrorCode, detail: str) -> None:
        self.errors += 1
        self._emit(ErrorReport(code, detail))
