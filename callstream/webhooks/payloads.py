"""Webhook bodies: the one module that builds what goes on the wire (spec §7).

Call Control events are JSON::

    {"data": {"event_type": ..., "id": ..., "occurred_at": ..., "payload": {...},
              "record_type": "event"},
     "meta": {"attempt": 1, "delivered_to": "https://app.example.com/hooks"}}

``data`` is fixed when the event is created and stored serialised (compact orjson) in the
outbox; ``meta`` changes with each attempt. :func:`json_body` therefore splices the stored
``data`` bytes into the envelope instead of parsing and re-serialising them: one small
orjson call per attempt, and the bytes signed are exactly the bytes sent.

TeXML stream status callbacks (spec §7.3) are ``application/x-www-form-urlencoded``
PascalCase fields, with no ``meta``; :func:`form_body` encodes them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from callstream.timefmt import iso

RECORD_TYPE = "event"
JSON_CONTENT_TYPE = "application/json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class BodyFormat(enum.StrEnum):
    """Values are the strings stored in ``webhook_outbox.content_type``."""

    JSON = "json"
    FORM = "form"


class StreamEvent(enum.StrEnum):
    """TeXML ``StreamEvent`` values (spec §7.3; ``stream-error`` per the callback schema)."""

    STARTED = "stream-started"
    STOPPED = "stream-stopped"
    ERROR = "stream-error"


def make_event(
    event_type: str, payload: Mapping[str, Any], now: float, *, event_id: str | None = None
) -> dict[str, Any]:
    """The ``data`` object of a webhook.

    Args:
        event_type: e.g. ``"streaming.started"``.
        payload: the event's payload fields (spec §7.2).
        now: Unix time the event occurred; rendered as ISO 8601 with microseconds and ``Z``.
        event_id: the event's UUID; a fresh one when omitted. Receivers dedupe on it.
    """
    return {
        "event_type": event_type,
        "id": event_id or str(uuid.uuid4()),
        "occurred_at": iso(now),
        "payload": dict(payload),
        "record_type": RECORD_TYPE,
    }


def make_texml_stream_callback(
    *,
    account_sid: str,
    call_sid: str,
    stream_event: StreamEvent,
    stream_sid: str,
    now: float,
    stream_name: str | None = None,
    stream_error: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The ``data`` object of a TeXML stream status callback.

    ``payload`` holds the form fields in the order they are sent; ``event_type`` is the
    ``StreamEvent`` value, so the delivery log can filter on it.
    """
    fields: dict[str, str] = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "CallSidLegacy": call_sid,
        "StreamEvent": stream_event.value,
        "StreamName": stream_name or "",
        "StreamSid": stream_sid,
        "Timestamp": iso(now),
    }
    if stream_error is not None:
        fields["StreamError"] = stream_error
    return make_event(stream_event.value, fields, now, event_id=event_id)


def encode_data(data: Mapping[str, Any]) -> bytes:
    """Serialise a ``data`` object once, as it is stored and later sent."""
    return orjson.dumps(data)


def json_body(data_json: bytes, *, attempt: int, delivered_to: str) -> bytes:
    """The JSON body of one attempt: the stored ``data`` bytes plus this attempt's ``meta``.

    Equal to ``orjson.dumps({"data": data, "meta": {...}})`` when ``data_json`` came from
    :func:`encode_data`.
    """
    meta = orjson.dumps({"attempt": attempt, "delivered_to": delivered_to})
    return b'{"data":%b,"meta":%b}' % (data_json, meta)


def form_body(data: Mapping[str, Any]) -> bytes:
    """The urlencoded body (or query string, for GET) of a form callback: ``data.payload``."""
    payload: Mapping[str, Any] = data.get("payload") or {}
    return urlencode(
        [(k, "" if v is None else str(v)) for k, v in payload.items()]
    ).encode("ascii")
