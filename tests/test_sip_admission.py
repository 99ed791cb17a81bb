"""The server edge of SIP admission: refusals logged at a bounded rate and counted."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from callstream.sip.admission import RefusalReason
from callstream.sip.events import RequestForbidden, RequestRefused
from callstream.sip_admission import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _count(reason: str) -> float:
    value = REGISTRY.get_sample_value("callstream_sip_refused_total", {"reason": reason})
    return value or 0.0


def test_refusals_are_counted_each_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = RefusalLog(interval=10.0, clock=clock)
    before = _count("rate_limited"), _count("forbidden")
    flood = RequestRefused("INVITE", ("192.0.2.1", 5060), RefusalReason.RATE_LIMITED)
    with caplog.at_level(logging.WARNING, logger="callstream.sip_admission"):
        for _ in range(100):
            refusals.report(flood)
        refusals.report(RequestForbidden("OPTIONS", ("203.0.113.9", 5060)))
        clock.now = 10.0
        refusals.report(flood)
    assert [r.getMessage() for r in caplog.records] == [
        "SIP INVITE from 192.0.2.1:5060 refused: over the per-source rate limit",
        "SIP OPTIONS from 203.0.113.9:5060 refused: not in sip_allowed_networks",
        "SIP INVITE from 192.0.2.1:5060 refused: over the per-source rate limit "
        "(99 more like it since the last report)",
    ]
    assert (_count("rate_limited"), _count("forbidden")) == (before[0] + 101, before[1] + 1)
