"""The per-source admission pieces: token buckets, counters, source keys."""

from __future__ import annotations

import pytest

from callstream.sip.admission import (
    AdmissionLimits,
    SourceCounter,
    SourceRateLimiter,
    source_key,
)


def test_bucket_allows_a_burst_then_the_rate() -> None:
    limiter = SourceRateLimiter(rate=5.0, burst=3)
    assert [limiter.admit("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert not limiter.admit("10.0.0.1", 0.1)  # half a token earned: not enough
    assert limiter.admit("10.0.0.1", 0.2)  # one token: 1 / 5 s after the burst
    assert not limiter.admit("10.0.0.1", 0.2)


def test_sources_have_their_own_buckets() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=1)
    assert limiter.admit("10.0.0.1", 0.0)
    assert not limiter.admit("10.0.0.1", 0.0)
    assert limiter.admit("10.0.0.2", 0.0)


def test_refill_stops_at_the_burst() -> None:
    limiter = SourceRateLimiter(rate=100.0, burst=2)
    limiter.admit("a", 0.0)
    assert [limiter.admit("a", 1000.0) for _ in range(3)] == [True, True, False]


def test_refused_requests_cost_no_tokens() -> None:
    """A source that keeps flooding earns its rate back, no more and no less."""
    limiter = SourceRateLimiter(rate=10.0, burst=1)
    admitted = sum(limiter.admit("a", t / 1000) for t in range(0, 1000))  # 1,000/s for 1 s
    assert admitted == 10  # the burst, then one per 100 ms


def test_clock_going_backwards_earns_nothing() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=1)
    assert limiter.admit("a", 10.0)
    assert not limiter.admit("a", 5.0)


def test_rate_zero_is_off() -> None:
    limiter = SourceRateLimiter(rate=0.0, burst=1)
    assert all(limiter.admit("a", 0.0) for _ in range(1000))
    assert len(limiter) == 0


def test_table_is_bounded_least_recently_seen_first() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=1, max_sources=3)
    for source in ("a", "b", "c"):
        assert limiter.admit(source, 0.0)
    assert not limiter.admit("a", 0.0)  # "a" is now the most recently seen
    assert limiter.admit("d", 0.0)  # evicts "b"
    assert len(limiter) == 3 and limiter.evicted == 1
    assert not limiter.admit("a", 0.0) and not limiter.admit("c", 0.0)
    assert limiter.admit("b", 0.0)  # forgotten: a fresh bucket


def test_counter_keeps_only_live_sources() -> None:
    counter = SourceCounter()
    counter.add("a")
    counter.add("a")
    counter.add("b")
    assert (counter.count("a"), counter.count("b"), counter.count("c")) == (2, 1, 0)
    counter.remove("a")
    counter.remove("b")
    counter.remove("b")  # more removes than adds: stays at zero
    assert (counter.count("a"), counter.count("b"), len(counter)) == (1, 0, 1)


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_source_key(host: str, key: str) -> None:
    assert source_key(host) == key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_sec": -1.0}, "rate_per_sec must be >= 0, not -1.0"),
        ({"burst": 0}, "burst must be >= 1, not 0"),
        ({"max_parked_per_source": -1}, "max_parked_per_source must be >= 0, not -1"),
        ({"retry_after": -1}, "retry_after must be >= 0, not -1"),
    ],
)
def test_limits_check_themselves(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdmissionLimits(**kwargs)  # type: ignore[arg-type]
