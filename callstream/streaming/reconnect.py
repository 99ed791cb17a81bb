"""Stream reconnect: when a consumer's socket drops, dial ``stream_url`` again for a while.

A callstream extension (Telnyx ends the stream when its socket drops): opt-in per stream
with ``stream_reconnect_seconds`` on streaming_start, dial and answer, or for every stream
with ``CALLSTREAM_STREAM_RECONNECT_SECS``; 0, the default, keeps Telnyx's behaviour.

Only a drop reconnects: no close frame (a reset, a dead peer, code 1006) or any close
code but 1000/1001. A clean close (1000 going away as normal, 1001) is the consumer's
choice and ends the stream as without reconnect. Attempts follow :func:`backoff` until
one upgrade succeeds or the window passes; the session then sends ``connected`` and
``start`` again (``start.resumed: true``, same ``stream_id``, numbers going on) and the
audio buffered meanwhile (docs/streaming.md, "Reconnect").

:func:`backoff` is pure; :func:`reconnect` drives the attempts with a given opener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

__all__ = [
    "CLEAN_CLOSE_CODES",
    "FIRST_DELAY",
    "MAX_DELAY",
    "WINDOW_PASSED",
    "backoff",
    "reconnect",
]

log = logging.getLogger(__name__)

#: Wait before the first attempt; each later one waits twice as long, up to MAX_DELAY.
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
#: Close codes a consumer ends its stream with on purpose: no reconnect.
CLEAN_CLOSE_CODES = frozenset({1000, 1001})
#: ``failure_reason`` of ``streaming.failed`` when no reconnect succeeded in the window.
WINDOW_PASSED = "reconnect_window_passed"

T = TypeVar("T")


def backoff(first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """The waits before each attempt: ``first``, doubling, then ``cap`` forever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


async def reconnect(
    open_socket: Callable[[], Awaitable[T]],
    window: float,
    *,
    clock: Callable[[], float],
    on_attempt: Callable[[], None],
    label: str = "stream",
) -> T | None:
    """Call ``open_socket`` after each :func:`backoff` wait until it succeeds.

    Returns its result, or None once ``window`` seconds have passed (an attempt still
    under way then is cancelled). Failures before that are logged and retried.
    """
    deadline = clock() + window
    for attempt, delay in enumerate(backoff(), start=1):
        if clock() + delay >= deadline:  # no attempt fits: fail when the window ends
            await asyncio.sleep(max(0.0, deadline - clock()))
            return None
        await asyncio.sleep(delay)
        on_attempt()
        try:
            async with asyncio.timeout(deadline - clock()):
                return await open_socket()
        except TimeoutError:
            return None
        except Exception as exc:  # refused, reset, upgrade refused: try again
            log.info("%s: reconnect attempt %d failed: %s", label, attempt,
                     exc or type(exc).__name__)
    raise AssertionError("unreachable: backoff() never ends")
