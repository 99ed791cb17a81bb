"""Media hot-path benchmarks (not collected by pytest).

Run: ``python bench/media.py [--calls 100] [--seconds 5] [--json out.json]``

Part 1 times the sans-I/O pieces per operation with ``time.perf_counter``.
Part 2 runs real legs over loopback UDP on uvloop and on asyncio, each leg
receiving 50 packets/s from a peer leg, decoding, fanning out to two tap
queues, mixing a source and sending 50 packets/s back; it reports process
CPU time per leg per 20 ms, syscalls included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from collections.abc import Callable
from typing import Any

import uvloop

from callstream.media.codecs import G722, PCMU, CodecInfo
from callstream.media.hub import MediaHub, QueueSource, Track
from callstream.media.rtcp import parse_rtcp
from callstream.media.rtp import RtpPacket, RtpView, build_packet, parse_header
from callstream.media.session import RtpSession
from callstream.media.transport import Pacer, PortAllocator, open_rtp_endpoint

ADDR = ("127.0.0.1", 40000)


def per_op(fn: Callable[[], object], n: int = 100_000) -> float:
    """Microseconds per call of ``fn`` (best of 3)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def bench_wire() -> dict[str, float]:
    packet = RtpPacket(0, 1, 2, 3, bytes(160), marker=True)
    data = packet.serialize()
    payload = bytes(160)
    rtcp = RtpSession(PCMU, remote_address=ADDR, rng=random.Random(0))
    rtcp.start(0.0)
    rtcp.send_frame(bytes(320), 0.0)
    rtcp.datagrams_to_send()
    rtcp.handle_timeout(100.0)
    compound = rtcp.rtcp_datagrams_to_send()[0][0]
    return {
        "rtp parse_header (fast path)": per_op(lambda: parse_header(data)),
        "rtp RtpPacket.parse": per_op(lambda: RtpPacket.parse(data)),
        "rtp build_packet (fast path)": per_op(lambda: build_packet(0, False, 1, 2, 3, payload)),
        "rtp RtpPacket.serialize": per_op(packet.serialize),
        "rtcp parse SR+SDES": per_op(lambda: parse_rtcp(compound), 20_000),
    }


def bench_leg(codec: CodecInfo) -> dict[str, float]:
    """One leg's per-20 ms work without sockets."""
    peer = RtpSession(codec, remote_address=ADDR, rng=random.Random(1))
    packets = []
    for n in range(1000):
        peer.send_frame(bytes(codec.pcm_frame_bytes), n * 0.02)
        packets.append(peer.datagrams_to_send()[0][0])
    session = RtpSession(codec, remote_address=ADDR, rng=random.Random(2))
    hub = MediaHub()
    hub.add_leg("a", codec.sample_rate)
    taps = [hub.open_tap("a", Track.BOTH), hub.open_tap("a", Track.BOTH)]
    forked: list[int] = []
    hub.add_packet_callback("a", "both", lambda leg, track, data: forked.append(1))
    source = QueueSource(codec.sample_rate)
    hub.add_source("a", source)
    frame = bytes(codec.pcm_frame_bytes)
    state = {"n": 0}

    def receive() -> None:
        n = state["n"]
        state["n"] = n + 1
        data = packets[n % 1000]
        packet = session.receive_rtp(data, ADDR, n * 0.02)
        if packet is not None:
            hub.push_packet("a", Track.INBOUND, packet, n * 0.02)

    def tick_in() -> None:
        now = state["n"] * 0.02
        pcm = session.playout(now)
        if pcm is not None:
            hub.push_inbound("a", pcm, now)

    def tick_out() -> None:
        now = state["n"] * 0.02
        source.feed(frame)
        for _, out in hub.tick(now):
            if out is not None:
                session.send_frame(out, now)
        for data, _ in session.datagrams_to_send():
            hub.push_packet("a", Track.OUTBOUND, RtpView.of_built(data), now)

    def consume() -> None:
        for tap in taps:
            tap.drain()
        forked.clear()

    # Warm up into steady state (jitter buffer playing).
    for _ in range(10):
        receive()
        tick_in()
        tick_out()
        consume()
    n = 20_000
    clock = time.perf_counter
    rx = inbound = outbound = 0.0
    for _ in range(n):
        t0 = clock()
        receive()
        t1 = clock()
        tick_in()
        t2 = clock()
        tick_out()
        t3 = clock()
        consume()
        rx += t1 - t0
        inbound += t2 - t1
        outbound += t3 - t2
    overhead = per_op(clock, 100_000) * 1e-6  # one clock() call, taken off each span
    rx = (rx / n - overhead) * 1e6
    inbound = (inbound / n - overhead) * 1e6
    outbound = (outbound / n - overhead) * 1e6
    encoder, decoder = codec.new_encoder(), codec.new_decoder()
    encoded = encoder.encode(frame)
    codec_cost = per_op(lambda: decoder.decode(encoder.encode(frame)), 20_000)
    return {
        f"{codec.name} receive: parse+latch+stats+jitter push+fork callback": rx,
        f"{codec.name} tick in: playout+decode+hub fan-out to 2 taps": inbound,
        f"{codec.name} tick out: mix 1 source+encode+build+fan-out to 2 taps+fork": outbound,
        f"{codec.name} total per leg per 20 ms": rx + inbound + outbound,
        f"{codec.name} of which codec encode+decode": codec_cost,
        f"{codec.name} payload bytes": float(len(encoded)),
    }


async def run_udp(calls: int, seconds: float, codec: CodecInfo) -> dict[str, Any]:
    """``calls`` pairs of legs over loopback; each leg sends and receives 50 pps."""
    ports = PortAllocator(30000, 30000 + 8 * calls + 16)
    pacer = Pacer()
    endpoints = []
    taps = []
    for c in range(calls):
        hub = MediaHub(f"call{c}")
        hub.add_leg("a", codec.sample_rate)
        hub.add_leg("b", codec.sample_rate)
        sa = RtpSession(codec, rng=random.Random(c), media_timeout=None)
        sb = RtpSession(codec, rng=random.Random(c + 10_000), media_timeout=None)
        ea = await open_rtp_endpoint(sa, hub, "a", host="127.0.0.1", ports=ports, pacer=pacer)
        eb = await open_rtp_endpoint(sb, hub, "b", host="127.0.0.1", ports=ports, pacer=pacer)
        sa.set_remote_address(("127.0.0.1", eb.local_port))
        sb.set_remote_address(("127.0.0.1", ea.local_port))
        for leg in ("a", "b"):
            hub.set_send_silence_when_idle(leg, True)
            taps.append(hub.open_tap(leg, Track.BOTH))
            taps.append(hub.open_tap(leg, Track.BOTH))
        endpoints += [ea, eb]

    async def drain_taps() -> None:
        while True:
            await asyncio.sleep(0.1)
            for tap in taps:
                tap.drain()

    drainer = asyncio.create_task(drain_taps())
    await asyncio.sleep(1.0)  # settle
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    ticks0 = pacer.ticks
    await asyncio.sleep(seconds)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    ticks = pacer.ticks - ticks0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    drainer.cancel()
    received = sum(e.session.packets_received for e in endpoints)
    sent = sum(e.session.packets_sent for e in endpoints)
    for endpoint in endpoints:
        endpoint.close()
    legs = 2 * calls
    return {
        "legs": legs,
        "codec": codec.name,
        "cpu_percent": 100 * cpu / wall,
        "us_per_leg_per_20ms": cpu / ticks / legs * 1e6 if ticks else None,
        "ticks": ticks,
        "late_ticks": pacer.late_ticks,
        "skipped_ticks": pacer.skipped_ticks,
        "packets_sent": sent,
        "packets_received": received,
        "tap_drops": sum(t.dropped for t in taps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict[str, Any] = {"micro_us": {}}
    results["micro_us"].update(bench_wire())
    for codec in (PCMU, G722):
        results["micro_us"].update(bench_leg(codec))
    print(f"{'operation':<100} {'us':>7}")
    for name, value in results["micro_us"].items():
        print(f"{name:<100} {value:7.2f}")
    results["udp"] = []
    for runner_name, runner in (("uvloop", uvloop.run), ("asyncio", asyncio.run)):
        for codec in (PCMU, G722):
            row = runner(run_udp(args.calls, args.seconds, codec))
            row["loop"] = runner_name
            results["udp"].append(row)
            print(
                f"{runner_name:8} {codec.name:5} {row['legs']} legs: "
                f"{row['us_per_leg_per_20ms']:.1f} us/leg/20ms, CPU {row['cpu_percent']:.0f}%, "
                f"late {row['late_ticks']} skipped {row['skipped_ticks']}, "
                f"sent {row['packets_sent']} received {row['packets_received']}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
