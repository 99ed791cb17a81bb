"""Prometheus metrics of browser calls."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WEBRTC_LEGS = Gauge("callstream_webrtc_legs", "WebRTC (browser) legs up")
WEBRTC_REFUSED = Counter(
    "callstream_webrtc_offers_refused_total",
    "WebRTC offers refused: reason max_legs (webrtc_max_legs), offer (bad SDP), "
    "auth (wrong, used or expired token or key)", ["reason"],
)
