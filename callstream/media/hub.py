"""The media hub: one call's audio in, fanned out to taps; sources mixed back out.

Theory of operation
-------------------
A :class:`MediaHub` holds one or more **legs** (a call leg, named by its
call leg id). For each leg it carries two tracks, named as in the Telnyx
streaming API:

* ``inbound`` — what the leg's remote party sends us. The I/O layer plays
  the leg's jitter buffer out once per 20 ms tick and calls
  :meth:`MediaHub.push_inbound` with the frame.
* ``outbound`` — what we send the remote party. :meth:`MediaHub.tick`, called
  by the shared pacer every 20 ms, reads every **audio source** of the leg
  (bidirectional WebSocket streams, a bridged peer), mixes them with a
  saturating int16 sum and returns the frame for the leg's RTP session. With
  no source audio the leg gets silence if ``send_silence_when_idle``, else
  nothing (the session lets the tick pass and marks the next talkspurt).
  Every outbound frame is also delivered to ``outbound`` taps.

Frames are internal PCM (16-bit little-endian) at the **leg's own rate**,
the rate of its codec (8 kHz for G.711, 16 kHz for G.722/L16): an ordinary
G.711 call is never resampled. Where rates differ — a bridge between a G.711
and a G.722 leg, a stream feeding 24 kHz audio — the source converts.

Taps: queues or callbacks
-------------------------
Consumers choose one of two kinds, both synchronous on the media path:

* :class:`FrameTap` (from :meth:`MediaHub.open_tap`): a bounded queue of
  :data:`TAP_QUEUE_FRAMES` frames. When it is full the **oldest frame is
  dropped** and counted (``dropped``); the hub never waits. For consumers that
  do I/O at their own pace (WebSocket streams, transcription). An optional
  ``waker`` is called when the queue goes from empty to non-empty, so an
  asyncio reader can sleep (see :class:`callstream.media.transport.TapReader`).
* Callbacks (:meth:`MediaHub.add_frame_callback`): called inline with each
  frame. Cheapest; the callback must not block. Bridges use them.

Outlets: the pass-through
-------------------------
A voice-AI consumer echoing PCMU to a PCMU leg would have each frame decoded, queued,
mixed with nothing and encoded again. A leg's RTP endpoint registers an **outlet**
(:meth:`MediaHub.set_outlet`): its codec and a ``send(payload, now)``. While the leg's
only source is a :class:`QueueSource` holding that codec's bytes and no outbound frame
sink listens (nothing needs the PCM), the tick hands the queued bytes to the outlet as
they came. A second source (a bridge), a frame sink attaching or another codec ends it
at the next tick; both ways read the same queue, so no audio is lost or reordered.

Wire bytes (the RTP forker, same-codec streams) go through
:meth:`MediaHub.add_packet_callback`: every RTP packet received from or sent to
the leg, byte for byte, as an :class:`~callstream.media.rtp.RtpView` whose
header the media session already parsed; called inline — a forker's ``sendto``
does not block.

A callback that raises is counted (``callback_errors``) and logged at debug
level; it never disturbs the media path or the other taps.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeVar

from callstream.media.codecs import FRAMES_PER_SECOND, CodecInfo
from callstream.media.codecs.pcm import mix_frames, silence
from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import MediaStateError
from callstream.media.rtp import RtpView
from callstream.media.standing import StandingQueue

__all__ = [
    "BRIDGE_MAX_FRAMES",
    "PASSTHROUGH_CODECS",
    "SOURCE_MAX_SECONDS",
    "TAP_QUEUE_FRAMES",
    "AudioFrame",
    "AudioSource",
    "Bridge",
    "BridgeSource",
    "FrameCallback",
    "FrameTap",
    "MediaHub",
    "Outlet",
    "PacketCallback",
    "QueueSource",
    "Subscription",
    "Track",
    "bridge",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

TAP_QUEUE_FRAMES = 50  # one second of 20 ms frames per tap
BRIDGE_MAX_FRAMES = 5  # a bridged peer's audio waits at most 100 ms
SOURCE_MAX_SECONDS = 120  # queued playback audio beyond this is refused
#: Codecs a :class:`QueueSource` may hold as they came: a byte a sample, and no state, so
#: any byte range of them is audio on its own (and a leg in the same codec sends them).
PASSTHROUGH_CODECS = ("PCMU", "PCMA")


class Track(enum.Enum):
    """Which direction of a leg a tap wants (Telnyx naming)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"

    @classmethod
    def parse(cls, value: str | Track) -> Track:
        """Accept ``inbound``/``outbound``/``both`` and the ``*_track(s)`` forms.

        Raises:
            ValueError: any other value.
        """
        if isinstance(value, Track):
            return value
        name = value.lower().removesuffix("_tracks").removesuffix("_track")
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown track {value!r}") from None


INBOUND = "inbound"
OUTBOUND = "outbound"


class AudioFrame(NamedTuple):
    """20 ms of one leg's audio on one track.

    A ``NamedTuple`` rather than a frozen dataclass: it is just as immutable
    and typed, and it is built for every frame on the hot path, where it costs
    0.2 µs against 0.64 µs (measured on Python 3.11).

    Attributes:
        leg: the leg's name.
        track: ``"inbound"`` or ``"outbound"``.
        pcm: 16-bit little-endian mono samples.
        sample_rate: the leg's rate.
        sequence: this track's frame counter, from 1.
        time: the hub clock (``loop.time()``) when the frame passed.
    """

    leg: str
    track: str
    pcm: bytes
    sample_rate: int
    sequence: int
    time: float


FrameCallback = Callable[[AudioFrame], None]
Outlet = Callable[[bytes, float], None]
"""Sends one encoded 20 ms frame to a leg's peer at hub time ``now`` (see ``set_outlet``)."""
PacketCallback = Callable[[str, str, RtpView], None]
"""Called with ``(leg, track, packet)``: the wire bytes, header parsed once upstream."""


class AudioSource(Protocol):
    """Audio played out to a leg, one frame per tick."""

    def read(self, now: float) -> bytes | None:
        """Return the next 20 ms at the leg's rate, or None when there is none."""
        ...

    def skip(self, frames: int) -> int:
        """Drop the next ``frames`` frames: their ticks were missed (the pacer fell
        behind), so they are overdue. Returns how many frames of audio were dropped."""
        ...


class Subscription:
    """A handle on something attached to a hub; ``close()`` detaches it."""

    __slots__ = ("_detach",)

    def __init__(self, detach: Callable[[], None]) -> None:
        self._detach: Callable[[], None] | None = detach

    def close(self) -> None:
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()

    @property
    def closed(self) -> bool:
        return self._detach is None


class FrameTap:
    """A bounded frame queue for one consumer: drop-oldest, never blocking.

    Args:
        max_frames: queue bound; the oldest frame goes when a new one arrives.
    """

    __slots__ = (
        "_frames",
        "_subscription",
        "closed",
        "delivered",
        "dropped",
        "leg",
        "max_frames",
        "track",
        "waker",
    )

    def __init__(
        self, max_frames: int = TAP_QUEUE_FRAMES, *, leg: str = "", track: Track = Track.INBOUND
    ) -> None:
        if max_frames < 1:
            raise ValueError("a tap holds at least one frame")
        self.leg = leg
        self.track = track
        self.max_frames = max_frames
        self._frames: deque[AudioFrame] = deque()
        self._subscription: Subscription | None = None
        self.waker: Callable[[], None] | None = None
        self.closed = False
        self.delivered = 0
        self.dropped = 0

    def put(self, frame: AudioFrame) -> None:
        """Queue a frame (called by the hub)."""
        frames = self._frames
        if len(frames) >= self.max_frames:
            frames.popleft()
            self.dropped += 1
        frames.append(frame)
        self.delivered += 1
        if len(frames) == 1 and self.waker is not None:
            self.waker()

    def get_nowait(self) -> AudioFrame | None:
        """Return the oldest queued frame, or None."""
        frames = self._frames
        return frames.popleft() if frames else None

    def drain(self) -> list[AudioFrame]:
        """Return and remove every queued frame."""
        frames = list(self._frames)
        self._frames.clear()
        return frames

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        """Detach from the hub; queued frames stay readable."""
        if self.closed:
            return
        self.closed = True
        if self._subscription is not None:
            self._subscription.close()
        if self.waker is not None:
            self.waker()


class QueueSource:
    """Audio queued for playout to a leg (a bidirectional stream's output).

    Feed PCM of any length; it plays in 20 ms frames in order. ``mark()``
    registers a callback for when everything fed before it has played;
    ``clear()`` drops the queue and fires pending marks at once (the
    WebSocket ``clear`` semantics). At most :data:`SOURCE_MAX_SECONDS` are
    queued; input beyond that is refused and counted (``overflow_bytes``).

    When less than a frame is queued, the source can wait ``hold_ticks``
    ticks for the rest before it pads the tail with silence, so a producer
    feeding odd-sized chunks just in time plays gap-free; it never waits
    while a mark is pending (the producer has declared a boundary). Before
    padding it calls ``drain()``, where a producer pushes out audio it still
    holds (a resampler's filter tail).

    With ``standing_bytes``, a :class:`~callstream.media.standing.StandingQueue`
    watches the depth at every tick and learns of every :meth:`skip`; when it finds
    the delay a stall left standing, refilled at real time, the oldest audio goes
    (as :meth:`skip` drops it: marks within it fire, in order), counted in
    ``trimmed_frames`` and reported to ``on_trim(frames)``.

    With ``codec`` (PCMU or PCMA: a byte a sample, no state), the queue holds that
    codec's bytes rather than PCM: :meth:`feed` takes them, :meth:`read` decodes
    each frame, and :meth:`read_payload` hands the frame over as it came, for a leg
    that sends this codec (the hub's pass-through, see :meth:`MediaHub.set_outlet`).
    Both read the one queue, so a leg may switch between them at any tick without
    losing or reordering audio. Positions, marks and ``buffered_bytes`` then count
    codec bytes; the padding is the codec's silence.

    Args:
        sample_rate: the leg's rate, which :meth:`read` produces.
        hold_ticks: ticks to wait for the rest of a partial frame (0: pad at once).
        drain: called when the queue runs short of a frame, before padding.
        standing_bytes: the depth of PCM the queue may keep for good; 0: never trimmed.
        on_trim: called with the frames of each trim.
        codec: queue this codec's bytes (see above); None: PCM.

    Raises:
        ValueError: ``codec`` is not one a byte a sample at ``sample_rate``.
    """

    __slots__ = (
        "_chunks",
        "_consumed",
        "_decode",
        "_fed",
        "_frame_bytes",
        "_held",
        "_marks",
        "_max_bytes",
        "_odd",
        "_offset",
        "_pad",
        "_resamplers",
        "_sample_bytes",
        "_standing",
        "drain",
        "hold_ticks",
        "on_trim",
        "overflow_bytes",
        "payload_codec",
        "played_frames",
        "sample_rate",
        "skipped_frames",
        "trimmed_frames",
    )

    def __init__(
        self,
        sample_rate: int,
        *,
        max_seconds: float = SOURCE_MAX_SECONDS,
        hold_ticks: int = 0,
        drain: Callable[[], None] | None = None,
        standing_bytes: int = 0,
        on_trim: Callable[[int], None] | None = None,
        codec: CodecInfo | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.hold_ticks = hold_ticks
        self.drain = drain
        self._held = 0  # ticks waited so far for the rest of a partial frame
        self.payload_codec: str | None = None
        self._decode: Callable[[bytes], bytes] | None = None
        self._sample_bytes = 2  # bytes a sample in the queue
        self._pad = b"\0"  # the silence the tail is padded with, a byte at a time
        if codec is not None:
            if codec.name not in PASSTHROUGH_CODECS or codec.sample_rate != sample_rate:
                raise ValueError(f"a queue of {codec.name} bytes cannot play at {sample_rate} Hz")
            self.payload_codec = codec.name
            self._decode = codec.new_decoder().decode
            self._sample_bytes = 1
            self._pad = codec.new_encoder().encode(bytes(2))
        self._odd = self._sample_bytes - 1  # a trailing part of a sample is dropped
        self._frame_bytes = self._sample_bytes * sample_rate // FRAMES_PER_SECOND
        self._max_bytes = int(max_seconds * sample_rate) * self._sample_bytes
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already played
        self._fed = 0  # bytes ever queued
        self._consumed = 0  # bytes ever played
        self._marks: deque[tuple[int, Callable[[], None]]] = deque()
        self._resamplers: dict[int, Resampler] = {}
        self.overflow_bytes = 0
        self.played_frames = 0
        self.skipped_frames = 0  # overdue frames dropped after missed ticks
        self.trimmed_frames = 0  # standing delay dropped (see StandingQueue)
        self._standing = (StandingQueue(self._frame_bytes,
                                        standing_bytes * self._sample_bytes // 2)
                          if standing_bytes > 0 else None)
        self.on_trim = on_trim

    @property
    def buffered_bytes(self) -> int:
        return self._fed - self._consumed

    @property
    def buffered_ms(self) -> float:
        # Not through buffered_bytes: read for every media message a consumer plays.
        return (self._fed - self._consumed) * 1000.0 / (self._sample_bytes * self.sample_rate)

    def feed(self, pcm: bytes, sample_rate: int | None = None) -> None:
        """Queue PCM (with ``codec``: that codec's bytes), converting PCM from
        ``sample_rate`` when it differs.

        A trailing odd byte of PCM is not a sample and is dropped.

        Raises:
            CodecError: ``sample_rate`` is not a supported rate.
            ValueError: ``sample_rate`` given for a queue of codec bytes.
        """
        size = len(pcm)  # taken once: called for every media message a consumer plays
        if size & self._odd:
            pcm = pcm[:-1]
            size -= 1
        if sample_rate is not None and sample_rate != self.sample_rate:
            if self._decode is not None:
                raise ValueError("a queue of codec bytes is fed at its own rate")
            resampler = self._resamplers.get(sample_rate)
            if resampler is None:
                resampler = self._resamplers[sample_rate] = Resampler(
                    sample_rate, self.sample_rate
                )
            pcm = resampler.process(pcm)
            size = len(pcm)
        if not size:
            return
        if self._fed - self._consumed + size > self._max_bytes:
            self.overflow_bytes += size
            return
        self._chunks.append(pcm)
        self._fed += size
        self._held = 0

    def mark(self, callback: Callable[[], None], offset: int = 0) -> None:
        """Call ``callback`` once the audio queued so far has played.

        ``offset`` moves the mark by that many bytes from the end of the queue:
        positive for audio a producer will still feed (a resampler's delay),
        negative for padding it has already fed past the real audio.
        """
        position = self._fed + offset
        if position <= self._consumed:
            callback()  # nothing playing: echo at once
        else:
            self._marks.append((position, callback))

    def skip(self, frames: int) -> int:
        """Drop the audio of ``frames`` missed ticks from the head of the queue.

        What follows plays on time instead of that much later; marks placed within
        the dropped audio fire now, in order (their audio is over, if unheard).
        """
        dropped = self._drop(frames)
        self.skipped_frames += dropped
        if self._standing is not None:
            self._standing.missed(frames, dropped)
        return dropped

    def _drop(self, frames: int) -> int:
        """Drop up to ``frames`` frames from the head; fire the marks within them."""
        drop = min(frames * self._frame_bytes, self._fed - self._consumed)
        if drop <= 0:
            return 0
        left = drop
        chunks = self._chunks
        while left:
            available = len(chunks[0]) - self._offset
            if available <= left:
                chunks.popleft()
                self._offset = 0
                left -= available
            else:
                self._offset += left
                left = 0
        self._consumed += drop
        self._held = 0
        if self._marks:
            self._fire_marks()
        return -(-drop // self._frame_bytes)

    def clear(self) -> None:
        """Drop queued audio; fire every pending mark now."""
        self._chunks.clear()
        self._offset = 0
        self._consumed = self._fed
        self._held = 0
        if self._standing is not None:
            self._standing.clear()
        marks = self._marks
        while marks:  # all of them, even those placed past the queue's end
            self._call_mark(marks.popleft()[1])

    def read(self, now: float) -> bytes | None:
        """The next 20 ms of PCM at the leg's rate, or None (see the class docstring)."""
        frame = self.read_payload(now)
        decode = self._decode
        if decode is None or frame is None:
            return frame
        return decode(frame)

    def read_payload(self, now: float) -> bytes | None:
        """The next 20 ms as queued: ``codec`` bytes (PCM without one), or None."""
        want = self._frame_bytes
        if self._standing is not None:
            trim = self._standing.tick(self._fed - self._consumed, self._fed)
            if trim:
                self._trim(trim)
        if self._fed - self._consumed < want:
            if self._held < self.hold_ticks and not self._marks:
                self._held += 1  # the rest of this frame may be on its way
                return None
            if self.drain is not None:
                self.drain()
        chunks = self._chunks
        if not chunks:
            return None
        first = chunks[0]
        if self._offset == 0 and len(first) == want:
            chunks.popleft()  # the common case: fed in 20 ms frames
            frame = first
        else:
            parts = []
            need = want
            while need and chunks:
                first = chunks[0]
                piece = first[self._offset : self._offset + need]
                parts.append(piece)
                need -= len(piece)
                self._offset += len(piece)
                if self._offset >= len(first):
                    chunks.popleft()
                    self._offset = 0
            frame = b"".join(parts)
            if need:
                frame += self._pad * need  # the tail of the queue: pad with silence
        left = self._fed - self._consumed
        self._consumed += want if left > want else left  # not min(): a call every tick
        self.played_frames += 1
        if self._marks:
            self._fire_marks()
        return frame

    def _trim(self, frames: int) -> None:
        dropped = self._drop(frames)
        self.trimmed_frames += dropped
        if self.on_trim is not None:
            try:
                self.on_trim(dropped)
            except Exception:  # a counter's failure must not stop playout
                logger.debug("trim callback failed", exc_info=True)

    def _fire_marks(self) -> None:
        marks = self._marks
        while marks and marks[0][0] <= self._consumed:
            self._call_mark(marks.popleft()[1])

    @staticmethod
    def _call_mark(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # a consumer's bug must not stop playout
            logger.debug("mark callback failed", exc_info=True)


class BridgeSource:
    """A bridged peer's inbound audio, converted to this leg's rate.

    Holds at most :data:`BRIDGE_MAX_FRAMES` frames; older audio is dropped
    (counted) so a bridge never builds up delay.
    """

    __slots__ = ("_buffer", "_frame_bytes", "_max_bytes", "_resampler", "dropped_bytes")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._resampler = Resampler(in_rate, out_rate) if in_rate != out_rate else None
        self._frame_bytes = 2 * out_rate // FRAMES_PER_SECOND
        self._max_bytes = BRIDGE_MAX_FRAMES * self._frame_bytes
        self._buffer = bytearray()
        self.dropped_bytes = 0

    def feed_frame(self, frame: AudioFrame) -> None:
        """Take one inbound frame of the other leg (a frame callback)."""
        pcm = frame.pcm if self._resampler is None else self._resampler.process(frame.pcm)
        buffer = self._buffer
        buffer += pcm
        excess = len(buffer) - self._max_bytes
        if excess > 0:
            del buffer[:excess]
            self.dropped_bytes += excess

    def read(self, now: float) -> bytes | None:
        buffer = self._buffer
        want = self._frame_bytes
        if len(buffer) < want:
            return None
        frame = bytes(buffer[:want])
        del buffer[:want]
        return frame

    def skip(self, frames: int) -> int:
        drop = min(frames * self._frame_bytes, len(self._buffer))
        del self._buffer[:drop]
        self.dropped_bytes += drop
        return -(-drop // self._frame_bytes)


class _LegState:
    """What the hub keeps for one leg: its rate, sources, sinks and counters."""

    __slots__ = (
        "direct",
        "frame_bytes",
        "frames_in",
        "frames_out",
        "idle_ticks",
        "inbound_packet_sinks",
        "inbound_sinks",
        "lone_read",
        "name",
        "outbound_packet_sinks",
        "outbound_sinks",
        "outlet",
        "outlet_codec",
        "packets_in",
        "packets_out",
        "sample_rate",
        "send_silence_when_idle",
        "silence",
        "sources",
    )

    def __init__(self, name: str, sample_rate: int, send_silence_when_idle: bool) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.frame_bytes = 2 * sample_rate // FRAMES_PER_SECOND
        self.silence = silence(self.frame_bytes // 2)
        self.send_silence_when_idle = send_silence_when_idle
        self.inbound_sinks: list[FrameCallback] = []
        self.outbound_sinks: list[FrameCallback] = []
        self.inbound_packet_sinks: list[PacketCallback] = []
        self.outbound_packet_sinks: list[PacketCallback] = []
        self.sources: list[AudioSource] = []
        self.outlet: Outlet | None = None
        self.outlet_codec: str | None = None
        self.direct: QueueSource | None = None  # the lone source, played through the outlet
        self.lone_read: Callable[[float], bytes | None] | None = None  # the lone source's read
        self.frames_in = 0
        self.frames_out = 0
        self.packets_in = 0
        self.packets_out = 0
        self.idle_ticks = 0

    def find_direct(self) -> None:
        """Choose how the tick reads a lone source (sources or outlet changed): as it
        came, for the outlet, and its read, chosen here rather than on every tick."""
        sources = self.sources
        lone = sources[0] if len(sources) == 1 else None
        queue = lone if isinstance(lone, QueueSource) else None
        self.direct = (queue if queue is not None and self.outlet is not None
                       and queue.payload_codec == self.outlet_codec else None)
        if queue is not None and queue.payload_codec is None:
            self.lone_read = queue.read_payload  # PCM already: no read() around it
        else:
            self.lone_read = lone.read if lone is not None else None


def _remove(items: list[_T], item: _T) -> None:
    # Remove by identity: bound methods compare equal to fresh copies of themselves.
    for index, existing in enumerate(items):
        if existing is item:
            del items[index]
            return


def _subscribe(
    track: Track | str, inbound: list[_T], outbound: list[_T], callback: _T
) -> Subscription:
    """Add ``callback`` to the sink lists ``track`` selects; the subscription removes it."""
    track = Track.parse(track)
    lists = []
    if track is not Track.OUTBOUND:
        lists.append(inbound)
    if track is not Track.INBOUND:
        lists.append(outbound)
    for sinks in lists:
        sinks.append(callback)

    def detach() -> None:
        for sinks in lists:
            _remove(sinks, callback)

    return Subscription(detach)


class MediaHub:
    """The audio crossroads of one call: legs, taps, sources and the tick.

    Args:
        name: a tag for log lines (the call session id).
    """

    __slots__ = ("_legs", "_retired_drops", "_states", "_taps", "callback_errors", "name",
                 "ticks")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._legs: dict[str, _LegState] = {}
        self._states: list[_LegState] = []  # _legs' values, for the tick without a call
        self._taps: list[FrameTap] = []
        self._retired_drops = 0
        self.callback_errors = 0
        self.ticks = 0

    # -- legs ----------------------------------------------------------------

    def add_leg(self, leg: str, sample_rate: int, *, send_silence_when_idle: bool = False) -> None:
        """Add a leg whose frames are PCM at ``sample_rate``.

        Raises:
            MediaStateError: the leg already exists.
        """
        if leg in self._legs:
            raise MediaStateError(f"leg {leg!r} is already in the hub")
        state = self._legs[leg] = _LegState(leg, sample_rate, send_silence_when_idle)
        self._states.append(state)

    def remove_leg(self, leg: str) -> None:
        """Remove a leg; its taps are closed, its callbacks and sources dropped."""
        self._leg(leg)
        for tap in [t for t in self._taps if t.leg == leg]:
            tap.close()
        _remove(self._states, self._legs.pop(leg))

    @property
    def legs(self) -> tuple[str, ...]:
        return tuple(self._legs)

    def sample_rate(self, leg: str) -> int:
        """The PCM rate of a leg's frames."""
        return self._leg(leg).sample_rate

    def set_send_silence_when_idle(self, leg: str, enabled: bool) -> None:
        """Choose whether an idle tick sends silence (True) or nothing."""
        self._leg(leg).send_silence_when_idle = enabled

    def leg_state(self, leg: str) -> _LegState:
        """A leg's live state, for the pacer's per-tick fast paths: they read its
        sink lists and count its frames and packets without a call into the hub.

        Raises:
            MediaStateError: no such leg.
        """
        return self._leg(leg)

    def _leg(self, leg: str) -> _LegState:
        try:
            return self._legs[leg]
        except KeyError:
            raise MediaStateError(f"no leg {leg!r} in the hub") from None

    # -- subscriptions ---------------------------------------------------------

    def open_tap(
        self, leg: str, track: Track | str = Track.INBOUND, *, max_frames: int = TAP_QUEUE_FRAMES
    ) -> FrameTap:
        """Subscribe a bounded, drop-oldest frame queue to a leg's track(s)."""
        tap = FrameTap(max_frames, leg=leg, track=Track.parse(track))
        subscription = self.add_frame_callback(leg, track, tap.put)
        self._taps.append(tap)

        def detach() -> None:
            subscription.close()
            if tap in self._taps:
                self._taps.remove(tap)
                self._retired_drops += tap.dropped

        tap._subscription = Subscription(detach)
        return tap

    def add_frame_callback(
        self, leg: str, track: Track | str, callback: FrameCallback
    ) -> Subscription:
        """Call ``callback(frame)`` inline for each frame of a leg's track(s)."""
        state = self._leg(leg)
        return _subscribe(track, state.inbound_sinks, state.outbound_sinks, callback)

    def add_packet_callback(
        self, leg: str, track: Track | str, callback: PacketCallback
    ) -> Subscription:
        """Call ``callback(leg, track, data)`` inline for each RTP packet of a leg."""
        state = self._leg(leg)
        return _subscribe(
            track, state.inbound_packet_sinks, state.outbound_packet_sinks, callback
        )

    def add_source(self, leg: str, source: AudioSource) -> Subscription:
        """Mix ``source`` into what the leg hears, from the next tick on."""
        state = self._leg(leg)
        state.sources.append(source)
        state.find_direct()

        def detach() -> None:
            _remove(state.sources, source)
            state.find_direct()

        return Subscription(detach)

    def set_outlet(self, leg: str, codec: str | None, send: Outlet | None) -> None:
        """Let the leg send encoded frames: ``send(payload, now)`` sends 20 ms in ``codec``.

        While the leg's only source is a :class:`QueueSource` of ``codec``'s bytes and
        no outbound frame sink listens, :meth:`tick` hands each frame to ``send`` as
        it came (not decoded, mixed and encoded again) and returns no frame for the
        leg; otherwise it mixes PCM as ever. ``send=None`` removes the outlet.
        """
        state = self._leg(leg)
        state.outlet = send
        state.outlet_codec = codec if send is not None else None
        state.find_direct()

    # -- the media path ----------------------------------------------------------

    def push_inbound(self, leg: str, pcm: bytes, now: float) -> None:
        """Deliver one 20 ms frame the leg's remote party sent us."""
        try:
            state = self._legs[leg]
        except KeyError:
            raise MediaStateError(f"no leg {leg!r} in the hub") from None
        state.frames_in += 1
        sinks = state.inbound_sinks
        if sinks:
            frame = AudioFrame(leg, INBOUND, pcm, state.sample_rate, state.frames_in, now)
            self._fan_out(sinks, frame)

    def push_packet(self, leg: str, track: Track, packet: RtpView, now: float) -> None:
        """Deliver one RTP packet received from (INBOUND) or sent to (OUTBOUND) a leg."""
        try:
            state = self._legs[leg]
        except KeyError:
            raise MediaStateError(f"no leg {leg!r} in the hub") from None
        if track is Track.INBOUND:
            state.packets_in += 1
            sinks = state.inbound_packet_sinks
            name = INBOUND
        else:
            state.packets_out += 1
            sinks = state.outbound_packet_sinks
            name = OUTBOUND
        for sink in sinks:
            try:
                sink(leg, name, packet)
            except Exception:
                self.callback_errors += 1
                logger.debug("%s packet tap of %s failed", self.name, leg, exc_info=True)

    def _fan_out(self, sinks: list[FrameCallback], frame: AudioFrame) -> None:
        for sink in sinks:
            try:
                sink(frame)
            except Exception:
                self.callback_errors += 1
                logger.debug("%s frame tap of %s failed", self.name, frame.leg, exc_info=True)

    def skip(self, ticks: int) -> int:
        """The pacer missed ``ticks`` ticks: every source drops that much overdue audio,
        so playback stays on time rather than as late as the stall was long.

        Returns the frames dropped, all legs.
        """
        dropped = 0
        for state in self._legs.values():
            for source in state.sources:
                try:
                    dropped += source.skip(ticks)
                except Exception:
                    self.callback_errors += 1
                    logger.debug("%s source of %s failed to skip", self.name, state.name,
                                 exc_info=True)
        return dropped

    def tick(self, now: float) -> list[tuple[str, bytes | None]]:
        """Produce each leg's next outbound frame (None: send nothing this tick).

        A leg whose frame went to its outlet (see :meth:`set_outlet`) is not listed.
        """
        self.ticks += 1
        out: list[tuple[str, bytes | None]] = []
        for state in self._states:
            mixed: bytes | None = None
            direct = state.direct
            outlet = state.outlet
            if direct is not None and outlet is not None and not state.outbound_sinks:
                # The pass-through: the queued codec bytes are the RTP payload.
                try:
                    payload = direct.read_payload(now)
                except Exception:
                    payload = None
                    self._source_failed(state)
                if payload is not None:
                    state.frames_out += 1
                    try:
                        outlet(payload, now)
                    except Exception:
                        self.callback_errors += 1
                        logger.debug("%s outlet of %s failed", self.name, state.name,
                                     exc_info=True)
                    continue
            elif state.lone_read is not None:  # one source: no mixing
                try:
                    mixed = state.lone_read(now)
                except Exception:
                    self._source_failed(state)
                if mixed is not None and len(mixed) != state.frame_bytes:
                    mixed = (mixed + state.silence)[: state.frame_bytes]  # a sloppy source
            elif state.sources:
                mixed = self._mix(state, now)
            if mixed is None:
                if not state.send_silence_when_idle:
                    state.idle_ticks += 1
                    out.append((state.name, None))
                    continue
                mixed = state.silence
            state.frames_out += 1
            if state.outbound_sinks:
                frame = AudioFrame(
                    state.name, OUTBOUND, mixed, state.sample_rate, state.frames_out, now
                )
                self._fan_out(state.outbound_sinks, frame)
            out.append((state.name, mixed))
        return out

    def _mix(self, state: _LegState, now: float) -> bytes | None:
        """Read every source of a leg with several, and mix what they play."""
        mixed: bytes | None = None
        several: list[bytes] | None = None
        for source in state.sources:
            try:
                pcm = source.read(now)
            except Exception:
                self._source_failed(state)
                continue
            if pcm is None:
                continue
            if len(pcm) != state.frame_bytes:
                pcm = (pcm + state.silence)[: state.frame_bytes]  # a sloppy source
            if mixed is None:
                mixed = pcm
            elif several is None:
                several = [mixed, pcm]
            else:
                several.append(pcm)
        return mixed if several is None else mix_frames(several)

    def _source_failed(self, state: _LegState) -> None:
        self.callback_errors += 1
        logger.debug("%s source of %s failed", self.name, state.name, exc_info=True)

    # -- counters ------------------------------------------------------------------

    @property
    def tap_drops(self) -> int:
        """Frames dropped by every tap queue, closed ones included."""
        return self._retired_drops + sum(tap.dropped for tap in self._taps)

    def counters(self, leg: str) -> dict[str, int]:
        """A leg's counters: frames and packets in and out, idle ticks."""
        state = self._leg(leg)
        return {
            "frames_in": state.frames_in,
            "frames_out": state.frames_out,
            "packets_in": state.packets_in,
            "packets_out": state.packets_out,
            "idle_ticks": state.idle_ticks,
        }

    def close(self) -> None:
        """Close every tap (waking their readers) and drop every leg."""
        for tap in list(self._taps):
            tap.close()
        self._legs.clear()
        self._states.clear()


class Bridge:
    """Two legs hearing each other; ``close()`` unbridges them."""

    __slots__ = ("_subscriptions", "sources")

    def __init__(
        self, subscriptions: list[Subscription], sources: tuple[BridgeSource, BridgeSource]
    ) -> None:
        self._subscriptions = subscriptions
        self.sources = sources

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions = []


def bridge(hub_a: MediaHub, leg_a: str, hub_b: MediaHub, leg_b: str) -> Bridge:
    """Connect two legs (in one hub or two): each one's inbound plays to the other.

    Each direction is a :class:`BridgeSource` fed by a frame callback on one
    leg's inbound track and mixed into the other leg's outbound; it converts
    between the legs' rates, so a PCMU leg and a G.722 leg hear each other.
    """
    to_b = BridgeSource(hub_a.sample_rate(leg_a), hub_b.sample_rate(leg_b))
    to_a = BridgeSource(hub_b.sample_rate(leg_b), hub_a.sample_rate(leg_a))
    subscriptions = [
        hub_a.add_frame_callback(leg_a, Track.INBOUND, to_b.feed_frame),
        hub_b.add_source(leg_b, to_b),
        hub_b.add_frame_callback(leg_b, Track.INBOUND, to_a.feed_frame),
        hub_a.add_source(leg_a, to_a),
    ]
    return Bridge(subscriptions, (to_b, to_a))
