"""RTP hijack ("RTP bleed", issue #11): a stranger sprays PCMU at a leg's RTP port while the
caller is silent. A real call (SIPp signalling, the test's own RTP socket as the caller), a
real WebSocket consumer as the other party, a real UDP socket as the attacker."""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callstream.media.codecs import PCMU
from callstream.media.rtp import build_packet
from tests.audio import speech
from tests.e2e.calling import incoming
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.sipp import DATA, sipp
from tests.e2e.test_streaming import peer_call
from tests.helpers import entered_together, free_udp_tcp_port
from tests.rtp_peer import RtpPeer
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

ATTACK_PAYLOAD = bytes([0x2A]) * 160  # loud, and survives the PCMU decode/encode unchanged
ATTACK_PACKETS = 150  # 3 s at 20 ms
SILENCE = 1.5  # seconds the caller says nothing: more than the old 1 s re-latch delay


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def rejected_foreign(rig: Rig) -> float:
    with rig.server.client() as http:
        text = http.get("/metrics").text
    match = re.search(
        r'^callstream_rtp_rejected_packets_total\{protocol="rtp",reason="foreign"\} (\S+)$',
        text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def inbound_payloads(conn: Connection) -> list[bytes]:
    return [base64.b64decode(f["media"]["payload"]) for f in conn.of("media")
            if f["media"]["track"] == "inbound"]


class Sprayer:
    """The attacker: sends in-sequence PCMU from its own socket, counts what comes back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.received = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.received += 1

    def spray(self, packets: int) -> None:
        start = time.monotonic()
        for seq in range(packets):
            self.sock.sendto(build_packet(0, seq == 0, seq, seq * 160, 0xBAD, ATTACK_PAYLOAD),
                             self.target)
            delay = start + (seq + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.sock.close()


@dataclass
class Attack:
    """What a spraying stranger achieved on one call."""

    received: int  # packets of the call the attacker got
    injected: int  # attacker frames the other party (the WebSocket consumer) heard
    rejected: float  # the rise of the foreign-source counter on /metrics
    inbound: bytes  # what the other party heard of the caller
    caller_heard: bytes  # what the caller heard


def attack(rig: Rig, consumer: Consumer, resumed: bytes, reply: bytes) -> Attack:
    """A call whose caller speaks, goes silent for 1.5 s while the other party talks and a
    stranger sprays the leg's RTP port, then speaks ``resumed``."""
    with peer_call(rig, stream_url=consumer.url, stream_track="both_tracks",
                   stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU") as pc:
        assert pc.peer.remote is not None
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        before = rejected_foreign(rig)
        pc.peer.play(speech("beckett")[: 8000 * 2])  # media starts: the leg learns the caller
        time.sleep(SILENCE)  # the caller goes quiet (hold, DTX, listening)
        # The other party talks into the call while a stranger sprays the leg's port.
        consumer.send(conn, {"event": "media",
                             "media": {"payload": base64.b64encode(reply).decode()}})
        attacker = Sprayer(pc.peer.remote)
        try:
            attacker.spray(ATTACK_PACKETS)
            time.sleep(0.5)
        finally:
            attacker.close()
        pc.peer.play(resumed)  # the caller speaks again
        time.sleep(0.5)
        after = rejected_foreign(rig)
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)
        caller_heard = pc.peer.audio(0)
    inbound = inbound_payloads(conn)
    return Attack(attacker.received, sum(p == ATTACK_PAYLOAD for p in inbound), after - before,
                  b"".join(inbound), caller_heard)


def test_a_stranger_spraying_a_silent_leg_gets_nothing_out_and_puts_nothing_in(
    rig: Rig, consumer: Consumer
) -> None:
    resumed = speech("beckett")[8000 * 2: 8000 * 2 * 2]
    reply = PCMU.new_encoder().encode(speech("two_cities")[: 8000 * 2 * 3])
    got = attack(rig, consumer, resumed, reply)
    assert (got.received, got.injected) == (0, 0), (
        f"the attacker got {got.received} packets of the call and the other party "
        f"heard {got.injected} of its frames")
    assert got.rejected >= ATTACK_PACKETS
    # The locked caller was not disturbed: its speech after the attack reached the other
    # party, and the other party's reply reached the caller.
    assert PCMU.new_encoder().encode(resumed)[:1600] in got.inbound
    assert reply[:1600] in got.caller_heard


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, Rig]]:
    """The module's two servers, started at once: the default one, and one with
    CALLSTREAM_STRICT_RTP=off."""
    with entered_together(
        make_rig(tmp_path_factory.mktemp("e2e"), (31000, 31999)),
        make_rig(tmp_path_factory.mktemp("e2e-strict-rtp-off"), (37000, 37199),
                 {"CALLSTREAM_STRICT_RTP": "off"}),
    ) as (rig, unsafe):
        yield rig, unsafe


@pytest.fixture(scope="module")
def rig(rigs: tuple[Rig, Rig]) -> Rig:
    return rigs[0]


@pytest.fixture(scope="module")
def unsafe_rig(rigs: tuple[Rig, Rig]) -> Rig:
    return rigs[1]


def test_strict_rtp_off_is_as_unsafe_as_documented(unsafe_rig: Rig, consumer: Consumer) -> None:
    """CALLSTREAM_STRICT_RTP=off reaches the legs and brings the old behaviour back: the
    stranger takes over the silent leg (for broken NATs only; docs/security/rtp.md)."""
    resumed = speech("beckett")[8000 * 2: 8000 * 2 * 2]
    reply = PCMU.new_encoder().encode(speech("two_cities")[: 8000 * 2 * 3])
    got = attack(unsafe_rig, consumer, resumed, reply)
    assert got.received > 0 and got.injected > 0


def read_when_written(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"SIPp did not write {path.name}"
        time.sleep(0.05)
    return path.read_text().strip()


def test_a_reinvite_that_moves_the_media_is_learned_anew_and_locks_out_the_old_address(
    rig: Rig, consumer: Consumer, tmp_path: Path
) -> None:
    """The phone re-INVITEs with a new RTP address: it is heard from there at once, and its
    old address is now a stranger's."""
    before_move = speech("beckett")[: 8000 * 2]
    after_move = speech("beckett")[8000 * 2: 8000 * 2 * 2]
    stale = speech("two_cities")[: 8000 * 2]
    old, new = RtpPeer(), RtpPeer()
    proc = sipp("-sf", str(DATA / "uac_moves_media.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()), "-m", "1",
                "-s", "mover", "-key", "rtp_port", str(old.port),
                "-key", "rtp_port2", str(new.port), "-key", "port_file", str(tmp_path / "port"),
                "-key", "moved_file", str(tmp_path / "moved"), rig.sip_target,
                cwd=tmp_path, timeout=90)
    try:
        ccid = incoming(rig, "mover")
        rig.sdk.calls.actions.answer(ccid, stream_url=consumer.url, stream_track="inbound_track")
        conn = consumer.wait_connection()
        server = ("127.0.0.1", int(read_when_written(tmp_path / "port")))
        old.remote = new.remote = server
        old.play(before_move)
        read_when_written(tmp_path / "moved")
        new._seq, new._ts = old._seq, old._ts  # one stream, continuing from the new port
        before = rejected_foreign(rig)
        new.play(after_move)
        old.play(stale)  # the old address, right after: no longer the phone's
        time.sleep(0.5)
        after = rejected_foreign(rig)
        rig.sdk.calls.actions.hangup(ccid)
        assert conn.done.wait(10)
        assert proc.wait(30) == 0
    finally:
        old.close()
        new.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    inbound = b"".join(inbound_payloads(conn))
    encode = PCMU.new_encoder().encode
    assert encode(before_move)[4000:5600] in inbound
    # From the second packet on (the first starts a talkspurt after a pause), bit-exact:
    # no packet went to probation, the SDP's new address was trusted at once.
    assert encode(after_move)[160:] in inbound
    assert encode(stale)[:1600] not in inbound
    assert after - before >= 50  # the stale 1 s, 50 packets
