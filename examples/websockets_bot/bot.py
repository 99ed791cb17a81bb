"""A voice bot on a Telnyx media stream, with nothing but `websockets` and numpy.

callstream (or Telnyx) dials this server when an application starts a bidirectional
stream to it (`stream_url=ws://127.0.0.1:8765`, `stream_bidirectional_mode=rtp`,
`stream_codec=PCMU`, `stream_bidirectional_codec=PCMU`). For each call the bot

1. reads `connected` and `start` (stream id, call id, the media format);
2. plays a greeting (a WAV file, sent as PCMU `media` messages) followed by a `mark`;
3. once callstream echoes that mark (the greeting has been heard), repeats everything
   the caller says back to them, `--echo-delay` seconds later;
4. sends `clear` when the caller presses `#` (drops whatever is still queued to play);
5. ends when callstream sends `stop` and closes the socket.

Run it:

    python examples/websockets_bot/bot.py              # ws://127.0.0.1:8765
    python examples/websockets_bot/bot.py --port 0 --greeting my.wav --echo-delay 0.5

It prints one line per event it sees. See README.md in this folder.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RATE = 8000  # PCMU on a Telnyx stream is always 8 kHz
FRAME_BYTES = RATE // 50  # one 20 ms PCMU frame
#: The greeting goes out in messages of this many seconds (callstream takes up to 30 s).
CHUNK_SECONDS = 1.0
#: The longest greeting the bot will send (callstream queues at most 120 s).
MAX_GREETING_SECONDS = 60.0
PCMU_SILENCE = b"\xff"
GREETING_MARK = "greeting"

#: The demo's bundled greeting, from the installed package or this checkout, when present.
DEFAULT_GREETING = (Path(__file__).resolve().parents[2]
                    / "callstream" / "demo" / "audio" / "greeting.wav")


def default_greeting() -> Path | None:
    """callstream's bundled greeting (`callstream.demo.audio`), if there is one."""
    try:
        return Path(importlib.import_module("callstream.demo.audio").GREETING_WAV)
    except (ImportError, AttributeError):
        return DEFAULT_GREETING if DEFAULT_GREETING.exists() else None


# -- audio: WAV in, G.711 mu-law out ------------------------------------------------


def read_wav(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    """16-bit PCM WAV at any rate and channel count -> 8 kHz mono int16."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = w.getframerate(), w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != RATE:  # plain linear interpolation: enough for a greeting
        count = int(len(samples) * RATE / rate)
        samples = np.interp(np.arange(count) * rate / RATE, np.arange(len(samples)), samples)
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def tone(seconds: float = 1.0, hz: float = 440.0) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A soft beep: the greeting when no WAV file is available."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def ulaw_encode(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    """G.711 mu-law, bit for bit as CPython's audioop encodes it (on 14-bit samples)."""
    x = pcm.astype(np.int32) >> 2
    sign = np.where(x < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(x), 8159) + 0x21  # clip, add the bias
    segment = np.frexp(magnitude)[1] - 6  # highest set bit: 6..14 -> segment 0..8
    mantissa = np.where(segment > 7, 0x0F, (magnitude >> (segment + 1)) & 0x0F)
    code = sign | (np.minimum(segment, 7) << 4) | mantissa
    encoded: bytes = (~code & 0xFF).astype(np.uint8).tobytes()
    return encoded


def load_greeting(path: Path | None) -> bytes:
    """The greeting as PCMU bytes, a whole number of 20 ms frames."""
    if path is None:
        default = default_greeting()
        pcm = read_wav(default) if default else tone()
    else:
        pcm = read_wav(path)
    pcm = pcm[: int(MAX_GREETING_SECONDS * RATE)]
    pcm = pcm[: len(pcm) - len(pcm) % FRAME_BYTES]
    return ulaw_encode(pcm)


# -- the Telnyx media-stream protocol -------------------------------------------------


def media(payload: bytes) -> str:
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})


def say(line: str) -> None:
    print(f"bot: {line}", flush=True)


class Bot:
    """One call: greet, then echo."""

    def __init__(self, ws: ServerConnection, greeting: bytes, echo_delay: float) -> None:
        self.ws = ws
        self.greeting = greeting
        self.echo_delay = echo_delay
        self.echoing = False
        self.echoed_frames = 0
        self.call = "?"

    async def run(self) -> None:
        async for raw in self.ws:
            if not isinstance(raw, str):
                say(f"ignoring a binary frame ({len(raw)} bytes): streams send text frames")
                continue
            try:
                message = json.loads(raw)
                await self.handle(message["event"], message)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # binascii.Error (bad base64) is a ValueError too. The call goes on.
                say(f"ignoring a malformed message ({exc!r}): {raw[:80]!r}")

    async def handle(self, event: str, message: dict[str, Any]) -> None:
        if event == "connected":
            say("connected")
        elif event == "start":
            start = message["start"]
            fmt = start["media_format"]
            if self.call != "?":
                say(f"ignoring a second start on call {self.call}")
                return
            self.call = str(start["call_control_id"])
            say(f"start: call {self.call}, stream {message.get('stream_id')}, "
                f"{fmt['encoding']}/{fmt.get('sample_rate')}")
            if fmt["encoding"] != "PCMU":
                say("this bot speaks PCMU only: start the stream with stream_codec=PCMU and "
                    "stream_bidirectional_codec=PCMU; echoing without a greeting")
                self.echoing = True
                return
            await self.greet()
        elif event == "media":
            payload = base64.b64decode(message["media"]["payload"], validate=True)
            if self.echoing and payload and message["media"].get("track", "inbound") == "inbound":
                await self.ws.send(media(payload))
                self.echoed_frames += 1
        elif event == "mark":
            name = message.get("mark", {}).get("name")
            say(f"mark {name!r} played")
            if name == GREETING_MARK and not self.echoing:
                self.echoing = True
                # Prime the queue with silence: from now on each frame the caller says
                # waits that long behind it, so they hear themselves echo_delay later.
                frames = int(self.echo_delay * 50)
                await self.ws.send(media(PCMU_SILENCE * FRAME_BYTES * max(frames, 1)))
                say(f"echoing the caller {self.echo_delay:g} s later")
        elif event == "dtmf":
            digit = message.get("dtmf", {}).get("digit")
            say(f"dtmf {digit}")
            if digit == "#":
                await self.ws.send(json.dumps({"event": "clear"}))
                say("sent clear: queued audio dropped")
        elif event == "error":
            say(f"error from callstream: {message.get('payload')}")
        elif event == "stop":
            say(f"stop: call {self.call} ended ({self.echoed_frames} frames echoed)")

    async def greet(self) -> None:
        step = int(CHUNK_SECONDS * RATE)
        for at in range(0, len(self.greeting), step):
            await self.ws.send(media(self.greeting[at:at + step]))
        await self.ws.send(json.dumps({"event": "mark", "mark": {"name": GREETING_MARK}}))
        say(f"greeting sent ({len(self.greeting) / RATE:.1f} s)")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--greeting", type=Path, default=None,
                        help="16-bit WAV to greet with (default: the demo greeting, or a beep)")
    parser.add_argument("--echo-delay", type=float, default=1.0, help="seconds (default 1)")
    args = parser.parse_args(argv)
    greeting = load_greeting(args.greeting)

    async def handler(ws: ServerConnection) -> None:
        bot = Bot(ws, greeting, args.echo_delay)
        try:
            await bot.run()
        except ConnectionClosed:
            say(f"call {bot.call}: the connection dropped")

    async with serve(handler, args.host, args.port) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        say(f"listening on ws://{host}:{port}")
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
