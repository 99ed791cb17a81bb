"""RTP forking on real calls: SIPp does the SIP, the test owns both legs' RTP sockets.

Leg A is a SIPp call into the server, leg B a call the server dials to a SIPp UAS;
their SDPs name UDP sockets of this test, so it knows every packet each leg sent the
server and every packet the server put on the wire to it. A and B are bridged, so the
server really sends RTP both ways. Forks go to real UDP receivers, which must get
exactly those packets, byte for byte.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from telnyx import UnprocessableEntityError

from callstream.forking.strep import StrepDirection, StrepLeg, parse
from callstream.media.codecs import get_codec
from callstream.media.rtp import RtpPacket
from tests.audio import rtp_packets, speech
from tests.e2e.conftest import Rig
from tests.e2e.sipp import DATA, sipp
from tests.helpers import free_udp_tcp_port

pytestmark = pytest.mark.slow

SECONDS = 3.0  # speech per leg and test


class UdpRecorder:
    """A real UDP socket that records every datagram it receives (in a thread)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def udp(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.received.append(data)

    def packets(self) -> list[bytes]:
        with self._lock:
            return list(self.received)

    def send_paced(self, packets: list[bytes], port: int, interval: float = 0.02) -> None:
        """Send like a phone: one packet per ``interval``, on schedule."""
        start = time.monotonic()
        for i, data in enumerate(packets):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sock.sendto(data, ("127.0.0.1", port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextmanager
def recorders(*hosts: str) -> Iterator[list[UdpRecorder]]:
    items = [UdpRecorder(h) for h in hosts]
    try:
        yield items
    finally:
        for item in items:
            item.close()


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settle(*recs: UdpRecorder, quiet: float = 0.4, timeout: float = 10.0) -> None:
    """Wait until no recorder has received anything for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    counts = [len(r.packets()) for r in recs]
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = [len(r.packets()) for r in recs]
        if now != counts:
            counts, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return


def read_port(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip(), what=f"{path.name}")
    return int(path.read_text().strip())


@dataclass
class Bridged:
    """Two answered, bridged legs and the test's RTP sockets for them."""

    a: str  # call_control_id of the incoming leg
    b: str  # ... of the leg the server dialled
    a_leg_id: str
    b_leg_id: str
    a_media: UdpRecorder  # leg A's phone: sends to a_port, records what the server sent A
    b_media: UdpRecorder
    a_port: int  # the server's RTP port of leg A
    b_port: int
    procs: list[Any] = field(default_factory=list)


_seen: set[str] = set()


@contextmanager
def bridged_call(rig: Rig, tmp_path: Path) -> Iterator[Bridged]:
    with ExitStack() as stack:
        a_media, b_media = stack.enter_context(recorders("127.0.0.1", "127.0.0.1"))
        uas_port = free_udp_tcp_port()
        uas_dir, uac_dir = tmp_path / "uas", tmp_path / "uac"
        uas_dir.mkdir()
        uac_dir.mkdir()
        uas = sipp("-sf", str(DATA / "uas_external_media.xml"), "-i", "127.0.0.1",
                   "-p", str(uas_port), "-mp", str(free_udp_tcp_port()), "-m", "1",
                   "-key", "rtp_port", str(b_media.port),
                   "-key", "port_file", str(uas_dir / "port"), cwd=uas_dir, timeout=90)
        uac = sipp("-sf", str(DATA / "uac_external_media.xml"), "-i", "127.0.0.1",
                   "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()), "-m", "1",
                   "-s", "+15550002222", "-key", "rtp_port", str(a_media.port),
                   "-key", "port_file", str(uac_dir / "port"), rig.sip_target,
                   cwd=uac_dir, timeout=90)
        procs = [uas, uac]
        stack.callback(lambda: [p.kill() for p in procs if p.poll() is None])
        initiated = rig.hooks.wait_for(
            lambda d: d.event_type == "call.initiated"
            and d.payload.get("direction") == "incoming"
            and d.payload["call_control_id"] not in _seen)
        a = initiated.payload["call_control_id"]
        _seen.add(a)
        rig.sdk.calls.actions.answer(a)
        rig.hooks.wait_event("call.answered", a)
        dialled = rig.sdk.calls.dial(connection_id="default", from_="+15550003333",
                                     to=f"sip:service@127.0.0.1:{uas_port}")
        assert dialled.data is not None
        b = dialled.data.call_control_id
        assert b is not None
        answered_b = rig.hooks.wait_event("call.answered", b)
        rig.sdk.calls.actions.bridge(a, call_control_id_to_bridge_with=b)
        call = Bridged(a=a, b=b, a_leg_id=initiated.payload["call_leg_id"],
                       b_leg_id=answered_b.payload["call_leg_id"], a_media=a_media,
                       b_media=b_media, a_port=read_port(uac_dir / "port"),
                       b_port=read_port(uas_dir / "port"), procs=procs)
        try:
            yield call
        finally:
            for ccid in (a, b):
                with contextlib.suppress(UnprocessableEntityError):  # already ended
                    rig.sdk.calls.actions.hangup(ccid)
            for proc in procs:
                proc.wait(30)


def talk(call: Bridged, a_packets: list[bytes], b_packets: list[bytes]) -> None:
    """Both phones talk at once, in real time."""
    threads = [
        threading.Thread(target=call.a_media.send_paced, args=(a_packets, call.a_port)),
        threading.Thread(target=call.b_media.send_paced, args=(b_packets, call.b_port)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def speech_packets(name: str, ssrc: int, first_seq: int, seconds: float = SECONDS,
                   offset: float = 0.0) -> list[bytes]:
    pcm = speech(name, 8000)
    start = int(offset * 8000) * 2
    return rtp_packets(pcm[start:start + int(seconds * 8000) * 2], "PCMU", ssrc=ssrc,
                       first_seq=first_seq)


def frames_heard(sent: list[bytes], heard: list[bytes]) -> float:
    """Share of ``sent`` packets whose audio is in ``heard``, frame for frame.

    A bridge at one rate re-encodes each decoded 20 ms frame, and G.711 decoding then
    encoding gives the frame back, so each frame the peer sent should reappear whole.
    Unlike an SNR over the whole clip, this does not care about a late frame or a
    concealment gap on a busy machine.
    """
    decoder = get_codec("PCMU").new_decoder()
    heard_frames = {decoder.decode(RtpPacket.parse(p).payload) for p in heard}
    decoder = get_codec("PCMU").new_decoder()
    sent_frames = [decoder.decode(RtpPacket.parse(p).payload) for p in sent]
    return sum(f in heard_frames for f in sent_frames) / len(sent_frames)


def sequence_numbers(packets: list[bytes]) -> list[int]:
    return [RtpPacket.parse(p).sequence_number for p in packets]


def metrics(rig: Rig) -> dict[str, float]:
    with rig.server.client() as c:
        text = c.get("/metrics").text
    out = {}
    for line in text.splitlines():
        match = re.match(r"^(callstream_fork\w*(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            out[match[1]] = float(match[2])
    return out


def order_of(rig: Rig, ccid: str) -> list[str]:
    return [d.event_type for d in rig.hooks.events()
            if d.payload.get("call_control_id") == ccid]


def test_forks_get_every_packet_of_each_direction_byte_for_byte(
    rig: Rig, tmp_path: Path
) -> None:
    a_sends = speech_packets("beckett", ssrc=0xA0A0A0A0, first_seq=65500)  # wraps
    b_sends = speech_packets("two_cities", ssrc=0xB0B0B0B0, first_seq=100, offset=2.0)
    before = metrics(rig)
    with recorders("127.0.0.1", "::1", "127.0.0.1") as (rx, tx, target), \
            bridged_call(rig, tmp_path) as call:
        # Leg A: rx/tx through the official SDK (tx over IPv6); leg B: legacy target.
        started = rig.sdk.calls.actions.start_forking(call.a, rx=rx.udp, tx=tx.udp,
                                                      stream_type="decrypted")
        assert started.data is not None and started.data.result == "ok"
        rig.sdk.calls.actions.start_forking(call.b, extra_body={"target": target.udp})
        fork_a = rig.hooks.wait_event("call.fork.started", call.a)
        fork_b = rig.hooks.wait_event("call.fork.started", call.b)
        assert fork_a.payload["stream_type"] == "decrypted"
        assert fork_b.payload["stream_type"] == "raw"

        talk(call, a_sends, b_sends)
        settle(rx, tx, target, call.a_media, call.b_media)

        # rx: exactly what A's phone sent, in order, byte for byte (seq wraps 65535 -> 0).
        assert rx.packets() == a_sends
        assert sequence_numbers(rx.packets())[34:37] == [65534, 65535, 0]
        # tx: exactly what the server put on the wire to A (B's bridged speech).
        to_a = call.a_media.packets()
        assert len(to_a) >= 0.9 * len(b_sends)
        assert tx.packets() == to_a
        seqs = sequence_numbers(to_a)
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert frames_heard(b_sends, tx.packets()) > 0.9

        # target: both directions of B in one stream, each behind a STREP header.
        inbound, outbound = [], []
        for datagram in target.packets():
            header, packet = parse(datagram)
            assert header.header_len == 24 and header.version == 1
            assert str(header.call_leg_id) == call.b_leg_id
            assert header.leg is StrepLeg.B  # a leg the server dialled
            (inbound if header.direction is StrepDirection.INBOUND else outbound).append(packet)
        assert inbound == b_sends
        assert outbound == call.b_media.packets()
        assert len(outbound) >= 0.9 * len(a_sends)
        assert frames_heard(a_sends, outbound) > 0.9

        # fork_stop on A: nothing more reaches rx/tx, while B's fork goes on.
        stopped = rig.sdk.calls.actions.stop_forking(call.a)
        assert stopped.data is not None and stopped.data.result == "ok"
        assert rig.hooks.wait_event("call.fork.stopped", call.a).payload["stream_type"] == (
            "decrypted")
        more = speech_packets("beckett", ssrc=0xA0A0A0A0, first_seq=200, seconds=0.6)
        count_b = len(target.packets())
        talk(call, more, more)
        settle(rx, tx, target, call.a_media)
        assert len(rx.packets()) == len(a_sends)
        assert len(tx.packets()) == len(to_a)
        assert len(call.a_media.packets()) > len(to_a)  # the call itself goes on
        assert len(target.packets()) > count_b
        with pytest.raises(UnprocessableEntityError) as info:
            rig.sdk.calls.actions.stop_forking(call.a)
        assert info.value.body["errors"][0]["code"] == "90031"  # type: ignore[index]

        # Hangup stops B's fork: call.fork.stopped comes before call.hangup.
        rig.sdk.calls.actions.hangup(call.b)
        rig.hooks.wait_event("call.hangup", call.b)
        events = order_of(rig, call.b)
        assert events.index("call.fork.stopped") < events.index("call.hangup")
        assert rig.hooks.wait_event("call.fork.stopped", call.b).payload["stream_type"] == "raw"
        with pytest.raises(UnprocessableEntityError) as info:
            rig.sdk.calls.actions.stop_forking(call.b)
        assert info.value.body["errors"][0]["code"] == "90018"  # type: ignore[index]

    after = metrics(rig)
    forked = sum(len(r.packets()) for r in (rx, tx, target))
    rx_tx = [after[f'callstream_fork_packets_total{{direction="{d}"}}']
             - before.get(f'callstream_fork_packets_total{{direction="{d}"}}', 0)
             for d in ("rx", "tx")]
    assert sum(rx_tx) == forked
    assert after["callstream_forks_active"] == 0


def test_dead_fork_targets_do_not_disturb_the_call(rig: Rig, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # closed again below: nobody listens there
    a_sends = speech_packets("beckett", ssrc=0x0A0A0A0A, first_seq=1)
    before = metrics(rig)
    with bridged_call(rig, tmp_path) as call:
        # A host name (resolved once, at fork_start) and an IPv4 literal, both dead.
        rig.sdk.calls.actions.start_forking(call.a, rx=f"udp:localhost:{dead}",
                                            tx=f"udp:127.0.0.1:{dead}")
        rig.hooks.wait_event("call.fork.started", call.a)
        talk(call, a_sends, a_sends)
        settle(call.a_media, call.b_media)
        to_b = call.b_media.packets()
        # B heard all of A, as well as without a fork: the media path never noticed.
        assert len(to_b) >= 0.9 * len(a_sends)
        assert frames_heard(a_sends, to_b) > 0.9
        assert len(call.a_media.packets()) >= 0.9 * len(a_sends)
        after = metrics(rig)
        errors = sum(v - before.get(k, 0) for k, v in after.items()
                     if k.startswith("callstream_fork_send_errors_total"))
        assert errors > len(a_sends) // 2  # ICMP unreachable comes back for every other
        # ... and each such packet was sent again: a closed port still saw them all.
        rx_key = 'callstream_fork_packets_total{direction="rx"}'
        assert after[rx_key] - before.get(rx_key, 0) == len(a_sends)
        rig.sdk.calls.actions.stop_forking(call.a)
        rig.hooks.wait_event("call.fork.stopped", call.a)


def test_fork_start_validation(rig: Rig, tmp_path: Path) -> None:
    def error(ccid: str, body: dict[str, Any], action: str = "fork_start") -> tuple[int, Any]:
        with rig.server.client() as c:
            r = c.post(f"/v2/calls/{ccid}/actions/{action}", json=body)
        return r.status_code, r.json()["errors"][0] if r.status_code != 200 else r.json()

    # No such call: body checks come first, then the call.
    assert error("v3:nope", {"rx": "udp:127.0.0.1:1"}) == (422, {
        "code": "10004", "title": "Missing required parameter",
        "detail": "The 'tx' parameter is required (rx and tx, or target).",
        "source": {"pointer": "/tx"}})
    assert error("v3:nope", {})[1]["source"] == {"pointer": "/rx"}
    status, err = error("v3:nope", {"rx": "udp:127.0.0.1:1", "tx": "127.0.0.1:2"})
    assert (status, err["code"], err["source"]) == (422, "10015", {"pointer": "/tx"})
    assert "udp:<ip>:<port>" in err["detail"]
    status, err = error("v3:nope", {"target": "udp:1.2.3.4:0"})
    assert (err["code"], err["source"]) == ("10015", {"pointer": "/target"})
    assert "port '0'" in err["detail"]
    status, err = error("v3:nope", {"target": "udp:1.2.3.4:5", "rx": "udp:1.2.3.4:6"})
    assert (err["code"], err["source"]) == ("10015", {"pointer": "/target"})
    status, err = error("v3:nope", {"target": "udp:1.2.3.4:5", "stream_type": "srtp"})
    assert (err["code"], err["source"]) == ("10032", {"pointer": "/stream_type"})
    status, err = error("v3:nope", {"target": "udp:1.2.3.4:5"})
    assert err["code"] == "90015"
    assert error("v3:nope", {}, "fork_stop")[1]["code"] == "90015"

    with recorders("127.0.0.1") as (rx,), bridged_call(rig, tmp_path) as call:
        # An unresolvable host name is refused with the field named, and nothing starts.
        status, err = error(call.a, {"rx": "udp:no-such-host.invalid:5000", "tx": rx.udp})
        assert (status, err["code"], err["source"]) == (422, "10015", {"pointer": "/rx"})
        assert "Cannot resolve host 'no-such-host.invalid'" in err["detail"]
        # The outbound policy: the cloud metadata address, as itself or IPv4-mapped, is
        # refused, naming the field and the rule.
        metadata = "169.254.169.254 is denied by CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"
        for body, field, shown in (
                ({"rx": "udp:169.254.169.254:5000", "tx": rx.udp}, "rx", "169.254.169.254"),
                ({"rx": rx.udp, "tx": "udp:[::ffff:169.254.169.254]:5000"}, "tx",
                 "::ffff:169.254.169.254"),
                ({"target": "udp:169.254.169.254:5000"}, "target", "169.254.169.254")):
            assert error(call.a, body) == (422, {
                "code": "10015", "title": "Destination not allowed",
                "detail": f"Refused destination: {metadata.replace('169.254.169.254', shown, 1)}.",
                "source": {"pointer": f"/{field}"}})
        assert error(call.a, {}, "fork_stop")[1]["code"] == "90031"
        # command_id: a repeat is the same answer and no second fork.
        body = {"rx": rx.udp, "tx": rx.udp, "command_id": "fork-1"}
        assert error(call.a, body)[0] == 200
        assert error(call.a, body)[0] == 200
        status, err = error(call.a, {**body, "command_id": "fork-2"})
        assert (status, err["detail"]) == (
            422, "Call is already forked; stop the fork with fork_stop first.")
        rig.hooks.wait_event("call.fork.started", call.a)
        assert error(call.a, {"stream_type": "raw"}, "fork_stop")[0] == 200
        rig.hooks.wait_event("call.fork.stopped", call.a)
        started = [d for d in rig.hooks.events("call.fork.started")
                   if d.payload["call_control_id"] == call.a]
        assert len(started) == 1
        rig.sdk.calls.actions.hangup(call.a)
        rig.hooks.wait_event("call.hangup", call.a)
        assert "call.fork.stopped" in order_of(rig, call.a)
        assert order_of(rig, call.a).count("call.fork.stopped") == 1
        assert error(call.a, {"rx": rx.udp, "tx": rx.udp})[1]["code"] == "90018"


def test_fork_start_needs_an_answered_call(rig: Rig, tmp_path: Path) -> None:
    proc = sipp("-sf", str(DATA / "uac_answered.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()), "-m", "1",
                "-d", "1000", "-s", "+15550002222", rig.sip_target, cwd=tmp_path)
    try:
        initiated = rig.hooks.wait_for(
            lambda d: d.event_type == "call.initiated"
            and d.payload.get("direction") == "incoming"
            and d.payload["call_control_id"] not in _seen)
        ccid = initiated.payload["call_control_id"]
        _seen.add(ccid)
        with pytest.raises(UnprocessableEntityError) as info:
            rig.sdk.calls.actions.start_forking(ccid, rx="udp:127.0.0.1:9", tx="udp:127.0.0.1:9")
        assert info.value.body["errors"][0]["code"] == "90034"  # type: ignore[index]
        rig.sdk.calls.actions.answer(ccid)
        rig.hooks.wait_event("call.hangup", ccid)  # SIPp hangs up after 1 s
        assert "call.fork.stopped" not in order_of(rig, ccid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
