"""The two ends of a media stream on real calls (SIPp signalling, real RTP, a real
WebSocket consumer): the consumer hears the caller from the first frame even when its
socket opens late, and after ``stop`` the socket stays open for the consumer to close."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from callstream.media.codecs import PCMU
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.test_streaming import _payloads, peer_call
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

#: How late the consumer completes the WebSocket upgrade (within the 2 s buffer).
ACCEPT_DELAY = 0.5
#: CALLSTREAM_STREAM_STOP_GRACE_SECS, the default.
STOP_GRACE = 2.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("edges"), (39600, 39699)) as rig:
        yield rig


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def noise(seconds: float) -> bytes:
    """Seeded noise: every 20 ms frame differs, so a frame's place in the clip is certain."""
    rng = np.random.default_rng(17)
    return (rng.normal(0, 3000, int(8000 * seconds))).clip(-32768, 32767).astype("<i2").tobytes()


def settle(conn: Connection, quiet: float = 0.5, timeout: float = 30.0) -> None:
    """Wait until media frames have come and then stopped coming for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    count, changed = -1, time.monotonic()
    while time.monotonic() < deadline:
        now, seen = time.monotonic(), len(conn.of("media"))
        if seen != count:
            count, changed = seen, now
        elif seen and now - changed >= quiet:
            return
        time.sleep(0.05)
    raise AssertionError(f"media still arriving (or none) after {timeout} s: {count} frames")


def test_a_late_consumer_hears_the_caller_from_the_first_frame(
        rig: Rig, consumer: Consumer) -> None:
    """streaming_start, then the caller talks at once; the consumer completes its upgrade
    0.5 s later. Every frame the caller sent reaches it, in order, numbered and timed
    from when the stream began."""
    consumer.accept_delay = ACCEPT_DELAY
    clip = noise(3.0)
    with peer_call(rig) as pc:
        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                              stream_codec="PCMU")
        pc.peer.play(clip)  # 3 s, from now: the socket opens ~0.5 s into it
        conn = consumer.wait_connection()
        frames = len(pc.peer.sent)
        settle(conn)  # the caller is done: the last packets arrive, then nothing
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)

    sent = b"".join(pc.peer.sent)
    inbound = _payloads(conn, "inbound")
    head_loss = sent.find(inbound[:PCMU.frame_bytes]) // PCMU.frame_bytes
    print(f"\n[measured] stream head loss with a consumer {ACCEPT_DELAY:g} s late: "
          f"{head_loss} frames ({len(inbound) // PCMU.frame_bytes} of {frames} streamed)")
    assert inbound in sent
    assert head_loss == 0
    events = conn.events()
    assert events[:3] == ["connected", "start", "media"] and events[-1] == "stop"
    numbers = [int(f["sequence_number"]) for f in conn.frames[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    media = [f["media"] for f in conn.of("media")]
    assert [m["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["timestamp"]) for m in media]
    # Timed from when capture began, not clamped to the start frame: the buffered
    # half second is spread over its own time, not stacked at 0.
    assert stamps == sorted(stamps) and len(set(stamps[:20])) >= 10
    assert stamps[-1] - stamps[0] >= 20 * (len(stamps) - 1) // 2


def test_the_socket_stays_open_after_stop_for_the_consumer_to_close(
        rig: Rig, consumer: Consumer) -> None:
    """A consumer that closes 0.5 s after ``stop`` closes the socket itself (the socket
    was still open); one that never does is closed by callstream after the grace."""
    consumer.close_on_stop = 0.5
    with peer_call(rig) as pc:
        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url)
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        asked = time.monotonic()
        rig.sdk.calls.actions.stop_streaming(pc.ccid)
        answered = time.monotonic()
        assert conn.done.wait(10)
        assert conn.events()[-1] == "stop"
        assert conn.closed_code == 1000 and conn.closed_by_server is False
        assert conn.closed_at is not None and conn.closed_at > answered  # REST did not wait
        stopped = rig.hooks.wait_event("streaming.stopped", pc.ccid)
        assert stopped.payload["stream_url"] == consumer.url
        assert "streaming.failed" not in [d.event_type for d in rig.hooks.events()
                                          if d.payload.get("call_control_id") == pc.ccid]
        print(f"\n[measured] streaming_stop answered in {(answered - asked) * 1000:.0f} ms")

        consumer.close_on_stop = None
        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url)
        late = consumer.wait_connection(1)
        late.wait_for(lambda c: "start" in c.events())
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert late.done.wait(10)
        stop_at = late.times[late.events().index("stop")]
        assert late.closed_code == 1000 and late.closed_by_server is True
        assert late.closed_at is not None and late.closed_at - stop_at >= STOP_GRACE * 0.9
