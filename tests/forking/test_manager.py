"""ForkManager on Call Control with a fake telephony, a real media hub, real UDP
receivers on loopback and a real SQLite store: fork_start/fork_stop, their webhooks,
what a fork sends, and each refusal."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callstream.calls.control import CallControl
from callstream.calls.exceptions import (
    CallEnded,
    CallNotAnswered,
    DestinationRefused,
    InvalidCommand,
    InvalidValue,
    MissingParameter,
    NotForked,
)
from callstream.calls.model import Call
from callstream.calls.requests import Answer, ForkStart, ForkStop, Hangup
from callstream.forking.manager import FEATURE_KEY, ForkManager
from callstream.forking.sender import ForkStats
from callstream.media.hub import Track
from callstream.media.rtp import RtpView
from callstream.outbound.policy import OutboundPolicy
from callstream.store.sql import SqlStore
from tests.calls.fakes import FakeTelephony, control_with, sqlite_store, stored_events

OPEN = OutboundPolicy.from_lists(allow=["127.0.0.0/8"], deny=[])
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
        lambda calls: ForkManager(calls, stats=ForkStats(), outbound=OPEN)])


@pytest.fixture
def receivers() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx, tx = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for sock in (rx, tx):
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
    yield rx, tx
    rx.close()
    tx.close()


def forks(control: CallControl) -> ForkManager:
    manager = control.hooks[0]
    assert isinstance(manager, ForkManager)
    return manager


def udp(sock: socket.socket) -> str:
    return f"udp:127.0.0.1:{sock.getsockname()[1]}"


async def answered(control: CallControl, telephony: FakeTelephony) -> Call:
    call = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                       connection_id="default", details={})
    assert call is not None
    await control.answer(call.id, Answer())
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    telephony.give_media(call)
    return call


async def test_a_fork_sends_each_direction_byte_for_byte_until_stopped(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        receivers: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = receivers
    call = await answered(control, telephony)
    await forks(control).start(call.id, ForkStart(rx=udp(rx), tx=udp(tx)))
    hub = telephony.legs[call.id].hub
    hub.push_packet(call.id, Track.INBOUND, RtpView.parse(PACKET), now=0.0)
    hub.push_packet(call.id, Track.OUTBOUND, RtpView.parse(PACKET[:-1]), now=0.0)
    assert rx.recv(2048) == PACKET
    assert tx.recv(2048) == PACKET[:-1]

    await forks(control).stop(call.id, ForkStop())
    assert FEATURE_KEY not in call.features
    events = await stored_events(store, call.id)
    assert [e for e, _ in events][-2:] == ["call.fork.started", "call.fork.stopped"]
    assert events[-2][1]["stream_type"] == "decrypted"
    with pytest.raises(NotForked):
        await forks(control).stop(call.id, ForkStop())


async def test_the_legacy_target_defaults_to_raw_and_stops_before_the_hangup(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        receivers: tuple[socket.socket, socket.socket]) -> None:
    target, _ = receivers
    call = await answered(control, telephony)
    await forks(control).start(call.id, ForkStart(target=udp(target)))
    telephony.legs[call.id].hub.push_packet(
        call.id, Track.INBOUND, RtpView.parse(PACKET), now=0.0)
    assert target.recv(2048).endswith(PACKET)  # behind its 24-byte STREP header
    with pytest.raises(InvalidCommand, match="already forked"):
        await forks(control).start(call.id, ForkStart(target=udp(target)))
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    events = await stored_events(store, call.id)
    assert [e for e, _ in events][-2:] == ["call.fork.stopped", "call.hangup"]
    assert events[-2][1]["stream_type"] == "raw"


async def test_a_fork_needs_an_answered_call_that_is_not_ending(
        control: CallControl, telephony: FakeTelephony,
        receivers: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = receivers
    parked = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                         connection_id="default", details={})
    assert parked is not None
    with pytest.raises(CallNotAnswered, match="before it is forked"):
        await forks(control).start(parked.id, ForkStart(rx=udp(rx), tx=udp(tx)))
    call = await answered(control, telephony)
    await control.hangup(call.id, Hangup())
    with pytest.raises(CallEnded):
        await forks(control).start(call.id, ForkStart(rx=udp(rx), tx=udp(tx)))
    assert FEATURE_KEY not in call.features


async def test_fork_start_names_the_field_at_fault(
        control: CallControl, telephony: FakeTelephony, store: SqlStore,
        receivers: tuple[socket.socket, socket.socket]) -> None:
    rx, _ = receivers
    call = await answered(control, telephony)
    with pytest.raises(MissingParameter) as missing:
        await forks(control).start(call.id, ForkStart(rx=udp(rx)))
    assert missing.value.pointer == "/tx"
    with pytest.raises(InvalidValue) as both:
        await forks(control).start(call.id, ForkStart(rx=udp(rx), tx=udp(rx), target=udp(rx)))
    assert both.value.pointer == "/target"
    strict = ForkManager(control, stats=ForkStats(),
                         outbound=OutboundPolicy.from_lists(allow=[], deny=["127.0.0.0/8"]))
    with pytest.raises(DestinationRefused) as refused:
        await strict.start(call.id, ForkStart(rx=udp(rx), tx=udp(rx)))
    assert refused.value.pointer == "/rx"
    assert "call.fork.started" not in [e for e, _ in await stored_events(store, call.id)]
