"""Webhook bodies: the data object, the per-attempt envelope, TeXML form callbacks."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl

import orjson

from callstream.webhooks.payloads import (
    StreamEvent,
    encode_data,
    form_body,
    json_body,
    make_event,
    make_texml_stream_callback,
)

NOW = 1777629601.104221  # 2026-05-01T10:00:01.104221Z


def test_make_event_has_the_telnyx_fields() -> None:
    data = make_event("streaming.started", {"call_control_id": "v3:x"}, NOW)
    assert list(data) == ["event_type", "id", "occurred_at", "payload", "record_type"]
    assert data["event_type"] == "streaming.started"
    assert data["record_type"] == "event"
    assert data["payload"] == {"call_control_id": "v3:x"}
    assert uuid.UUID(data["id"]).version == 4
    assert data["occurred_at"] == "2026-05-01T10:00:01.104221Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", data["occurred_at"])


def test_make_event_keeps_a_given_id() -> None:
    assert make_event("x", {}, NOW, event_id="abc")["id"] == "abc"


def test_json_body_is_the_envelope_orjson_would_write() -> None:
    data = make_event("call.hangup", {"client_state": None, "text": "é \"q\""}, NOW)
    body = json_body(encode_data(data), attempt=3, delivered_to="https://app.example/hook")
    assert body == orjson.dumps(
        {"data": data, "meta": {"attempt": 3, "delivered_to": "https://app.example/hook"}}
    )
    assert orjson.loads(body)["meta"] == {"attempt": 3, "delivered_to": "https://app.example/hook"}


def test_texml_callback_fields_and_form_body() -> None:
    data = make_texml_stream_callback(
        account_sid="acct",
        call_sid="v3:call",
        stream_event=StreamEvent.ERROR,
        stream_sid="sid-1",
        stream_name="My stream",
        stream_error="connection refused",
        now=NOW,
    )
    assert data["event_type"] == "stream-error"
    fields = dict(parse_qsl(form_body(data).decode()))
    assert fields == {
        "AccountSid": "acct",
        "CallSid": "v3:call",
        "CallSidLegacy": "v3:call",
        "StreamEvent": "stream-error",
        "StreamName": "My stream",
        "StreamSid": "sid-1",
        "Timestamp": "2026-05-01T10:00:01.104221Z",
        "StreamError": "connection refused",
    }
    assert b"My+stream" in form_body(data)


def test_texml_callback_without_error_has_no_error_field() -> None:
    data = make_texml_stream_callback(
        account_sid="a", call_sid="c", stream_event=StreamEvent.STARTED, stream_sid="s", now=NOW
    )
    assert "StreamError" not in dict(parse_qsl(form_body(data).decode()))
