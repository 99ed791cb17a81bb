"""Media streaming end to end: real SIP calls (SIPp signalling, real RTP sockets), a real
WebSocket consumer, webhooks through the real receiver, driven by the official SDK."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from subprocess import Popen

import pytest

from callstream.media.codecs import PCMU
from tests.audio import snr_db, speech
from tests.e2e.conftest import Rig
from tests.e2e.sipp import DATA, sipp
from tests.helpers import free_udp_tcp_port
from tests.rtp_peer import RtpPeer
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow


@dataclass
class PeerCall:
    ccid: str
    peer: RtpPeer
    sipp: Popen[bytes]


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


@contextmanager
def peer_call(rig: Rig, **dial: object) -> Iterator[PeerCall]:
    """callstream dials a SIPp UAS whose SDP points at our own RTP socket."""
    peer = RtpPeer()
    port = free_udp_tcp_port()
    proc = sipp("-sf", str(DATA / "uas_rtp_peer.xml"), "-i", "127.0.0.1", "-p", str(port),
                "-mp", str(free_udp_tcp_port()), "-m", "1", "-key", "rtp_port", str(peer.port),
                "-trace_logs", cwd=rig.workdir, timeout=60)
    try:
        call = rig.sdk.calls.dial(connection_id="default", to=f"sip:peer@127.0.0.1:{port}",
                                  from_="+15550003333", **dial)  # type: ignore[arg-type]
        assert call.data is not None and call.data.call_control_id
        ccid = call.data.call_control_id
        rig.hooks.wait_event("call.answered", ccid)
        log = rig.workdir / f"uas_rtp_peer_{proc.pid}_logs.log"
        deadline = time.monotonic() + 10
        while not (log.exists() and "OFFER_PORT=" in log.read_text()):
            assert time.monotonic() < deadline, "SIPp logged no offer port"
            time.sleep(0.05)
        match = re.search(r"OFFER_PORT=(\d+)", log.read_text())
        assert match
        peer.remote = ("127.0.0.1", int(match[1]))
        yield PeerCall(ccid, peer, proc)
    finally:
        peer.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _ulaw(pcm: bytes) -> bytes:
    return PCMU.new_encoder().encode(pcm)


def _pcm(ulaw: bytes) -> bytes:
    return PCMU.new_decoder().decode(ulaw)


def _payloads(conn: Connection, track: str) -> bytes:
    return b"".join(base64.b64decode(f["media"]["payload"]) for f in conn.of("media")
                    if f["media"]["track"] == track)


def test_dial_with_bidirectional_stream(rig: Rig, consumer: Consumer) -> None:
    """Dial with stream fields: frame order and fields, bit-exact inbound audio, DTMF,
    audio sent back reaches the caller, mark echoed when it has played, stop on hangup."""
    state = base64.b64encode(b"agent-7").decode()
    with peer_call(rig, stream_url=consumer.url, stream_track="both_tracks",
                   stream_auth_token="s3cr3t", stream_bidirectional_mode="rtp",
                   stream_bidirectional_codec="PCMU", client_state=state) as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        assert conn.headers["x-telnyx-streaming-auth-token"] == "s3cr3t"
        started = rig.hooks.wait_event("streaming.started", pc.ccid)
        assert started.payload["stream_url"] == consumer.url
        assert started.payload["client_state"] == state
        connected, start = conn.frames[0], conn.frames[1]
        assert connected == {"event": "connected", "version": "1.0.0",
                             "x-telnyx-streaming-auth-token": "s3cr3t"}
        assert start["sequence_number"] == "1"
        assert start["stream_id"] == started.payload["stream_id"]
        details = start["start"]
        assert details["call_control_id"] == pc.ccid
        assert details["from"] == "+15550003333"
        assert details["client_state"] == state
        assert details["media_format"] == {"encoding": "PCMU", "sample_rate": 8000,
                                           "channels": 1}
        assert details["custom_parameters"] == {}

        caller = speech("beckett")[: 8000 * 2 * 3]  # 3 s
        talker = threading.Thread(target=pc.peer.play, args=(caller,))
        talker.start()
        # The consumer talks back while the caller talks: 2 s of other speech, then a mark.
        reply = _ulaw(speech("two_cities")[8000 * 2 * 2: 8000 * 2 * 4])
        sent_at = time.monotonic()
        consumer.send(conn, {"event": "media",
                             "media": {"payload": base64.b64encode(reply).decode()}},
                      {"event": "mark", "mark": {"name": "reply-done"}})
        talker.join()
        pc.peer.dtmf("5")
        conn.wait_for(lambda c: bool(c.of("dtmf")) and bool(c.of("mark")))
        mark_index = [f["event"] for f in conn.frames].index("mark")
        mark_delay = conn.times[mark_index] - sent_at
        assert 1.8 <= mark_delay <= 3.0, mark_delay  # echoed once the 2 s had played
        assert conn.of("mark")[0]["mark"] == {"name": "reply-done"}
        assert conn.of("dtmf")[0]["dtmf"] == {"digit": "5"}
        time.sleep(0.3)

        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)
        stopped = rig.hooks.wait_event("streaming.stopped", pc.ccid)
        assert stopped.payload["stream_id"] == start["stream_id"]

    # The frame sequence: connected, start, then media/dtmf/mark..., stop; numbered 1, 2, ...
    events = conn.events()
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert set(events[2:-1]) <= {"media", "dtmf", "mark"}
    numbers = [int(f["sequence_number"]) for f in conn.frames[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(f["stream_id"] == start["stream_id"] for f in conn.frames[1:])
    assert conn.closed_code == 1000
    assert conn.frames[-1]["stop"]["call_control_id"] == pc.ccid
    for track in ("inbound", "outbound"):
        media = [f["media"] for f in conn.of("media") if f["media"]["track"] == track]
        assert [m["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
        stamps = [int(m["timestamp"]) for m in media]
        assert stamps == sorted(stamps)

    # Inbound: exactly the caller's bytes, a contiguous run of what it sent.
    sent = b"".join(pc.peer.sent)
    inbound = _payloads(conn, "inbound")
    assert len(inbound) >= len(sent) * 0.9
    assert inbound in sent
    # Outbound: exactly what the caller received, and that carries the consumer's audio.
    received = pc.peer.audio(0)
    outbound = _payloads(conn, "outbound")
    assert outbound and outbound in received
    assert _pcm(reply)[:3200] in _pcm(received)
    assert snr_db(_pcm(reply), _pcm(received)) > 40
    hooks = [d.event_type for d in rig.hooks.events()
             if d.payload.get("call_control_id") == pc.ccid]
    assert hooks.index("streaming.stopped") < hooks.index("call.hangup")
