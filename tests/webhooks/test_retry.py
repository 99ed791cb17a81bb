"""RetryPolicy: the schedule, jitter, failover alternation and give-up, by table."""

from __future__ import annotations

import random

import pytest

from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from callstream.webhooks.retry import DEFAULT_DELAYS, RetryPolicy, exponential_delays

SERVER_ERROR = DeliveryFailed(FailureKind.HTTP_STATUS, "boom", status_code=500)
REFUSED = DeliveryFailed(FailureKind.CONNECT, "refused")
BAD_URL = DeliveryFailed(FailureKind.INVALID_URL, "bad", retryable=False)
SLOW_DOWN = DeliveryFailed(FailureKind.HTTP_STATUS, "busy", status_code=429, retry_after=7.0)

POLICY = RetryPolicy(delays=(1.0, 2.0, 4.0), jitter=0.0, budget_secs=0.0)


@pytest.mark.parametrize(
    ("attempts", "error", "has_failover", "expected"),
    [
        # No failover: delays[k-1] after the k-th failure, then give up.
        (1, SERVER_ERROR, False, 1.0),
        (2, REFUSED, False, 2.0),
        (3, SERVER_ERROR, False, 4.0),
        (4, SERVER_ERROR, False, None),
        (9, SERVER_ERROR, False, None),
        (1, BAD_URL, False, None),
        # Failover: primary failure -> failover at once; failover failure -> next delay.
        (1, SERVER_ERROR, True, 0.0),
        (2, SERVER_ERROR, True, 1.0),
        (3, REFUSED, True, 0.0),
        (4, REFUSED, True, 2.0),
        (6, SERVER_ERROR, True, 4.0),
        (7, SERVER_ERROR, True, 0.0),
        (8, SERVER_ERROR, True, None),
        # A non-retryable primary still tries the failover; a non-retryable failover ends it.
        (1, BAD_URL, True, 0.0),
        (2, BAD_URL, True, None),
        # Retry-After lengthens a delay, up to the longest in the schedule.
        (1, SLOW_DOWN, False, 4.0),
        (3, DeliveryFailed(FailureKind.HTTP_STATUS, "x", retry_after=0.5), False, 4.0),
    ],
)
def test_next_delay(
    attempts: int, error: DeliveryFailed, has_failover: bool, expected: float | None
) -> None:
    assert POLICY.next_delay(attempts, error, has_failover=has_failover) == expected


@pytest.mark.parametrize(
    ("attempt", "has_failover", "failover"),
    [(1, False, False), (2, False, False), (1, True, False), (2, True, True), (3, True, False),
     (4, True, True)],
)
def test_alternation(attempt: int, has_failover: bool, failover: bool) -> None:
    assert RetryPolicy.uses_failover(attempt, has_failover=has_failover) is failover


def test_max_attempts_match_the_schedule() -> None:
    for has_failover in (False, True):
        n = POLICY.fast_attempts(has_failover=has_failover)
        delays = [POLICY.next_delay(k, SERVER_ERROR, has_failover=has_failover)
                  for k in range(1, n + 1)]
        assert all(d is not None for d in delays[:-1])
        assert delays[-1] is None


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy(delays=(10.0,), jitter=0.2, rng=random.Random(1))
    samples = {policy.next_delay(1, SERVER_ERROR) for _ in range(200)}
    assert all(s is not None and 8.0 <= s <= 12.0 for s in samples)
    assert len(samples) > 100


def test_default_schedule_is_exponential_and_a_few_minutes() -> None:
    assert exponential_delays(1.0, 2.0, count=8, cap=120.0) == DEFAULT_DELAYS
    assert 180 <= sum(DEFAULT_DELAYS) <= 600


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(delays=(-1.0,))
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)
    with pytest.raises(ValueError, match="at least 1"):
        POLICY.next_delay(0, SERVER_ERROR)


# -- the extended back-off: after the fast schedule, until the budget is spent -------------

EXTENDED = RetryPolicy(delays=(1.0, 2.0), jitter=0.0, budget_secs=100.0, max_delay=10.0)


@pytest.mark.parametrize(
    ("attempts", "elapsed", "has_failover", "expected"),
    [
        (1, 0.0, False, 1.0),  # the fast schedule as before
        (2, 1.0, False, 2.0),
        (3, 3.0, False, 4.0),  # then doubling from the last delay...
        (4, 7.0, False, 8.0),
        (5, 15.0, False, 10.0),  # ...up to max_delay
        (20, 95.0, False, 5.0),  # the last wait ends on the budget's end
        (21, 100.0, False, None),  # an attempt at or past the budget ends it
        (6, 0.0, True, 4.0),  # with a failover: counted in (primary, failover) rounds
        (7, 99.0, True, 0.0),  # a failed primary still goes to the failover at once
        (8, 100.0, True, None),
    ],
)
def test_extended_backoff(
    attempts: int, elapsed: float, has_failover: bool, expected: float | None
) -> None:
    got = EXTENDED.next_delay(attempts, SERVER_ERROR, has_failover=has_failover,
                              elapsed=elapsed)
    assert got == expected


def test_extended_backoff_honours_retry_after_up_to_max_delay() -> None:
    slow = DeliveryFailed(FailureKind.HTTP_STATUS, "busy", status_code=429, retry_after=60.0)
    assert EXTENDED.next_delay(3, slow, elapsed=3.0) == 10.0
    assert EXTENDED.next_delay(3, BAD_URL, elapsed=3.0) is None  # never retryable


def test_default_budget_is_a_day_of_hourly_retries() -> None:
    policy = RetryPolicy(jitter=0.0)
    elapsed, attempts = 0.0, 1
    while (delay := policy.next_delay(attempts, SERVER_ERROR, elapsed=elapsed)) is not None:
        elapsed += delay
        attempts += 1
        assert delay <= 3600.0
    assert elapsed == 86400.0  # the last attempt falls on the budget's end
    assert 30 <= attempts <= 40


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="budget_secs"):
        RetryPolicy(budget_secs=-1.0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(max_delay=0.0)
