"""The leg against a real peer (SIPp): hold and resume, our o= line, comfort silence, and
preferred_codecs on answer and dial (issue 12's SIP fixes).

SIPp does the signalling; the audio end is the test's own UDP socket (tests/rtp_peer.py),
so every packet the server sends is counted with its arrival time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.calling import incoming
from tests.e2e.conftest import Rig
from tests.e2e.sipp import DATA, sipp, uac
from tests.helpers import free_udp_tcp_port
from tests.rtp_peer import RtpPeer

pytestmark = pytest.mark.slow

#: SIPp's first pause (-d): the talk before the hold re-INVITE (1.2 s of it measured).
TALK_MS = 1500
#: Packets the RTP clock takes to settle after an answer (one pacer tick, a reordered send).
SETTLE_S = 0.3


@pytest.fixture
def peer() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    try:
        yield peer
    finally:
        peer.close()


def _answers(path: Path, count: int, timeout: float = 40.0) -> dict[int, tuple[float, list[str]]]:
    """Each 200 OK SIPp logged ("cseq sess-id version direction port pt") and when the
    test first saw it."""
    seen: dict[int, tuple[float, list[str]]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"SIPp logged {len(seen)} of {count} answers"
        if path.exists():
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) == 6 and int(fields[0]) not in seen:
                    seen[int(fields[0])] = (time.monotonic(), fields[1:])
        time.sleep(0.02)
    return seen


def _packets(peer: RtpPeer, start: float, end: float) -> int:
    return sum(1 for r in list(peer.received) if start <= r.time < end)


def test_hold_is_honoured_and_the_o_line_keeps_its_session(
    rig: Rig, peer: RtpPeer, tmp_path: Path
) -> None:
    """The phone holds (a=sendonly) and resumes: we answer recvonly and send nothing while
    held, sendrecv and send again after. Our o= keeps one session id; its version goes up
    with each change of our SDP and not for the repeated hold offer (RFC 3264 §8).
    Answered with send_silence_when_idle, the call carries RTP with nothing to play, and
    preferred_codecs picks PCMA from the offer's PCMU, PCMA, G722."""
    answers_file = tmp_path / "answers"
    proc = uac(rig.sip_target, "uac_hold.xml", cwd=tmp_path, local_port=free_udp_tcp_port(),
               media_port=free_udp_tcp_port(), hold_ms=TALK_MS, service="holder",
               extra=("-key", "rtp_port", str(peer.port), "-key", "formats", "0 8 9 101",
                      "-key", "answers_file", str(answers_file)))
    try:
        ccid = incoming(rig, "holder")
        rig.sdk.calls.actions.answer(ccid, send_silence_when_idle=True,
                                     preferred_codecs="PCMA,G722")
        answers = _answers(answers_file, 4)
        # Resumed: audio again, within a second (done as soon as 10 packets came).
        until = time.monotonic() + 1.0
        while (_packets(peer, answers[4][0] + SETTLE_S, time.monotonic()) < 10
               and time.monotonic() < until):
            time.sleep(0.05)
        resumed_end = time.monotonic()
        rig.sdk.calls.actions.hangup(ccid)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    fields = {cseq: f for cseq, (_, f) in answers.items()}
    assert {f[0] for f in fields.values()} == {fields[1][0]}  # one session id
    assert [int(fields[c][1]) for c in (1, 2, 3, 4)] == [1, 2, 2, 3]
    assert [fields[c][2] for c in (1, 2, 3, 4)] == ["sendrecv", "recvonly", "recvonly",
                                                     "sendrecv"]
    assert {fields[c][4] for c in fields} == {"8"}  # PCMA, kept through the re-INVITEs
    assert {fields[c][3] for c in fields} == {fields[1][3]}  # our port never moved

    answered, held, resumed = answers[1][0], answers[2][0], answers[4][0]
    talking = _packets(peer, answered + SETTLE_S, held)
    # The resume is answered before SIPp logs it: the window closes well before.
    holding = _packets(peer, held + SETTLE_S, resumed - 2 * SETTLE_S)
    after = _packets(peer, resumed + SETTLE_S, resumed_end)
    # 50 packets/s of comfort silence, none while held (before: 50/s all through the hold).
    assert talking >= 25 * (held - answered - SETTLE_S), (talking, held - answered)
    assert holding == 0 and resumed - held > 2.0, (holding, resumed - held)
    assert after >= 10, after
    assert {r.payload_type for r in peer.received} == {8}


@dataclass
class Dialled:
    """A call the server dialled to SIPp (uas_answers_first.xml), the test's socket as
    the callee's audio."""

    ccid: str
    codec: str  # call.answered's
    formats: list[str]  # the offer's m= formats, in order
    hangup: dict[str, Any] = field(default_factory=dict)  # call.hangup's payload, at the end


@contextmanager
def _dialled(rig: Rig, tmp_path: Path, peer: RtpPeer, direction: str,
             **dial: object) -> Iterator[Dialled]:
    """Dial a SIPp UAS that answers the first offered codec with ``a=<direction>``; point
    ``peer`` at the server's RTP port; hang up at the end."""
    port = free_udp_tcp_port()
    proc = sipp("-sf", str(DATA / "uas_answers_first.xml"), "-i", "127.0.0.1", "-p", str(port),
                "-mp", str(free_udp_tcp_port()), "-m", "1", "-key", "rtp_port", str(peer.port),
                "-key", "direction", direction, "-trace_logs", cwd=tmp_path, timeout=60)
    try:
        call = rig.sdk.calls.dial(connection_id="default", to=f"sip:peer@127.0.0.1:{port}",
                                  from_="+15550003333", **dial)  # type: ignore[arg-type]
        assert call.data is not None and call.data.call_control_id
        ccid = call.data.call_control_id
        answered = rig.hooks.wait_event("call.answered", ccid)
        log = tmp_path / f"uas_answers_first_{proc.pid}_logs.log"
        deadline = time.monotonic() + 10
        while not (log.exists() and "OFFER " in log.read_text()):
            assert time.monotonic() < deadline, "SIPp logged no offer"
            time.sleep(0.05)
        match = re.search(r"OFFER (\d+) ([0-9 ]+)", log.read_text())
        assert match
        peer.remote = ("127.0.0.1", int(match[1]))
        dialled = Dialled(ccid, str(answered.payload["codec"]), match[2].split())
        yield dialled
        rig.sdk.calls.actions.hangup(ccid)
        dialled.hangup = rig.hooks.wait_event("call.hangup", ccid).payload
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_dial_offers_preferred_codecs_first_and_sends_silence(
    rig: Rig, peer: RtpPeer, tmp_path: Path
) -> None:
    """preferred_codecs orders our offer (the rest follow); send_silence_when_idle makes
    the dialled leg send RTP with nothing to play."""
    with _dialled(rig, tmp_path, peer, "sendrecv", preferred_codecs="G722,PCMA",
                  send_silence_when_idle=True) as call:
        until = time.monotonic() + 2.0  # done as soon as 50 packets came
        while len(peer.received) < 50 and time.monotonic() < until:
            time.sleep(0.05)
    assert call.formats[:3] == ["9", "8", "0"], call.formats
    assert call.codec == "G722"
    assert len(peer.received) >= 50  # 2 s at 50 packets/s, less the start
    assert {r.payload_type for r in peer.received} == {9}


def test_dial_answered_sendonly_sends_nothing(
    rig: Rig, peer: RtpPeer, tmp_path: Path
) -> None:
    """The callee answers our offer with a=sendonly (it holds us): we receive only, so even
    with send_silence_when_idle no packet goes out; without preferred_codecs the offer
    keeps our own order."""
    with _dialled(rig, tmp_path, peer, "sendonly", send_silence_when_idle=True) as call:
        time.sleep(2.0)
    assert call.formats[:3] == ["0", "8", "9"], call.formats
    assert call.codec == "PCMU"
    assert peer.received == []


def test_idle_leg_without_silence_sends_nothing(
    rig: Rig, peer: RtpPeer, tmp_path: Path
) -> None:
    """The default (send_silence_when_idle false) is unchanged: nothing to play, no RTP."""
    with _dialled(rig, tmp_path, peer, "sendrecv"):
        time.sleep(2.0)
    assert peer.received == []


@pytest.mark.parametrize(
    ("value", "message"),
    [("OPUS,PCMU", "unknown codec 'OPUS'"), ("PCMU,,G722", "separated by commas"),
     ("", "no codec")],
)
def test_preferred_codecs_is_checked(rig: Rig, value: str, message: str) -> None:
    with rig.server.client() as c:
        r = c.post("/v2/calls", json={"connection_id": "default", "to": "sip:x@127.0.0.1:9",
                                      "from": "+15550003333", "preferred_codecs": value})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["source"] == {"pointer": "/preferred_codecs"}
    assert message in err["detail"]


def test_dtmf_between_audio_packets_is_no_jitter_discard(
    rig: Rig, peer: RtpPeer, tmp_path: Path
) -> None:
    """A phone that keeps its audio going during a key press (baresip) sends audio and
    telephone-events in one sequence space: the digits arrive, and call.hangup's
    jitter_packet_count is no longer one per event packet."""
    with _dialled(rig, tmp_path, peer, "sendrecv") as call:
        _audio_with_digits(peer, "147", seconds=4.0)
        for digit in "147":
            rig.hooks.wait_for(lambda d, digit=digit: d.event_type == "call.dtmf.received"
                               and d.payload.get("call_control_id") == call.ccid
                               and d.payload.get("digit") == digit)
    inbound = call.hangup["call_quality_stats"]["inbound"]
    assert int(inbound["packet_count"]) >= 150 + 3 * 8
    # Each event packet was a discard (14 of these 24 before; tests/media/test_session.py
    # pins it at 0 without a clock); a loaded host may drop a few audio packets of its own.
    assert int(inbound["jitter_packet_count"]) < 8, inbound


def _audio_with_digits(peer: RtpPeer, digits: str, seconds: float) -> None:
    """Paced PCMU with each digit's RFC 4733 packets (5 updates, 3 ends) sent between the
    audio packets of the same stream, one second apart."""
    assert peer.remote is not None
    silence = bytes([0xFF]) * 160
    start = time.monotonic()
    ticks = int(seconds / 0.02)
    for n in range(ticks):
        peer.sock.sendto(peer._packet(0, silence, n == 0, 160 * n), peer.remote)
        index, step = divmod(n - 25, 50)
        if 0 <= index < len(digits) and step < 8:
            event = "0123456789*#ABCD".index(digits[index])
            end = 0x80 if step >= 5 else 0
            duration = 160 * min(step + 1, 5)
            payload = bytes([event, end | 10]) + duration.to_bytes(2, "big")
            peer.sock.sendto(peer._packet(101, payload, step == 0, 160 * (25 + 50 * index)),
                             peer.remote)
        # Paced from the last send: after a stall it goes on, not in a burst.
        start = max(start, time.monotonic() - (n + 1) * 0.02)
        delay = start + (n + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
