"""``callstream demo``: the server, an example application, a voice bot and a caller.

Everything runs in this one process, on one event loop: the server (:class:`Server`,
exactly what ``callstream serve`` runs), the example application's webhook receiver
(:mod:`callstream.demo.app`, on its own loopback port, talking to the server over HTTP
like any application), the bot's WebSocket server (:mod:`callstream.demo.bot`), two UDP
sockets that count the fork's packets, and, for ``--once``, the built-in caller
(:func:`callstream.telephony.caller.place_call`). One process means one Ctrl-C stops it all in
order, and nothing but ``callstream`` has to be installed; every part still talks to
the server only through its public interfaces (SIP, REST, webhooks, WebSocket, RTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from callstream.api.auth import create_key
from callstream.config import Settings, load_settings
from callstream.demo import audio
from callstream.demo.app import (
    WEBHOOK_PATH,
    ApiClient,
    WebhookVerifier,
    commands_for,
    webhook_asgi,
)
from callstream.demo.bot import EchoBot, serve_bot
from callstream.demo.report import (
    MAX_WER,
    Check,
    describe,
    finite,
    verdict,
    voiced_seconds,
    word_error_rate,
)
from callstream.logs import setup_logging
from callstream.media.codecs.g711 import ulaw_encode
from callstream.server import Server
from callstream.store.exceptions import StoreInUse
from callstream.telephony.caller import (
    CallerError,
    CallOptions,
    CallSummary,
    load_wav,
    place_call,
    write_wav,
)
from callstream.transcription.engine import EngineUnavailable
from callstream.webhooks.exceptions import SigningKeyError
from callstream.webhooks.signing import load_signer

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8080
DEFAULT_SIP_PORT = 5060
LEAD_SILENCE_S = 0.5  # --once: the caller waits this long before it speaks
CALL_LIMIT_S = 40.0  # --once: the scripted call is hung up after this at the latest
AFTER_REPLY_S = 0.5  # --once: hang up this long after the bot's reply has played
SETTLE_TIMEOUT_S = 30.0  # --once: wait this long after the call for hangup, finals, webhooks
SETTLE_POLL_S = 0.25
SETTLED_POLLS = 3  # --once: nothing undelivered this many polls in a row
COUNTER_INTERVAL_S = 2.0  # the live counters line, while a call is up
MAX_KEPT_CALLS = 100  # calls (and their bots) the view remembers; older ended ones go
APP_MAX_CONNECTIONS = 64  # the example app's HTTP connections at once (uvicorn answers 503)
APP_KEEPALIVE_S = 35  # > the 30 s the server keeps an idle webhook connection for reuse


@dataclass(frozen=True, slots=True)
class DemoOptions:
    once: bool = False
    json_path: Path | None = None
    data_dir: Path | None = None
    http: str | None = None
    sip: str | None = None
    log_level: str = "warning"


def _free(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def pick_port(default: int, kinds: tuple[int, ...], host: str = "127.0.0.1") -> int:
    """``default`` when it is free for every socket kind, else a port the OS says is free."""
    if _free(host, default, kinds):
        return default
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if _free(host, port, kinds):
            return port
    raise OSError(f"no free port on {host} for the demo")


def check_port_free(flag: str, address: str, kinds: tuple[int, ...]) -> None:
    """Raise OSError, saying which flag to change, when ``address`` (HOST:PORT) is taken."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        return  # the settings say what is wrong with it
    if not _free(host.strip("[]") or "127.0.0.1", number, kinds):
        raise OSError(f"{address} is in use — is another callstream running? use {flag} "
                      "HOST:PORT, or leave it out to pick a free port")


class ForkCounter(asyncio.DatagramProtocol):
    """Counts the RTP packets a fork sends to one UDP port."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.packets += 1
        self.bytes += len(data)


@dataclass(slots=True)
class CallState:
    """What the application has seen of one call."""

    started: float
    events: list[str] = field(default_factory=list)
    finals: dict[str, list[str]] = field(default_factory=lambda: {"inbound": [], "outbound": []})
    interims: int = 0
    first_interim: float | None = None
    first_final: float | None = None
    answered: float | None = None
    stream_started: float | None = None
    hangup: float | None = None
    stream_failed: str | None = None
    command_errors: list[str] = field(default_factory=list)


class Demo:
    """The running demo: its parts, counters, and the terminal view."""

    def __init__(self, options: DemoOptions, out: Callable[[str], None]) -> None:
        self.options = options
        self.out = out
        self.t0 = time.monotonic()
        self.calls: dict[str, CallState] = {}
        self.bots: deque[EchoBot] = deque(maxlen=MAX_KEPT_CALLS)
        self.verified = 0
        self.refused = 0
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.rx = ForkCounter()
        self.tx = ForkCounter()
        self.reply_played = asyncio.Event()
        self.server: Server | None = None
        self.api: ApiClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Any]] = []
        self.temp_dir: Path | None = None
        self.settings: Settings | None = None
        self.timings: dict[str, float | None] = {}

    # -- the view --------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.out(f"+{time.monotonic() - self.t0:6.2f}s  {line}")

    def _counters(self) -> str:
        frames = sum(b.stats.frames_in for b in self.bots)
        replies = sum(b.stats.replies for b in self.bots)
        return (f"counters: bot heard {frames} frames, replied {replies}x | fork rx "
                f"{self.rx.packets} tx {self.tx.packets} packets | webhooks verified "
                f"{self.verified}, refused {self.refused}")

    def on_bot(self, kind: str, bot: EchoBot, detail: str) -> None:
        if kind == "start":
            self.say(f"bot: stream connected, greeting ({audio.GREETING_TEXT!r})")
        elif kind == "play":
            if detail != "greeting":
                self.say(f"bot: caller paused; playing back what they said ({detail})")
        elif kind == "mark":
            self.say(f"bot: mark {detail!r} echoed (played)")
            if detail.startswith("reply-"):
                self.reply_played.set()
        elif kind == "clear":
            self.say(f"bot: clear ({detail})")
        elif kind == "stop":
            self.say("bot: stream stopped")

    def on_webhook(self, event: dict[str, Any] | None, refused: str | None) -> None:
        if event is None:
            self.refused += 1
            self.say(f"webhook REFUSED: {refused}")
            return
        self.verified += 1
        self.events.put_nowait(event)

    # -- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        if opts.data_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="callstream-demo-"))
        data_dir = opts.data_dir or self.temp_dir
        assert data_dir is not None
        tcp, both = (socket.SOCK_STREAM,), (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        http = opts.http or f"127.0.0.1:{pick_port(DEFAULT_HTTP_PORT, tcp)}"
        sip = opts.sip or f"127.0.0.1:{pick_port(DEFAULT_SIP_PORT, both)}"
        for flag, given, kinds in (("--http", opts.http, tcp), ("--sip", opts.sip, both)):
            if given is not None:
                check_port_free(flag, given, kinds)

        # The bot, the fork's counters and the application come up before the server, so
        # its first webhook and stream already find them.
        greeting_pcm, _ = load_wav(audio.GREETING_WAV, 8000)
        bot_server = await serve_bot(ulaw_encode(greeting_pcm), self.on_bot, self.bots)
        self._closers.append(bot_server.close)
        bot_port = bot_server.sockets[0].getsockname()[1]
        rx_transport, _ = await loop.create_datagram_endpoint(
            lambda: self.rx, local_addr=("127.0.0.1", 0))
        tx_transport, _ = await loop.create_datagram_endpoint(
            lambda: self.tx, local_addr=("127.0.0.1", 0))
        self._closers += [rx_transport.close, tx_transport.close]
        self.fork_rx = f"udp:127.0.0.1:{rx_transport.get_extra_info('sockname')[1]}"
        self.fork_tx = f"udp:127.0.0.1:{tx_transport.get_extra_info('sockname')[1]}"
        self.stream_url = f"ws://127.0.0.1:{bot_port}/bot"

        self.settings = settings = load_settings(
            None, data_dir=data_dir, http=http, sip=sip, log_level=opts.log_level,
            webhook_url="http://127.0.0.1:1/unset")  # replaced below, once the app's port is known
        verifier = WebhookVerifier(load_signer(settings).public_key_b64)
        app_config = uvicorn.Config(
            webhook_asgi(verifier, self.on_webhook, time.time), host="127.0.0.1", port=0,
            log_config=None, lifespan="off", access_log=False, loop="none",
            limit_concurrency=APP_MAX_CONNECTIONS, timeout_keep_alive=APP_KEEPALIVE_S)
        app_config.load()
        app_server = uvicorn.Server(app_config)
        app_server.lifespan = app_config.lifespan_class(app_config)
        await app_server.startup()
        app_port = app_server.servers[0].sockets[0].getsockname()[1]
        self._app_server = app_server
        self.webhook_url = f"http://127.0.0.1:{app_port}{WEBHOOK_PATH}"
        self.settings = settings = settings.model_copy(update={"webhook_url": self.webhook_url})

        started = time.monotonic()
        self.server = Server(settings)
        try:
            await self.server.start()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; the check above races
            self.server.http = None
            raise OSError(f"cannot listen for HTTP on {settings.http}") from exc
        except BaseException:
            self.server.http = None  # it did not start: nothing to shut down there
            raise
        assert self.server.http is not None
        self._tasks.append(asyncio.create_task(self.server.http.main_loop()))
        key, _ = await create_key(self.server.store, "callstream demo")
        self.api_key = key
        self.api = ApiClient(f"http://{settings.http}", key)
        await self._warm_transcription()
        self.timings["server_start_s"] = round(time.monotonic() - started, 3)
        self._tasks.append(asyncio.create_task(self._handle_events()))
        self._tasks.append(asyncio.create_task(self._tick()))

    async def _warm_transcription(self) -> None:
        """Load the Whisper model now, so the first call's transcript is not late."""
        assert self.server is not None and self.settings
        if self.server.transcriptions is not None:
            try:
                await self.server.transcriptions.engine(self.settings.transcription_model)
            except EngineUnavailable as exc:  # transcription_start will say so too
                self.out(f"warning: transcription is unavailable: {exc}")

    def banner(self) -> None:
        assert self.settings is not None
        s = self.settings
        lines = [
            "callstream demo is running (all on loopback):",
            f"  server      http://{s.http}/v2  sip {s.sip}  data {s.data_dir}",
            f"  API key     {self.api_key}",
            f"  console     http://{s.http}/console",
            f"  app         {self.webhook_url}  (verifies each webhook's Ed25519 signature)",
            f"  bot         {self.stream_url}  (greets, then repeats what you say)",
            f"  fork        rx {self.fork_rx}  tx {self.fork_tx}",
            f"  call it     sip:demo@{s.sip}  (any softphone on this machine)",
            f"              or: callstream call sip:demo@{s.sip} --play YOUR.wav --record out.wav",
        ]
        if not self.options.once:
            lines.append("  Ctrl-C stops everything.")
        for line in lines:
            self.out(line)

    async def close(self) -> None:
        if self.server is not None:
            try:
                await self.server.stop()
            except Exception:  # a server that failed half-way through start()
                log.exception("stopping the demo's server failed")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if getattr(self, "_app_server", None) is not None:
            self._app_server.should_exit = True
            await self._app_server.shutdown()
        for close in reversed(self._closers):
            close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # -- the application's work --------------------------------------------------------

    async def _handle_events(self) -> None:
        assert self.api is not None
        while True:
            event = await self.events.get()
            self._record(event)
            self.say(describe(event))
            for command in commands_for(event, stream_url=self.stream_url,
                                        fork_rx=self.fork_rx, fork_tx=self.fork_tx):
                try:
                    status, body = await self.api.command(command)
                except OSError as exc:
                    status, body = 0, str(exc)
                state = self.calls.get(command.call_control_id)
                if status == 200:
                    self.say(f"app: {command.action} → 200")
                else:
                    self.say(f"app: {command.action} FAILED → {status} {body}")
                    if state is not None:
                        state.command_errors.append(f"{command.action}: {status} {body}")

    def _record(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        ccid = str(payload.get("call_control_id", ""))
        now = time.monotonic()
        state = self.calls.get(ccid)
        if state is None:
            if len(self.calls) >= MAX_KEPT_CALLS:  # forget the oldest ended call
                ended = next((k for k, v in self.calls.items() if v.hangup is not None), None)
                self.calls.pop(ended if ended is not None else next(iter(self.calls)))
            state = self.calls[ccid] = CallState(started=now)
        kind = str(event.get("event_type"))
        state.events.append(kind)
        if kind == "call.answered":
            state.answered = now
        elif kind == "streaming.started":
            state.stream_started = now
        elif kind == "streaming.failed":
            state.stream_failed = str(payload.get("failure_reason"))
        elif kind == "call.hangup":
            state.hangup = now
        elif kind == "call.transcription":
            data = payload.get("transcription_data") or {}
            if data.get("is_final"):
                track = str(data.get("transcription_track", "inbound"))
                state.finals.setdefault(track, []).append(str(data.get("transcript", "")))
                state.first_final = state.first_final or now
            else:
                state.interims += 1
                state.first_interim = state.first_interim or now

    async def _tick(self) -> None:
        last = ""
        while True:
            await asyncio.sleep(COUNTER_INTERVAL_S)
            live = any(s.hangup is None for s in self.calls.values())
            line = self._counters()
            if live and line != last:
                self.say(line)
                last = line

    # -- --once ------------------------------------------------------------------------

    async def once(self) -> dict[str, Any]:
        """Place the scripted call, wait for everything to settle, and judge it."""
        assert self.settings is not None and self.api is not None
        work = Path(tempfile.mkdtemp(prefix="callstream-demo-call-"))
        try:
            speech, rate = load_wav(audio.CALLER_WAV, 8000)
            script = b"\0\0" * int(LEAD_SILENCE_S * rate) + speech
            write_wav(work / "caller.wav", script, rate)
            record = work / "heard.wav"
            options = CallOptions(
                target=f"sip:demo@{self.settings.sip}", play=work / "caller.wav",
                record=record, codecs=("PCMU",), linger=CALL_LIMIT_S,
                max_duration=CALL_LIMIT_S)
            hang_up = asyncio.Event()

            async def after_reply() -> None:
                await self.reply_played.wait()
                await asyncio.sleep(AFTER_REPLY_S)
                hang_up.set()

            waiter = asyncio.create_task(after_reply())
            self.say(f"caller: will say {audio.CALLER_TEXT!r} (bundled recording)")
            placed = time.monotonic()
            try:
                summary = await place_call(options, interrupted=hang_up,
                                           notify=lambda line: self.say(f"caller: {line}"))
            finally:
                waiter.cancel()
            self.timings["call_s"] = round(time.monotonic() - placed, 3)
            self.say(f"caller: {summary.status}, sent {summary.packets_sent} packets, "
                     f"received {summary.packets_received}, ended by {summary.ended_by}")
            heard, heard_rate = load_wav(record) if record.exists() else (b"", 8000)
            undelivered = await self._settle()
            delivered = await self._count_deliveries("delivered")
            return self._judge(summary, heard, heard_rate, placed, undelivered, delivered)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _count_deliveries(self, statuses: str) -> int:
        """How many webhooks the server's outbox has in these states (-1: unknown)."""
        assert self.api is not None
        status, body = await self.api.request(
            "GET", f"/v2/webhook_deliveries?filter[status]={statuses}&page[size]=1")
        return int(body["meta"]["total_results"]) if status == 200 else -1

    async def _settle(self) -> int:
        """Wait for call.hangup, the caller's final transcript and every delivery."""
        assert self.api is not None
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        undelivered = -1
        quiet = 0
        while time.monotonic() < deadline:
            states = list(self.calls.values())
            done = bool(states) and all(s.hangup is not None for s in states)
            if done:
                undelivered = await self._count_deliveries("pending,failed")
                if undelivered >= 0:
                    # Twice in a row: finals flushed at the hangup are stored just after it.
                    if undelivered == 0 and self.events.empty():
                        quiet += 1
                        if quiet >= SETTLED_POLLS:
                            break
                    else:
                        quiet = 0
            await asyncio.sleep(SETTLE_POLL_S)
        return undelivered

    def _judge(self, summary: CallSummary, heard: bytes, heard_rate: int, placed: float,
               undelivered: int, delivered: int) -> dict[str, Any]:
        state = next(iter(self.calls.values()), None) or CallState(started=placed)
        inbound = " ".join(state.finals.get("inbound", []))
        wer = word_error_rate(audio.CALLER_TEXT, inbound) if inbound else 1.0
        greeting_pcm, _ = load_wav(audio.GREETING_WAV, heard_rate)
        caller_pcm, _ = load_wav(audio.CALLER_WAV, heard_rate)
        greeting_voiced = voiced_seconds(greeting_pcm, heard_rate)
        caller_voiced = voiced_seconds(caller_pcm, heard_rate)
        heard_voiced = voiced_seconds(heard, heard_rate)
        bot = self.bots[0].stats if self.bots else None
        checks = [
            Check("answered", summary.status == "answered" and state.answered is not None,
                  f"the call was not answered ({summary.status} {summary.reason})".strip()),
            Check("commands", not state.command_errors,
                  "; ".join(state.command_errors)),
            Check("stream", state.stream_started is not None and bot is not None
                  and bot.frames_in > 0,
                  f"no stream to the bot ({state.stream_failed or 'no streaming.started'})"),
            Check("greeting_heard", heard_voiced >= 0.5 * greeting_voiced,
                  f"the caller heard {heard_voiced:.1f} s of audio, want ≥ "
                  f"{0.5 * greeting_voiced:.1f} s of the greeting"),
            Check("reply_heard", bot is not None and bot.replies > 0
                  and heard_voiced >= 0.8 * greeting_voiced + 0.5 * caller_voiced,
                  f"the bot's reply did not reach the caller ({heard_voiced:.1f} s heard)"),
            Check("fork", self.rx.packets > 0 and self.tx.packets > 0,
                  f"fork packets rx {self.rx.packets} tx {self.tx.packets}"),
            Check("transcript", wer <= MAX_WER,
                  f"caller's final transcript {inbound!r} is {wer:.2f} WER from "
                  f"{audio.CALLER_TEXT!r} (want ≤ {MAX_WER})"),
            Check("hangup", state.hangup is not None, "no call.hangup webhook"),
            Check("webhooks", self.refused == 0 and undelivered == 0
                  and 0 < delivered <= self.verified,
                  f"{self.refused} refused, {undelivered} not delivered, "
                  f"{delivered} delivered but {self.verified} verified"),
        ]
        reason = verdict(checks)

        def since(at: float | None) -> float | None:
            return None if at is None else round(at - placed, 3)

        self.timings.update({
            "answered_s": since(state.answered), "stream_started_s": since(state.stream_started),
            "first_interim_s": since(state.first_interim),
            "first_final_s": since(state.first_final), "hangup_s": since(state.hangup),
        })
        return {
            "ok": reason is None,
            "reason": reason,
            "checks": {c.name: c.ok for c in checks},
            "timings": self.timings,
            "transcript": {"expected": audio.CALLER_TEXT, "inbound": state.finals.get(
                "inbound", []), "outbound": state.finals.get("outbound", []),
                "interims": state.interims, "wer": round(wer, 3)},
            "audio": {"heard_voiced_s": finite(heard_voiced),
                      "greeting_voiced_s": finite(greeting_voiced),
                      "caller_voiced_s": finite(caller_voiced)},
            "counters": {
                "bot_frames_in": bot.frames_in if bot else 0,
                "bot_replies": bot.replies if bot else 0,
                "bot_marks_sent": bot.marks_sent if bot else 0,
                "bot_marks_echoed": bot.marks_echoed if bot else 0,
                "bot_clears": bot.clears if bot else 0,
                "fork_rx_packets": self.rx.packets, "fork_tx_packets": self.tx.packets,
                "webhooks_verified": self.verified, "webhooks_refused": self.refused,
                "webhooks_undelivered": undelivered, "webhooks_delivered": delivered,
            },
            "events": state.events,
            "call": json.loads(summary.to_json()),
        }


async def run_demo(options: DemoOptions, out: Callable[[str], None] = print) -> int:
    """Run the demo; with ``options.once`` one scripted call. Returns the exit code."""
    settings_level = options.log_level
    setup_logging("text", settings_level)
    demo = Demo(options, out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        try:
            await demo.start()
        except (OSError, StoreInUse, EngineUnavailable, SigningKeyError, CallerError) as exc:
            out(f"callstream demo: FAILED — could not start: {' '.join(str(exc).split())}")
            return 1
        demo.banner()
        if options.once:
            result = await demo.once()
            demo.say(demo._counters())
            for track in ("inbound", "outbound"):
                for text in result["transcript"][track]:
                    out(f"  transcript {track}: {text}")
            if options.json_path is not None:
                options.json_path.write_text(json.dumps(result, indent=2) + "\n")
            if result["ok"]:
                out(f"callstream demo: OK — every check passed ({', '.join(result['checks'])})")
            else:
                out(f"callstream demo: FAILED — {result['reason']}")
                code = 1
        else:
            await stop.wait()
            out("stopping…")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await demo.close()
    return code
