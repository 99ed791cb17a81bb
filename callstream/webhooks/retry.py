"""When to try a failed webhook again, and at which URL: a pure policy, tested by table.

Attempts are counted per *round*: a new event starts round one, and a redelivery from the
delivery log starts a fresh round (the event's total attempt count, sent as
``meta.attempt``, keeps growing across rounds).

Without a failover URL, attempt ``k`` (1-based) that fails is followed by attempt
``k + 1`` after ``delays[k - 1]`` seconds, jittered; after ``len(delays) + 1`` attempts
the event is given up (marked failed, kept in the log).

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

#: The default schedule: exponential, about four minutes in all (9 attempts).
DEFAULT_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0)
DEFAULT_JITTER = 0.2


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
        rng: the random source (seed it in tests).
    """

    delays: tuple[float, ...] = DEFAULT_DELAYS
    jitter: float = DEFAULT_JITTER
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.delays):
            raise ValueError("retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    @classmethod
    def from_settings(cls, delays: Sequence[float], jitter: float) -> RetryPolicy:
        return cls(delays=tuple(float(d) for d in delays), jitter=jitter)

    def max_attempts(self, *, has_failover: bool) -> int:
        """Attempts in one round before the event is given up."""
        return (len(self.delays) + 1) * (2 if has_failover else 1)

    @staticmethod
    def uses_failover(attempt: int, *, has_failover: bool) -> bool:
        """Whether the round's ``attempt``-th attempt (1-based) goes to the failover URL."""
        return has_failover and attempt % 2 == 0

    def next_delay(
        self, attempts: int, error: DeliveryFailed, *, has_failover: bool = False
    ) -> float | None:
        """Seconds until the next attempt, or ``None`` to give up.

        Args:
            attempts: attempts made in this round, counting the one that just failed (≥ 1).
            error: why it failed.
            has_failover: whether the event has a failover URL distinct from its primary.
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
        if index >= len(self.delays):
            return None
        delay = self.delays[index]
        if self.jitter:
            delay *= self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        if error.retry_after is not None and self.delays:
            delay = max(delay, min(error.retry_after, max(self.delays)))
        return delay
