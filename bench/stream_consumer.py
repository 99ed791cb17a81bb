"""The lean media-stream consumer of ``bench/streaming.py``, in a process of its own.

Run by the bench (not by hand)::

    python bench/stream_consumer.py --out frames.npz [--echo]

It listens on a free loopback port, prints ``PORT <n>`` once ready, and takes every
stream callstream opens. Per inbound ``media`` frame it records which caller frame it
carries (the caller writes an id into each payload, see :func:`frame_id`) and when it
arrived (``time.monotonic``, one clock for every process of the machine). With
``--echo`` it sends each inbound payload straight back as a ``media`` message, as a
voice agent's audio would go back. On SIGTERM it writes what it saw to ``--out`` (numpy
``savez``) and exits.

Kept lean on purpose: one ``orjson.loads`` per frame, the payload's id read from its
first base64 characters only, the echo built as a string without re-encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import sys
import time
from array import array
from collections import Counter

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

#: First two payload bytes of every bench frame; the id follows (12 bytes in all).
MAGIC = b"\x2a\x55"
#: Bytes of a payload that carry its id: MAGIC, 4 nibbles of call, 6 nibbles of index.
ID_BYTES = 12
#: Base64 characters that cover ID_BYTES (a whole number of 4-character groups).
ID_CHARS = 4 * -(-ID_BYTES // 3)
#: Filler after the id: PCMU silence. Nibbles are sent as 0x10..0x1F; 0x7F is avoided
#: because it is the one PCMU byte a decode/encode round trip changes (to 0xFF).
FILL = 0xFF


def frame_id(call: int, index: int, size: int = 160) -> bytes:
    """The payload of frame ``index`` of bench call ``call`` (PCMU, ``size`` bytes)."""
    nibbles = [(call >> s) & 0xF for s in (12, 8, 4, 0)]
    nibbles += [(index >> s) & 0xF for s in (20, 16, 12, 8, 4, 0)]
    head = MAGIC + bytes(0x10 | n for n in nibbles)
    return head + bytes([FILL]) * (size - len(head))


def parse_id(payload: bytes) -> tuple[int, int] | None:
    """(call, index) from a payload made by :func:`frame_id`; None for anything else."""
    if len(payload) < ID_BYTES or payload[:2] != MAGIC:
        return None
    value = 0
    for byte in payload[2:ID_BYTES]:
        if byte & 0xF0 != 0x10:
            return None
        value = value << 4 | (byte & 0xF)
    return value >> 24, value & 0xFFFFFF


class Tally:
    """What the consumer saw, in flat arrays (cheap to append, cheap to save)."""

    def __init__(self) -> None:
        self.call = array("i")  # inbound media frames: bench call, frame index, arrival
        self.index = array("i")
        self.arrival = array("d")
        self.unmarked = 0  # inbound frames without a bench id
        self.echoed = 0
        self.outbound = 0  # outbound-track frames (what the caller is played) with an id
        self.events: Counter[str] = Counter()
        self.connections = 0

    def save(self, path: str) -> None:
        np.savez(
            path,
            call=np.frombuffer(self.call, np.int32), index=np.frombuffer(self.index, np.int32),
            arrival=np.frombuffer(self.arrival, np.float64),
            echoed=np.int64(self.echoed), outbound=np.int64(self.outbound),
            unmarked=np.int64(self.unmarked), connections=np.int64(self.connections),
            events=np.array(orjson.dumps(dict(self.events)).decode()),
        )


async def consume(tally: Tally, echo: bool, ws: ServerConnection) -> None:
    tally.connections += 1
    clock = time.monotonic
    loads = orjson.loads
    b64decode = base64.b64decode
    try:
        async for message in ws:
            now = clock()
            frame = loads(message)
            event = frame.get("event")
            if event != "media":
                tally.events[str(event)] += 1
                continue
            media = frame["media"]
            payload = media["payload"]
            ident = parse_id(b64decode(payload[:ID_CHARS]))
            if media.get("track") == "outbound":
                tally.outbound += ident is not None
                continue
            if ident is None:
                tally.unmarked += 1
                continue
            tally.call.append(ident[0])
            tally.index.append(ident[1])
            tally.arrival.append(now)
            if echo:
                await ws.send('{"event":"media","media":{"payload":"' + payload + '"}}')
                tally.echoed += 1
    except ConnectionClosed:
        pass


async def run(out: str, echo: bool) -> None:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def handler(ws: ServerConnection) -> None:
        await consume(tally, echo, ws)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None,
                     ping_interval=None, backlog=1024) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await stop.wait()
    tally.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="write what was seen here (.npz)")
    parser.add_argument("--echo", action="store_true",
                        help="send every inbound payload back as a media message")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args.out, args.echo))
    else:
        uvloop.run(run(args.out, args.echo))
    sys.exit(0)


if __name__ == "__main__":
    main()
