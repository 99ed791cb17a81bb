"""A standing-queue detector for playback queues (CoDel's idea, for audio).

A consumer that answers in real time — an echo, a bot answering each frame — keeps a
playback queue at whatever depth it once reached: after a stall, the audio that piled
up meanwhile reaches it in a burst, it answers the burst with a burst, and from then
on it sends exactly as much as plays. Every answer that comes a tick late does the
same on a smaller scale: the tick plays nothing, the answer waits a frame longer from
then on. The queue never drains, and on a loaded server the delay it adds grows to
the worst jitter of the call. The pacer's missed-tick discard does not see it: the
pacer is on time.

:class:`StandingQueue` is told, once per 20 ms tick, how deep the queue is and how
much audio has ever been fed to it, and, by :meth:`StandingQueue.missed`, of every
stall: the ticks the pacer skipped and the frames the skip could drop. It asks for a
trim when all of these hold:

* **owed**: within the last :data:`CREDIT_TICKS` (2 s) the queue ran short while it
  was playing: a stall skipped more ticks than the queue had audio to drop, or a gap
  of at most :data:`MAX_GAP_TICKS` ticks found less than a frame between frames (the
  answer to the audio of those ticks came late: jitter, or a stall the pacer caught
  up). What the queue was short of is what a consumer answering late adds for good —
  a queue only grows when a tick goes unplayed — and the most a trim takes (the
  *credit*). A longer gap is a pause in the sender's speech, and owes nothing;
* **standing**: for the last :data:`WINDOW_TICKS` ticks (1 s) the audio queued
  beyond each tick's own frame never fell below the target
  (``CALLSTREAM_PLAYBACK_STANDING_MS``);
* **real time**: over that window the audio fed is at most :data:`MAX_RATE` times
  real time, and audio came in at least :data:`MIN_FED_SHARE` of its ticks — a live
  sender refilling what plays, a frame a tick or a few together. Ticks skipped in a
  stall count as time in which nothing arrived: the burst that answers the stall
  makes up for them.

Audio queued on purpose is not touched: a bot that keeps a lead while it paces its
speech (Pipecat's transports do) builds it without running short, so there is no
credit, and a stall drops its lead rather than adding to it; a clip sent ahead
arrives in a lump or a few, leaving most of the window's ticks without audio; a
stream sent faster than real time fills the queue, more than 1.25 times real time.
The trim drops whole frames from the head, down to one frame (the tick's own) at the
queue's shallowest in the window, or by the credit, whichever is less; the window
then starts again. It is sans-I/O: no clock (a tick is the unit), no metrics, no
logging.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CREDIT_TICKS", "MAX_GAP_TICKS", "MAX_RATE", "MIN_FED_SHARE", "WINDOW_TICKS",
           "StandingQueue"]

WINDOW_TICKS = 15  # 0.3 s of 20 ms ticks: the queue must stand this long
MIN_FED_SHARE = 0.4  # ticks with audio fed, fewer: draining (audio sent ahead)
MAX_RATE = 1.25  # fed more over the window: filling on purpose (faster than real time)
CREDIT_TICKS = 100  # 2 s: how long after a stall its standing delay may be trimmed
#: The longest run of empty ticks between frames that counts as the sender's answer
#: coming late (60 ms: the pacer's catch-up, a loaded server's jitter); a longer one
#: is a pause in its speech.
MAX_GAP_TICKS = 10
_UNSET = 1 << 62  # a floor not yet measured
_IDLE = -1  # no gap is counted: nothing has played since the queue was new, cleared
# or paused


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
        "_fed_ticks",
        "_floor",
        "_frame_bytes",
        "_gap",
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
        self._fed_ticks = 0  # how many of them are not 0
        self._floor = _UNSET  # the least depth on an on-time tick since the window began
        self._credit = 0  # frames a trim may take: what the last stall left owed
        self._credit_ticks = 0  # ticks left before the credit lapses
        self._gap = _IDLE  # ticks in a row found without a frame since the last one

    @property
    def enabled(self) -> bool:
        return self._target > 0

    def missed(self, ticks: int, dropped: int) -> None:
        """A stall: the pacer skipped ``ticks`` ticks and dropped ``dropped`` frames.

        The ticks the queue had no audio for are owed: a consumer answering in real
        time sends them late, in a burst. The skipped ticks count in the window as
        time in which nothing arrived.
        """
        if not self.enabled:
            return
        self._owe(max(0, ticks - dropped))
        for _ in range(min(ticks, self._window)):
            self._record(0)

    def _owe(self, frames: int) -> None:
        self._credit += frames
        self._credit_ticks = CREDIT_TICKS

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
        if depth < self._frame_bytes:
            if self._gap != _IDLE:
                self._gap += 1
                if self._gap > MAX_GAP_TICKS:
                    self._gap = _IDLE  # a pause, not a late answer
        elif self._gap:
            if self._gap != _IDLE:
                self._owe(self._gap)  # the frames the gap went without
            self._gap = 0
        # What waits beyond this tick's own frame is the delay the queue adds.
        if self._target <= 0 or depth - self._frame_bytes < self._target:  # not .enabled: per tick
            if self._arrivals:
                self.reset()
            return 0
        if depth < self._floor:  # not min(): a call every tick of a standing queue
            self._floor = depth
        self._record(arrived)
        if not self._credit or len(self._arrivals) < self._window:  # credit first: no len()
            return 0
        real_time = self._window * self._frame_bytes
        if self._in_window > MAX_RATE * real_time:
            return 0  # faster than real time: filling the queue on purpose
        if self._fed_ticks < MIN_FED_SHARE * self._window:
            return 0  # a clip sent ahead in a lump or a few, draining
        # The floor, not this tick's depth: what the queue kept at its shallowest is
        # standing; the rest is the sender's jitter, and trimming it would starve a tick.
        frames = min((self._floor - self._frame_bytes) // self._frame_bytes, self._credit)
        if frames <= 0:
            return 0
        self._credit -= frames
        self.reset()
        return frames

    def _record(self, arrived: int) -> None:
        arrivals = self._arrivals
        arrivals.append(arrived)
        self._in_window += arrived
        self._fed_ticks += arrived > 0
        if len(arrivals) > self._window:
            gone = arrivals.popleft()
            self._in_window -= gone
            self._fed_ticks -= gone > 0

    def clear(self) -> None:
        """The queue was cleared: what comes next is new, and on purpose."""
        self.reset()
        self._gap = _IDLE

    def reset(self) -> None:
        """Start the window again (the queue was just trimmed)."""
        self._arrivals.clear()
        self._in_window = 0
        self._fed_ticks = 0
        self._floor = _UNSET
