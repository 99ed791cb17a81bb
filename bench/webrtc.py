"""CPU per WebRTC (browser) leg per 20 ms, beside a SIP leg (not collected by pytest).

Run: ``python bench/webrtc.py [--legs 20] [--seconds 10] [--json out.json]``

WebRTC: ``--legs`` :class:`~callstream.webrtc.leg.WebRtcLeg`\\ s in this process, each
answered, with a playback source (a tone) and two taps on both tracks (as a stream and a
transcription would hold), and their peers — aiortc clients sending an Opus tone and
decoding what they get — in a child process, so only the server side is measured: ICE,
DTLS-SRTP, Opus decode and encode, 48 <-> 16 kHz resampling, the hub.
SIP: the same shape over plain RTP (``bench/media.py``'s loopback legs, PCMU and G.722).
Both report process CPU (user + system) per leg per 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from callstream.media.codecs import G722, PCMU
from callstream.media.hub import MediaHub, QueueSource, Track
from callstream.webrtc.audio import HUB_RATE
from callstream.webrtc.leg import WebRtcLeg
from callstream.webrtc.offer import check_offer


class ToneTrack(AudioStreamTrack):
    """aiortc's paced 20 ms frames with a 440 Hz tone in them."""

    def __init__(self) -> None:
        super().__init__()
        self._phase = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        n = frame.samples
        t = (np.arange(n) + self._phase) / frame.sample_rate
        self._phase += n
        frame.planes[0].update((4000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes())
        return frame


async def _clients(conn: Connection, legs: int) -> None:
    pcs = []
    readers = []

    async def read(track: Any) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass

    for _ in range(legs):
        pc = RTCPeerConnection()
        pc.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
        pc.addTrack(ToneTrack())
        await pc.setLocalDescription(await pc.createOffer())
        conn.send(pc.localDescription.sdp)
        answer = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        pcs.append(pc)
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    for pc in pcs:
        await pc.close()


def clients(conn: Connection, legs: int) -> None:
    asyncio.run(_clients(conn, legs))


async def run_webrtc(legs: int, seconds: float) -> dict[str, Any]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=clients, args=(child, legs))
    proc.start()
    loop = asyncio.get_running_loop()
    server_legs = []
    taps = []
    tone = (4000 * np.sin(2 * math.pi * 1000 * np.arange(HUB_RATE * 100) / HUB_RATE)).astype(
        "<i2").tobytes()
    for n in range(legs):
        offer = await loop.run_in_executor(None, parent.recv)
        hub = MediaHub(f"call{n}")
        leg = WebRtcLeg(f"leg{n}", hub, [], on_dtmf=lambda _d: None, on_gone=lambda _w: None)
        parent.send(await leg.answer(check_offer(offer)))
        leg.answered = True
        source = QueueSource(HUB_RATE)
        source.feed(tone)
        hub.add_source(leg.name, source)
        taps += [hub.open_tap(leg.name, Track.BOTH), hub.open_tap(leg.name, Track.BOTH)]
        server_legs.append(leg)

    async def drain() -> None:
        while True:
            await asyncio.sleep(0.1)
            for tap in taps:
                tap.drain()

    drainer = asyncio.create_task(drain())
    await asyncio.sleep(3.0)  # ICE, DTLS, the first packets
    frames0 = sum(leg.hub.counters(leg.name)["frames_in"] for leg in server_legs)
    out0 = sum(leg.hub.counters(leg.name)["frames_out"] for leg in server_legs)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    frames_in = sum(leg.hub.counters(leg.name)["frames_in"] for leg in server_legs) - frames0
    frames_out = sum(leg.hub.counters(leg.name)["frames_out"] for leg in server_legs) - out0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    drainer.cancel()
    parent.send("stop")
    for leg in server_legs:
        leg.close()
    await asyncio.sleep(0.5)
    proc.join(10)
    ticks = wall * 50
    return {
        "kind": "webrtc (Opus)",
        "legs": legs,
        "cpu_percent": 100 * cpu / wall,
        "us_per_leg_per_20ms": cpu / ticks / legs * 1e6,
        "frames_in_per_leg_per_s": frames_in / legs / wall,
        "frames_out_per_leg_per_s": frames_out / legs / wall,
    }


def _media_bench() -> Any:
    path = Path(__file__).with_name("media.py")
    spec = importlib.util.spec_from_file_location("bench_media", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [asyncio.run(run_webrtc(args.legs, args.seconds))]
    media = _media_bench()
    for codec in (PCMU, G722):
        row = asyncio.run(media.run_udp(max(1, args.legs // 2), args.seconds, codec))
        rows.append({"kind": f"sip ({codec.name})", "legs": row["legs"],
                     "cpu_percent": row["cpu_percent"],
                     "us_per_leg_per_20ms": row["us_per_leg_per_20ms"]})
    print(f"{'leg':<16} {'legs':>5} {'CPU %':>7} {'us/leg/20ms':>12}")
    for row in rows:
        print(f"{row['kind']:<16} {row['legs']:>5} {row['cpu_percent']:>7.1f} "
              f"{row['us_per_leg_per_20ms']:>12.1f}")
    webrtc = rows[0]
    print(f"webrtc frames per leg per s: in {webrtc['frames_in_per_leg_per_s']:.1f}, "
          f"out {webrtc['frames_out_per_leg_per_s']:.1f} (50 expected)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
