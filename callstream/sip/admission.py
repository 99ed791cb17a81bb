"""Who may open new SIP work here, and how much (sans-I/O).

Every request outside a dialog passes these gates in
:class:`~callstream.sip.endpoint.SipEndpoint` before a transaction, a dialog or
a call exists for it:

1. the allow-list (``allowed_networks``), for every such request: outside it,
   one stateless 403 or a silent drop (:class:`ForbiddenAction`);
2. for a new dialog (an INVITE), a per-source token bucket
   (:class:`SourceRateLimiter`), like Kamailio's ``pike``: over it, one
   stateless 503 with Retry-After;
3. a cap on calls from that source that are still unanswered
   (:attr:`AdmissionLimits.max_parked_per_source`): over it, one stateless 486;
4. digest authentication when credentials are configured
   (:mod:`~callstream.sip.digest`): a stateless 401 challenge.

OPTIONS and the like make no dialog and are answered at once (keep-alives from
a trunk must never run into a limit meant for calls).

"Stateless" matters: a refused request costs one response, sent once, never
retransmitted and never remembered, so a refused source cannot make us send
more than it sent (RFC 3261 §17.2.1 retransmissions are what a server
transaction would add) nor fill our tables.

A *source* is the peer's IP address; IPv6 peers are grouped by their /64, the
smallest block one subscriber is usually given. Time is passed in.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "MAX_TRACKED_SOURCES",
    "AdmissionLimits",
    "ForbiddenAction",
    "RefusalReason",
    "SourceCounter",
    "SourceRateLimiter",
    "source_key",
]

#: Most sources the rate limiter remembers; the least recently seen goes first.
MAX_TRACKED_SOURCES = 10_000
#: IPv6 sources are grouped by this prefix length.
IPV6_SOURCE_PREFIX = 64


class ForbiddenAction(enum.Enum):
    """What a request from outside the allow-list gets."""

    REJECT = "reject"  # one stateless 403
    DROP = "drop"  # nothing at all


class RefusalReason(enum.Enum):
    """Why admission refused a request; the value is what the logs say."""

    RATE_LIMITED = "over the per-source rate limit"
    PARKED_LIMIT = "too many unanswered calls from this source"
    AUTH_FAILED = "wrong digest credentials"
    DRAINING = "this node is draining (callstream drain): it takes no new calls"


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Per-source limits on new work.

    Attributes:
        rate_per_sec: New dialogs (INVITEs) per second a source earns; 0
            turns the rate limit off.
        burst: How many it may send at once (the bucket's size).
        max_parked_per_source: Unanswered incoming calls one source may hold;
            0 turns the cap off.
        retry_after: Seconds named in the 503's Retry-After.
    """

    rate_per_sec: float = 5.0
    burst: int = 20
    max_parked_per_source: int = 10
    retry_after: int = 5

    def __post_init__(self) -> None:
        if self.rate_per_sec < 0:
            raise ValueError(f"rate_per_sec must be >= 0, not {self.rate_per_sec}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, not {self.burst}")
        if self.max_parked_per_source < 0:
            raise ValueError(
                f"max_parked_per_source must be >= 0, not {self.max_parked_per_source}"
            )
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, not {self.retry_after}")


@functools.lru_cache(maxsize=4096)
def source_key(host: str) -> str:
    """The key a peer's limits are kept under: its IP, or its /64 for IPv6.

    A host that is not an IP address (it cannot be one off a socket) is its own key.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


class SourceRateLimiter:
    """A token bucket per source: ``burst`` requests at once, ``rate`` a second after.

    The table holds at most ``max_sources`` buckets; when a new source comes and
    it is full, the least recently seen source is forgotten (it starts again
    with a full bucket: a flood from very many sources is beyond what a
    per-source limit can stop, and the table stays bounded).
    """

    __slots__ = ("_buckets", "burst", "evicted", "max_sources", "rate")

    def __init__(self, rate: float, burst: int, *, max_sources: int = MAX_TRACKED_SOURCES):
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.evicted = 0
        # source -> (tokens, when they were counted); most recently seen last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, source: str, now: float) -> bool:
        """Take a token for one request from ``source`` at ``now``; False if none is left."""
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(source)
        if bucket is None:
            tokens = float(self.burst)
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
                self.evicted += 1
        else:
            tokens, then = bucket
            # max(): time never runs backwards here, but a caller's clock might.
            tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate)
            self._buckets.move_to_end(source)
        admitted = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if admitted else tokens, now)
        return admitted


class SourceCounter:
    """How many of something (unanswered calls) each source holds now.

    Bounded by what it counts: a source appears only while its count is above 0.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, source: str) -> int:
        return self._counts.get(source, 0)

    def add(self, source: str) -> None:
        self._counts[source] = self._counts.get(source, 0) + 1

    def remove(self, source: str) -> None:
        left = self._counts.get(source, 0) - 1
        if left > 0:
            self._counts[source] = left
        else:
            self._counts.pop(source, None)
