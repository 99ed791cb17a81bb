"""The supervisor's counters on ``/metrics`` (summed with the workers' by the front)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WORKER_RESTARTS = Counter(
    "callstream_worker_restarts_total", "Worker processes started again after they died",
    ["worker"])
WORKERS_RUNNING = Gauge("callstream_workers_running", "Worker processes serving now")
SIP_RELAY_DROPPED = Counter(
    "callstream_sip_relay_dropped_total",
    "SIP datagrams not relayed: their worker was restarting, or its relay refused them "
    "(the sender retransmits)", ["worker"])
