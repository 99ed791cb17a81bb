"""SIP admission at the server's edge: settings into the endpoint, refusals into logs and /metrics.

The decisions are made in the sans-I/O core (:mod:`callstream.sip.admission`,
:mod:`callstream.sip.digest`); this module turns ``Settings`` into the
endpoint's options and reports what the core refused. A flood is refused at
line rate, so refusals are logged at most once per :data:`LOG_INTERVAL` per
kind (with how many were left unsaid) and counted on ``/metrics`` as
``callstream_sip_refused_total{reason=...}``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from callstream.config import Settings
from callstream.sip.admission import AdmissionLimits, ForbiddenAction, RefusalReason
from callstream.sip.digest import Credentials, DigestServer
from callstream.sip.events import RequestForbidden, RequestRefused

__all__ = ["LOG_INTERVAL", "REFUSED", "RefusalLog", "admission_options"]

log = logging.getLogger(__name__)

#: Seconds between two log lines about the same kind of refusal.
LOG_INTERVAL = 10.0
#: Retry-After of the 503 a rate-limited source gets, in seconds.
RETRY_AFTER = 5

REFUSED = Counter(
    "callstream_sip_refused_total",
    "New SIP requests refused at admission, by reason",
    ["reason"],
)
_LABELS = {
    RefusalReason.RATE_LIMITED: "rate_limited",
    RefusalReason.PARKED_LIMIT: "parked_limit",
    RefusalReason.AUTH_FAILED: "auth_failed",
    RefusalReason.DRAINING: "draining",
}


def admission_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of :class:`~callstream.sip.endpoint.SipEndpoint` that
    the ``sip_*`` security settings decide."""
    auth = None
    if settings.sip_auth_username is not None and settings.sip_auth_password is not None:
        auth = DigestServer(
            Credentials(settings.sip_auth_username, settings.sip_auth_password),
            realm=settings.sip_auth_realm,
        )
    return {
        "allowed_networks": [
            ipaddress.ip_network(net, strict=False) for net in settings.sip_allowed_networks
        ],
        "forbidden_action": ForbiddenAction(settings.sip_forbidden_action),
        "limits": AdmissionLimits(
            rate_per_sec=settings.sip_rate_limit_per_sec,
            burst=settings.sip_rate_limit_burst,
            max_parked_per_source=settings.sip_max_parked_per_source,
            retry_after=RETRY_AFTER,
        ),
        "auth": auth,
        "answer_timeout": settings.sip_park_timeout_secs,
    }


class RefusalLog:
    """Counts every refusal and logs each kind at most once per ``interval``."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        # kind -> (when we last logged it, refusals since then left unsaid)
        self._last: dict[str, tuple[float, int]] = {}

    def report(self, event: RequestForbidden | RequestRefused) -> None:
        if isinstance(event, RequestForbidden):
            kind, why = "forbidden", "not in sip_allowed_networks"
        else:
            kind, why = _LABELS[event.reason], event.reason.value
        REFUSED.labels(kind).inc()
        now = self._clock()
        last, unsaid = self._last.get(kind, (None, 0))
        if last is not None and now - last < self.interval:
            self._last[kind] = (last, unsaid + 1)
            return
        self._last[kind] = (now, 0)
        more = f" ({unsaid} more like it since the last report)" if unsaid else ""
        log.warning("SIP %s from %s:%s refused: %s%s", event.method, event.source[0],
                    event.source[1], why, more)
