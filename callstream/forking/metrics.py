"""Fork counters on ``/metrics``, read from :class:`ForkStats` when scraped.

``callstream_fork_packets_total{direction}``, ``callstream_fork_bytes_total{direction}``
(``rx``: RTP the calls received, ``tx``: RTP they sent), and
``callstream_fork_send_errors_total{direction,reason}`` with ``reason`` one of
``unreachable`` (an ICMP port/host unreachable came back; the packet was sent
again), ``buffer_full`` (packet dropped) and ``other`` (packet dropped);
``callstream_forks_active``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from callstream.forking.sender import ForkStats

__all__ = ["FORK_STATS", "ForkCollector"]

#: The process's fork totals; every RtpFork reports here.
FORK_STATS = ForkStats()

_ERROR_REASONS = {"unreachable": "unreachable", "dropped": "buffer_full", "errors": "other"}


class ForkCollector(Collector):
    def __init__(self, stats: ForkStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        totals = self.stats.totals()
        packets = CounterMetricFamily("callstream_fork_packets", "RTP packets forked",
                                      labels=["direction"])
        octets = CounterMetricFamily("callstream_fork_bytes",
                                     "Bytes forked (UDP payloads, STREP headers included)",
                                     labels=["direction"])
        errors = CounterMetricFamily("callstream_fork_send_errors",
                                     "Fork send errors (unreachable: resent; others: dropped)",
                                     labels=["direction", "reason"])
        for direction in ("rx", "tx"):
            packets.add_metric([direction], totals.get((direction, "packets"), 0))
            octets.add_metric([direction], totals.get((direction, "bytes"), 0))
            for counter, reason in _ERROR_REASONS.items():
                errors.add_metric([direction, reason], totals.get((direction, counter), 0))
        yield packets
        yield octets
        yield errors
        yield GaugeMetricFamily("callstream_forks_active", "Forks running",
                                value=self.stats.forks_active)


REGISTRY.register(ForkCollector(FORK_STATS))
