"""Prometheus series of webhook delivery.

``callstream_webhook_queued``                 gauge: events waiting in the outbox (pending)
``callstream_webhook_delivered_total``        events answered 2xx
``callstream_webhook_retried_total``          failed attempts after which another is scheduled
``callstream_webhook_failed_total``           events given up after their last attempt
``callstream_webhook_attempts_total{outcome}`` attempts, by ``delivered``/``failed``
``callstream_webhook_delivery_latency_seconds`` histogram: enqueue (commit) → 2xx
``callstream_webhook_attempt_seconds``        histogram: one HTTP exchange

Per destination (label ``destination`` = ``host:port`` of the URL an attempt went to; the
first :data:`MAX_DESTINATION_LABELS` destinations seen get their own label, later ones
share ``other``, so a flood of distinct URLs cannot grow the series without bound):

``callstream_webhook_destination_in_flight{destination}``   attempts sending or waiting for
                                                             the destination's share
``callstream_webhook_destination_attempts_total{destination,outcome}``
``callstream_webhook_destination_attempt_seconds{destination}`` histogram, as above
``callstream_webhook_destination_deferred_total{destination}`` calls' events put back
                                                             unsent: the destination's lanes
                                                             were full
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
ATTEMPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Destinations with a label of their own; the rest are counted under ``other``.
MAX_DESTINATION_LABELS = 100
OTHER_DESTINATION = "other"


@dataclass(frozen=True, slots=True)
class DestinationSeries:
    """The labelled children of one destination."""

    in_flight: Gauge
    delivered: Counter
    failed: Counter
    duration: Histogram
    deferred: Counter


class WebhookMetrics:
    """The webhook series, registered in ``registry`` (the process default if omitted).

    Use :meth:`default` for the process-wide instance; build one with a fresh
    ``CollectorRegistry`` in tests, since a name can be registered only once per registry.
    """

    _default: WebhookMetrics | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.queued = Gauge(
            "callstream_webhook_queued", "Webhook events waiting in the outbox", registry=reg
        )
        self.delivered = Counter(
            "callstream_webhook_delivered", "Webhook events delivered (2xx)", registry=reg
        )
        self.retried = Counter(
            "callstream_webhook_retried",
            "Failed webhook attempts after which another was scheduled",
            registry=reg,
        )
        self.failed = Counter(
            "callstream_webhook_failed",
            "Webhook events given up after their last attempt",
            registry=reg,
        )
        attempts = Counter(
            "callstream_webhook_attempts", "Webhook attempts", ["outcome"], registry=reg
        )
        self.attempts_delivered = attempts.labels("delivered")
        self.attempts_failed = attempts.labels("failed")
        self.latency = Histogram(
            "callstream_webhook_delivery_latency_seconds",
            "Webhook enqueue (commit) to 2xx answer",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.attempt_duration = Histogram(
            "callstream_webhook_attempt_seconds",
            "Duration of one webhook HTTP exchange",
            buckets=ATTEMPT_BUCKETS,
            registry=reg,
        )

        self._dest_in_flight = Gauge(
            "callstream_webhook_destination_in_flight",
            "Webhook attempts to a destination sending or waiting for its share",
            ["destination"], registry=reg,
        )
        self._dest_attempts = Counter(
            "callstream_webhook_destination_attempts", "Webhook attempts, per destination",
            ["destination", "outcome"], registry=reg,
        )
        self._dest_duration = Histogram(
            "callstream_webhook_destination_attempt_seconds",
            "Duration of one webhook attempt (waiting for the share included), per destination",
            ["destination"], buckets=ATTEMPT_BUCKETS, registry=reg,
        )
        self._dest_deferred = Counter(
            "callstream_webhook_destination_deferred",
            "Calls whose events were put back unsent because their destination's lanes "
            "were full", ["destination"], registry=reg,
        )
        self._destinations: dict[str, DestinationSeries] = {}

    def destination(self, name: str) -> DestinationSeries:
        """The series of destination ``name`` (``host:port``), or of ``other`` past the cap."""
        series = self._destinations.get(name)
        if series is not None:
            return series
        if len(self._destinations) >= MAX_DESTINATION_LABELS:
            name = OTHER_DESTINATION
            series = self._destinations.get(name)
            if series is not None:
                return series
        series = DestinationSeries(
            in_flight=self._dest_in_flight.labels(name),
            delivered=self._dest_attempts.labels(name, "delivered"),
            failed=self._dest_attempts.labels(name, "failed"),
            duration=self._dest_duration.labels(name),
            deferred=self._dest_deferred.labels(name),
        )
        self._destinations[name] = series
        return series

    @classmethod
    def default(cls) -> WebhookMetrics:
        """The instance registered in the process-wide registry (created once)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default
