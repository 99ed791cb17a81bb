"""Counters of SIP's socket side, UDP and TCP, read by tests and logs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TransportStats:
    """Counters for the socket side."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    tcp_connections: int = 0
    framing_errors: int = 0
    tcp_refused: int = 0
    tcp_idle_closed: int = 0
    send_errors: int = 0
    callback_errors: int = 0
