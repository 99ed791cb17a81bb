"""Fork cost on the media path (not collected by pytest).

Run: ``python bench/forking.py [--packets 200000] [--json out.json]``

Times ``MediaHub.push_packet`` for one 172-byte PCMU packet with no fork, with an
rx fork to a listening loopback socket, with a STREP ``target`` fork, and with an
rx fork to a closed port (ICMP unreachable every other packet, each one resent).
A reader thread drains the listening socket so its buffer never fills. CPU time
per packet from ``time.thread_time`` of the sending thread (the send syscall
included, the reader not).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import uuid

from callstream.forking.sender import ForkStats, PathSpec, RtpFork
from callstream.forking.strep import StrepDirection, StrepHeader
from callstream.media.hub import MediaHub, Track
from callstream.media.rtp import RtpView, build_packet

LEG = str(uuid.uuid4())
PACKET = RtpView.parse(build_packet(0, False, 1, 160, 0x1234ABCD, bytes(160)))


def _per_packet(hub: MediaHub, count: int) -> float:
    push = hub.push_packet
    start = time.thread_time()
    for _ in range(count):
        push(LEG, Track.INBOUND, PACKET, 0.0)
    return (time.thread_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.2)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                sink.recv(2048)
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()
    closed.close()
    header = StrepHeader(uuid.UUID(LEG), StrepDirection.INBOUND).serialize()
    cases = {
        "no fork": None,
        "rx fork (listening)": PathSpec("rx", socket.AF_INET, sink.getsockname()),
        "target fork, STREP (listening)": PathSpec("rx", socket.AF_INET, sink.getsockname(),
                                                   header),
        "rx fork (closed port)": PathSpec("rx", socket.AF_INET, dead),
    }
    results = {}
    for name, spec in cases.items():
        hub = MediaHub()
        hub.add_leg(LEG, 8000)
        fork = None
        if spec is not None:
            fork = RtpFork(hub, LEG, [spec], stream_type="decrypted", stats=ForkStats())
        _per_packet(hub, 2000)  # warm up
        results[name] = round(_per_packet(hub, args.packets), 2)
        if fork is not None:
            results[name + " sent"] = fork.counters()["rx"]["packets"]
            fork.stop()
    stop.set()
    reader.join()
    sink.close()
    print(f"{'case':34} µs CPU per packet")
    for name, value in results.items():
        if not name.endswith(" sent"):
            print(f"{name:34} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
