"""A bridge's two halves in two hubs, joined by a hop on loopback, as two workers'."""

from __future__ import annotations

import asyncio

from callstream.calls.features import LegMedia
from callstream.calls.remote_bridge import PEER_LEG_PREFIX, RemoteBridge
from callstream.media.hop import open_hop
from callstream.media.hub import MediaHub


class _Once:
    """An audio source that plays one frame."""

    def __init__(self, pcm: bytes) -> None:
        self.pcm: bytes | None = pcm

    def read(self, now: float) -> bytes | None:
        pcm, self.pcm = self.pcm, None
        return pcm

    def skip(self, frames: int) -> int:
        return 0


async def _half(call: str, peer: str, rate: int, left: list[tuple[str, str]]
                ) -> RemoteBridge:
    hub = MediaHub(call)
    hub.add_leg(call, rate)
    hop = await open_hop("127.0.0.1")
    return RemoteBridge(LegMedia(hub, call, "L16", rate, 0), hop, call, peer,
                        lambda other, me, ssrc: left.append((other, me)))


async def _heard(half: RemoteBridge, now: float) -> bytes | None:
    """Tick the half's hub until its call's leg plays something (the hop is async)."""
    for _ in range(100):  # 1 s at most
        for leg, pcm in half.media.hub.tick(now):
            if leg == half.media.leg and pcm is not None:
                return pcm
        await asyncio.sleep(0.01)
    return None


async def test_each_call_hears_the_other_and_the_peer_leg_carries_playback() -> None:
    left: list[tuple[str, str]] = []
    a = await _half("A", "B", 8000, left)
    b = await _half("B", "A", 16000, left)
    try:
        a.connect(b.offer)
        b.connect(a.offer)
        # Both carry the higher rate: the peer legs are 16 kHz on both sides.
        assert a.peer_media is not None and b.peer_media is not None
        assert a.peer_media.sample_rate == b.peer_media.sample_rate == 16000
        assert a.peer_media.leg == PEER_LEG_PREFIX + "B"
        # A's caller speaks: A's hub sends it on (its tick), B's leg plays it.
        voice = (1000).to_bytes(2, "little", signed=True) * 160
        a.media.hub.push_inbound("A", voice, 0.0)
        a.media.hub.tick(0.0)
        heard = await _heard(b, 0.0)
        assert heard is not None and len(heard) == 640  # 20 ms at B's 16 kHz
        assert max(abs(int.from_bytes(heard[i:i + 2], "little", signed=True))
                   for i in range(0, 640, 2)) > 500
        # Silence from A's caller and nothing else: B's leg plays nothing.
        assert await _heard(b, 0.02) is None
        # Audio played to A's peer leg (a stream's "opposite" target) reaches B's leg.
        tone = (-2000).to_bytes(2, "little", signed=True) * 320  # 20 ms at 16 kHz
        a.media.hub.add_source(a.peer_media.leg, _Once(tone))
        a.media.hub.tick(0.04)
        assert await _heard(b, 0.04) == tone  # same rate both ends: bit-exact
    finally:
        a.detach("hangup")
        b.close()
    assert left == [("B", "A")]  # A told B's owner; B, closed by that notice, says nothing
    assert a.peer_media.leg not in a.media.hub.legs
