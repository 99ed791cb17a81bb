"""The switch against a fake Call Control, called by our own caller (both on one leg):
reports come in order on the dialog's chain, answers honour the request's options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callstream.calls.model import Call
from callstream.calls.requests import Answer
from callstream.calls.state import CallEvent
from callstream.config import Settings
from callstream.telephony.caller import CallOptions, CallSummary, place_call
from callstream.telephony.switch import Switch
from tests.telephony.helpers import FakeCallControl


@pytest.fixture
async def switched(tmp_path: Path) -> AsyncIterator[tuple[Switch, FakeCallControl]]:
    domain = FakeCallControl()
    settings = Settings(sip="127.0.0.1:0", data_dir=tmp_path, rtp_port_min=43000,
                        rtp_port_max=43999)
    switch = Switch(settings, domain)
    await switch.start()
    yield switch, domain
    await switch.stop()


async def _parked(switch: Switch, domain: FakeCallControl) -> Call:
    """The next incoming call, once the switch has its leg (it rings then)."""
    call = await asyncio.wait_for(domain.incoming.get(), 10)
    for _ in range(1000):  # 10 s
        if call.id in switch.by_call:
            return call
        await asyncio.sleep(0.01)
    raise AssertionError("the switch never took the call's leg")


def _call(switch: Switch, **options: object) -> asyncio.Task[CallSummary]:
    port = switch.signaling.local_addr[1]
    return asyncio.create_task(place_call(CallOptions(
        target=f"sip:+15550001111@127.0.0.1:{port}", rtp_ports=(44000, 44999),
        **options)))  # type: ignore[arg-type]


async def test_an_answered_call_reports_in_order(switched: tuple[Switch, FakeCallControl]
                                                 ) -> None:
    """Answer, a digit, the caller's BYE: incoming, answered, call.dtmf.received, ended, in
    that order (the answer's report waits on the dialog's chain, not in a bare task)."""
    switch, domain = switched
    placing = _call(switch, duration=1.5, dtmf="7", dtmf_delay=0.3, codecs=("PCMA", "PCMU"))
    call = await _parked(switch, domain)
    call.apply(CallEvent.ANSWER)
    switch.answer(call)
    summary = await asyncio.wait_for(placing, 20)
    ended = await domain.wait_for("ended")
    assert domain.kinds(call) == ["incoming", "answered", "call.dtmf.received", "ended"]
    assert domain.reports[1][2] == {"codec": "PCMA", "sampling_rate": 8000}
    assert domain.reports[2][2]["digit"] == "7"
    assert (ended["cause"], ended["source"], ended["sip_code"]) == (
        "normal_clearing", "caller", 200)
    assert ended["quality"] is not None
    assert (summary.status, summary.codec, summary.ended_by) == ("answered", "PCMA", "local")
    assert switch.by_call == {} and switch.by_handle == {}


async def test_answer_honours_preferred_codecs_and_silence(
    switched: tuple[Switch, FakeCallControl]
) -> None:
    """The answer SDP is built when answer runs, with its preferred_codecs (G722 out of the
    caller's PCMU, G722); send_silence_when_idle fills the call with comfort silence."""
    switch, domain = switched
    placing = _call(switch, duration=1.5, codecs=("PCMU", "G722"))
    call = await _parked(switch, domain)
    call.setup = Answer(preferred_codecs="G722", send_silence_when_idle=True)
    call.apply(CallEvent.ANSWER)
    switch.answer(call)
    summary = await asyncio.wait_for(placing, 20)
    assert summary.codec == "G722"
    assert summary.packets_received >= 40  # 1.5 s of silence at 50 packets/s, less the start


async def test_reject_ends_the_leg_with_its_cause(switched: tuple[Switch, FakeCallControl]
                                                  ) -> None:
    switch, domain = switched
    placing = _call(switch)
    call = await _parked(switch, domain)
    call.apply(CallEvent.HANGUP)
    switch.reject(call, 486, "Busy Here")
    summary = await asyncio.wait_for(placing, 20)
    ended = await domain.wait_for("ended")
    assert (summary.status, summary.sip_status) == ("failed", 486)
    assert (ended["cause"], ended["source"], ended["sip_code"]) == ("user_busy", "callee", 486)


async def test_a_refused_call_gets_480(switched: tuple[Switch, FakeCallControl]) -> None:
    switch, domain = switched
    domain.refuse = True
    summary = await asyncio.wait_for(_call(switch), 20)
    assert (summary.status, summary.sip_status) == ("failed", 480)
    assert domain.reports == []
