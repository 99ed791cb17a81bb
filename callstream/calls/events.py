"""Call events as outbox rows: the payload fields every call webhook carries (spec §7.2)."""

from __future__ import annotations

from typing import Any

from callstream.calls.model import Call
from callstream.store.records import OutboxEvent
from callstream.webhooks.events import outbox_event
from callstream.webhooks.payloads import make_event


def call_payload(call: Call, **extra: Any) -> dict[str, Any]:
    rec = call.record
    payload: dict[str, Any] = {
        "call_control_id": rec.call_control_id,
        "call_leg_id": rec.call_leg_id,
        "call_session_id": rec.call_session_id,
        "client_state": rec.client_state,
        "connection_id": rec.connection_id,
    }
    payload.update(extra)
    return payload


def call_identity(call: Call) -> dict[str, Any]:
    """The from/to/direction/start_time block of call.initiated/answered/hangup."""
    rec = call.record
    return {
        "from": rec.from_,
        "to": rec.to,
        "direction": rec.direction,
        "start_time": rec.start_time,
        "state": rec.state,
    }


def call_event(call: Call, event_type: str, payload: dict[str, Any], now: float) -> OutboxEvent:
    rec = call.record
    return outbox_event(
        make_event(event_type, payload, now),
        ordering_key=rec.call_session_id,
        url=rec.webhook_url or call.application_webhook_url,
        failover_url=call.application_failover_url,
        timeout_secs=call.webhook_timeout_secs,
        call_control_id=rec.call_control_id,
    )
