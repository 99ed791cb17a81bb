"""Call events as outbox rows: built by the one row builder, so the row's id (the
Standard Webhooks ``webhook-id`` header) is the event's ``data.id``."""

from __future__ import annotations

from callstream.calls.events import call_event, call_payload
from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.store.records import CallRecord


def test_a_call_event_row_carries_the_calls_urls_and_its_data_id() -> None:
    record = CallRecord(
        call_control_id="v3:c", call_leg_id="leg", call_session_id="session",
        connection_id="default", direction="incoming", from_="+15550001111",
        to="sip:bot@127.0.0.1", state="answered", is_alive=True,
        start_time="2026-12-04T00:00:00Z", owner="test", webhook_url="https://app/hook")
    call = Call(record=record, state=CallState.ANSWERED)
    row = call_event(call, "streaming.started", call_payload(call, stream_id="s"), 0.0)
    assert row.id == row.data["id"] and row.event_type == "streaming.started"
    assert (row.ordering_key, row.url, row.call_control_id) == ("session", "https://app/hook",
                                                                 "v3:c")
    assert (row.method, row.content_type) == ("POST", "json")
    assert row.data["payload"]["stream_id"] == "s"
