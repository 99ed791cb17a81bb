"""A standing-queue detector for playback queues (CoDel's idea, for audio).

A consumer that answers in real time — an echo, a bot answering each frame — keeps a
playback queue at whatever depth it once reached: after a stall, the audio that piled
up meanwhile reaches it in a burst, it answers the burst with a burst, and from then
on it sends exactly as much as plays. The queue never drains and the delay it adds is
permanent. The pacer's missed-tick discard does not see it: the pacer is on time.

:class:`StandingQueue` is told, once per 20 ms tick, how deep the queue is and how
much audio has ever been fed to it, and, by :meth:`StandingQueue.missed`, of every
stall: the ticks the pacer skipped and the frames the skip could drop. It asks for a
trim when all of these hold:

* **owed to a stall**: a stall in the last :data:`CREDIT_TICKS` (2 s) skipped more
  ticks than the queue had audio to drop; the difference is what a consumer answering
  late will add, and the most a trim takes (the *credit*);
* **standing**: for the last :data:`WINDOW_TICKS` ticks (1 s) the audio queued
  beyond each tick's own frame never fell below the target
  (``CALLSTREAM_PLAYBACK_STANDING_MS``);
* **real time**: over that window the audio fed is at most :data:`MAX_RATE` times
  real time, and in each half of it at least :data:`MIN_RATE` times — a live sender
  refilling what plays. Ticks skipped in the stall count as time in which nothing
  arrived: the burst that answers the stall makes up for them.

Audio queued on purpose is not touched: a bot that keeps a lead while it paces its
speech (Pipecat's transports do) builds it without a stall, so there is no credit, and
a stall drops its lead rather than adding to it; a clip sent ahead arrives in a lump or
a few, leaving at least one half of the window without audio; a stream sent faster
than real time fills the queue, more than 1.25 times real time. The trim drops whole
frames from the head, down to one frame (the tick's own) or by the credit, whichever is
less; the window then starts again. It is sans-I/O: no clock (a tick is the unit), no
metrics, no logging.
"""

from __future__ import annotations

import itertools
from collections import deque

__all__ = ["CREDIT_TICKS", "LATE_TICKS", "MAX_RATE", "MIN_RATE", "WINDOW_TICKS",
           "StandingQueue"]

WINDOW_TICKS = 50  # 1 s of 20 ms ticks: the queue must stand this long
MIN_RATE = 0.5  # fed less than this share of a half window: draining (audio sent ahead)
MAX_RATE = 1.25  # fed more over the window: filling on purpose (faster than real time)
CREDIT_TICKS = 100  # 2 s: how long after a stall its standing delay may be trimmed
#: Late ticks the pacer runs before it skips the rest of a stall (MAX_CATCHUP_TICKS):
#: those that found the queue empty are owed too.
LATE_TICKS = 3


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
        "_credit",
        "_credit_ticks",
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
        self._credit = 0  # frames a trim may take: what the last stall left owed
        self._credit_ticks = 0  # ticks left before the credit lapses

    @property
    def enabled(self) -> bool:
        return self._target > 0

    def missed(self, ticks: int, dropped: int, starved: int = 0) -> None:
        """A stall: the pacer skipped ``ticks`` ticks and dropped ``dropped`` frames;
        the ``starved`` ticks before it found the queue short of a frame.

        The ticks the queue had no audio for are owed: a consumer answering in real
        time sends them late, in a burst — the skipped ones, and the late ticks the
        pacer ran first (at most :data:`LATE_TICKS` of the starved ones). The skipped
        ticks count in the window as time in which nothing arrived.
        """
        if not self.enabled:
            return
        self._credit += max(0, ticks - dropped) + min(starved, LATE_TICKS)
        self._credit_ticks = CREDIT_TICKS
        arrivals = self._arrivals
        for _ in range(min(ticks, self._window)):
            arrivals.append(0)
        while len(arrivals) > self._window:
            self._in_window -= arrivals.popleft()

    def tick(self, depth: int, fed: int) -> int:
        """One tick, before it plays: ``depth`` bytes queued, ``fed`` bytes ever fed.

        Returns the whole frames to drop from the head of the queue now (0: keep it).
        """
        arrived = fed - self._fed
        self._fed = fed
        if self._credit_ticks:
            self._credit_ticks -= 1
            if not self._credit_ticks:
                self._credit = 0
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
        if len(arrivals) < self._window or not self._credit:
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
        frames = min((depth - self._frame_bytes) // self._frame_bytes, self._credit)
        if frames <= 0:
            return 0
        self._credit -= frames
        self.reset()
        return frames

    def reset(self) -> None:
        """Start the window again (the queue was cleared, or just trimmed)."""
        self._arrivals.clear()
        self._in_window = 0
