"""StreamManager on Call Control with a fake telephony, a real media hub, a real
WebSocket consumer (tests/ws_consumer.py) and a real SQLite store: streaming_start and
stop, streams a dial asks for, limits, and each refusal."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from callstream.calls.control import CallControl
from callstream.calls.exceptions import (
    CallEnded,
    CallNotAnswered,
    NoSuchResource,
    StreamLimit,
)
from callstream.calls.model import Call
from callstream.calls.requests import (
    Answer,
    Dial,
    Hangup,
    StreamingStart,
    StreamingStop,
    StreamSpec,
    TexmlCallback,
)
from callstream.media.hub import Track
from callstream.media.rtp import RtpView
from callstream.outbound.policy import OutboundPolicy
from callstream.store import schema as t
from callstream.store.sql import SqlStore
from callstream.streaming.manager import StreamManager
from callstream.streaming.session import StreamState
from tests.calls.fakes import FakeTelephony, control_with, sqlite_store, stored_events
from tests.ws_consumer import Connection, Consumer, ws_consumer

OPEN = OutboundPolicy.from_lists(allow=["127.0.0.0/8"], deny=[])
#: One RTP packet of PCMU (the call's codec, so the stream forwards its payload as is).
PACKET = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + b"\xff" * 160


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with sqlite_store(tmp_path) as store:
        yield store


@pytest.fixture
def telephony() -> FakeTelephony:
    return FakeTelephony()


@pytest.fixture
def control(store: SqlStore, telephony: FakeTelephony) -> CallControl:
    return control_with(store, telephony, hooks=[
        lambda calls: StreamManager(calls, account_id="acct", outbound=OPEN)])


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as consumer:
        consumer.close_on_stop = 0.0  # as real consumers do: no stop grace to wait out
        yield consumer


def streams(control: CallControl) -> StreamManager:
    manager = control.hooks[0]
    assert isinstance(manager, StreamManager)
    return manager


async def answered(control: CallControl, telephony: FakeTelephony) -> Call:
    call = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                       connection_id="default", details={})
    assert call is not None
    await control.answer(call.id, Answer())
    telephony.give_media(call)
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    return call


async def frames_until(conn: Connection, event: str) -> list[str]:
    await asyncio.to_thread(conn.wait_for, lambda c: event in c.events(), 20.0)
    return conn.events()


async def event_stored(store: SqlStore, call_id: str, event_type: str) -> list[str]:
    for _ in range(400):  # bounded: 20 s
        types = [e for e, _ in await stored_events(store, call_id)]
        if event_type in types:
            return types
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event_type} stored for {call_id}")


async def test_a_stream_carries_the_call_until_stopped(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        consumer: Consumer) -> None:
    call = await answered(control, telephony)
    await streams(control).start(call.id, StreamingStart(
        stream=StreamSpec(stream_url=consumer.url, custom_parameters=(("who", "test"),)),
        client_state="Y2xpZW50"))
    conn = await asyncio.to_thread(consumer.wait_connection)
    await frames_until(conn, "start")
    start = conn.of("start")[0]["start"]
    assert start["call_control_id"] == call.id and start["client_state"] == "Y2xpZW50"
    assert start["custom_parameters"] == {"who": "test"}
    await event_stored(store, call.id, "streaming.started")
    hub = telephony.legs[call.id].hub
    hub.push_packet(call.id, Track.INBOUND, RtpView.parse(PACKET),
                    now=asyncio.get_running_loop().time())
    await frames_until(conn, "media")
    assert conn.of("media")[0]["media"]["payload"] == base64.b64encode(PACKET[12:]).decode()

    await streams(control).stop(call.id, StreamingStop())
    assert await frames_until(conn, "stop")
    assert "streaming.stopped" in await event_stored(store, call.id, "streaming.stopped")
    assert streams(control).streams(call) == []


async def test_a_dial_with_a_stream_starts_it_once_answered_and_hangup_stops_it(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        consumer: Consumer) -> None:
    receipt = await control.dial(Dial(connection_id="default", to="sip:bob@127.0.0.1:9",
                                      from_="+15550004444",
                                      stream=StreamSpec(stream_url=consumer.url)))
    call = next(iter(control.calls.values()))
    assert call.id.encode() in receipt.body and consumer.connections == []
    telephony.give_media(call)
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    conn = await asyncio.to_thread(consumer.wait_connection)
    await frames_until(conn, "start")
    await event_stored(store, call.id, "streaming.started")
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    types = [e for e, _ in await stored_events(store, call.id)]
    assert types.index("streaming.stopped") < types.index("call.hangup")
    assert await asyncio.to_thread(conn.done.wait, 10)
    assert conn.events()[-1] == "stop" and conn.closed_code == 1000


async def test_one_bidirectional_stream_per_call(
        control: CallControl, telephony: FakeTelephony, consumer: Consumer) -> None:
    call = await answered(control, telephony)
    bidi = StreamSpec(stream_url=consumer.url, stream_bidirectional_mode="rtp")
    await streams(control).start(call.id, StreamingStart(stream=bidi))
    with pytest.raises(StreamLimit, match="only one") as second:
        await streams(control).start(call.id, StreamingStart(stream=bidi))
    assert second.value.pointer == "/stream_bidirectional_mode"
    assert len(streams(control).streams(call)) == 1
    conn = await asyncio.to_thread(consumer.wait_connection)
    await frames_until(conn, "start")
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    assert await asyncio.to_thread(conn.done.wait, 10)


async def test_streaming_refusals(
        control: CallControl, telephony: FakeTelephony, consumer: Consumer) -> None:
    parked = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                         connection_id="default", details={})
    assert parked is not None
    spec = StreamSpec(stream_url=consumer.url)
    with pytest.raises(CallNotAnswered, match="before it is streamed"):
        await streams(control).start(parked.id, StreamingStart(stream=spec))
    call = await answered(control, telephony)
    with pytest.raises(NoSuchResource) as unknown:
        await streams(control).stop(call.id, StreamingStop(stream_id="nope"))
    assert unknown.value.pointer == "/stream_id"
    await control.hangup(call.id, Hangup())
    with pytest.raises(CallEnded):
        await streams(control).start(call.id, StreamingStart(stream=spec))
    assert consumer.connections == []


async def test_a_stream_asked_before_originate_connects_before_the_invite(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        consumer: Consumer) -> None:
    states_at_dial: list[list[StreamState]] = []
    dial = telephony.dial

    async def dial_after_connect(call: Call, target_uri: str, **kwargs: object) -> None:
        states_at_dial.append([s.state for s in streams(control).streams(call)])
        await dial(call, target_uri, **kwargs)  # type: ignore[arg-type]

    telephony.dial = dial_after_connect  # type: ignore[method-assign]
    await control.dial(Dial(connection_id="default", to="sip:bob@127.0.0.1:9",
                            from_="+15550004444", stream=StreamSpec(stream_url=consumer.url),
                            stream_establish_before_call_originate=True))
    assert states_at_dial == [[StreamState.WAITING]]  # connected, waiting for the answer
    call = next(iter(control.calls.values()))
    conn = await asyncio.to_thread(consumer.wait_connection)
    telephony.give_media(call)
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    await frames_until(conn, "start")  # the same connection goes on with the call
    assert len(consumer.connections) == 1
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    assert await asyncio.to_thread(conn.done.wait, 10)


async def test_a_texml_stream_sends_its_status_callbacks_as_forms(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        consumer: Consumer) -> None:
    call = await answered(control, telephony)
    texml = TexmlCallback(account_sid="AC1", name="agent",
                          status_callback="http://127.0.0.1:9/status",
                          status_callback_method="GET")
    sid = await streams(control).texml_start(call.id, StreamingStart(
        stream=StreamSpec(stream_url=consumer.url), texml=texml))
    conn = await asyncio.to_thread(consumer.wait_connection)
    await frames_until(conn, "start")
    await streams(control).texml_stop(call.id, sid)
    with pytest.raises(NoSuchResource):
        await streams(control).texml_stop(call.id, sid)
    c = t.webhook_outbox.c
    async with store.reading() as db:
        rows = (await db.execute(
            select(c.event_type, c.url, c.method, c.content_type, c.data)
            .where(c.url == texml.status_callback).order_by(c.seq))).all()
    assert [r.event_type for r in rows] == ["stream-started", "stream-stopped"]
    assert {(r.method, r.content_type) for r in rows} == {
        ("GET", "form")}  # BodyFormat.FORM: sent form-encoded
    form = orjson.loads(rows[0].data)["payload"]
    assert (form["AccountSid"], form["StreamSid"], form["StreamName"]) == ("AC1", sid, "agent")
    assert await asyncio.to_thread(conn.done.wait, 10)
