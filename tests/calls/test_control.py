"""CallControl against a fake telephony and a real SQLite store: the state changes of
dial, answer, hangup, reject and bridge, what telephony is asked to do, ``command_id``
idempotency, the errors for a call that is gone or not answered, the webhooks stored in
order; its locks, and the start-up sweep of calls a crash left alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from callstream.calls.control import CallControl
from callstream.calls.exceptions import (
    CallEnded,
    CallNotAnswered,
    CallNotFound,
    InvalidCommand,
    NodeDraining,
    PeerUnavailable,
    UnknownApplication,
)
from callstream.calls.model import Call, new_record
from callstream.calls.remote_bridge import RemoteBridge, RemoteBridges
from callstream.calls.requests import Answer, Bridge, Dial, Hangup, Reject
from callstream.calls.state import CallState
from callstream.media.hop import HopOffer
from callstream.store import schema as t
from callstream.store.records import Application, Change
from callstream.store.sql import SqlStore
from tests.calls.fakes import (
    NOW_ISO,
    FakeTelephony,
    Sent,
    control_with,
    sqlite_store,
    stored_events,
)
from tests.store.postgres import PostgresServer

NOW = "2026-12-04T00:00:00.000000Z"
OK = b'{"data":{"result":"ok"}}'


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with sqlite_store(tmp_path) as store:
        yield store


@pytest.fixture
def telephony() -> FakeTelephony:
    return FakeTelephony()


@pytest.fixture
def control(store: SqlStore, telephony: FakeTelephony) -> CallControl:
    return control_with(store, telephony, trunk_uri="sip:trunk.example:5060")


async def incoming(control: CallControl) -> Call:
    call = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                       connection_id="default", details={})
    assert call is not None
    return call


async def answered(control: CallControl, telephony: FakeTelephony) -> Call:
    """An incoming call answered by the application, its ACK in: media flows."""
    call = await incoming(control)
    await control.answer(call.id, Answer())
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    telephony.give_media(call)
    return call


def types(events: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [event_type for event_type, _ in events]


# -- incoming: park, answer, reject ----------------------------------------------------

async def test_an_incoming_call_is_parked_then_answered(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    call = await incoming(control)
    assert call.state is CallState.PARKED
    receipt = await control.answer(call.id, Answer(client_state="c3RhdGU="))
    assert (receipt.status_code, receipt.body) == (200, OK)
    assert call.state is CallState.ANSWERING and telephony.sent == [Sent("answer", call.id)]
    assert call.record.client_state == "c3RhdGU="
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    assert call.state is CallState.ANSWERED
    events = await stored_events(store, call.id)
    assert types(events) == ["call.initiated", "call.answered"]
    assert events[1][1]["codec"] == "PCMU" and events[1][1]["client_state"] == "c3RhdGU="
    stored = await store.get_call(call.id)
    assert stored is not None and stored.state == "answered" and stored.answer_time


async def test_only_a_parked_call_can_be_answered_or_rejected(
        control: CallControl, telephony: FakeTelephony) -> None:
    call = await answered(control, telephony)
    with pytest.raises(InvalidCommand, match="only a parked incoming call"):
        await control.answer(call.id, Answer())
    with pytest.raises(InvalidCommand, match="Only a parked incoming call"):
        await control.reject(call.id, Reject(cause="USER_BUSY"))
    assert telephony.commands() == ["answer"]


@pytest.mark.parametrize(("cause", "sip"), [("USER_BUSY", (486, "Busy Here")),
                                            ("CALL_REJECTED", (603, "Decline"))])
async def test_reject_sends_the_cause_as_a_sip_status(
        control: CallControl, telephony: FakeTelephony, cause: str, sip: tuple[int, str]
) -> None:
    call = await incoming(control)
    await control.reject(call.id, Reject(cause=cause))  # type: ignore[arg-type]
    assert call.state is CallState.HANGING_UP
    assert telephony.sent == [Sent("reject", call.id, sip)]


# -- dial --------------------------------------------------------------------------

async def test_dial_stores_the_call_and_sends_the_invite(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    receipt = await control.dial(Dial(
        connection_id="default", to="+15550003333", from_="+15550004444",
        from_display_name="Front desk", custom_headers=(("X-Case", "42"),),
        client_state="YQ==", timeout_secs=12))
    data = orjson.loads(receipt.body)["data"]
    ccid = data["call_control_id"]
    assert receipt.status_code == 200 and data["is_alive"] is False  # not up until answered
    assert data["state"] == "bridging" and data["client_state"] == "YQ=="
    assert telephony.sent == [Sent("dial", ccid, (
        "sip:+15550003333@trunk.example:5060", "sip:+15550004444@callstream.invalid",
        "Front desk", [("X-Case", "42")]))]
    call = control.calls[ccid]
    assert call.record.details["timeout_secs"] == 12
    assert isinstance(call.setup, Dial) and call.setup.from_display_name == "Front desk"
    assert types(await stored_events(store, ccid)) == ["call.initiated"]


async def test_a_repeated_dial_command_id_places_one_call(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    dial = Dial(connection_id="default", to="sip:bob@127.0.0.1:9", from_="+15550004444",
                command_id="once")
    first, again = await asyncio.gather(control.dial(dial), control.dial(dial))
    assert first == again
    assert telephony.commands() == ["dial"] and len(control.calls) == 1
    assert types(await stored_events(store)) == ["call.initiated"]


async def test_a_dial_command_id_sent_to_two_nodes_places_one_call(
        postgres: PostgresServer) -> None:
    """Two nodes (Call Controls on their own stores) on one PostgreSQL: the same dial
    command_id on both at once places one call, and both answer the first's receipt."""
    url = postgres.new_database()
    stores = [SqlStore(url), SqlStore(url)]
    for one in stores:
        await one.open()
    try:
        await stores[0].put_application(Application(
            id="default", application_name="default", webhook_event_url="http://127.0.0.1:9/h",
            webhook_event_failover_url=None, webhook_timeout_secs=7, active=True,
            created_at=NOW_ISO, updated_at=NOW_ISO))
        phones = [FakeTelephony(), FakeTelephony()]
        nodes = [control_with(one, phone) for one, phone in zip(stores, phones, strict=True)]
        for n in range(5):
            dial = Dial(connection_id="default", to="sip:bob@127.0.0.1:9",
                        from_="+15550004444", command_id=f"twice-{n}")
            first, second = await asyncio.gather(nodes[0].dial(dial), nodes[1].dial(dial))
            assert first == second
        assert len(phones[0].commands() + phones[1].commands()) == 5
        assert len(nodes[0].calls) + len(nodes[1].calls) == 5
        assert types(await stored_events(stores[0])) == ["call.initiated"] * 5
    finally:
        for one in stores:
            await one.close()


async def test_dial_refusals_name_the_field(control: CallControl, store: SqlStore) -> None:
    with pytest.raises(UnknownApplication) as unknown:
        await control.dial(Dial(connection_id="nope", to="sip:a@b", from_="+15550004444"))
    assert unknown.value.pointer == "/connection_id"
    no_trunk = control_with(store)
    with pytest.raises(InvalidCommand, match="outbound trunk") as number:
        await no_trunk.dial(Dial(connection_id="default", to="+15550003333",
                                 from_="+15550004444"))
    assert number.value.pointer == "/to"
    assert await stored_events(store) == []


async def test_a_draining_node_places_no_new_call_but_replays_a_known_command_id(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    dial = Dial(connection_id="default", to="sip:bob@127.0.0.1:9", from_="+15550004444",
                command_id="before")
    first = await control.dial(dial)
    control.draining = True
    with pytest.raises(NodeDraining, match="draining"):
        await control.dial(Dial(connection_id="default", to="sip:bob@127.0.0.1:9",
                                from_="+15550004444"))
    assert await control.dial(dial) == first  # the answer it gave before the drain
    assert telephony.commands() == ["dial"]
    assert types(await stored_events(store)) == ["call.initiated"]


async def test_a_dial_telephony_fails_ends_visibly(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    telephony.dial_error = OSError("no route")
    receipt = await control.dial(Dial(connection_id="default", to="sip:a@127.0.0.1:9",
                                      from_="+15550004444"))
    ccid = orjson.loads(receipt.body)["data"]["call_control_id"]
    events = await stored_events(store, ccid)
    assert types(events) == ["call.initiated", "call.hangup"]
    assert events[1][1]["hangup_cause"] == "unspecified"
    assert ccid not in control.calls


# -- hangup, and the errors after it ------------------------------------------------

async def test_hangup_once_per_command_id_then_the_call_has_ended(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    call = await answered(control, telephony)
    hangup = Hangup(command_id="bye", custom_headers=(("X-Why", "done"),))
    first = await control.hangup(call.id, hangup)
    assert call.state is CallState.HANGING_UP
    assert await control.hangup(call.id, hangup) == first
    assert telephony.sent[-1] == Sent("hangup", call.id, ([("X-Why", "done")],))
    assert telephony.commands().count("hangup") == 1
    await control.leg_ended(call, cause="normal_clearing", source="callstream", sip_code=200)
    events = await stored_events(store, call.id)
    assert types(events) == ["call.initiated", "call.answered", "call.hangup"]
    assert events[-1][1]["hangup_cause"] == "normal_clearing"
    assert events[-1][1]["sip_hangup_cause"] == "200"
    # The recorded answer still stands; a new command on the ended call is refused.
    assert await control.hangup(call.id, hangup) == first
    with pytest.raises(CallEnded):
        await control.hangup(call.id, Hangup())
    with pytest.raises(CallNotFound):
        await control.hangup("v3:unknown", Hangup())


async def test_a_hangup_ends_what_the_call_carries_first(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    """Features' stop webhooks are stored before call.hangup, in one transaction."""
    call = await answered(control, telephony)

    class Feature:
        detached: list[str] = []

        def detach(self, reason: str) -> list[tuple[str, dict[str, object]]]:
            self.detached.append(reason)
            return [("streaming.stopped", {"stream_id": "s1"})]

    call.features["stream:s1"] = Feature()
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    assert Feature.detached == ["hangup"] and call.features == {}
    assert types(await stored_events(store, call.id))[-2:] == [
        "streaming.stopped", "call.hangup"]


# -- bridge ------------------------------------------------------------------------

async def test_bridge_two_answered_calls(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    a = await answered(control, telephony)
    b = await answered(control, telephony)
    await control.bridge(a.id, Bridge(call_control_id=b.id))
    assert (a.bridged_with, b.bridged_with) == (b.id, a.id)
    assert telephony.sent[-1] == Sent("bridge", a.id, (b.id,))
    for leg in (a, b):
        assert types(await stored_events(store, leg.id))[-1] == "call.bridged"
    await control.leg_ended(b, cause="normal_clearing", source="caller", sip_code=None)
    assert a.bridged_with is None


async def test_bridge_refusals(control: CallControl, telephony: FakeTelephony) -> None:
    a = await answered(control, telephony)
    parked = await incoming(control)
    with pytest.raises(CallNotAnswered, match=parked.id):
        await control.bridge(a.id, Bridge(call_control_id=parked.id))
    with pytest.raises(CallNotFound) as unknown:
        await control.bridge(a.id, Bridge(call_control_id="v3:gone"))
    assert unknown.value.pointer == "/call_control_id"
    with pytest.raises(InvalidCommand, match="itself"):
        await control.bridge(a.id, Bridge(call_control_id=a.id))
    assert "bridge" not in telephony.commands()


# -- a bridge with a call of another process (calls/remote_bridge.py) ---------------

@pytest.fixture
async def remote(control: CallControl) -> AsyncIterator[list[tuple[str, str]]]:
    """Bridges with other processes' calls on; the notices their owners would get."""
    told: list[tuple[str, str]] = []
    bridges = RemoteBridges("http://127.0.0.1:9", "token", "127.0.0.1")

    def tell_left(other: str, call_id: str, ssrc: int) -> None:
        told.append((other, call_id))

    bridges.tell_left = tell_left  # type: ignore[method-assign]
    control.remote_bridges = bridges
    yield told


#: The other process's end (no audio flows in these tests: nothing is sent to it).
THEIRS = HopOffer("127.0.0.1", 9, 16000, 1234)


async def test_a_call_joins_and_leaves_a_remote_bridge(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        remote: list[tuple[str, str]]) -> None:
    a = await answered(control, telephony)
    ours = await control.join_remote(a.id, "v3:far", THEIRS)
    assert ours.sample_rate == 8000 and ours.host == "127.0.0.1"
    assert a.bridged_with == "v3:far"
    assert a.record.details["remote_bridge"] == {"call": "v3:far",
                                                 "ssrc": a.features["remote_bridge"].hop.ssrc}
    assert types(await stored_events(store, a.id))[-1] == "call.bridged"
    hub = telephony.legs[a.id].hub
    assert "peer:v3:far" in hub.legs and hub.sample_rate("peer:v3:far") == 16000
    # Not its peer, or a notice of an older hop of the same two calls: nothing changes.
    await control.leave_remote(a.id, "v3:someone-else", THEIRS.ssrc)
    await control.leave_remote(a.id, "v3:far", THEIRS.ssrc + 1)
    assert a.bridged_with == "v3:far"
    await control.leave_remote(a.id, "v3:far", THEIRS.ssrc)
    assert a.bridged_with is None and "peer:v3:far" not in hub.legs
    stored = await store.get_call(a.id)
    assert stored is not None and "remote_bridge" not in stored.details
    assert remote == []  # the far call ended and told us: nobody to tell


async def test_a_remote_bridge_ends_with_its_call_or_a_new_bridge(
        control: CallControl, telephony: FakeTelephony,
        remote: list[tuple[str, str]]) -> None:
    a, b, c = [await answered(control, telephony) for _ in range(3)]
    await control.join_remote(a.id, "v3:far", THEIRS)
    await control.join_remote(a.id, "v3:far", THEIRS)  # a retry: no notice
    assert remote == []
    await control.bridge(a.id, Bridge(call_control_id=b.id))  # bridged anew, here
    assert remote == [("v3:far", a.id)] and a.bridged_with == b.id
    await control.join_remote(c.id, "v3:other", THEIRS)
    await control.leg_ended(c, cause="normal_clearing", source="caller", sip_code=None)
    assert remote[-1] == ("v3:other", c.id)
    assert "peer:v3:other" not in telephony.legs[c.id].hub.legs


async def test_a_remote_bridge_refusals(
        control: CallControl, telephony: FakeTelephony, monkeypatch: pytest.MonkeyPatch,
        remote: list[tuple[str, str]]) -> None:
    parked = await incoming(control)
    with pytest.raises(CallNotAnswered):
        await control.join_remote(parked.id, "v3:far", THEIRS)
    with pytest.raises(CallNotFound):
        await control.join_remote("v3:gone", "v3:far", THEIRS)
    a = await answered(control, telephony)
    monkeypatch.setattr("callstream.calls.control.PEER_LOCK_SECS", 0.05)
    async with control.lock(a.id):  # a command on a holds it (a bridge crossing ours)
        with pytest.raises(PeerUnavailable, match="busy"):
            await control.join_remote(a.id, "v3:far", THEIRS)
    assert a.bridged_with is None


async def test_a_leg_that_ends_while_its_hop_opens_is_refused_not_crashed(
        control: CallControl, telephony: FakeTelephony, monkeypatch: pytest.MonkeyPatch,
        remote: list[tuple[str, str]]) -> None:
    """The caller's BYE can land while a cross-worker bridge opens its hop: the join is
    refused as for an ended call (422 90018), not a 500, and leaves nothing open."""
    a = await answered(control, telephony)
    media = telephony.legs[a.id]
    assert control.remote_bridges is not None
    real_open = control.remote_bridges.open
    opened: list[RemoteBridge] = []

    async def open_then_lose_the_leg(*args: Any) -> RemoteBridge:
        half = await real_open(*args)
        opened.append(half)
        media.hub.remove_leg(media.leg)  # the BYE, handled while the hop opened
        return half

    monkeypatch.setattr(control.remote_bridges, "open", open_then_lose_the_leg)
    with pytest.raises(CallEnded, match="no media any more"):
        await control.join_remote(a.id, "v3:far", THEIRS)
    assert opened[0].hop.closed and a.bridged_with is None
    assert "peer:v3:far" not in media.hub.legs


async def test_a_leg_that_ends_while_the_far_call_joins_leaves_it_again(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        monkeypatch: pytest.MonkeyPatch, remote: list[tuple[str, str]]) -> None:
    """The bridging side: our BYE lands while the far owner joins; its call is told to
    leave again and the command is refused as for an ended call."""
    a = await answered(control, telephony)
    far = new_record(direction="incoming", connection_id="default", from_="+1", to="+2",
                     state=CallState.ANSWERED, start_time=NOW_ISO, owner="elsewhere")
    await store.commit(Change(calls=[far]))
    media = telephony.legs[a.id]
    assert control.remote_bridges is not None

    async def join_then_lose_the_leg(*args: Any) -> HopOffer:
        media.hub.remove_leg(media.leg)
        return THEIRS

    monkeypatch.setattr(control.remote_bridges, "ask_join", join_then_lose_the_leg)
    with pytest.raises(CallEnded, match="no media any more"):
        await control.bridge(a.id, Bridge(call_control_id=far.call_control_id))
    assert remote == [(far.call_control_id, a.id)] and a.bridged_with is None


# -- the media a feature taps --------------------------------------------------------

async def test_media_or_the_one_right_error(
        control: CallControl, telephony: FakeTelephony) -> None:
    parked = await incoming(control)
    with pytest.raises(CallNotAnswered, match="before it is streamed"):
        control.media(parked, purpose="streamed")
    call = await answered(control, telephony)
    assert control.media(call, purpose="forked") is telephony.legs[call.id]
    del telephony.legs[call.id]  # the leg's media closed before its end is reported
    with pytest.raises(CallEnded, match="no media any more"):
        control.media(call, purpose="forked")
    await control.hangup(call.id, Hangup())
    with pytest.raises(CallEnded, match="hanging up"):
        control.media(call, purpose="forked")


# -- locks and the start-up sweep ---------------------------------------------------

async def test_commands_on_unknown_ids_leave_no_lock(store: SqlStore) -> None:
    control = control_with(store)
    for n in range(500):
        with pytest.raises(CallNotFound):
            await control.hangup(f"v3:{'x' * 200}{n}", Hangup())
    assert len(control.call_locks) == 0


async def test_a_command_waits_for_the_call_lock(store: SqlStore) -> None:
    control = control_with(store)
    async with control.lock("v3:busy"):
        command = asyncio.create_task(control.hangup("v3:busy", Hangup()))
        await asyncio.sleep(0.05)
        assert not command.done()
        assert len(control.call_locks) == 1
    with pytest.raises(CallNotFound):
        await command
    assert len(control.call_locks) == 0


async def _hangups(store: SqlStore) -> list[dict[str, object]]:
    async with store.reading() as conn:
        rows = (await conn.execute(
            select(t.webhook_outbox.c.data, t.webhook_outbox.c.timeout_secs)
            .where(t.webhook_outbox.c.event_type == "call.hangup"))).all()
    return [{**orjson.loads(r.data), "timeout_secs": r.timeout_secs} for r in rows]


async def test_every_call_alive_at_start_ends_once_whoever_owned_it(store: SqlStore) -> None:
    records = [
        new_record(direction="outgoing", connection_id="default", from_="+15550001111",
                   to=f"sip:n{n}@127.0.0.1:9", state=CallState.BRIDGING, start_time=NOW,
                   owner=owner)
        for n, owner in enumerate(["host-a:127.0.0.1:5060", "host-b:127.0.0.1:5070",
                                   "container-1f2e:0.0.0.0:5060"])
    ]
    await store.commit(Change(calls=records))
    control = control_with(store)

    assert await control.close_orphans() == 3
    assert await store.list_calls(alive=True) == []
    hangups = await _hangups(store)
    assert sorted(h["payload"]["call_control_id"] for h in hangups) == sorted(  # type: ignore[index]
        r.call_control_id for r in records)
    assert {h["timeout_secs"] for h in hangups} == {7.0}
    for rec in records:
        ended = await store.get_call(rec.call_control_id)
        assert ended is not None and not ended.is_alive and ended.state == "hangup"
        assert ended.hangup_source == "unknown" and ended.end_time

    # A second sweep (a restart, or one after a crash midway) finds nothing more to end.
    assert await control.close_orphans() == 0
    assert len(await _hangups(store)) == 3
