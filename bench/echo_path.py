"""The voice-AI echo's own path, alone: a consumer's PCMU `media` message in, the RTP
packet out, per call-tick, one code tree against another.

Each run builds, in a fresh process with the tree on its path, one leg as the server
does — a hub, a paced RTP endpoint on real loopback sockets (the pacer's timer stopped,
its tick driven here), a bidirectional PCMU `Playback` on the leg — and times
`Playback.on_text(message)` followed by `Pacer.tick(now)` (the jitter buffer's empty
playout, the hub's tick, the send and its `sendto`, the timers) for every 20 ms. No
WebSocket, no inbound packets: what issue 13's fourth round changed, without the rest of
`bench/hot_path.py`'s noise. Rounds alternate the trees; each run reports the fastest
and the median of its repeats (the fastest is the least disturbed by the other work on
the machine).

    python bench/echo_path.py --callstream /tmp/old,. --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TICKS = 5000  # call-ticks per repeat
REPEATS = 9


def run() -> dict[str, float]:
    """Time the path in this process (the tree is on sys.path)."""
    import asyncio
    import base64
    import socket
    import time

    from callstream.calls.features import LegMedia
    from callstream.media.codecs import PCMU
    from callstream.media.hub import MediaHub
    from callstream.media.session import RtpSession
    from callstream.media.transport import Pacer, PortAllocator, open_rtp_endpoint
    from callstream.streaming.playback import Playback

    async def main() -> dict[str, float]:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows it
        hub = MediaHub("call")
        hub.add_leg("a", 8000)
        pacer = Pacer()
        endpoint = await open_rtp_endpoint(
            RtpSession(PCMU, remote_address=sink.getsockname()), hub, "a",
            host="127.0.0.1", ports=PortAllocator(41000, 41999), pacer=pacer)
        pacer.stop()
        playback = Playback([LegMedia(hub, "a", "PCMU", 8000, 0)], mode="rtp", codec="PCMU",
                            sampling_rate=8000, emit=lambda event: None, clock=time.monotonic,
                            standing_ms=20)
        payload = PCMU.new_encoder().encode(bytes(range(256)) + bytes(64))
        message = ('{"event":"media","media":{"payload":"'
                   + base64.b64encode(payload).decode() + '"}}')
        on_text, tick = playback.on_text, pacer.tick
        now = asyncio.get_running_loop().time()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(TICKS):
                on_text(message)
                now += 0.02
                tick(now)
            times.append((time.perf_counter() - start) / TICKS * 1e6)
        sent = endpoint.session.packets_sent
        endpoint.close()
        sink.close()
        assert sent == REPEATS * TICKS, sent
        return {"fastest_us": min(times), "median_us": statistics.median(times)}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("driver", "run"), default="driver")
    parser.add_argument("--callstream", default=".", help="comma-separated source trees")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write every run and the medians here")
    args = parser.parse_args()
    if args.role == "run":
        print(json.dumps(run()))
        return
    trees = args.callstream.split(",")
    runs = []
    for index in range(args.rounds):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--role", "run"],
                                 env=env, capture_output=True, text=True, check=True).stdout
            result = json.loads(out) | {"tree": tree, "round": index}
            runs.append(result)
            print(f"  round {index + 1} {tree}: fastest {result['fastest_us']:.2f} µs, "
                  f"median {result['median_us']:.2f} µs per call-tick", flush=True)
    medians = {tree: {key: statistics.median(r[key] for r in runs if r["tree"] == tree)
                      for key in ("fastest_us", "median_us")} for tree in trees}
    print(f"\n{'tree':30s} {'fastest (median of runs)':>26s} {'median (median of runs)':>26s}")
    for tree, m in medians.items():
        print(f"{tree:30s} {m['fastest_us']:23.2f} µs {m['median_us']:23.2f} µs")
    if args.json:
        load = os.getloadavg()
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpus": os.cpu_count(), "load_avg": load},
                       "args": vars(args), "runs": runs, "medians": medians}, f, indent=1)


if __name__ == "__main__":
    main()
