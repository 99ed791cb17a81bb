"""Prometheus metrics of the console."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONSOLE_SUBSCRIBERS = Gauge("callstream_console_feeds", "Consoles connected to the live feed")
CONSOLE_DROPPED = Counter(
    "callstream_console_feed_dropped_total",
    "Feed messages dropped because a console did not read them (MAX_QUEUED_MESSAGES)",
)
CONSOLE_LOGINS = Counter(
    "callstream_console_logins_total", "Console sign-in attempts", ["method", "outcome"]
)
