"""The demo's voice bot: greets, then repeats back what the caller said.

:class:`EchoBot` is the sans-I/O core. Feed it the stream's inbound PCMU payloads
(:meth:`EchoBot.inbound`) and the marks callstream echoes (:meth:`EchoBot.mark`); it
returns what to send back: :class:`Play` (PCMU audio followed by a named mark) or
:class:`Clear`. It cuts the caller's audio into utterances with a simple energy VAD
(a 20 ms frame louder than ``threshold_dbfs`` is speech; ``end_silence_s`` of quiet ends
an utterance) and plays each one back once the caller pauses. The greeting always plays
to the end; if the caller talks over a reply, the bot sends ``clear`` (barge-in) and
listens.

:func:`serve_bot` is the thin ``websockets`` shell: one :class:`EchoBot` per stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections import deque
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from callstream.media.codecs.g711 import ulaw_decode

log = logging.getLogger(__name__)

FRAME_BYTES = 160  # 20 ms of PCMU at 8 kHz
FRAMES_PER_SECOND = 50
THRESHOLD_DBFS = -40.0  # a frame louder than this is speech
END_SILENCE_S = 0.7  # this much quiet ends an utterance
MIN_SPEECH_S = 0.3  # shorter bursts (clicks, coughs) are not repeated
MAX_UTTERANCE_S = 10.0  # a longer utterance is cut here and played back
PRE_ROLL_S = 0.2  # audio kept from before the onset, so the first syllable is not lost
MAX_FRAME_BYTES = 16_000  # an inbound media payload larger than 2 s is ignored
MAX_MESSAGE_BYTES = 64_000  # a WebSocket message from callstream larger than this is refused
MAX_STREAMS = 32  # streams the bot serves at once; more are closed with 1013
GREETING_MARK = "greeting"


@dataclass(frozen=True, slots=True)
class Play:
    """Send ``audio`` (PCMU, 8 kHz) as one ``media`` frame, then a ``mark`` named ``mark``."""

    audio: bytes
    mark: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Send ``clear``: drop what is still queued to play."""

    reason: str


Action = Play | Clear


def level_dbfs(pcmu: bytes) -> float:
    """RMS level of a PCMU payload in dBFS (-inf for digital silence)."""
    if not pcmu:
        return -math.inf
    samples = np.frombuffer(ulaw_decode(pcmu), dtype="<i2").astype(np.float64)
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


@dataclass(slots=True)
class BotStats:
    """What one stream's bot did, for the terminal view and ``--once``'s checks."""

    frames_in: int = 0
    utterances: int = 0
    replies: int = 0
    replied_seconds: float = 0.0
    marks_sent: int = 0
    marks_echoed: int = 0
    clears: int = 0
    ignored: int = 0
    echoed: list[str] = field(default_factory=list)


class EchoBot:
    """Greets with ``greeting`` (PCMU), then plays each utterance of the caller back."""

    def __init__(
        self,
        greeting: bytes,
        *,
        threshold_dbfs: float = THRESHOLD_DBFS,
        end_silence_s: float = END_SILENCE_S,
        min_speech_s: float = MIN_SPEECH_S,
        max_utterance_s: float = MAX_UTTERANCE_S,
    ) -> None:
        self.greeting = greeting
        self.threshold_dbfs = threshold_dbfs
        self.end_silence_frames = max(1, round(end_silence_s * FRAMES_PER_SECOND))
        self.min_speech_frames = max(1, round(min_speech_s * FRAMES_PER_SECOND))
        self.max_utterance_bytes = round(max_utterance_s * FRAMES_PER_SECOND) * FRAME_BYTES
        self.stats = BotStats()
        self._pre_roll: deque[bytes] = deque(maxlen=max(1, round(PRE_ROLL_S * FRAMES_PER_SECOND)))
        self._utterance: list[bytes] | None = None
        self._utterance_bytes = 0
        self._speech_frames = 0
        self._silent_run = 0
        self._pending: set[str] = set()  # marks sent and not yet echoed
        self._cut = False  # the last utterance was cut at its limit, not ended by a pause

    @property
    def replying(self) -> bool:
        """Whether a reply (not the greeting) is still queued or playing."""
        return any(name != GREETING_MARK for name in self._pending)

    def start(self) -> list[Action]:
        """The stream started: greet."""
        return [self._play(self.greeting, GREETING_MARK)]

    def inbound(self, payload: bytes) -> list[Action]:
        """One inbound media payload (PCMU)."""
        if len(payload) > MAX_FRAME_BYTES:
            self.stats.ignored += 1
            return []
        self.stats.frames_in += 1
        speech = level_dbfs(payload) > self.threshold_dbfs
        actions: list[Action] = []
        if self._utterance is None:
            if not speech:
                self._pre_roll.append(payload)
                return []
            self._utterance = list(self._pre_roll)
            self._utterance_bytes = sum(len(p) for p in self._utterance)
            self._pre_roll.clear()
            self._speech_frames = 0
            self._silent_run = 0
            # A new utterance over a reply is barge-in; speech that goes on past a cut at
            # MAX_UTTERANCE_S is not (it would clear its own first part).
            if self.replying and not self._cut:
                self.stats.clears += 1
                actions.append(Clear("the caller talked over the reply"))
        self._utterance.append(payload)
        self._utterance_bytes += len(payload)
        if speech:
            self._speech_frames += 1
            self._silent_run = 0
        else:
            self._silent_run += 1
        if self._silent_run >= self.end_silence_frames:
            self._cut = False
            actions.extend(self._end_utterance())
        elif self._utterance_bytes >= self.max_utterance_bytes:
            self._cut = True
            actions.extend(self._end_utterance())
        return actions

    def mark(self, name: str) -> list[Action]:
        """callstream echoed a mark: the audio queued before it has played (or was cleared)."""
        if name in self._pending:
            self._pending.discard(name)
            self.stats.marks_echoed += 1
            self.stats.echoed.append(name)
        return []

    def _end_utterance(self) -> list[Action]:
        assert self._utterance is not None
        # Keep a little of the trailing quiet; drop the rest.
        keep = len(self._utterance) - max(0, self._silent_run - 5)
        audio = b"".join(self._utterance[:keep])
        enough = self._speech_frames >= self.min_speech_frames
        self._utterance = None
        self._utterance_bytes = 0
        self._silent_run = 0
        if not enough:
            return []
        self.stats.utterances += 1
        self.stats.replies += 1
        self.stats.replied_seconds += len(audio) / (FRAME_BYTES * FRAMES_PER_SECOND)
        return [self._play(audio, f"reply-{self.stats.replies}")]

    def _play(self, audio: bytes, mark: str) -> Play:
        self._pending.add(mark)
        self.stats.marks_sent += 1
        return Play(audio, mark)


def to_frames(action: Action) -> list[str]:
    """The text frames that carry one action to callstream."""
    if isinstance(action, Clear):
        return [json.dumps({"event": "clear"})]
    payload = base64.b64encode(action.audio).decode("ascii")
    return [json.dumps({"event": "media", "media": {"payload": payload}}),
            json.dumps({"event": "mark", "mark": {"name": action.mark}})]


@dataclass(frozen=True, slots=True)
class StreamStart:
    call_control_id: str
    encoding: str


@dataclass(frozen=True, slots=True)
class StreamMedia:
    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamMark:
    name: str


@dataclass(frozen=True, slots=True)
class StreamStop:
    """The server's `stop`: the call's stream has ended."""


Incoming = StreamStart | StreamMedia | StreamMark | StreamStop


def read_frame(message: str | bytes) -> Incoming | None:
    """What a frame from callstream means to the bot; None for frames it does not use
    (``connected``, ``dtmf``, ``error``, outbound media) or cannot read."""
    if len(message) > MAX_MESSAGE_BYTES:
        return None
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    if not isinstance(frame, dict):
        return None
    event = frame.get("event")
    if event == "stop":
        return StreamStop()
    body = frame.get(event) if isinstance(event, str) else None
    if not isinstance(body, dict):
        return None
    if event == "start":
        media_format = body.get("media_format")
        encoding = media_format.get("encoding") if isinstance(media_format, dict) else None
        return StreamStart(str(body.get("call_control_id", "")), str(encoding or ""))
    if event == "media":
        if body.get("track", "inbound") != "inbound":
            return None
        try:
            payload = base64.b64decode(str(body.get("payload", "")), validate=True)
        except (binascii.Error, ValueError):
            return None
        return StreamMedia(payload) if payload else None
    if event == "mark":
        return StreamMark(str(body.get("name", "")))
    return None


# -- the websockets shell ----------------------------------------------------------------


OnBotEvent = Callable[[str, EchoBot, str], None]


async def _session(ws: ServerConnection, greeting: bytes, on_event: OnBotEvent,
                   bots: MutableSequence[EchoBot]) -> None:
    bot = EchoBot(greeting)
    bots.append(bot)
    call_id = ""
    try:
        async for message in ws:
            frame = read_frame(message)
            actions: list[Action] = []
            if isinstance(frame, StreamStart):
                call_id = frame.call_control_id
                if frame.encoding.upper() != "PCMU":
                    log.warning("demo bot: stream is %r, not PCMU; not answering",
                                frame.encoding)
                    continue
                actions = bot.start()
                on_event("start", bot, call_id)
            elif isinstance(frame, StreamMedia):
                actions = bot.inbound(frame.payload)
            elif isinstance(frame, StreamMark):
                actions = bot.mark(frame.name)
                on_event("mark", bot, frame.name)
            elif isinstance(frame, StreamStop):
                on_event("stop", bot, call_id)
                break
            for action in actions:
                on_event("clear" if isinstance(action, Clear) else "play", bot,
                         action.reason if isinstance(action, Clear) else action.mark)
                for text in to_frames(action):
                    await ws.send(text)
    except ConnectionClosed:
        pass


async def serve_bot(greeting: bytes, on_event: OnBotEvent, bots: MutableSequence[EchoBot],
                    host: str = "127.0.0.1", port: int = 0) -> Server:
    """Start the bot's WebSocket server; each connection (stream) gets its own bot."""
    live: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if len(live) >= MAX_STREAMS:
            log.warning("demo bot: %d streams already; refusing another", MAX_STREAMS)
            await ws.close(1013, "demo bot busy")
            return
        live.add(ws)
        try:
            await _session(ws, greeting, on_event, bots)
        finally:
            live.discard(ws)

    return await serve(handler, host, port, max_size=MAX_MESSAGE_BYTES)
