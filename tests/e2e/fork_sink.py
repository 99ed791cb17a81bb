"""Where many calls' RTP forks go: one UDP socket per call, all read by one thread.

A call's fork (``fork_start`` with ``rx``) forwards every RTP packet the call receives,
byte for byte; the sink keeps each with the time it arrived, so a test can check a
call's audio against what its caller sent (:func:`check_frames`) and say when it flowed.
"""

from __future__ import annotations

import itertools
import selectors
import socket
import threading
import time
from dataclasses import dataclass

#: The sink's socket buffer: a stalled reader thread (busy machine) must not drop packets.
RCVBUF_BYTES = 1 << 20


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic()
    packet: bytes


class ForkSink:
    """UDP sockets on 127.0.0.1, one per call, read by one thread until :meth:`close`."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[str, socket.socket] = {}
        self._arrivals: dict[str, list[Arrival]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def target(self, call: str) -> str:
        """A new socket for ``call``: its ``udp:`` address for ``fork_start``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        with self._lock:
            self._sockets[call] = sock
            self._arrivals[call] = []
        self._selector.register(sock, selectors.EVENT_READ, call)
        return f"udp:127.0.0.1:{sock.getsockname()[1]}"

    def arrivals(self, call: str) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals.get(call, []))

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock, call = key.fileobj, str(key.data)
                assert isinstance(sock, socket.socket)
                while True:
                    try:
                        data = sock.recv(4096)
                    except (BlockingIOError, OSError):
                        break
                    now = time.monotonic()
                    with self._lock:
                        self._arrivals[call].append(Arrival(now, data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._selector.close()
        for sock in self._sockets.values():
            sock.close()


@dataclass(frozen=True)
class FrameCheck:
    frames: int  # packets the fork delivered
    first_at: float  # arrival of the first, time.monotonic()
    last_at: float
    max_gap_s: float  # longest silence between two arrivals
    problem: str  # empty: a gapless, in-order, byte-identical run of the sent packets


def check_frames(sent: list[bytes], arrivals: list[Arrival]) -> FrameCheck:
    """Check that ``arrivals`` are ``sent[k:k + n]`` for some k: every packet the caller
    sent from the fork's first one on, in order, byte-identical (each sent packet is
    unique, so the first arrival fixes k)."""
    if not arrivals:
        return FrameCheck(0, 0.0, 0.0, 0.0, "no packet arrived")
    gaps = [b.at - a.at for a, b in itertools.pairwise(arrivals)]
    times = (len(arrivals), arrivals[0].at, arrivals[-1].at, max(gaps, default=0.0))
    try:
        k = sent.index(arrivals[0].packet)
    except ValueError:
        return FrameCheck(*times, "the first packet is none the caller sent")
    for i, arrival in enumerate(arrivals):
        if k + i >= len(sent):
            return FrameCheck(*times, f"{len(arrivals) - i} packets more than sent")
        if arrival.packet != sent[k + i]:
            where = sent.index(arrival.packet) if arrival.packet in sent else None
            what = ("not one the caller sent" if where is None
                    else f"sent packet {where}, expected {k + i}")
            return FrameCheck(*times, f"packet {i} after the first: {what}")
    return FrameCheck(*times, "")
