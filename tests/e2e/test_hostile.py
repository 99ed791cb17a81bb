"""Hostile input at the server while a real call is up: random and mutated SIP datagrams
to the SIP port, random and mutated RTP to the RTP ports. Nothing escapes, the call's
audio keeps flowing, OPTIONS is still answered, and a new call still works."""

from __future__ import annotations

import math
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callstream.media.rtp import build_packet
from callstream.telephony.caller import load_wav
from tests.audio import read_wav, write_wav
from tests.e2e.calling import (
    answer,
    bridge,
    clip,
    incoming,
    match_frames,
    media_rig,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import Rig

pytestmark = pytest.mark.slow

RTP_PORTS = (36000, 36039)  # a small range: every port in it gets hostile packets
EXAMPLES = 400
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory, rtp_ports=RTP_PORTS)


def _templates(port: int, me: tuple[str, int], media: int) -> list[bytes]:
    """Well-formed requests and responses, all addressed to loopback."""
    host, my_port = me
    sdp = (f"v=0\r\no=h 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           f"m=audio {media} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")

    def request(method: str, body: str = "", ctype: str = "") -> bytes:
        head = (f"{method} sip:fuzz@{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{my_port};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                f"From: <sip:fuzzer@{host}:{my_port}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:fuzz@{HOST}:{port}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@{host}\r\n"
                f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:fuzzer@{host}:{my_port}>\r\n")
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode()

    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKnothere\r\n"
                f"From: <sip:a@{HOST}>;tag=1\r\nTo: <sip:b@{host}>;tag=2\r\n"
                f"Call-ID: stray@{host}\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
    return [request("INVITE", sdp, "application/sdp"), request("OPTIONS"), request("BYE"),
            request("CANCEL"), request("ACK"), request("REGISTER"),
            request("INFO", "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"),
            response]


@st.composite
def mutated(draw: st.DrawFn, templates: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(0, 5))):  # 0: the well-formed message itself
        if not data:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "dup_line"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 30))]
        elif op == "cut":
            del data[at:]
        else:
            start, end = data.rfind(b"\r\n", 0, at), data.find(b"\r\n", at)
            if 0 <= start < end:
                data[end:end] = data[start:end] * draw(st.integers(1, 40))
    return bytes(data)


@st.composite
def rtp_like(draw: st.DrawFn) -> bytes:
    """An RTP header with any field values (CSRCs, extension, padding), any payload,
    then perhaps mangled."""
    packet = bytearray(build_packet(
        draw(st.integers(0, 127)), draw(st.booleans()), draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.binary(max_size=400))))
    packet[0] = (packet[0] & 0xC0) | draw(st.integers(0, 0x3F))  # padding, extension, CC
    for _ in range(draw(st.integers(0, 3))):
        if packet:
            packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    return bytes(packet[:draw(st.integers(0, len(packet)))])


def _options_ok(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        me = sock.getsockname()
        options = _templates(port, me, 9)[1]
        sock.sendto(options, (HOST, port))
        sock.settimeout(5)
        reply = sock.recv(65535)
    return reply.startswith(b"SIP/2.0 200 ")


def test_hostile_datagrams_do_not_disturb_a_live_call(rig: Rig, tmp_path: Path) -> None:
    sip_port = rig.server.sip_port
    voices = {"alice": "beckett", "bob": "two_cities"}
    callers = {}
    for name, text in voices.items():
        write_wav(tmp_path / f"{name}.wav", clip(text, 6.0), 8000)
        callers[name] = start_caller(
            f"sip:{name}@{rig.sip_target}", "--play", str(tmp_path / f"{name}.wav"),
            "--record", str(tmp_path / f"{name}-heard.wav"), "--codec", "PCMU", "-q")
    try:
        legs = {name: incoming(rig, name) for name in callers}
        answered = time.monotonic()
        for ccid in legs.values():
            answer(rig, ccid)
        bridge(rig, legs["alice"], legs["bob"])
        started = time.monotonic()

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            templates = _templates(sip_port, sock.getsockname(), RTP_PORTS[0])
            sip_input = st.one_of(st.binary(max_size=1500), mutated(templates))
            rtp_input = st.one_of(st.binary(max_size=300), rtp_like())
            hurled: list[int] = []

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(sip=sip_input, rtp=rtp_input)
            def hurl(sip: bytes, rtp: bytes) -> None:
                hurled.append(len(sip))
                sock.sendto(sip, (HOST, sip_port))
                for port in range(RTP_PORTS[0], RTP_PORTS[1] + 1):
                    sock.sendto(rtp, (HOST, port))  # RTP on even ports, RTCP on odd

            hurl()
        fuzz_seconds = time.monotonic() - started
        assert len(hurled) >= EXAMPLES // 2
        # Audio played after the fuzzing is what must still arrive: from this second on.
        after = math.ceil(time.monotonic() - answered)
        assert after <= 5, f"fuzzing ran {fuzz_seconds:.1f} s: no call left to check"

        assert rig.server.proc is not None and rig.server.proc.poll() is None
        assert _options_ok(sip_port)
        results = {name: caller.finish() for name, caller in callers.items()}
    finally:
        for caller in callers.values():
            caller.kill()

    # The call kept flowing: each voice from `after` to its end at 6 s, played after
    # the fuzzing, reached the other caller intact.
    for me, other in (("alice", "bob"), ("bob", "alice")):
        code, summary, err = results[me]
        assert code == 0, err
        assert summary["hangup"] == "played"
        heard, _ = read_wav(tmp_path / f"{me}-heard.wav")
        sent = through_codec(load_wav(tmp_path / f"{other}.wav")[0], "PCMU")
        matched, inserted = match_frames(sent[after * 16000:6 * 16000], heard)
        assert matched == (6 - after) * 50 and inserted <= 10

    # Calls the fuzzer's well-formed INVITEs made are parked: hang them up, then a new
    # call still works end to end.
    with rig.server.client() as http:
        stray = [c["call_control_id"] for c in http.get("/v2/calls").json()["data"]]
    for ccid in stray:
        rig.sdk.calls.actions.hangup(ccid)
        assert rig.hooks.wait_event("call.hangup", ccid)
    caller = start_caller(f"sip:after@{rig.sip_target}", "--duration", "0.5", "-q")
    try:
        answer(rig, incoming(rig, "after"))
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 0 and summary["status"] == "answered", err
    assert "Traceback" not in rig.server.log()
    print(f"\n[measured] {len(hurled)} hostile SIP datagrams and {len(hurled) * 40} RTP/RTCP "
          f"datagrams in {fuzz_seconds:.1f} s; {len(stray)} parked calls from fuzzed INVITEs")
