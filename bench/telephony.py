"""The figures of issue 12's SIP fixes, measured (not collected by pytest).

Run: ``python bench/telephony.py [--json out.json]``

One process, real sockets on loopback: the server's :class:`Switch` (with a stand-in
for Call Control that parks every call) is called by a phone built from our own stack
(a :class:`SipTransport` and a :class:`Leg`), which counts the RTP it receives.

* hold: answered with ``send_silence_when_idle``, the phone talks 2 s, holds (re-INVITE
  ``a=sendonly``) 3 s, resumes 2 s: packets received in each phase, and our answers'
  ``o=`` session id, version and direction;
* silence: an answered call with nothing to play, 6 s, without and with
  ``send_silence_when_idle``;
* DTMF: three key presses (84 telephone-event packets) sent between the audio packets
  of one stream, as baresip does: the hangup's ``jitter_packet_count``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from callstream.calls.locks import KeyedLocks
from callstream.calls.model import Call, new_record
from callstream.calls.requests import Answer
from callstream.calls.state import CallEvent, CallState
from callstream.config import Settings
from callstream.media.codecs import PCMU
from callstream.media.hub import MediaHub
from callstream.media.rtp import RtpPacket
from callstream.media.session import RtpSession
from callstream.media.transport import Pacer, PortAllocator
from callstream.sip import endpoint as sip
from callstream.sip.offer_answer import build_offer
from callstream.sip.sdp import Direction, SdpSession
from callstream.sip.transport import SipTransport
from callstream.telephony.leg import Leg, MediaOptions
from callstream.telephony.switch import Switch

HOST = "127.0.0.1"
E = TypeVar("E", bound=sip.SipEvent)


class ParkingCallControl:
    """Parks every call and hands it to the bench (the TelephonyReports side)."""

    def __init__(self) -> None:
        self.parked: asyncio.Queue[Call] = asyncio.Queue()
        self.locks = KeyedLocks()

    async def incoming_call(self, *, from_: str, to: str, connection_id: str,
                            details: dict[str, Any]) -> Call | None:
        record = new_record(direction="incoming", connection_id=connection_id, from_=from_,
                            to=to, state=CallState.PARKED, start_time="", owner="bench",
                            details=details)
        call = Call(record=record, state=CallState.PARKED)
        self.parked.put_nowait(call)
        return call

    async def leg_answered(self, call: Call, media: dict[str, Any]) -> None:
        call.apply(CallEvent.ANSWERED)

    async def leg_ended(self, call: Call, *, cause: str, source: str, sip_code: int | None,
                        quality: dict[str, Any] | None = None) -> None:
        return None

    async def leg_event(self, call: Call, event_type: str, extra: dict[str, Any]) -> None:
        return None

    def lock(self, call_control_id: str) -> AbstractAsyncContextManager[None]:
        return self.locks.hold(call_control_id)


class Phone:
    """A UAC on our stack: one call to the switch, its answers and RTP counted."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[sip.SipEvent] = asyncio.Queue()
        self.pacer = Pacer()

    async def call(self, switch: Switch, domain: ParkingCallControl,
                   answer: Answer) -> tuple[Leg, list[str]]:
        """Call, get answered with ``answer``'s options; the leg and the answer's o=."""
        self.sip = await SipTransport.start(HOST, 0, self.events.put_nowait, tcp=False)
        leg = await Leg.open("phone", MediaHub("phone"), MediaOptions(HOST),
                             ports=PortAllocator(45000, 45999), pacer=self.pacer)
        target = f"sip:bench@{HOST}:{switch.signaling.local_addr[1]}"
        with self.sip.command() as now:
            leg.handle = self.sip.endpoint.invite(target, from_uri=f"sip:phone@{HOST}",
                                                  sdp=leg.offer(), now=now)
        call = await domain.parked.get()
        for _ in range(1000):  # until the switch holds the call's leg (it rings then)
            if call.id in switch.by_call:
                break
            await asyncio.sleep(0.01)
        call.setup = answer
        call.apply(CallEvent.ANSWER)
        switch.answer(call)
        sdp = (await self.next(sip.CallAnswered)).sdp
        leg.accept(sdp)
        assert sdp is not None
        return leg, _said(sdp)

    async def next(self, kind: type[E]) -> E:
        while True:
            event = await asyncio.wait_for(self.events.get(), 10)
            if isinstance(event, kind):
                return event

    async def reinvite(self, leg: Leg, direction: Direction) -> list[str]:
        """Re-offer with ``direction``; the answer's o= sess-id, version and direction."""
        offer = build_offer(local_addr=HOST, local_port=leg.rtp.local_port, session_id=1,
                            direction=direction)
        with self.sip.command() as now:
            self.sip.endpoint.reinvite(leg.handle, offer, now)
        answer = (await self.next(sip.ReinviteAnswered)).sdp
        assert answer is not None
        return _said(answer)

    async def hang_up(self, leg: Leg) -> None:
        with self.sip.command() as now:
            self.sip.endpoint.bye(leg.handle, now)
        await self.next(sip.DialogEnded)
        leg.close()
        self.pacer.stop()
        await self.sip.close()


def _said(sdp: SdpSession) -> list[str]:
    """An answer's o= sess-id and version, and its direction."""
    return [sdp.origin.session_id, str(sdp.origin.session_version),
            sdp.media_direction(sdp.media[0]).value]


async def received_during(leg: Leg, seconds: float) -> int:
    before = leg.session.packets_received
    await asyncio.sleep(seconds)
    return leg.session.packets_received - before


async def hold_and_silence(switch: Switch, domain: ParkingCallControl) -> dict[str, Any]:
    phone = Phone()
    leg, first = await phone.call(switch, domain, Answer(send_silence_when_idle=True))
    talking = await received_during(leg, 2.0)
    held = await phone.reinvite(leg, Direction.SENDONLY)
    await asyncio.sleep(0.1)
    holding = await received_during(leg, 3.0)
    again = await phone.reinvite(leg, Direction.SENDONLY)
    resumed = await phone.reinvite(leg, Direction.SENDRECV)
    await asyncio.sleep(0.1)
    after = await received_during(leg, 2.0)
    await phone.hang_up(leg)
    results: dict[str, Any] = {
        "talking_2s": talking, "holding_3s": holding, "resumed_2s": after,
        "o_lines": [first, held, again, resumed],
    }
    for silence in (False, True):
        phone = Phone()
        leg, _ = await phone.call(switch, domain, Answer(send_silence_when_idle=silence))
        results[f"idle_6s_silence_{str(silence).lower()}"] = await received_during(leg, 6.0)
        await phone.hang_up(leg)
    return results


def dtmf_between_audio() -> dict[str, int]:
    """Sans-I/O: 3 key presses of 28 event packets each between 400 audio packets."""
    session = RtpSession(PCMU, remote_address=(HOST, 1))
    encode = PCMU.new_encoder().encode
    seq = events = 0
    for n in range(400):
        session.receive_rtp(RtpPacket(0, seq, 160 * n, 7, encode(bytes(320))).serialize(),
                            (HOST, 1), n * 0.02)
        seq += 1
        if n in range(100, 128) or n in range(200, 228) or n in range(300, 328):
            payload = bytes([1, 10]) + struct.pack("!H", 160 * (n % 100 + 1))
            session.receive_rtp(RtpPacket(101, seq, 160 * (n - n % 100), 7, payload)
                                .serialize(), (HOST, 1), n * 0.02)
            seq += 1
            events += 1
        session.playout(n * 0.02)
    return {"event_packets": events, "jitter_packet_count": session.quality().jitter_packets,
            "telephone_event_packets": session.telephone_event_packets}


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(sip=f"{HOST}:0", data_dir=Path(data), rtp_port_min=46000,
                            rtp_port_max=46999)
        domain = ParkingCallControl()
        switch = Switch(settings, domain)
        await switch.start()
        try:
            results = await hold_and_silence(switch, domain)
        finally:
            await switch.stop()
    results["dtmf"] = dtmf_between_audio()
    rows = [
        ("packets received, 2 s talking (silence on)", results["talking_2s"]),
        ("packets received, 3 s held (a=sendonly)", results["holding_3s"]),
        ("packets received, 2 s after resume", results["resumed_2s"]),
        ("packets in 6 s idle, send_silence_when_idle false",
         results["idle_6s_silence_false"]),
        ("packets in 6 s idle, send_silence_when_idle true",
         results["idle_6s_silence_true"]),
        ("telephone-event packets between audio", results["dtmf"]["event_packets"]),
        ("jitter_packet_count with them", results["dtmf"]["jitter_packet_count"]),
    ]
    for name, value in rows:
        print(f"{name:<52} {value:>6}")
    print("o= (sess-id version direction) of our answers: "
          + "; ".join(" ".join(o) for o in results["o_lines"]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    json_path = parser.parse_args().json
    measured = asyncio.run(main())
    if json_path is not None:
        json_path.write_text(json.dumps(measured, indent=2))
