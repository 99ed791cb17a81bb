"""WebSocket client send cost: ``websockets`` against ``picows``, side by side.

N client connections each send one ``both_tracks`` tick — two ``media`` frames built by
:class:`~callstream.streaming.protocol.FrameBuilder` — every 20 ms to a sink on loopback
(its own process: a minimal server that completes the upgrade and discards every byte, so
it costs the same whatever the client). The figure is this process's CPU (user + system)
per connection per tick. Ways of sending:

* ``websockets send`` — a task per connection woken each tick, ``await ws.send()`` per
  frame (callstream before the hot-path work);
* ``websockets batch`` — the same task, :func:`~callstream.streaming.writer.send_frames`:
  both frames in one write (with callstream's framing, pooled masking keys);
* ``websockets inline`` — no task: the tick frames both with the sans-I/O protocol and
  writes once (callstream's ``write_now`` until issue 13's masking-key pool);
* ``write_now`` — no task: :func:`~callstream.streaming.writer.write_now`, the frames
  built by :mod:`callstream.streaming.framing` with keys from a pool of ``os.urandom``
  (callstream now);
* ``picows`` — no task (its API is synchronous): ``transport.send()`` per frame, two
  writes (``picows`` is Cython; skipped when it is not installed).

Usage::

    python bench/ws_send.py [--connections 100] [--seconds 5] [--rounds 3] [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callstream.streaming.protocol import FrameBuilder
from callstream.streaming.writer import send_frames, write_now

TICK = 0.020
SETTLE_S = 1.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAYLOAD = bytes(range(160))


class Sink(asyncio.Protocol):
    """Answers the upgrade request, then discards everything."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.open:
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        self.open = True
        key = next(line.split(b":", 1)[1].strip() for line in self.head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                             + b"\r\n\r\n")


async def sink() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def tick_frames(builders: list[FrameBuilder], now: float) -> list[list[bytes]]:
    return [[b.media("inbound", PAYLOAD, now), b.media("outbound", PAYLOAD, now)]
            for b in builders]


async def measure(tick: Callable[[float], None], seconds: float) -> float:
    """Run ``tick`` every 20 ms; CPU seconds spent over ``seconds`` (after settling)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    marks: dict[str, Any] = {}
    next_at = loop.time()
    settle_until = next_at + SETTLE_S
    stop_at = settle_until + seconds

    def run() -> None:
        nonlocal next_at
        now = loop.time()
        if "ru0" not in marks and now >= settle_until:
            marks["ru0"] = resource.getrusage(resource.RUSAGE_SELF)
            marks["ticks"] = 0
        if now >= stop_at:
            marks["ru1"] = resource.getrusage(resource.RUSAGE_SELF)
            done.set_result(None)
            return
        tick(now)
        if "ticks" in marks:
            marks["ticks"] += 1
        next_at += TICK
        loop.call_at(next_at, run)

    loop.call_at(next_at, run)
    await done
    ru0, ru1 = marks["ru0"], marks["ru1"]
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return float(cpu / marks["ticks"])


async def with_websockets(port: int, count: int, seconds: float, mode: str) -> float:
    from websockets.asyncio.client import ClientConnection, connect

    conns: list[ClientConnection] = [
        await connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
        for _ in range(count)]
    builders = [FrameBuilder(f"stream-{i}") for i in range(count)]
    if mode == "inline":
        def tick(now: float) -> None:
            for ws, frames in zip(conns, tick_frames(builders, now), strict=True):
                for frame in frames:
                    ws.protocol.send_text(frame)
                ws.transport.writelines(ws.protocol.data_to_send())
        per_tick = await measure(tick, seconds)
    elif mode == "write_now":
        def tick(now: float) -> None:
            for ws, frames in zip(conns, tick_frames(builders, now), strict=True):
                write_now(ws, frames)
        per_tick = await measure(tick, seconds)
    else:
        pending: list[list[bytes]] = [[] for _ in conns]
        events = [asyncio.Event() for _ in conns]

        async def sender(i: int) -> None:
            ws, event = conns[i], events[i]
            while True:
                await event.wait()
                event.clear()
                frames, pending[i] = pending[i], []
                if mode == "batch":
                    await send_frames(ws, frames)
                else:
                    for frame in frames:
                        await ws.send(frame.decode())

        tasks = [asyncio.create_task(sender(i)) for i in range(count)]

        def tick(now: float) -> None:
            for i, frames in enumerate(tick_frames(builders, now)):
                pending[i] += frames
                events[i].set()
        per_tick = await measure(tick, seconds)
        for task in tasks:
            task.cancel()
    for ws in conns:
        ws.transport.abort()
    return per_tick / count


async def with_picows(port: int, count: int, seconds: float) -> float:
    from picows import WSListener, WSMsgType, WSTransport, ws_connect

    transports: list[WSTransport] = []
    for _ in range(count):
        transport, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/")
        transports.append(transport)
    builders = [FrameBuilder(f"stream-{i}") for i in range(count)]

    def tick(now: float) -> None:
        for transport, frames in zip(transports, tick_frames(builders, now), strict=True):
            for frame in frames:
                transport.send(WSMsgType.TEXT, frame)
    per_tick = await measure(tick, seconds)
    for transport in transports:
        transport.disconnect()
    return per_tick / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.sink:
        uvloop.run(sink())
        return
    try:
        import picows  # noqa: F401
        has_picows = True
    except ImportError:
        has_picows = False
    proc = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        modes = ["websockets send", "websockets batch", "websockets inline", "write_now"]
        if has_picows:
            modes.append("picows")
        results: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                if mode == "picows":
                    coro = with_picows(port, args.connections, args.seconds)
                else:
                    coro = with_websockets(port, args.connections, args.seconds,
                                           mode.split()[-1])
                results[mode].append(uvloop.run(coro) * 1e6)
                time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    print(f"{args.connections} connections, 2 media frames each per 20 ms, "
          f"{args.rounds} rounds of {args.seconds:.0f} s; client CPU per connection per tick")
    for mode, values in results.items():
        print(f"  {mode:<18} median {statistics.median(values):6.1f} µs   runs "
              + " ".join(f"{v:.1f}" for v in values))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
            "args": vars(args), "runs_us": results,
            "median_us": {m: statistics.median(v) for m, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
