"""The media layer's /metrics counters: RTP totals per ended leg, pacer ticks."""

from __future__ import annotations

import asyncio
import random
import time

import uvloop
from prometheus_client import REGISTRY

from callstream.media.codecs import PCMU
from callstream.media.hub import MediaHub
from callstream.media.session import RtpSession
from callstream.media.transport import Pacer, PortAllocator, open_rtp_endpoint

from .test_transport import LOCALHOST, free_port_range


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rtp_and_pacer_counters_follow_the_sessions() -> None:
    async def main() -> None:
        before = {
            "received": sample("callstream_rtp_packets_total", direction="received"),
            "sent": sample("callstream_rtp_packets_total", direction="sent"),
            "lost": sample("callstream_rtp_lost_packets_total"),
            "skipped_out": sample("callstream_rtp_skipped_out_total"),
            "on_time": sample("callstream_media_pacer_ticks_total", outcome="on_time"),
            "skipped": sample("callstream_media_pacer_ticks_total", outcome="skipped"),
        }
        start, end = free_port_range()
        ports = PortAllocator(start, end)
        pacer = Pacer()
        hub_a, hub_b = MediaHub("a"), MediaHub("b")
        hub_a.add_leg("a", 8000, send_silence_when_idle=True)
        hub_b.add_leg("b", 8000)  # sends nothing: every tick is a skipped frame
        session_a = RtpSession(PCMU, rng=random.Random(1), name="a")
        session_b = RtpSession(PCMU, rng=random.Random(2), name="b")
        endpoint_a = await open_rtp_endpoint(session_a, hub_a, "a", host=LOCALHOST,
                                             ports=ports, pacer=pacer)
        endpoint_b = await open_rtp_endpoint(session_b, hub_b, "b", host=LOCALHOST,
                                             ports=ports, pacer=pacer)
        session_a.set_remote_address((LOCALHOST, endpoint_b.local_port))
        await asyncio.sleep(0.3)
        time.sleep(0.15)  # noqa: ASYNC251 - a deliberate stall: the pacer skips ticks
        await asyncio.sleep(0.1)
        endpoint_a.close()
        endpoint_b.close()
        assert session_a.packets_sent >= 10
        assert session_b.packets_received >= 10
        assert sample("callstream_rtp_packets_total", direction="sent") - before["sent"] == (
            session_a.packets_sent + session_b.packets_sent)
        assert sample("callstream_rtp_packets_total", direction="received") - before[
            "received"] == session_a.packets_received + session_b.packets_received
        assert sample("callstream_rtp_lost_packets_total") == before["lost"]
        assert sample("callstream_rtp_skipped_out_total") - before["skipped_out"] == (
            session_a.skipped_out + session_b.skipped_out) > 0
        assert sample("callstream_media_pacer_ticks_total", outcome="on_time") - before[
            "on_time"] >= 10
        assert sample("callstream_media_pacer_ticks_total", outcome="skipped") - before[
            "skipped"] == pacer.skipped_ticks > 0

    uvloop.run(main())
