"""Per-stream counters on ``/metrics`` (Prometheus), labelled by ``stream_id``.

A stream's series exist while it runs and are removed a while after it ends, so a
long-lived server does not accumulate one series per stream ever made; the unlabelled
totals keep the history.

The counts of every write (frames and audio bytes sent, two to three per stream per
20 ms) stay plain integers on the stream's :class:`StreamCounters` and are read when
``/metrics`` is scraped (:class:`SentCollector`): a Prometheus ``inc`` takes a lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

FRAMES_DROPPED = Counter("callstream_stream_frames_dropped_total",
                         "Media frames a stream dropped because its consumer was slow",
                         ["stream_id"])
CONNECT_SECONDS = Gauge("callstream_stream_connect_seconds",
                        "Time the WebSocket connect and upgrade took", ["stream_id"])
ACTIVE = Gauge("callstream_streams_active", "Streams running in this process")
STREAMS = Counter("callstream_streams_total", "Streams ended, by outcome", ["outcome"])
STALLED = Counter("callstream_streams_stalled_total",
                  "Streams cut off because their consumer stopped reading (no pong in time)")
ALL_FRAMES_DROPPED = Counter("callstream_stream_frames_dropped_all_total",
                             "Media frames dropped by back-pressure, all streams")

HEAD_DROPPED = Counter("callstream_stream_frames_dropped_before_start_total",
                       "Media frames dropped from a stream's buffer (oldest first) before its "
                       "socket was open and start sent, all streams")

RECONNECT_DROPPED = Counter("callstream_stream_frames_dropped_reconnecting_total",
                            "Media frames dropped from a stream's buffer (oldest first) while "
                            "its socket was down and callstream reconnecting, all streams")
RECONNECT_ATTEMPTS = Counter("callstream_stream_reconnect_attempts_total",
                             "Connects tried to resume a stream whose socket dropped")
RECONNECTS = Counter("callstream_stream_reconnects_total",
                     "Streams resumed on a new socket after a drop")
REPLAYED = Counter("callstream_stream_frames_replayed_total",
                   "Media frames buffered while a stream's socket was down, sent after resuming")
OVERDUE = Counter("callstream_stream_frames_overdue_total",
                  "Live media frames dropped (oldest first) because they were older than "
                  "CALLSTREAM_STREAM_LATENCY_BOUND_SECS when their turn came", ["stream_id"])
ALL_OVERDUE = Counter("callstream_stream_frames_overdue_all_total",
                      "Live media frames dropped as overdue, all streams")

_SERIES = (OVERDUE, FRAMES_DROPPED, CONNECT_SECONDS)


class SentCollector(Collector):
    """``callstream_stream_frames_sent_total{stream_id}``,
    ``callstream_stream_media_bytes_total{stream_id}`` and
    ``callstream_stream_frames_sent_all_total``, read from the streams' counters."""

    def __init__(self) -> None:
        self.shown: dict[int, StreamCounters] = {}  # by id(): until forget()
        self.forgotten_frames = 0  # sent by the streams no longer shown

    def collect(self) -> Iterator[Metric]:
        per_stream: dict[str, tuple[int, int]] = {}  # two streams may share an id
        total = self.forgotten_frames
        for counters in list(self.shown.values()):
            frames, audio = per_stream.get(counters.stream_id, (0, 0))
            per_stream[counters.stream_id] = (frames + counters.frames_sent,
                                              audio + counters.bytes_sent)
            total += counters.frames_sent
        sent = CounterMetricFamily("callstream_stream_frames_sent",
                                   "WebSocket frames sent to a stream's consumer",
                                   labels=["stream_id"])
        media = CounterMetricFamily("callstream_stream_media_bytes",
                                     "Audio payload bytes sent to a stream's consumer",
                                     labels=["stream_id"])
        for stream_id, (frames, audio) in per_stream.items():
            sent.add_metric([stream_id], frames)
            media.add_metric([stream_id], audio)
        yield sent
        yield media
        yield CounterMetricFamily("callstream_stream_frames_sent_all",
                                  "WebSocket frames sent, all streams", value=total)


SENT = SentCollector()
REGISTRY.register(SENT)


class StreamCounters:
    """One stream's counters, mirrored to Prometheus as they change."""

    __slots__ = ("_dropped", "_live", "_overdue", "bytes_sent",
                 "connect_seconds", "frames_dropped", "frames_overdue", "frames_replayed",
                 "frames_sent", "reconnects", "stream_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_sent = 0
        self.frames_overdue = 0
        self.frames_replayed = 0
        self.reconnects = 0
        self.connect_seconds: float | None = None
        self._live = False
        self._overdue = OVERDUE.labels(stream_id)
        self._dropped = FRAMES_DROPPED.labels(stream_id)
        SENT.shown[id(self)] = self

    def connected(self, seconds: float) -> None:
        self.connect_seconds = seconds
        CONNECT_SECONDS.labels(self.stream_id).set(seconds)
        if not self._live:
            self._live = True
            ACTIVE.inc()

    def sent(self, frames: int, payload_bytes: int = 0) -> None:
        """``frames`` went out in one write, ``payload_bytes`` of audio in them (on
        ``/metrics`` when scraped: :class:`SentCollector`)."""
        self.frames_sent += frames
        self.bytes_sent += payload_bytes

    def dropped(self, total: int, *, before_start: bool = False,
                reconnecting: bool = False) -> None:
        """The encoder's drop count so far (monotonic); records the increase.

        ``before_start``: the drops overflowed the buffer held for a socket not open yet;
        ``reconnecting``: the one held while a dropped socket is being replaced.
        """
        delta = total - self.frames_dropped
        if delta > 0:
            self.frames_dropped = total
            self._dropped.inc(delta)
            ALL_FRAMES_DROPPED.inc(delta)
            if before_start:
                HEAD_DROPPED.inc(delta)
            if reconnecting:
                RECONNECT_DROPPED.inc(delta)

    def overdue(self, frames: int) -> None:
        """Live frames dropped because they were older than the latency bound."""
        self.frames_overdue += frames
        self._overdue.inc(frames)
        ALL_OVERDUE.inc(frames)

    def reconnect_attempt(self) -> None:
        RECONNECT_ATTEMPTS.inc()

    def resumed(self, replayed: int) -> None:
        """Back on a new socket; ``replayed`` frames were buffered while it was down."""
        self.reconnects += 1
        self.frames_replayed += replayed
        RECONNECTS.inc()
        REPLAYED.inc(replayed)

    def stalled(self) -> None:
        """The consumer answered no ping in time; the stream is being cut off."""
        STALLED.inc()

    def ended(self, outcome: str) -> None:
        """The stream is over (``stopped`` or ``failed``)."""
        STREAMS.labels(outcome).inc()
        if self._live:
            self._live = False
            ACTIVE.dec()

    def forget(self) -> None:
        """Drop the stream's labelled series (a while after it ended)."""
        if SENT.shown.pop(id(self), None) is not None:
            SENT.forgotten_frames += self.frames_sent
        for metric in _SERIES:
            try:
                metric.remove(self.stream_id)
            except KeyError:
                continue

    def as_dict(self) -> dict[str, float | int | None]:
        return {"frames_sent": self.frames_sent, "frames_dropped": self.frames_dropped,
                "frames_overdue": self.frames_overdue, "frames_replayed": self.frames_replayed,
                "reconnects": self.reconnects, "bytes_sent": self.bytes_sent,
                "connect_seconds": self.connect_seconds}
