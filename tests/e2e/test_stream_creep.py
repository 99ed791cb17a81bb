"""The echo round trip does not creep (issue 17): a real call (SIPp signalling, real RTP
from our own peer), a real WebSocket consumer answering in real time, and a real stall
of the server (SIGSTOP for 0.3 s). The consumer answers the stall's burst with a burst;
the playback queue then stands 0.3 s deep, refilled at real time, until the standing-queue
bound trims it. A bot's clip queued ahead is never trimmed."""

from __future__ import annotations

import base64
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callstream.media.codecs import PCMU
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.test_stream_reconnect import metric
from tests.e2e.test_streaming import peer_call
from tests.rtp_peer import RtpPeer
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

STANDING = 'callstream_media_playback_discarded_frames_total{reason="standing"}'
STALL_SECS = 0.3
#: The caller's clip; the stall comes STALL_AT seconds into it.
CALL_SECS = 8.0
STALL_AT = 3.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("creep"), (39900, 39959)) as rig:
        yield rig


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def noise(seconds: float, seed: int) -> bytes:
    """Seeded noise, PCM: every 20 ms frame differs, so a frame is found by its bytes."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3000, int(8000 * seconds)).clip(-32768, 32767).astype("<i2").tobytes()


def echo(consumer: Consumer, conn: Connection, frame: dict[str, Any]) -> list[str]:
    """Answer every inbound frame at once with the same audio (a real-time responder)."""
    if frame["event"] != "media" or frame["media"]["track"] != "inbound":
        return []
    return [json.dumps({"event": "media", "media": {"payload": frame["media"]["payload"]}})]


def processes(pid: int) -> list[int]:
    """The server and its worker processes (``--workers``), children first."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found += processes(int(child))
    return [*found, pid]


def stall(rig: Rig, seconds: float) -> None:
    """Stop the whole server for ``seconds``: no tick, no read, no write."""
    assert rig.server.proc is not None
    pids = processes(rig.server.proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        for pid in reversed(pids):
            os.kill(pid, signal.SIGCONT)


def echo_delays(peer: RtpPeer) -> list[tuple[float, float]]:
    """(send time from the first frame, round trip) of each frame the caller heard back."""
    sent = {payload: at for payload, at in zip(peer.sent, peer.sent_at, strict=True)}
    start = peer.sent_at[0]
    return [(sent[r.payload] - start, r.time - sent[r.payload])
            for r in list(peer.received) if r.payload_type == 0 and r.payload in sent]


def median_ms(delays: list[tuple[float, float]], lo: float, hi: float) -> float:
    window = [d for at, d in delays if lo <= at < hi]
    assert len(window) >= 25 * (hi - lo), f"{len(window)} echoes heard in [{lo}, {hi}) s"
    return statistics.median(window) * 1000


def test_an_echo_after_a_server_stall_comes_back_to_its_round_trip(
        rig: Rig, consumer: Consumer) -> None:
    consumer.reply = echo
    before_metric = metric(rig, STANDING)
    with peer_call(rig, stream_url=consumer.url, stream_track="inbound_track",
                   stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU") as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        talker = threading.Thread(target=pc.peer.play, args=(noise(CALL_SECS, 23),))
        talker.start()
        while not pc.peer.sent_at or time.monotonic() - pc.peer.sent_at[0] < STALL_AT:
            time.sleep(0.01)
        stall(rig, STALL_SECS)
        talker.join()
        time.sleep(0.5)  # the last echoes
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)
        delays = echo_delays(pc.peer)

    before = median_ms(delays, 1.0, STALL_AT - 0.2)
    # Around the stall the echo is late by about its length: the stall itself, then the
    # burst that stands in the queue (what crept for good before) until it is trimmed ...
    peak = max(d for at, d in delays if STALL_AT - 0.2 <= at < STALL_AT + 1.0) * 1000
    # ... and from ~1 s later on it is gone.
    after = median_ms(delays, STALL_AT + 2.5, CALL_SECS - 0.2)
    trimmed = metric(rig, STANDING) - before_metric
    print(f"\n[measured] echo round trip p50: {before:.1f} ms before a {STALL_SECS:g} s "
          f"stall (max {peak:.1f} ms around it), {after:.1f} ms from 2.5 s after it; "
          f"{trimmed:.0f} frames of standing delay trimmed")
    assert peak >= before + 150, "the stall delayed no echo: nothing tested"
    assert after <= before + 40  # two frames
    assert trimmed >= 5


def test_a_clip_queued_ahead_is_heard_whole(rig: Rig, consumer: Consumer) -> None:
    """A bot sends a 3 s clip at once, as 150 frames of 20 ms back to back (how TTS
    arrives): the queue stands 3 s deep while nothing more arrives, and all of it plays."""
    before_metric = metric(rig, STANDING)
    clip = PCMU.new_encoder().encode(noise(3.0, 29))
    with peer_call(rig, stream_url=consumer.url, stream_track="inbound_track",
                   stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU") as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        frames = [{"event": "media", "media": {"payload": base64.b64encode(
            clip[i : i + PCMU.frame_bytes]).decode()}}
            for i in range(0, len(clip), PCMU.frame_bytes)]
        consumer.send(conn, *frames, {"event": "mark", "mark": {"name": "clip-done"}})
        conn.wait_for(lambda c: bool(c.of("mark")), timeout=15)
        time.sleep(0.2)
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)
        heard = pc.peer.audio(0)

    assert clip in heard  # every frame, in order, none dropped
    assert metric(rig, STANDING) == before_metric
