"""Which failed webhook attempts get a log line: a pure policy, no clock of its own.

At info the worker logs each failed attempt (URL, status or error, next retry), so a
newcomer sees at once that their receiver is down. A receiver that stays down with
many calls queued would then write a line per attempt, thousands a minute; so each URL
gets at most one line per ``interval`` seconds, and that line says how many failures
it stands for. When a URL that was failing delivers again, one line says so (the
events delivered now may be minutes old: docs/logging.md, "Late receivers").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAILURE_LOG_INTERVAL_SECS", "MAX_TRACKED_URLS", "FailureLog"]

#: At most one "attempt failed" line per URL in this many seconds.
FAILURE_LOG_INTERVAL_SECS = 1.0
#: URLs whose failures are tracked at once; past it the oldest are forgotten.
MAX_TRACKED_URLS = 1000


@dataclass(slots=True)
class _UrlFailures:
    logged_at: float
    unlogged: int = 0  # failures since the last line
    since_success: int = 0  # failures since the last delivery


class FailureLog:
    """Decides when a URL's failed attempt is logged.

    Args:
        interval: the least time between two lines for one URL.
        max_urls: how many URLs it remembers (oldest first out).
    """

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL_SECS,
                 max_urls: int = MAX_TRACKED_URLS) -> None:
        self.interval = interval
        self.max_urls = max_urls
        self._urls: dict[str, _UrlFailures] = {}

    def failed(self, url: str, now: float) -> int | None:
        """An attempt to ``url`` failed at ``now``.

        Returns:
            ``None`` to stay quiet, else how many failures the line stands for
            (1, or more when some were kept quiet).
        """
        entry = self._urls.get(url)
        if entry is None:
            if len(self._urls) >= self.max_urls:
                del self._urls[next(iter(self._urls))]
            self._urls[url] = _UrlFailures(logged_at=now, since_success=1)
            return 1
        entry.since_success += 1
        entry.unlogged += 1
        if now - entry.logged_at < self.interval:
            return None
        count, entry.unlogged, entry.logged_at = entry.unlogged, 0, now
        return count

    def delivered(self, url: str) -> int:
        """An attempt to ``url`` succeeded: how many had failed since the last success
        (0 when it was not failing)."""
        entry = self._urls.pop(url, None)
        return entry.since_success if entry is not None else 0
