"""callstream.console.feed: subscribers, meters on a real media hub, events from commits,
the delivery log from a real SQLite outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from callstream.calls.control import CallControl
from callstream.calls.features import LegMedia
from callstream.calls.model import Call, new_record
from callstream.calls.state import CallState
from callstream.console.feed import (
    MAX_SUBSCRIBERS,
    ConsoleFeed,
    FeedFull,
    Subscriber,
    sse,
)
from callstream.console.levels import FLOOR_DBFS
from callstream.media.hub import MediaHub
from callstream.store.outbox import Outbox
from callstream.store.records import Change
from callstream.store.sql import SqlStore
from callstream.webhooks.events import outbox_event
from callstream.webhooks.payloads import make_event
from tests.calls.fakes import FakeTelephony, control_with

START = "2026-12-04T10:00:00.000000Z"
START_TS = 1_796_378_400.0  # START as Unix time


def parse(message: bytes | None) -> tuple[str, Any]:
    assert message is not None
    head, data, blank = message.split(b"\n", 2)
    assert head.startswith(b"event: ") and data.startswith(b"data: ") and blank == b"\n"
    return head[7:].decode(), orjson.loads(data[6:])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'callstream.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def live_call(control: CallControl, state: CallState = CallState.ANSWERED) -> Call:
    record = new_record(direction="incoming", connection_id="default", from_="+15550001",
                        to="bot", state=state, start_time=START, owner="test")
    call = Call(record, state)
    control.calls[call.id] = call
    return call


def test_sse_is_one_event_per_message() -> None:
    assert sse("calls", [{"a": "x\ny"}]) == b'event: calls\ndata: [{"a":"x\\ny"}]\n\n'


async def test_a_subscriber_that_does_not_read_loses_its_oldest_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    sub = Subscriber(max_messages=3)
    with caplog.at_level(logging.WARNING):
        for n in range(5):
            sub.put(str(n).encode())
    assert sub.dropped == 2
    assert caplog.text.count("not reading its feed") == 1, "logged once"
    assert [await sub.next(0.01) for _ in range(3)] == [b"2", b"3", b"4"]
    assert await sub.next(0.01) == b"", "idle: a keepalive"
    sub.close()
    assert await sub.next(0.01) is None
    sub.put(b"late")
    assert await sub.next(0.01) is None


async def test_a_waiting_subscriber_wakes_on_a_message() -> None:
    sub = Subscriber()
    waiting = asyncio.create_task(sub.next(30.0))
    await asyncio.sleep(0)
    sub.put(b"now")
    assert await asyncio.wait_for(waiting, 5) == b"now"


async def test_meters_read_each_track_then_let_go(store: SqlStore) -> None:
    telephony = FakeTelephony()
    control = control_with(store, telephony, clock=lambda: START_TS)
    feed = ConsoleFeed(control, Outbox(store))
    call = live_call(control)
    hub = MediaHub("test")
    hub.add_leg("leg", 8000)
    telephony.legs[call.id] = LegMedia(hub, "leg", "PCMU", 8000, 0)

    first = feed.levels_message()
    assert first is not None
    assert parse(first) == ("levels", {call.id: {"inbound": FLOOR_DBFS, "outbound": FLOOR_DBFS}})

    loud = np.where(np.arange(160) % 2 == 0, 16384, -16384).astype("<i2").tobytes()
    hub.push_inbound("leg", loud, now=0.0)
    assert parse(feed.levels_message())[1][call.id] == {"inbound": -6.0, "outbound": FLOOR_DBFS}
    assert parse(feed.levels_message())[1][call.id]["inbound"] == FLOOR_DBFS, "read once"

    call.state = CallState.HANGUP  # gone: the meter lets go of the hub
    assert feed.levels_message() is None
    hub.push_inbound("leg", loud, now=0.02)
    assert hub.callback_errors == 0


async def test_a_call_without_media_has_no_meter(store: SqlStore) -> None:
    control = control_with(store)
    live_call(control, CallState.PARKED)
    assert ConsoleFeed(control, Outbox(store)).levels_message() is None


async def test_calls_are_listed_with_their_features(store: SqlStore) -> None:
    control = control_with(store)
    feed = ConsoleFeed(control, Outbox(store), wall_clock=lambda: START_TS + 12.34)
    call = live_call(control)
    call.update(answer_time="2026-12-04T10:00:02.000000Z")
    call.features["stream:abc"] = object()  # type: ignore[assignment]
    call.features["transcription"] = object()  # type: ignore[assignment]
    live_call(control, CallState.HANGUP)
    event, calls = parse(feed.calls_message())
    assert event == "calls" and len(calls) == 1
    view = calls[0]
    assert view["call_control_id"] == call.id
    assert view["state"] == "answered" and view["from"] == "+15550001" and view["to"] == "bot"
    assert view["duration_s"] == 12.3 and view["talk_s"] == 10.3
    assert view["streams"] == ["abc"] and view["transcription"] and not view["fork"]


async def test_every_committed_webhook_event_reaches_the_consoles(store: SqlStore) -> None:
    control = control_with(store)
    feed = ConsoleFeed(control, Outbox(store))
    control.commit_listeners.append(feed.committed)
    data = make_event("call.transcription", {"call_control_id": "c1", "transcription_data": {
        "transcript": "hello there", "is_final": True}}, START_TS)
    change = Change(events=[outbox_event(data, ordering_key="s1", url=None,
                                         call_control_id="c1")])
    await control.commit(change)  # nobody connected: nothing queued anywhere

    sub = feed.subscribe()
    try:
        await control.commit(Change(events=[outbox_event(
            make_event("call.hangup", {"call_control_id": "c1"}, START_TS),
            ordering_key="s1", url=None, call_control_id="c1")]))
        messages = [parse(await sub.next(5.0)) for _ in range(3)]
        kinds = [kind for kind, _ in messages]
        assert "webhook" in kinds and "deliveries" in kinds
        hooks = [data for kind, data in messages if kind == "webhook"]
        assert [h["event_type"] for h in hooks] == ["call.hangup"]
        log = next(data for kind, data in messages if kind == "deliveries")
        assert [d["event_type"] for d in log] == ["call.hangup", "call.transcription"]
        assert all(d["status"] == "pending" for d in log)
    finally:
        await feed.close()
    assert sub.closed and feed.subscribers == 0


async def test_consoles_beyond_the_limit_are_refused(store: SqlStore) -> None:
    feed = ConsoleFeed(control_with(store), Outbox(store))
    try:
        for _ in range(MAX_SUBSCRIBERS):
            feed.subscribe()
        with pytest.raises(FeedFull, match=f"{MAX_SUBSCRIBERS} consoles"):
            feed.subscribe()
    finally:
        await feed.close()


async def test_a_failing_commit_listener_does_not_fail_the_commit(
        store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    control = control_with(store)

    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    control.commit_listeners.append(broken)
    with caplog.at_level(logging.ERROR):
        await control.commit(Change(events=[outbox_event(
            make_event("call.hangup", {"call_control_id": "c1"}, START_TS),
            ordering_key="s1", url=None)]))
    assert "a commit listener failed" in caplog.text
