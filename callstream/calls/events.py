"""Call events as outbox rows: the payload fields every call webhook carries (spec §7.2),
and the TeXML status callbacks of a call's streams.

Every webhook a call causes is built here, so the path of one is straight: a command or
a feature asks this module for the row, which takes the ``data`` object from
:mod:`callstream.webhooks.payloads`, and commits it with the change that caused it.
"""

from __future__ import annotations

from typing import Any

from callstream.calls.model import Call
from callstream.calls.requests import TexmlCallback
from callstream.store.records import OutboxEvent
from callstream.webhooks.events import outbox_event
from callstream.webhooks.payloads import (
    BodyFormat,
    StreamEvent,
    make_event,
    make_texml_stream_callback,
)


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


def texml_stream_event(call: Call, texml: TexmlCallback, stream_event: StreamEvent,
                       stream_sid: str, now: float, *, error: str | None = None) -> OutboxEvent:
    """A TeXML stream's status callback (spec §10.2): form-encoded, to the stream's own
    ``StatusCallback`` with its method, in the call's order."""
    rec = call.record
    data = make_texml_stream_callback(
        account_sid=texml.account_sid, call_sid=rec.call_control_id, stream_event=stream_event,
        stream_sid=stream_sid, now=now, stream_name=texml.name, stream_error=error)
    return outbox_event(
        data, ordering_key=rec.call_session_id, url=texml.status_callback,
        timeout_secs=call.webhook_timeout_secs, method=texml.status_callback_method,
        body_format=BodyFormat.FORM, call_control_id=rec.call_control_id)
