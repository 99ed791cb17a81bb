"""Stream reconnect and the inbound latency bound on real calls (SIPp signalling, real RTP
from a test socket, a real WebSocket consumer).

Reconnect: the consumer cuts its TCP connection (no close frame) mid-call and refuses the
first attempts; callstream dials again, sends ``connected`` and ``start`` with
``resumed: true`` and the same ``stream_id``, replays what the caller said meanwhile,
numbers going on; playback works on the new socket. A consumer that stays away past the
window gets ``streaming.failed``; without reconnect (the default) a drop ends the stream
as Telnyx does.

Bound: a consumer that stops reading for 3 s gets recent audio when it reads again, and
the overdue frames are counted on /metrics.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callstream.media.codecs import PCMU
from tests.audio import speech
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.test_stream_edges import noise, settle
from tests.e2e.test_streaming import _payloads, _pcm, _ulaw, peer_call
from tests.helpers import entered_together
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

#: How long the consumer refuses upgrades after it dropped its socket.
AWAY = 1.0


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, Rig]]:
    """The module's two servers, started at once: the default one, and one with
    CALLSTREAM_STREAM_RECONNECT_SECS=5."""
    with entered_together(
        make_rig(tmp_path_factory.mktemp("reconnect"), (39700, 39799)),
        make_rig(tmp_path_factory.mktemp("reconnect-5s"), (39800, 39849),
                 {"CALLSTREAM_STREAM_RECONNECT_SECS": "5"}),
    ) as (rig, reconnecting):
        yield rig, reconnecting


@pytest.fixture(scope="module")
def rig(rigs: tuple[Rig, Rig]) -> Rig:
    return rigs[0]


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def metric(rig: Rig, name: str, labels: str = "") -> float:
    with rig.server.client() as http:
        text = http.get("/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def call_events(rig: Rig, ccid: str) -> list[str]:
    return [d.event_type for d in rig.hooks.events() if d.payload.get("call_control_id") == ccid]


def numbers(conn: Connection) -> list[int]:
    return [int(f["sequence_number"]) for f in conn.frames if "sequence_number" in f]


def test_a_dropped_consumer_is_reconnected_and_misses_nothing(
        rig: Rig, consumer: Consumer) -> None:
    """Caller talks 1 s; the consumer queues a reply, drops its socket and refuses
    upgrades for 1 s while the caller talks 2 s more; the new socket gets connected,
    start (resumed), every frame of the 2 s (replayed, then live) in order; the reply
    queued before the drop plays on, and one sent after the resume reaches the caller."""
    attempts = metric(rig, "callstream_stream_reconnect_attempts_total")
    replayed = metric(rig, "callstream_stream_frames_replayed_total")
    clip = noise(3.0)
    first, second = clip[:16000], clip[16000:]
    with peer_call(rig) as pc:
        rig.sdk.calls.actions.start_streaming(
            pc.ccid, stream_url=consumer.url, stream_codec="PCMU",
            stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU",
            stream_bidirectional_target_legs="self",
            extra_body={"stream_reconnect_seconds": 10})
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        pc.peer.play(first)
        settle(conn)
        # The consumer queues 1.5 s of reply and a mark, then its socket drops: the reply
        # keeps playing, and the mark is echoed on the new socket.
        queued = _ulaw(speech("two_cities")[8000 * 2 * 3: 8000 * 2 * 9 // 2])
        consumer.send(conn, {"event": "media",
                             "media": {"payload": base64.b64encode(queued).decode()}},
                      {"event": "mark", "mark": {"name": "before-drop"}})
        time.sleep(0.3)  # read by callstream before the reset

        consumer.refuse = True
        consumer.abort(conn)
        # Talk only once callstream has seen the drop (its first attempt is 0.1 s after):
        # a frame handed to the old socket before then is lost by TCP, as documented.
        deadline = time.monotonic() + 5
        while metric(rig, "callstream_stream_reconnect_attempts_total") == attempts:
            assert time.monotonic() < deadline, "no reconnect attempt after the drop"
            time.sleep(0.02)
        talker = threading.Thread(target=pc.peer.play, args=(second,))
        talker.start()
        time.sleep(AWAY)
        consumer.refuse = False
        again = consumer.wait_connection(1)
        again.wait_for(lambda c: "start" in c.events())
        talker.join()
        settle(again)

        # Bidirectional playback on the new socket: heard by the caller, mark echoed.
        reply = _ulaw(speech("two_cities")[: 8000 * 2])
        consumer.send(again, {"event": "media",
                              "media": {"payload": base64.b64encode(reply).decode()}},
                      {"event": "mark", "mark": {"name": "after-resume"}})
        again.wait_for(lambda c: len(c.of("mark")) == 2)
        time.sleep(0.3)
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert again.done.wait(10)
        rig.hooks.wait_event("streaming.stopped", pc.ccid)

    assert conn.closed_code == 1006
    start, resumed = conn.of("start")[0], again.of("start")[0]
    assert again.events()[:2] == ["connected", "start"] and again.events()[-1] == "stop"
    assert resumed["stream_id"] == start["stream_id"]
    assert resumed["start"]["resumed"] is True and "resumed" not in start["start"]
    assert resumed["start"]["media_format"] == start["start"]["media_format"]
    # One numbering across both sockets, no gap.
    assert numbers(conn) + numbers(again) == list(range(1, len(numbers(conn) + numbers(again)) + 1))
    media = [f["media"] for f in conn.of("media") + again.of("media")
             if f["media"]["track"] == "inbound"]
    assert [m["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["timestamp"]) for m in media]
    assert stamps == sorted(stamps)
    # Every frame the caller sent, the 2 s said while the socket was down included.
    sent = b"".join(pc.peer.sent)
    heard = _payloads(conn, "inbound") + _payloads(again, "inbound")
    print(f"\n[measured] reconnect: {len(_payloads(conn, 'inbound')) // PCMU.frame_bytes} "
          f"frames before the drop, {len(_payloads(again, 'inbound')) // PCMU.frame_bytes} "
          f"after; {metric(rig, 'callstream_stream_frames_replayed_total') - replayed:.0f} "
          f"replayed; {metric(rig, 'callstream_stream_reconnect_attempts_total') - attempts:.0f}"
          f" attempts")
    assert heard == sent
    assert metric(rig, "callstream_stream_frames_replayed_total") - replayed >= 25
    assert metric(rig, "callstream_stream_reconnect_attempts_total") - attempts >= 2
    assert [m["mark"]["name"] for m in again.of("mark")] == ["before-drop", "after-resume"]
    assert not conn.of("mark")
    heard_by_caller = _pcm(pc.peer.audio(0))
    assert _pcm(queued)[-3200:] in heard_by_caller  # its end played during the outage
    assert _pcm(reply)[:3200] in heard_by_caller
    events = call_events(rig, pc.ccid)
    assert events.count("streaming.started") == 1 and "streaming.failed" not in events


def test_a_consumer_away_past_the_window_fails_the_stream(
        rig: Rig, consumer: Consumer) -> None:
    window = 1.5
    with peer_call(rig) as pc:
        rig.sdk.calls.actions.start_streaming(
            pc.ccid, stream_url=consumer.url, extra_body={"stream_reconnect_seconds": window})
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        consumer.refuse = True
        dropped = time.monotonic()
        consumer.abort(conn)
        failed = rig.hooks.wait_event("streaming.failed", pc.ccid)
        waited = time.monotonic() - dropped
        assert failed.payload["failure_reason"] == "reconnect_window_passed"
        assert failed.payload["stream_id"] == conn.of("start")[0]["stream_id"]
        assert waited >= window
        assert len(consumer.connections) == 1  # every attempt was refused
        status = rig.sdk.calls.retrieve_status(pc.ccid).data
        assert status is not None and status.is_alive
        rig.sdk.calls.actions.hangup(pc.ccid)
        rig.hooks.wait_event("call.hangup", pc.ccid)
    assert "streaming.stopped" not in call_events(rig, pc.ccid)


def test_without_reconnect_a_drop_ends_the_stream_and_a_clean_close_always_does(
        rig: Rig, consumer: Consumer) -> None:
    """The default (no window): a drop is streaming.failed (connection_lost), nothing
    dials again. With a window, a clean close still ends the stream (stopped)."""
    with peer_call(rig) as pc:
        actions = rig.sdk.calls.actions
        actions.start_streaming(pc.ccid, stream_url=consumer.url)
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        consumer.abort(conn)
        failed = rig.hooks.wait_event("streaming.failed", pc.ccid)
        assert failed.payload["failure_reason"] == "connection_lost"

        consumer.close_after = 2  # connected, start: then a clean close
        actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                extra_body={"stream_reconnect_seconds": 5})
        second = consumer.wait_connection(1)
        assert second.done.wait(10) and second.closed_code == 1000
        rig.hooks.wait_event("streaming.stopped", pc.ccid)
        time.sleep(1.0)  # several back-off steps: nothing dials again
        assert len(consumer.connections) == 2
        actions.hangup(pc.ccid)
        rig.hooks.wait_event("call.hangup", pc.ccid)
    events = call_events(rig, pc.ccid)
    assert events.count("streaming.failed") == 1 and events.count("streaming.stopped") == 1


@pytest.mark.parametrize("value", [-1, 61, "soon"])
def test_the_reconnect_window_is_checked(rig: Rig, value: Any) -> None:
    for path in ("/v2/calls/nope/actions/streaming_start", "/v2/calls"):
        body = {"stream_url": "ws://127.0.0.1:9/x", "stream_reconnect_seconds": value,
                "connection_id": "default", "to": "sip:x@127.0.0.1", "from": "+15550001111"}
        with rig.server.client() as http:
            answer = http.post(path, json=body)
        assert answer.status_code == 422, answer.text
        errors = answer.json()["errors"]
        assert errors[0]["source"]["pointer"] == "/stream_reconnect_seconds"


def test_a_consumer_that_stops_reading_gets_recent_audio_after(
        rig: Rig) -> None:
    """The consumer stops reading for 3 s (the system's socket buffers, which hold many
    seconds of audio): what it gets afterwards is recent, the overdue frames in between
    are dropped and counted."""
    pause = 3.0
    clip = noise(7.0)
    with ws_consumer() as consumer, peer_call(rig) as pc:
        consumer.pause_after = 30
        consumer.pause_secs = pause
        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                              stream_codec="PCMU")
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        began = time.monotonic()
        pc.peer.play(clip)
        settle(conn)
        stream_id = conn.of("start")[0]["stream_id"]
        overdue = metric(rig, "callstream_stream_frames_overdue_total",
                         f'{{stream_id="{stream_id}"}}')
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)

    assert conn.paused is not None
    resumed = conn.paused[1]
    where = {payload: i for i, payload in enumerate(pc.peer.sent)}
    ages = [(at, at - (began + where[base64.b64decode(f["media"]["payload"])] * 0.02))
            for f, at in zip(conn.frames, conn.times, strict=True) if f["event"] == "media"]
    after = [age for at, age in ages if at >= resumed]
    stale = sum(age > 1.0 for age in after)
    print(f"\n[measured] consumer paused {pause:g} s: {overdue:.0f} frames dropped as "
          f"overdue; after the pause {len(after)} frames, {stale} of them over 1 s old, "
          f"oldest {max(after):.2f} s, last second's oldest "
          f"{max(age for at, age in ages if at >= ages[-1][0] - 1.0):.2f} s")
    assert overdue >= 50
    assert stale <= 60  # what was read ahead before callstream held back
    assert max(age for at, age in ages if at >= ages[-1][0] - 1.0) < 0.5


def test_the_server_default_applies_to_dial_and_a_request_can_turn_it_off(
        rigs: tuple[Rig, Rig], consumer: Consumer) -> None:
    """CALLSTREAM_STREAM_RECONNECT_SECS=5: a dial's stream (no field) reconnects; a
    streaming_start with stream_reconnect_seconds 0 does not."""
    rig = rigs[1]
    with peer_call(rig, stream_url=consumer.url) as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        consumer.abort(conn)
        again = consumer.wait_connection(1)
        again.wait_for(lambda c: "start" in c.events())
        assert again.of("start")[0]["start"]["resumed"] is True
        assert again.of("start")[0]["stream_id"] == conn.of("start")[0]["stream_id"]
        rig.sdk.calls.actions.stop_streaming(pc.ccid)
        rig.hooks.wait_event("streaming.stopped", pc.ccid)
        assert again.done.wait(10)

        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                              extra_body={"stream_reconnect_seconds": 0})
        third = consumer.wait_connection(2)
        third.wait_for(lambda c: "start" in c.events())
        consumer.abort(third)
        failed = rig.hooks.wait_event("streaming.failed", pc.ccid)
        assert failed.payload["failure_reason"] == "connection_lost"
        time.sleep(1.0)
        assert len(consumer.connections) == 3
        rig.sdk.calls.actions.hangup(pc.ccid)
        rig.hooks.wait_event("call.hangup", pc.ccid)
