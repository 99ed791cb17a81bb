"""A standing-queue detector for playback queues (CoDel's idea, for audio).

A consumer that answers in real time — an echo, a bot pacing its speech — keeps a
playback queue at whatever depth it once reached: after a stall, the audio that piled
up meanwhile arrives in a burst, the consumer answers it in a burst, and from then on
it sends exactly as much as plays. The queue never drains and the delay it adds is
permanent. The missed-tick discard of the pacer does not see it: the pacer is on time.

:class:`StandingQueue` is told, once per 20 ms tick, how deep the queue is and how
much audio has ever been fed to it. It asks for a trim when both hold:

* **standing**: for the last :data:`WINDOW_TICKS` ticks (1 s) the audio queued
  beyond each tick's own frame never fell below the target
  (``CALLSTREAM_PLAYBACK_STANDING_MS``), and
* **real time**: over that window the audio fed is at most :data:`MAX_RATE` times
  real time, and in each half of it at least :data:`MIN_RATE` times — a live sender
  refilling what plays. Ticks the pacer skipped in a stall count as time in which
  nothing arrived: the burst that answers the stall makes up for them.

Audio queued on purpose is not touched: a clip sent ahead (TTS) arrives in a lump or
a few, leaving at least one half of the window without audio, then drains while
nothing arrives; a stream sent faster than real time fills the queue, more than 1.25
times real time. The trim keeps one frame (the tick's own) and drops the rest, oldest
first, in whole frames; the window then starts again. It is sans-I/O: no clock (a tick
is the unit), no metrics, no logging.
"""

from __future__ import annotations

import itertools
from collections import deque

__all__ = ["MAX_RATE", "MIN_RATE", "WINDOW_TICKS", "StandingQueue"]

WINDOW_TICKS = 50  # 1 s of 20 ms ticks: the queue must stand this long
MIN_RATE = 0.5  # fed less than this share of the window: draining (audio sent ahead)
MAX_RATE = 1.25  # fed more: filling on purpose (faster than real time)


class StandingQueue:
    """Decide, tick by tick, when a playback queue's depth is standing delay.

    Args:
        frame_bytes: bytes of one 20 ms frame at the queue's rate.
        target_bytes: the depth a queue may keep for good; 0 turns the detector off.
        window_ticks: ticks the audio queued beyond each tick's frame must stay at or
            above the target.
    """

    __slots__ = (
        "_arrivals",
        "_fed",
        "_frame_bytes",
        "_in_window",
        "_target",
        "_window",
    )

    def __init__(self, frame_bytes: int, target_bytes: int, *,
                 window_ticks: int = WINDOW_TICKS) -> None:
        if frame_bytes <= 0 or target_bytes < 0 or window_ticks < 1:
            raise ValueError("frame_bytes > 0, target_bytes >= 0 and window_ticks >= 1")
        self._frame_bytes = frame_bytes
        self._target = target_bytes
        self._window = window_ticks
        self._fed = 0  # the feed total at the previous tick
        self._arrivals: deque[int] = deque()  # bytes fed per tick, while standing
        self._in_window = 0  # their sum

    @property
    def enabled(self) -> bool:
        return self._target > 0

    def tick(self, depth: int, fed: int) -> int:
        """One tick, before it plays: ``depth`` bytes queued, ``fed`` bytes ever fed.

        Returns the whole frames to drop from the head of the queue now (0: keep it).
        """
        arrived = fed - self._fed
        self._fed = fed
        # What waits beyond this tick's own frame is the delay the queue adds.
        if not self.enabled or depth - self._frame_bytes < self._target:
            if self._arrivals:
                self.reset()
            return 0
        arrivals = self._arrivals
        arrivals.append(arrived)
        self._in_window += arrived
        if len(arrivals) > self._window:
            self._in_window -= arrivals.popleft()
        if len(arrivals) < self._window:
            return 0
        real_time = self._window * self._frame_bytes
        if self._in_window > MAX_RATE * real_time:
            return 0  # faster than real time: filling the queue on purpose
        # Fed all along: a clip sent ahead in a lump or a few leaves a half (or the whole
        # window) without audio.
        half = self._window // 2
        newer = sum(itertools.islice(arrivals, len(arrivals) - half, None))
        older = self._in_window - newer
        if (newer < MIN_RATE * half * self._frame_bytes
                or older < MIN_RATE * (self._window - half) * self._frame_bytes):
            return 0
        frames = (depth - self._frame_bytes) // self._frame_bytes
        if frames <= 0:
            return 0
        self.reset()
        return frames

    def missed(self, ticks: int) -> None:
        """``ticks`` ticks went by unplayed (a stall: the pacer skipped them).

        They count in the window as time in which nothing arrived, so the burst a
        real-time consumer sends after the stall (the stall's own audio, answered late)
        makes up for them rather than looking faster than real time.
        """
        if not self.enabled:
            return
        arrivals = self._arrivals
        for _ in range(min(ticks, self._window)):
            arrivals.append(0)
        while len(arrivals) > self._window:
            self._in_window -= arrivals.popleft()

    def reset(self) -> None:
        """Start the window again (the queue was cleared, or just trimmed)."""
        self._arrivals.clear()
        self._in_window = 0
