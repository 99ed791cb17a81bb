"""A Pipecat bot on a callstream media stream: greets the caller, then echoes them.

Pipecat's own Telnyx pieces do the protocol work, unchanged: `parse_telephony_websocket`
reads the `connected` and `start` messages, `TelnyxFrameSerializer` turns `media` messages
into audio frames and audio frames back into `media`, and `FastAPIWebsocketTransport`
carries them. The pipeline is

    transport.input() -> Echo -> transport.output()

No cloud service is involved (no STT, LLM or TTS keys): the greeting is a WAV file sent
as `OutputAudioRawFrame`s, and `Echo` turns what the caller says into output audio,
`--echo-delay` seconds later. Put a speech-to-text, an LLM and a text-to-speech service
in its place and this is a voice agent.

Run it in its own environment (Pipecat pins soxr 1.0.x; callstream needs 1.1):

    python3 -m venv .venv-pipecat
    .venv-pipecat/bin/pip install -r examples/pipecat_bot/requirements.txt
    .venv-pipecat/bin/python examples/pipecat_bot/bot.py    # ws://127.0.0.1:8766/ws

and start a stream to it with `stream_url=ws://127.0.0.1:8766/ws`, `stream_track=inbound_track`,
`stream_codec=PCMU`, `stream_bidirectional_mode=rtp`, `stream_bidirectional_codec=PCMU`
(examples/python_sdk_app does: `--bot ws://127.0.0.1:8766/ws`). See README.md here.

With `--api-url` and `--api-key` the bot also ends the call the Pipecat way: when its
stream's `stop` arrives it ends its pipeline (`EndFrame`), and the serializer's automatic
hang-up posts `actions/hangup` — to callstream rather than to api.telnyx.com. callstream
keeps the socket open after `stop` for this (CALLSTREAM_STREAM_STOP_GRACE_SECS): Pipecat
writes nothing, hang-up included, to a closed socket. `--interrupt-after` shows barge-in:
an `InterruptionFrame`, which Pipecat sends as `clear`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import socket
import sys
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

RATE = 8000  # Telnyx streams (and so Pipecat's serializer) carry 8 kHz G.711
CHUNK_SECONDS = 0.2  # the greeting is queued as frames this long
HEARD_SECONDS = 5.0  # how much of the caller the bot keeps, to report what it heard
#: The demo's bundled greeting, from the installed package or this checkout, when present.
DEFAULT_GREETING = (Path(__file__).resolve().parents[2]
                    / "callstream" / "demo" / "audio" / "greeting.wav")


def default_greeting() -> Path | None:
    """callstream's bundled greeting (`callstream.demo.audio`), if there is one."""
    try:
        return Path(importlib.import_module("callstream.demo.audio").GREETING_WAV)
    except (ImportError, AttributeError):
        return DEFAULT_GREETING if DEFAULT_GREETING.exists() else None


def say(line: str) -> None:
    print(f"pipecat bot: {line}", flush=True)


def read_wav(path: Path | None) -> bytes:
    """16-bit PCM WAV -> 8 kHz mono s16le; a one-second beep when there is no file."""
    path = path or default_greeting()
    if path is None:
        t = np.arange(RATE) / RATE
        return (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        x = np.interp(np.arange(int(len(x) * RATE / rate)) * rate / RATE, np.arange(len(x)), x)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def loudest_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency in ``pcm`` (what the bot says it heard)."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


class CallstreamSerializer(TelnyxFrameSerializer):
    """Pipecat's Telnyx serializer, pointed at callstream for its automatic hang-up.

    Pipecat posts the hang-up to a fixed https://api.telnyx.com; this sends the same
    request to ``api_url``. When to hang up (on ``EndFrame``/``CancelFrame``) is still
    Pipecat's. ``on_stop`` runs when the stream's ``stop`` frame arrives (Pipecat's
    serializer ignores it).
    """

    def __init__(self, *args: Any, api_url: str, on_stop: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api_url = api_url.rstrip("/")
        self._on_stop = on_stop

    async def deserialize(self, data: str | bytes) -> Frame | None:
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(data).get("event") == "stop":
                await self._on_stop()
        return await super().deserialize(data)

    async def _hang_up_call(self) -> None:
        url = f"{self._api_url}/v2/calls/{self._call_control_id}/actions/hangup"
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            async with aiohttp.ClientSession() as session, \
                    session.post(url, headers=headers, json={}) as response:
                say(f"call {self._call_control_id}: hung up through {self._api_url}: "
                    f"HTTP {response.status}")
        except aiohttp.ClientError as exc:
            say(f"call {self._call_control_id}: hang-up failed: {exc}")


class Echo(FrameProcessor):
    """Plays what the caller says back to them, once the greeting is over; keeps the
    first seconds of the caller to report what it heard."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.listen_at: float | None = None  # loop time the greeting ends
        self.echoing = False
        self.heard = bytearray()
        self.heard_rate = RATE
        self.reported = False

    def report(self) -> str:
        """What it heard; said once per call (at ``stop`` or when the socket goes)."""
        if self.reported:
            return ""
        self.reported = True
        if not self.heard:
            return "heard nothing from the caller"
        seconds = len(self.heard) / 2 / self.heard_rate
        return (f"heard the caller: {seconds:.1f} s decoded, loudest at "
                f"{loudest_hz(bytes(self.heard), self.heard_rate):.0f} Hz")

    def greeting_queued(self, seconds: float) -> None:
        self.listen_at = asyncio.get_running_loop().time() + seconds

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)
            return
        if len(self.heard) < 2 * HEARD_SECONDS * frame.sample_rate:
            self.heard_rate = frame.sample_rate
            self.heard += frame.audio
        if self.listen_at is None or asyncio.get_running_loop().time() < self.listen_at:
            return  # not while the greeting plays
        if not self.echoing:
            self.echoing = True
            say(f"echoing the caller {self.delay:g} s later")
            # Silence first: every later frame queues behind it, so it plays that late.
            silence = bytes(2 * int(self.delay * frame.sample_rate) * frame.num_channels)
            await self.push_frame(OutputAudioRawFrame(silence, frame.sample_rate,
                                                      frame.num_channels))
        await self.push_frame(OutputAudioRawFrame(frame.audio, frame.sample_rate,
                                                  frame.num_channels))


def create_app(greeting: bytes, echo_delay: float, *, api_url: str | None = None,
               api_key: str | None = None, interrupt_after: float | None = None) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        kind, call = await parse_telephony_websocket(websocket)
        if kind != "telnyx":
            say(f"not a Telnyx media stream ({kind}); closing")
            await websocket.close()
            return
        say(f"call {call['call_id']}: stream {call['stream_id']}, {call['outbound_encoding']}")
        worker: PipelineWorker | None = None

        async def stream_stopped() -> None:
            if report := echo.report():
                say(f"call {call['call_id']}: {report}")
            say(f"call {call['call_id']}: stop received; ending the pipeline")
            if worker is not None:
                await worker.queue_frame(EndFrame())

        codecs = {
            "stream_id": call["stream_id"],
            "call_control_id": call["call_id"],
            "outbound_encoding": call["outbound_encoding"],  # what callstream sends
            "inbound_encoding": "PCMU",  # what we send back: stream_bidirectional_codec
        }
        serializer: TelnyxFrameSerializer
        if api_url and api_key:
            serializer = CallstreamSerializer(
                **codecs, api_key=api_key, api_url=api_url, on_stop=stream_stopped,
                params=TelnyxFrameSerializer.InputParams(auto_hang_up=True))
        else:
            # Pipecat's own hang-up posts to api.telnyx.com (a fixed URL): without
            # --api-url, hang up through callstream from your application instead.
            serializer = TelnyxFrameSerializer(
                **codecs, params=TelnyxFrameSerializer.InputParams(auto_hang_up=False))
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False,
            serializer=serializer))
        echo = Echo(echo_delay)
        worker = PipelineWorker(
            Pipeline([transport.input(), echo, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            idle_timeout_secs=None, enable_rtvi=False)

        @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]
        async def greet(_transport: Any, _client: Any) -> None:
            step = 2 * int(CHUNK_SECONDS * RATE)
            assert worker is not None
            await worker.queue_frames([OutputAudioRawFrame(greeting[at:at + step], RATE, 1)
                                       for at in range(0, len(greeting), step)])
            echo.greeting_queued(len(greeting) / 2 / RATE)
            say(f"greeting queued ({len(greeting) / 2 / RATE:.1f} s)")
            if interrupt_after is not None:
                await asyncio.sleep(interrupt_after)
                # Barge-in: Pipecat drops its queued audio and sends callstream `clear`.
                await worker.queue_frame(InterruptionFrame())
                say(f"interrupted the greeting after {interrupt_after:g} s")

        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
        async def gone(_transport: Any, _client: Any) -> None:
            if report := echo.report():
                say(f"call {call['call_id']}: {report}")
            say(f"call {call['call_id']}: stream ended")
            assert worker is not None
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pipecat bot for callstream media streams")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument("--greeting", type=Path, default=None,
                        help="16-bit WAV to greet with (default: the demo greeting, or a beep)")
    parser.add_argument("--echo-delay", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--log-level", default="WARNING", help="Pipecat's own log level")
    parser.add_argument("--api-url", help="callstream's API (http://host:port): on the "
                        "stream's stop the bot ends its pipeline and Pipecat hangs up there")
    parser.add_argument("--api-key", help="an API key for --api-url")
    parser.add_argument("--interrupt-after", type=float, default=None, metavar="SECS",
                        help="interrupt the greeting this long after queueing it (clear)")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())

    app = create_app(read_wav(args.greeting), args.echo_delay, api_url=args.api_url,
                     api_key=args.api_key, interrupt_after=args.interrupt_after)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    say(f"listening on ws://{host}:{port}/ws")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
