"""The console's live feed: calls, audio levels, webhook events and deliveries as
Server-Sent Events.

Theory of operation
-------------------
The feed costs nothing while no console is open. The first subscriber starts one
ticker task; the last one leaving stops it and lets go of every meter.

* **Webhook events** — :meth:`ConsoleFeed.committed` is a listener of
  :meth:`CallControl.commit`, which every webhook event passes through (call,
  stream, fork and transcription events alike), so the page sees each event the
  moment it is stored, before it is delivered. Transcript lines are
  ``call.transcription`` events.
* **Calls** — every :data:`CALLS_INTERVAL_SECS`, and within one level tick of any
  commit, the list of live calls (state, duration, running features).
* **Levels** — for each live call with media, one inline frame callback on its hub
  leg (both tracks) that only keeps a reference to the last frame's PCM; every
  :data:`LEVEL_INTERVAL_SECS` the ticker turns those into RMS dBFS, off the media
  path. The media path pays one Python call per frame, and only while a console
  is connected.
* **Deliveries** — every :data:`DELIVERIES_INTERVAL_SECS` the newest
  :data:`DELIVERY_LOG_SIZE` entries of the delivery log, sent when they changed.

Each subscriber has a bounded queue of encoded messages (:data:`MAX_QUEUED_MESSAGES`):
a browser that does not read loses its oldest messages (counted, logged once), and
never slows the server or the other consoles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from callstream.console.levels import rms_dbfs
from callstream.console.metrics import CONSOLE_DROPPED, CONSOLE_SUBSCRIBERS
from callstream.media.hub import INBOUND, AudioFrame, MediaHub, Subscription, Track
from callstream.store.outbox import DeliveryFilter, DeliveryRecord, Outbox
from callstream.store.records import Change
from callstream.timefmt import iso

if TYPE_CHECKING:
    from callstream.calls.control import CallControl
    from callstream.calls.model import Call

log = logging.getLogger(__name__)

#: Consoles connected at once; one more is refused (503).
MAX_SUBSCRIBERS = 16
#: Messages waiting per console; beyond it the oldest is dropped.
MAX_QUEUED_MESSAGES = 512
#: How often the level meters are sampled.
LEVEL_INTERVAL_SECS = 0.15
#: How often the call list is sent when nothing changed (durations move on).
CALLS_INTERVAL_SECS = 1.0
#: How often the delivery log is read from the store (sent only when it changed).
DELIVERIES_INTERVAL_SECS = 1.0
#: Entries of the delivery log the console shows.
DELIVERY_LOG_SIZE = 25
#: A comment line keeps idle connections (and proxies) awake this often.
KEEPALIVE_SECS = 15.0


class FeedFull(Exception):
    """:data:`MAX_SUBSCRIBERS` consoles are already connected."""


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (orjson writes no newlines, so ``data`` is one line)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Subscriber:
    """One connected console: a bounded queue of encoded events."""

    def __init__(self, max_messages: int = MAX_QUEUED_MESSAGES) -> None:
        self._queue: deque[bytes] = deque(maxlen=max_messages)
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def put(self, message: bytes) -> None:
        if self.closed:
            return
        if len(self._queue) == self._queue.maxlen:
            if not self.dropped:
                log.warning("console: a browser is not reading its feed; dropping its "
                            "oldest messages (MAX_QUEUED_MESSAGES=%d)", self._queue.maxlen)
            self.dropped += 1
            CONSOLE_DROPPED.inc()
        self._queue.append(message)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, idle_secs: float) -> bytes | None:
        """The next message; ``b""`` after ``idle_secs`` idle seconds; ``None`` once closed."""
        if not self._queue and not self.closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), idle_secs)
        if self._queue:
            return self._queue.popleft()
        return None if self.closed else b""


class _Meter:
    """The last frame of each track of one leg, kept by an inline hub callback."""

    __slots__ = ("hub", "inbound", "leg", "outbound", "subscription")

    def __init__(self, hub: MediaHub, leg: str) -> None:
        self.hub = hub
        self.leg = leg
        self.inbound: bytes | None = None
        self.outbound: bytes | None = None
        self.subscription: Subscription = hub.add_frame_callback(leg, Track.BOTH, self.frame)

    def frame(self, frame: AudioFrame) -> None:  # on the media path: keep it this small
        if frame.track == INBOUND:
            self.inbound = frame.pcm
        else:
            self.outbound = frame.pcm

    def read(self) -> dict[str, float]:
        levels = {"inbound": rms_dbfs(self.inbound), "outbound": rms_dbfs(self.outbound)}
        self.inbound = self.outbound = None
        return levels


def _seconds_since(stamp: str | None, now: float) -> float | None:
    if not stamp:
        return None
    try:
        return round(max(0.0, now - datetime.fromisoformat(stamp).timestamp()), 1)
    except ValueError:
        return None


def call_view(call: Call, now: float) -> dict[str, Any]:
    """What the console shows of a live call."""
    record = call.record
    return {
        "call_control_id": call.id,
        "direction": record.direction,
        "from": record.from_,
        "to": record.to,
        "state": str(call.state),
        "start_time": record.start_time,
        "answer_time": record.answer_time,
        "duration_s": _seconds_since(record.start_time, now),
        "talk_s": _seconds_since(record.answer_time, now),
        "bridged_with": call.bridged_with,
        "streams": sorted(k.partition(":")[2] for k in call.features if k.startswith("stream:")),
        "fork": "fork" in call.features,
        "transcription": "transcription" in call.features,
    }


def delivery_view(record: DeliveryRecord) -> dict[str, Any]:
    """A delivery log entry as the console lists it."""
    return {
        "id": record.id,
        "event_type": record.event_type,
        "call_control_id": record.call_control_id,
        "status": record.status.value,
        "attempts": record.attempts,
        "last_status": record.last_status,
        "last_error": record.last_error,
        "delivered_to": record.delivered_to,
        "created_at": iso(record.created_at),
    }


class ConsoleFeed:
    """Everything the console shows, pushed to every connected console."""

    def __init__(self, calls: CallControl, outbox: Outbox, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.calls = calls
        self.outbox = outbox
        self._wall = wall_clock
        self._subscribers: list[Subscriber] = []
        self._meters: dict[str, _Meter] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._calls_dirty = True
        self._deliveries: list[dict[str, Any]] | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- subscribers ---------------------------------------------------------

    def subscribe(self) -> Subscriber:
        """A new console; it gets the full picture on the next tick.

        Raises:
            FeedFull: :data:`MAX_SUBSCRIBERS` are connected already.
        """
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            log.warning("console: refused a feed connection: %d already open "
                        "(MAX_SUBSCRIBERS)", MAX_SUBSCRIBERS)
            raise FeedFull(f"{MAX_SUBSCRIBERS} consoles are connected already")
        sub = Subscriber()
        self._subscribers.append(sub)
        CONSOLE_SUBSCRIBERS.set(len(self._subscribers))
        self._calls_dirty = True
        self._deliveries = None  # resend the log, so the new console has it
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        CONSOLE_SUBSCRIBERS.set(len(self._subscribers))
        if not self._subscribers:
            self._release_meters()

    async def close(self) -> None:
        """Close every console's feed (before the HTTP server waits for its responses)."""
        for sub in list(self._subscribers):
            self.unsubscribe(sub)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def publish(self, message: bytes) -> None:
        for sub in self._subscribers:
            sub.put(message)

    # -- sources -------------------------------------------------------------

    def committed(self, change: Change) -> None:
        """Listener of :meth:`CallControl.commit`: each stored webhook event, at once."""
        if not self._subscribers:
            return
        self._calls_dirty = True
        for event in change.events:
            self.publish(sse("webhook", event.data))

    def calls_message(self) -> bytes:
        now = self._wall()
        live = [call_view(c, now) for c in list(self.calls.calls.values()) if c.alive]
        live.sort(key=lambda c: c["start_time"])
        return sse("calls", live)

    def levels_message(self) -> bytes | None:
        """Current levels of every metered leg; attaches and detaches meters as calls
        come and go."""
        live: dict[str, tuple[MediaHub, str]] = {}
        telephony = self.calls.telephony
        for call in list(self.calls.calls.values()):
            if not call.alive:
                continue
            try:
                media = telephony.media(call)
            except KeyError:
                continue
            live[call.id] = (media.hub, media.leg)
        for call_id in [c for c in self._meters if live.get(c) != (
                self._meters[c].hub, self._meters[c].leg)]:
            self._meters.pop(call_id).subscription.close()
        for call_id, (hub, leg) in live.items():
            if call_id not in self._meters:
                try:
                    self._meters[call_id] = _Meter(hub, leg)
                except Exception:  # the leg left the hub between the two looks
                    log.debug("console: no meter for %s", call_id, exc_info=True)
        if not self._meters:
            return None
        return sse("levels", {cid: m.read() for cid, m in self._meters.items()})

    async def deliveries_message(self) -> bytes | None:
        records, _total = await self.outbox.list_deliveries(
            DeliveryFilter(), page_size=DELIVERY_LOG_SIZE)
        view = [delivery_view(r) for r in records]
        if view == self._deliveries:
            return None
        self._deliveries = view
        return sse("deliveries", view)

    def _release_meters(self) -> None:
        for meter in self._meters.values():
            meter.subscription.close()
        self._meters.clear()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_calls = next_deliveries = loop.time()
        try:
            while self._subscribers:
                now = loop.time()
                try:
                    if self._calls_dirty or now >= next_calls:
                        self._calls_dirty = False
                        next_calls = now + CALLS_INTERVAL_SECS
                        self.publish(self.calls_message())
                    levels = self.levels_message()
                    if levels is not None:
                        self.publish(levels)
                except Exception:  # a bug here must not end the feed for good
                    log.exception("console: feed tick failed")
                if self._deliveries is None or now >= next_deliveries:
                    next_deliveries = now + DELIVERIES_INTERVAL_SECS
                    try:
                        message = await self.deliveries_message()
                    except Exception:  # the store is busy or closing: try next time
                        log.debug("console: delivery log unavailable", exc_info=True)
                    else:
                        if message is not None:
                            self.publish(message)
                await asyncio.sleep(LEVEL_INTERVAL_SECS)
        finally:
            self._release_meters()

