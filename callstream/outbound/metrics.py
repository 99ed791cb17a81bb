"""``callstream_outbound_denied_total{stage}``: destinations the outbound policy refused.

``stage`` is ``request`` (an API call named it; answered 422) or ``connect`` (a webhook
or stream connection about to open; the attempt failed instead).
"""

from __future__ import annotations

from prometheus_client import Counter

OUTBOUND_DENIED = Counter(
    "callstream_outbound_denied_total",
    "Destinations refused by CALLSTREAM_OUTBOUND_ALLOW/DENY",
    ["stage"],
)
