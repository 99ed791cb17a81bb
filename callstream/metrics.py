"""Prometheus metrics of the process (HTTP, calls). Each part registers its own beside it."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from callstream import __version__
from callstream.build import media_build

HTTP_REQUESTS = Counter(
    "callstream_http_requests_total", "HTTP API requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "callstream_http_request_seconds",
    "HTTP API request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BUILD = Info(
    "callstream_build",
    "Which build runs: media is 'compiled' (mypyc, CALLSTREAM_COMPILE=1) or 'pure' Python",
)
BUILD.info({"version": __version__, "media": media_build()})
ACTIVE_CALLS = Gauge("callstream_active_calls", "Calls alive in this process")
CALL_LOCKS = Gauge(
    "callstream_call_locks",
    "Call and dial locks held or waited for now (0 when idle; more means commands queue)",
)
CALLS_TOTAL = Counter("callstream_calls_total", "Calls created", ["direction"])
HTTP_CONNECTIONS = Counter(
    "callstream_http_connections_total",
    "HTTP connections accepted (WebSockets and those refused by a limit included)",
)
HTTP_LIMITED = Counter(
    "callstream_http_limited_total",
    "HTTP connections and requests refused by a limit (docs/security/limits.md)",
    ["limit"],
)
FAILOVER_ENDED = Counter(
    "callstream_failover_calls_ended_total",
    "Calls of dead nodes this node ended (Redis leases expired; docs/cluster.md)",
)
FAILOVER_WEBHOOKS_RELEASED = Counter(
    "callstream_failover_webhooks_released_total",
    "Webhook events that dead nodes had leased for delivery, released by this node so "
    "any node delivers them (docs/cluster.md)",
)
HTTP_FORWARDED = Counter(
    "callstream_http_forwarded_total",
    "REST commands forwarded to the node that owns the call (docs/cluster.md, \"Redis\")",
    ["result"],
)
