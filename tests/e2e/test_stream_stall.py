"""A stream consumer that stops reading: drops are counted live on /metrics, and the
stream ends with streaming.failed (consumer_stalled) while the call goes on.

The consumer is a raw TCP server that completes the WebSocket upgrade and then never
reads again, with a small receive buffer; the call is a real one (SIPp signalling,
real RTP from a test socket).
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.audio import speech
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.test_streaming import peer_call
from tests.rtp_peer import RtpPeer

pytestmark = pytest.mark.slow

#: The stall shows 1.5 timeouts after the consumer stops reading (here 6 s); the drops
#: well before (measured ~1.1 s, ~2.5 s with the default 2 s buffer).
STALL_TIMEOUT = 4
BUFFER_SECS = 0.5
#: Generous for a busy host.
FAILED_WITHIN = 60.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    env = {"CALLSTREAM_STREAM_STALL_TIMEOUT_SECS": str(STALL_TIMEOUT),
           "CALLSTREAM_STREAM_BUFFER_SECS": str(BUFFER_SECS)}
    with make_rig(Path(tmp_path_factory.mktemp("e2e-stall")), (38400, 38599), env) as rig:
        yield rig


@contextmanager
def stalled_consumer() -> Iterator[tuple[str, threading.Event]]:
    """A WebSocket server that answers the upgrade, then never reads a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accept()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    upgraded = threading.Event()
    done = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", request)
            assert key is not None
            accept = base64.b64encode(hashlib.sha1(key[1] + WS_GUID.encode()).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            upgraded.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.getsockname()[1]}/stalled", upgraded
    finally:
        done.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        server.close()


def talk(peer: RtpPeer, stop: threading.Event) -> None:
    """The caller talks, one second at a time, until told to stop."""
    clip = speech("beckett")[: 8000 * 2]
    while not stop.is_set():
        peer.play(clip)


def metric(rig: Rig, pattern: str) -> float:
    with rig.server.client() as http:
        match = re.search(pattern + r" ([0-9.e+]+)", http.get("/metrics").text)
    return float(match[1]) if match else 0.0


def test_stalled_consumer_is_detected_and_cut_off(rig: Rig) -> None:
    with stalled_consumer() as (url, upgraded), peer_call(rig) as pc:
        stop = threading.Event()
        talker = threading.Thread(target=talk, args=(pc.peer, stop))
        talker.start()
        try:
            # L16 16 kHz: ~50 KB/s of frames, so the buffers fill in seconds.
            rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=url, stream_codec="L16")
            assert upgraded.wait(20)
            started = rig.hooks.wait_event("streaming.started", pc.ccid)
            stream_id = started.payload["stream_id"]
            dropped = rf'callstream_stream_frames_dropped_total{{stream_id="{stream_id}"}}'

            # Drops show on /metrics while the stream is still up, not only at its end.
            live_drops = 0.0
            deadline = time.monotonic() + FAILED_WITHIN
            while time.monotonic() < deadline and not rig.hooks.events("streaming.failed"):
                live_drops = metric(rig, dropped)
                if live_drops > 0:
                    break
                time.sleep(0.25)
            assert live_drops > 0, "no drops counted while the consumer was stalled"
            assert not rig.hooks.events("streaming.failed")

            failed = rig.hooks.wait_for(lambda d: d.event_type == "streaming.failed",
                                        timeout=FAILED_WITHIN)
            assert failed.payload["failure_reason"] == "consumer_stalled"
            assert failed.payload["stream_id"] == stream_id
            assert metric(rig, "callstream_streams_stalled_total") >= 1
            # The call goes on.
            status = rig.sdk.calls.retrieve_status(pc.ccid).data
            assert status is not None and status.is_alive
        finally:
            stop.set()
            talker.join(10)
        rig.sdk.calls.actions.hangup(pc.ccid)
        hangup = rig.hooks.wait_event("call.hangup", pc.ccid)
        assert hangup.payload["hangup_cause"] == "normal_clearing"
        types = [d.event_type for d in rig.hooks.events()
                 if d.payload.get("call_control_id") == pc.ccid]
        assert "streaming.stopped" not in types
