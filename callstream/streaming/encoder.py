"""A stream's view of the call audio: captured on the media path, encoded off it.

Two ways to get a track's payloads, chosen per stream:

* **Pass-through** — the stream codec is the call's codec: the RTP packets of the
  leg (``MediaHub.add_packet_callback``) are cut to their payload, so the consumer
  gets exactly the bytes that crossed the wire (bit-exact; no decode/encode round
  trip, which for G.711 would not even be exact around zero).
* **Transcode** — any other codec: the hub's 20 ms PCM frames go through a
  :class:`~callstream.media.codecs.Transcoder` (resampling where rates differ,
  e.g. PCMU 8 kHz → L16 16 kHz).

The encoder is made when the stream is requested (the call's media is up), before
its WebSocket is open: the queue then holds the call's audio from the first word
until ``start`` has gone out, and the session flushes it in order (docs/streaming.md,
"From the first word").

One write per tick. With ``both_tracks`` the two frames of a tick do not arrive together
on the pass-through path: an inbound packet comes when the socket delivers it, the
outbound one when the pacer sends it. So ``wake`` (the sender's cue) fires for an inbound
item, and an outbound item waits for the next inbound one to go with it — at most one
tick: a second outbound item wakes the sender itself (the caller is silent). The
consumer gets the frames in the same order with the same content; an outbound frame may
reach it up to 20 ms later than before, an inbound one never later.

The hub callbacks only append to one bounded queue (rule 1 of the design: the media
path never waits), :func:`queue_items` long: ``CALLSTREAM_STREAM_BUFFER_SECS`` of
the stream's track(s). When the consumer is slow the **oldest** item is dropped and
counted (``dropped``, and ``on_drop`` at once: the sender task is then stuck behind the
consumer and cannot be the one to report it); the sender task drains and encodes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from callstream.calls.features import LegMedia
from callstream.media.codecs import FRAMES_PER_SECOND, CodecInfo, Transcoder
from callstream.media.hub import AudioFrame, Subscription, Track
from callstream.media.rtp import RtpView

__all__ = ["BUFFER_SECONDS", "QUEUE_ITEMS", "Chunk", "StreamEncoder", "queue_items"]

#: Default of ``CALLSTREAM_STREAM_BUFFER_SECS``: enough to cover a WebSocket connect and
#: ride out a slow consumer, small enough to stay live.
BUFFER_SECONDS = 2.0


def queue_items(seconds: float, track: Track) -> int:
    """Queue length that holds ``seconds`` of ``track``: one item per 20 ms per track."""
    tracks = 2 if track is Track.BOTH else 1
    return max(1, math.ceil(seconds * FRAMES_PER_SECOND)) * tracks


#: :data:`BUFFER_SECONDS` of both tracks.
QUEUE_ITEMS = queue_items(BUFFER_SECONDS, Track.BOTH)


class Chunk(NamedTuple):
    """One 20 ms media payload ready for a ``media`` frame."""

    track: str
    payload: bytes
    time: float


#: ``Chunk``'s constructor without its Python-level ``__new__``: one a packet.
_chunk = partial(tuple.__new__, Chunk)


class StreamEncoder:
    """Subscribes to one leg's track(s) and yields encoded :class:`Chunk` s.

    Args:
        media: the leg.
        track: ``inbound``, ``outbound`` or ``both``.
        codec: the stream's codec (``MediaFormat.codec``).
        clock: the hub clock, to time packets (frames carry their own time).
        wake: called when queued items should go out: once until the next
            :meth:`drain` (see "One write per tick" above for ``both`` tracks).
        on_drop: called with the drop total each time an item is dropped.
        write: pass-through only: offered each packet's payload first, with the
            capture time and whether items are queued, while nothing is waiting for the
            sender (an outbound item waiting for its inbound partner aside, which
            ``write`` then drains first); True when it wrote the payload, False to queue
            it.
    """

    def __init__(
        self,
        media: LegMedia,
        track: Track,
        codec: CodecInfo,
        *,
        clock: Callable[[], float],
        wake: Callable[[], None],
        on_drop: Callable[[int], None] | None = None,
        max_items: int = QUEUE_ITEMS,
        write: Callable[[str, bytes, float, bool], bool] | None = None,
    ) -> None:
        self._queue: deque[Chunk] = deque()
        self._max = max_items
        self._clock = clock
        self._wake = wake
        self._on_drop = on_drop
        self.dropped = 0
        self.captured = 0
        self._pair = track is Track.BOTH
        self._woken = False  # wake called since the last drain
        self._outbound_waiting = False  # an outbound item waits for its inbound partner
        self.passthrough = codec.name == media.codec and codec.sample_rate == media.sample_rate
        self._payload_type = media.payload_type
        self._write = write if self.passthrough else None
        self._transcoders: dict[str, Transcoder] = {}
        if self.passthrough:
            self._sub: Subscription = media.hub.add_packet_callback(
                media.leg, track, self._on_packet)
        else:
            for name in ("inbound", "outbound"):
                self._transcoders[name] = Transcoder(media.sample_rate, codec)
            self._sub = media.hub.add_frame_callback(media.leg, track, self._on_frame)

    # -- media path (synchronous, never waits) ---------------------------------

    def _put(self, item: Chunk) -> None:
        queue = self._queue
        if len(queue) >= self._max:
            queue.popleft()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(self.dropped)
        queue.append(item)
        self.captured += 1
        if self._woken:
            return
        if self._pair and item.track == "outbound" and not self._outbound_waiting:
            self._outbound_waiting = True
            return
        self._woken = True
        self._wake()

    def _on_packet(self, leg: str, track: str, packet: RtpView) -> None:
        # The header was parsed once, by the media session (or built by it); unpacked, not
        # read through the view's properties: two packets per call per tick.
        data, payload_type, start, end = packet
        if payload_type != self._payload_type or end <= start:
            return  # telephone-event or CN
        payload = data[start:end]
        now = self._clock()
        # Straight to the socket when the sender has nothing to do: no Chunk, no queue,
        # no wake. An outbound item still waits for its inbound partner ("One write per
        # tick"), and once woken the sender's turn comes first, so the order holds.
        write = self._write
        if (write is not None and not self._woken and (track == "inbound" or not self._pair)
                and write(track, payload, now, bool(self._queue))):
            self.captured += 1
            return
        self._put(_chunk((track, payload, now)))

    def _on_frame(self, frame: AudioFrame) -> None:
        self._put(_chunk((frame.track, frame.pcm, frame.time)))

    # -- sender side --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    def drain(self) -> list[Chunk]:
        """Take everything queued, encoded for the stream."""
        items = list(self._queue)
        self._queue.clear()
        self._woken = self._outbound_waiting = False
        if self.passthrough:
            return items
        transcoders = self._transcoders
        return [Chunk(track, transcoders[track].transcode(pcm), t) for track, pcm, t in items]

    def close(self) -> None:
        self._sub.close()
