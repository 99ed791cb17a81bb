"""When to try a failed webhook again, and at which URL: a pure policy, tested by table.

Attempts are counted per *round*: a new event starts round one, and a redelivery from the
delivery log starts a fresh round (the event's total attempt count, sent as
``meta.attempt``, keeps growing across rounds).

Without a failover URL, attempt ``k`` (1-based) that fails is followed by attempt
``k + 1`` after ``delays[k - 1]`` seconds, jittered: the *fast schedule* (Telnyx's
pace, about four minutes by default). When it is spent the event is not dropped: the
*extended back-off* keeps doubling the last delay, up to ``max_delay``, until
``budget_secs`` have passed since the round's first attempt (24 h by default, like the
delivery systems users trust). The last wait is shortened so that the final attempt falls
on the budget's end; the event is given up (marked failed, kept in the log, counted) only
when that attempt fails too. ``budget_secs = 0`` gives up after the fast schedule::

    delays   1 2 4 8 16 32 64 120 | 240 480 960 1920 3600 3600 ... | (budget's end)
             fast schedule         | extended back-off               | failed

With a failover URL, attempts alternate: odd attempts go to the primary URL, even ones to
the failover. When the primary fails, the failover is tried **at once** (Telnyx "non-200
triggers redelivery to the failover URL"); when the failover fails too, the next primary
attempt waits for the next delay of the schedule. So the schedule counts rounds of
(primary, failover) pairs, and an event gets ``2 * (len(delays) + 1)`` attempts::

    attempt   1        2         3          4         5          6   ...
    url       primary  failover  primary    failover  primary    failover
    waits     -        0         delays[0]  0         delays[1]  0

An error that can never succeed at its URL (``retryable=False``: a malformed URL, no URL)
ends the event at once, except a primary error when a failover exists: the failover is
still tried. A receiver's ``Retry-After`` can lengthen a wait, up to the schedule's longest
delay, never shorten it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from callstream.webhooks.exceptions import DeliveryFailed

#: The default fast schedule: exponential, about four minutes in all (9 attempts).
DEFAULT_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0)
DEFAULT_JITTER = 0.2
#: How long after a round's first attempt the extended back-off keeps trying.
DEFAULT_BUDGET_SECS = 86400.0
#: The longest wait of the extended back-off.
DEFAULT_MAX_DELAY_SECS = 3600.0
#: Each extended delay is this many times the one before.
BACKOFF_FACTOR = 2.0


def exponential_delays(
    first: float, factor: float = 2.0, *, count: int, cap: float | None = None
) -> tuple[float, ...]:
    """A back-off schedule ``first, first*factor, ...`` of ``count`` delays, each ≤ ``cap``."""
    if first <= 0 or factor < 1 or count < 0:
        raise ValueError("need first > 0, factor >= 1, count >= 0")
    out = []
    delay = first
    for _ in range(count):
        out.append(delay if cap is None else min(delay, cap))
        delay *= factor
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry schedule with jitter, and the primary/failover alternation.

    Args:
        delays: seconds to wait before each retry round (see the module docstring).
        jitter: each delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
        budget_secs: how long after the round's first attempt the extended back-off keeps
            trying once ``delays`` are spent; 0 gives up after ``delays``.
        max_delay: the longest wait of the extended back-off.
        rng: the random source (seed it in tests).
    """

    delays: tuple[float, ...] = DEFAULT_DELAYS
    jitter: float = DEFAULT_JITTER
    budget_secs: float = DEFAULT_BUDGET_SECS
    max_delay: float = DEFAULT_MAX_DELAY_SECS
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.delays):
            raise ValueError("retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")
        if self.budget_secs < 0:
            raise ValueError("budget_secs must be >= 0")
        if self.max_delay <= 0:
            raise ValueError("max_delay must be > 0")

    @classmethod
    def from_settings(
        cls,
        delays: Sequence[float],
        jitter: float,
        budget_secs: float = DEFAULT_BUDGET_SECS,
        max_delay: float = DEFAULT_MAX_DELAY_SECS,
    ) -> RetryPolicy:
        return cls(delays=tuple(float(d) for d in delays), jitter=jitter,
                   budget_secs=budget_secs, max_delay=max_delay)

    def fast_attempts(self, *, has_failover: bool) -> int:
        """Attempts in a round's fast schedule (all of them when ``budget_secs`` is 0)."""
        return (len(self.delays) + 1) * (2 if has_failover else 1)

    def _extended_delay(self, index: int) -> float:
        """The wait after the ``index``-th failed round (0-based), ``index >= len(delays)``."""
        last = self.delays[-1] if self.delays and self.delays[-1] > 0 else 1.0
        steps = index - len(self.delays) + 1
        # Capped before it can overflow: 2**64 times any delay is past any budget.
        return min(self.max_delay, last * BACKOFF_FACTOR ** min(steps, 64))

    @staticmethod
    def uses_failover(attempt: int, *, has_failover: bool) -> bool:
        """Whether the round's ``attempt``-th attempt (1-based) goes to the failover URL."""
        return has_failover and attempt % 2 == 0

    def next_delay(
        self,
        attempts: int,
        error: DeliveryFailed,
        *,
        has_failover: bool = False,
        elapsed: float = 0.0,
    ) -> float | None:
        """Seconds until the next attempt, or ``None`` to give up.

        Args:
            attempts: attempts made in this round, counting the one that just failed (≥ 1).
            error: why it failed.
            has_failover: whether the event has a failover URL distinct from its primary.
            elapsed: seconds from the round's first attempt to now (the budget's clock).
        """
        if attempts < 1:
            raise ValueError("attempts counts the failed attempt, so it is at least 1")
        if has_failover:
            if attempts % 2 == 1:  # the primary failed: straight to the failover
                return 0.0
            if not error.retryable:
                return None
            index = attempts // 2 - 1
        else:
            if not error.retryable:
                return None
            index = attempts - 1
        left: float | None = None  # budget left, once in the extended back-off
        if index < len(self.delays):
            delay = self.delays[index]
            longest = max(self.delays)
        else:
            left = self.budget_secs - elapsed
            if left <= 0:
                return None
            delay = self._extended_delay(index)
            longest = self.max_delay
        if self.jitter:
            delay *= self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        if error.retry_after is not None and longest:
            delay = max(delay, min(error.retry_after, longest))
        if left is not None:
            delay = min(delay, left)  # the last attempt falls on the budget's end
        return delay
