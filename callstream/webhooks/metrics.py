"""Prometheus series of webhook delivery.

``callstream_webhook_queued``                 gauge: events waiting in the outbox (pending)
``callstream_webhook_delivered_total``        events answered 2xx
``callstream_webhook_retried_total``          failed attempts after which another is scheduled
``callstream_webhook_failed_total``           events given up after their last attempt
``callstream_webhook_attempts_total{outcome}`` attempts, by ``delivered``/``failed``
``callstream_webhook_delivery_latency_seconds`` histogram: enqueue (commit) → 2xx
``callstream_webhook_attempt_seconds``        histogram: one HTTP exchange
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
ATTEMPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    @classmethod
    def default(cls) -> WebhookMetrics:
        """The instance registered in the process-wide registry (created once)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default
