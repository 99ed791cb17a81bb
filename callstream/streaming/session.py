"""One media stream: the WebSocket client that carries a call's audio to ``stream_url``.

Life of a stream (spec §5.1, §5.5)
----------------------------------
1. ``streaming_start`` (or ``dial``/``answer`` stream fields) creates the session and
   its task. From the moment the call's media is there (:meth:`StreamSession.attach`)
   the stream captures its audio into the encoder's bounded buffer
   (``CALLSTREAM_STREAM_BUFFER_SECS``, oldest dropped and counted beyond it), so the
   consumer gets the call from its first word once ``start`` is out. The task dials
   ``stream_url`` with the ``websockets`` library, over a socket connected to an
   address the outbound policy passed (:mod:`callstream.outbound`), sending
   ``x-telnyx-streaming-auth-token`` when a token was given. Failure, a refused
   address included → ``streaming.failed`` (``failure_reason: connection_failed``);
   the call goes on.
2. On upgrade: ``connected`` → webhook ``streaming.started`` (committed before the next
   frame) → ``start`` → the buffered ``media`` frames, in order (timestamps count from
   when capture began) → ``media`` frames as the hub delivers audio, ``dtmf`` frames as
   digits arrive, ``mark``/``error`` frames from the bidirectional :class:`Playback`.
   A dial with ``stream_establish_before_call_originate`` connects (1) and sends
   ``connected`` before the INVITE, and waits for the answer to go on with (2).
3. End, one of:

   * ``streaming_stop`` → the audio already captured is sent, then ``stop``, then
     ``streaming.stopped``;
   * hangup (:meth:`detach`) → ``streaming.stopped`` goes with the hangup's webhooks;
     ``stop`` and the close finish in the background;
   * the consumer closes cleanly (1000/1001) → ``streaming.stopped``; the connection
     dies or the consumer fails (any other close) → ``streaming.failed``
     (``failure_reason: connection_lost``). The call goes on either way. With a
     reconnect window (``stream_reconnect_seconds``, :mod:`.reconnect`) a drop instead
     dials again, sends ``connected`` and ``start`` (``resumed: true``) and the audio
     buffered meanwhile, then goes on live; ``streaming.failed``
     (``reconnect_window_passed``) only when no attempt succeeded in the window;
   * the consumer stalls: it answers no WebSocket ping within the stall timeout
     (``CALLSTREAM_STREAM_STALL_TIMEOUT_SECS``) → the socket is aborted and
     ``streaming.failed`` (``failure_reason: consumer_stalled``); the call goes on. With a
     reconnect window the abort counts as a drop and callstream reconnects (a network
     path that died silently is seen only this way).

   After our ``stop`` the socket stays open until the consumer closes it or
   ``CALLSTREAM_STREAM_STOP_GRACE_SECS`` pass, then we close with 1000: a consumer
   that acts on the end of its stream (Pipecat ends its pipeline and hangs the call up
   through the REST API) writes nothing to a socket already closed.

Stalls. A consumer that stops reading is not visible from the sending side for a long
time: frames pile up in the consumer's receive buffer, our kernel send buffer (which
Linux grows to megabytes) and the library's write buffer, ~30 s of audio before a
send blocks. So the session caps its kernel send buffer (``SEND_BUFFER_BYTES``) and
a watchdog pings the consumer every half timeout: a pong comes back only once the
consumer has read everything sent before the ping, so no pong within the timeout
means it is that far behind, whatever the buffers hold.

Latency bound. After ``start`` (and after a resumed ``start``) audio is live: a frame
whose turn to be written comes more than ``CALLSTREAM_STREAM_LATENCY_BOUND_SECS`` after it
was captured is dropped (oldest first, counted as overdue). Frames written but not read
are out of reach, so the session also measures how far behind the consumer reads: a
probe ping rides with a write of media when none is unanswered and the last is
:data:`~callstream.streaming.connection.PROBE_SECS` old
(:class:`~callstream.streaming.connection.StreamConnection`), and a ping is answered only
once everything written before it has been read (by the consumer's WebSocket library),
whatever TCP buffers in between. While the probe is unanswered for longer than
:data:`IN_FLIGHT_FLOOR_SECS` (or the bound, if longer) no audio is written; it waits,
turns overdue and is dropped. So a consumer that pauses gets recent audio when it reads
again, not the backlog. The audio buffered before ``start`` (and while a socket was down)
is exempt: it is there on purpose and goes out in full first.

``streaming.stopped`` is only ever sent after ``streaming.started``.

The media path appends to the :class:`StreamEncoder` queue and, for a pass-through stream
whose socket takes them at once, writes the frames itself (:mod:`.writer`); the consumer's
messages are played from the callback that read them (:mod:`.connection`); everything else
runs in the stream's own task, so a slow consumer costs only its own (dropped, counted)
frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.uri import parse_uri

from callstream.calls.features import FeatureEvent, LegMedia
from callstream.calls.model import Call
from callstream.calls.requests import TexmlCallback
from callstream.media.codecs import get_codec
from callstream.media.hub import Track
from callstream.outbound.connect import connect_tcp
from callstream.outbound.metrics import OUTBOUND_DENIED
from callstream.outbound.policy import OutboundDenied, OutboundPolicy
from callstream.streaming.connection import StreamConnection
from callstream.streaming.encoder import BUFFER_SECONDS, StreamEncoder, queue_items
from callstream.streaming.metrics import StreamCounters
from callstream.streaming.playback import STANDING_MS, Playback
from callstream.streaming.protocol import (
    AUTH_HEADER,
    MAX_CLIENT_FRAME_BYTES,
    FrameBuilder,
    MediaFormat,
    ServerEvent,
    media_format,
)
from callstream.streaming.reconnect import CLEAN_CLOSE_CODES, WINDOW_PASSED, reconnect
from callstream.streaming.writer import can_write_now, send_frames, write_now
from callstream.timefmt import iso_now

__all__ = ["StreamParams", "StreamSession", "StreamState"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
#: Default of ``CALLSTREAM_STREAM_STOP_GRACE_SECS``: how long the socket stays open after
#: ``stop`` for the consumer to close it.
STOP_GRACE = 2.0
#: Default for ``CALLSTREAM_STREAM_STALL_TIMEOUT_SECS``: no pong for this long = stalled.
STALL_TIMEOUT = 10.0
#: ``failure_reason`` of ``streaming.failed`` when the consumer stalled.
STALL_REASON = "consumer_stalled"
#: Kernel send buffer of a stream's socket (SO_SNDBUF; Linux doubles it). Autotuned,
#: loopback grows it to 4 MB: minutes of audio hidden from the drop counter. 64 KiB
#: still covers the bandwidth-delay product of the fattest stream (L16 16 kHz, both
#: tracks, ~100 KB/s) over a 300 ms path.
SEND_BUFFER_BYTES = 64 * 1024
#: Default of ``CALLSTREAM_STREAM_LATENCY_BOUND_SECS``: live audio older than this when its
#: turn comes is dropped.
LATENCY_BOUND = 0.2
#: How far behind (oldest unanswered ping) a consumer may read before we hold back,
#: whatever the bound: its round trip counts in it, and a far consumer must not lose
#: audio for being far.
IN_FLIGHT_FLOOR_SECS = 0.5
#: How soon a sender held back looks again.
RECHECK_SECS = 0.02


@dataclass(frozen=True, slots=True)
class StreamParams:
    """A validated stream request, in spec §3.1 names."""

    stream_id: str
    stream_url: str
    stream_track: str = "inbound_track"
    stream_codec: str = "default"
    bidirectional: bool = False
    stream_bidirectional_mode: str = "mp3"
    stream_bidirectional_codec: str = "PCMU"
    stream_bidirectional_sampling_rate: int = 8000
    stream_bidirectional_target_legs: str = "opposite"
    stream_auth_token: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    client_state: str | None = None
    #: Reconnect window after a drop (callstream extension); 0: none, Telnyx's behaviour.
    stream_reconnect_seconds: float = 0.0
    #: TeXML streams: where stream-started/stopped/error callbacks go.
    texml: TexmlCallback | None = None

    def public(self) -> dict[str, Any]:
        """The params as stored with the stream (no token)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "stream_auth_token"}
        out["has_auth_token"] = self.stream_auth_token is not None
        return out


class StreamState(enum.Enum):
    CONNECTING = "connecting"
    WAITING = "waiting"  # connected before originate; waits for the answer
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # the socket dropped; dialling again within the window
    STOPPED = "stopped"


class PlaybackLike(Protocol):
    def on_text(self, text: str) -> None: ...

    def close(self) -> None: ...


class StreamHost(Protocol):
    """What a session needs from its manager."""

    account_id: str
    outbound: OutboundPolicy

    async def emit(self, session: StreamSession, event_type: str,
                   extra: dict[str, Any]) -> None: ...

    def ended(self, session: StreamSession) -> None: ...

    def playback_targets(self, session: StreamSession) -> Sequence[LegMedia]: ...


class StreamSession:
    """One stream of one call. Also the call's :class:`~callstream.calls.features.Feature`."""

    def __init__(self, host: StreamHost, call: Call, params: StreamParams, *,
                 clock: Callable[[], float], stall_timeout: float = STALL_TIMEOUT,
                 buffer_secs: float = BUFFER_SECONDS, stop_grace: float = STOP_GRACE,
                 latency_bound: float = LATENCY_BOUND,
                 playback_standing_ms: int = STANDING_MS) -> None:
        self.host = host
        self.call = call
        self.params = params
        self.id = params.stream_id
        self.key = f"stream:{params.stream_id}"
        self.state = StreamState.CONNECTING
        self.media: LegMedia | None = None
        self.format: MediaFormat | None = None
        self.started = False  # streaming.started went out
        self.outcome = "stopped"
        self.counters = StreamCounters(self.id)
        self._clock = clock
        self._stall_timeout = stall_timeout
        self._buffer_secs = buffer_secs
        self._stop_grace = stop_grace
        self._latency_bound = latency_bound
        self._playback_standing_ms = playback_standing_ms
        # Audio captured up to this hub time is the buffered head (or replay): exempt from
        # the bound. None: not streaming yet.
        self._backlog_until: float | None = None
        self._gone: int | None = None  # close code seen by the reader on this socket
        self._recheck: asyncio.TimerHandle | None = None
        self._capture_started: float | None = None  # hub clock when the encoder was made
        self._frames = FrameBuilder(self.id)
        self._ws: StreamConnection | None = None
        self._encoder: StreamEncoder | None = None
        self._playback: PlaybackLike | None = None
        self._control: deque[Callable[[], bytes]] = deque()
        self._wakeup = asyncio.Event()
        #: The socket the media path writes to itself (start sent, still streaming).
        self._live: StreamConnection | None = None
        self._media_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._stop_sent = asyncio.Event()  # our stop frame went out (or never will)
        self._stop_requested = False
        self._stop_frame = True
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # -- control from the manager ---------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.key)

    async def wait_connected(self) -> bool:
        """For establish-before-originate: wait until ``connected`` went out (or failed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT + 1):
                await self._connected.wait()
        return self.state is StreamState.WAITING or self._ws is not None

    def attach(self, media: LegMedia) -> None:
        """The call's media is up (answer): resolve the codec and start capturing.

        Capture starts now, whether or not the socket is open yet: the encoder's queue
        holds up to ``buffer_secs`` of audio until ``start`` has gone out.
        """
        if self.state is StreamState.STOPPED or self.media is not None:
            return
        self.media = media
        self.format = media_format(self.params.stream_codec, get_codec(media.codec),
                                   self.params.stream_bidirectional_sampling_rate)
        track = Track.parse(self.params.stream_track)
        self._capture_started = self._clock()
        self._encoder = StreamEncoder(media, track, self.format.codec, clock=self._clock,
                                      wake=self._wake_sender, on_drop=self._dropped,
                                      max_items=queue_items(self._buffer_secs, track),
                                      write=self._write_packet)
        self._media_ready.set()

    def on_dtmf(self, digit: str, now: float) -> None:
        """A digit from the caller (``DtmfListener``); sent after a resume if reconnecting."""
        if self.state in (StreamState.STREAMING, StreamState.RECONNECTING):
            occurred = iso_now()
            self._control.append(lambda: self._frames.dtmf(digit, occurred))
            self._wakeup.set()

    async def stop(self) -> list[FeatureEvent]:
        """``streaming_stop``: send what was captured and ``stop``; then the webhook.

        The close comes later, in the task (the consumer's, or ours after the grace).
        """
        events = self._begin_stop("streaming_stop")
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            stop_sent = asyncio.ensure_future(self._stop_sent.wait())
            try:
                done, _ = await asyncio.wait({stop_sent, task}, timeout=CLOSE_TIMEOUT + 1,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_sent.cancel()
            if not done:
                task.cancel()
        return events

    def detach(self, reason: str) -> list[FeatureEvent]:
        """The call ended: let go of the media now; the socket finishes in the task."""
        return self._begin_stop(reason)

    def _begin_stop(self, reason: str | None) -> list[FeatureEvent]:
        """Stop; ``reason`` is logged (``None``: the caller logs why)."""
        if self.state is StreamState.STOPPED:
            return []
        if reason is not None:
            log.info("call %s: stream %s stopped (%s)%s", self.call.id, self.id, reason,
                     "" if self.started else " before it started", extra=self._log_fields())
        was_streaming = self.state is StreamState.STREAMING
        self.state = StreamState.STOPPED
        self._stop_requested = True
        self._release_media()
        self._media_ready.set()
        self._wakeup.set()
        if not was_streaming and self._task is not None:
            self._task.cancel()  # still connecting or waiting: nothing to say to anyone
            self._stop_frame = False
        self.host.ended(self)
        if not self.started:
            return []
        return [("streaming.stopped", self._stream_fields())]

    def _release_media(self) -> None:
        self._live = None
        if self._encoder is not None:
            self.counters.dropped(self._encoder.dropped)
            self._encoder.close()
        if self._playback is not None:
            try:
                self._playback.close()
            except Exception:
                log.exception("stream %s: playback failed to close", self.id)
            self._playback = None

    def _log_fields(self) -> dict[str, Any]:
        return {"call_control_id": self.call.id, "stream_id": self.id}

    def _stream_fields(self) -> dict[str, Any]:
        return {"stream_url": self.params.stream_url, "stream_id": self.id}

    def failure_fields(self, reason: str) -> dict[str, Any]:
        track = self.params.stream_track
        return {
            "failure_reason": reason,
            "stream_id": self.id,
            "stream_type": "websocket",
            # OAS/SDK say "track", the docs example "stream_track": send both (spec §12.3).
            "stream_params": {"stream_url": self.params.stream_url, "track": track,
                              "stream_track": track},
        }

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._connect_and_stream()
        except asyncio.CancelledError:
            self._cancel_helpers()
            if self._ws is not None:
                self._ws.transport.abort()
            raise
        except Exception:
            log.exception("stream %s failed", self.id)
            await self._fail("internal_error", "see the error above")

    async def _connect_and_stream(self) -> None:
        params = self.params
        headers = {AUTH_HEADER: params.stream_auth_token} if params.stream_auth_token else None
        started = self._clock()
        try:
            ws = await self._open(params.stream_url, headers)
        except OutboundDenied as exc:
            OUTBOUND_DENIED.labels("connect").inc()
            self._connected.set()
            await self._fail("connection_failed", f"refused {params.stream_url}: {exc}",
                             level=logging.WARNING)
            return
        except Exception as exc:
            self._connected.set()
            why = "connection refused (nothing listens there)" if isinstance(
                exc, ConnectionRefusedError) else exc or type(exc).__name__
            await self._fail("connection_failed", f"cannot connect to {params.stream_url}: {why}")
            return
        self._ws = ws
        self.counters.connected(self._clock() - started)
        log.info("call %s: stream %s connected to %s in %.0f ms (%s track%s)", self.call.id,
                 self.id, params.stream_url, (self._clock() - started) * 1000.0,
                 params.stream_track, ", bidirectional" if params.bidirectional else "",
                 extra=self._log_fields())
        await send_frames(ws, [FrameBuilder.connected(params.stream_auth_token)])
        if self.media is None:
            self.state = StreamState.WAITING
        self._connected.set()
        await self._media_ready.wait()
        if self._stop_requested or self.media is None or self.format is None:
            await self._close()
            return
        self.state = StreamState.STREAMING
        self.started = True
        await self.host.emit(self, "streaming.started", self._stream_fields())
        if self._stop_requested:  # stopped while the webhook was being stored
            await self._finish()
            return
        if params.bidirectional:  # before start: the consumer may answer it at once
            self._playback = self._make_playback()
            if self._playback is not None:
                ws.on_text = self._playback.on_text  # no hop through _on_consumer_text
        # Media timestamps count from when capture began: the buffered audio comes first.
        began = self._capture_started if self._capture_started is not None else self._clock()
        await send_frames(ws, [self._frames.start(self._start_details(), began)])
        self.counters.sent(1)
        self._backlog_until = self._clock()
        while True:
            code = await self._serve(ws)
            if code is None:
                await self._finish()
                return
            if code in CLEAN_CLOSE_CODES or params.stream_reconnect_seconds <= 0:
                await self._consumer_gone_code(code)
                return
            resumed = await self._resume(code)
            if resumed is None:
                return
            ws = resumed

    async def _serve(self, ws: StreamConnection) -> int | None:
        """Stream over ``ws`` until a stop (None) or the socket ends (its close code)."""
        loop = asyncio.get_running_loop()
        # Typed wide, not narrowed to None: the reader task sets it during the awaits below,
        # and the compiled build (mypyc) checks each read against the narrowed type.
        self._gone = cast("int | None", None)
        self._reader = loop.create_task(self._read(ws))
        self._watchdog = loop.create_task(self._watch(ws))
        try:
            await self._send_pending(ws)  # what was captured before start (or a resume)
            self._live = ws
            while not self._stop_requested and self._gone is None:
                await self._wakeup.wait()
                self._wakeup.clear()
                await self._send_pending(ws)
        except ConnectionClosed as exc:
            if not self._stop_requested:
                return close_code(exc)
        finally:
            self._live = None
        return None if self._stop_requested else self._gone

    async def _resume(self, code: int) -> StreamConnection | None:
        """The socket dropped: dial again within the window; the new socket, or None
        (the window passed: ``streaming.failed`` is out)."""
        window = self.params.stream_reconnect_seconds
        log.info("call %s: stream %s: consumer's socket dropped (%d); reconnecting for up "
                 "to %.1f s", self.call.id, self.id, code, window, extra=self._log_fields())
        self.state = StreamState.RECONNECTING  # a stop now cancels this task
        self._cancel_helpers()
        if self._ws is not None:
            self._ws.transport.abort()
            self._ws = None
        params = self.params
        headers = {AUTH_HEADER: params.stream_auth_token} if params.stream_auth_token else None
        deadline = self._clock() + window
        resume: bytes | None = None  # the resumed start, numbered once
        while True:
            ws = await reconnect(lambda: self._open(params.stream_url, headers),
                                 deadline - self._clock(), clock=self._clock,
                                 on_attempt=self.counters.reconnect_attempt,
                                 label=f"stream {self.id}")
            if ws is None:
                await self._fail(WINDOW_PASSED, f"no reconnect succeeded within {window:g} s")
                return None
            self._ws = ws
            encoder = self._encoder
            try:
                replayed = len(encoder) if encoder is not None else 0
                if resume is None:
                    resume = self._frames.restart(self._start_details())
                await send_frames(ws, [FrameBuilder.connected(params.stream_auth_token), resume])
            except ConnectionClosed:  # dropped again at once: try again in the same window
                ws.transport.abort()
                self._ws = None
                continue
            break
        if encoder is not None:
            self.counters.dropped(encoder.dropped, reconnecting=True)
        self.counters.sent(1)
        self.counters.resumed(replayed)
        self._backlog_until = self._clock()
        self.state = StreamState.STREAMING
        log.info("call %s: stream %s resumed on a new socket; replaying %d buffered frames",
                 self.call.id, self.id, replayed, extra=self._log_fields())
        self._wakeup.set()
        return ws

    async def _open(self, url: str, headers: dict[str, str] | None) -> StreamConnection:
        """Connect to a checked address of the URL's host; Host and SNI keep the name.

        A redirect cannot lead elsewhere: websockets follows none on a given socket. The
        consumer's messages go to :meth:`_on_consumer_text` from the connection's
        ``data_received``.
        """
        uri = parse_uri(url)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            sock = await connect_tcp(uri.host, uri.port, self.host.outbound)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            try:
                ws = await connect(
                    url, sock=sock, additional_headers=headers, open_timeout=None,
                    close_timeout=CLOSE_TIMEOUT, compression=None, max_size=MAX_CLIENT_FRAME_BYTES,
                    ping_interval=None, proxy=None, user_agent_header="callstream",
                    create_connection=StreamConnection,
                )
            except BaseException:
                sock.close()
                raise
        assert isinstance(ws, StreamConnection)  # create_connection made it
        # Straight to the playback once there is one (a closed one ignores its input).
        ws.on_text = (self._playback.on_text if self._playback is not None
                      else self._on_consumer_text)
        return ws

    def _on_consumer_text(self, text: str) -> None:
        """A consumer message, from the connection's ``data_received``: played at once
        (before ``start`` and after the stream ended: dropped)."""
        playback = self._playback
        if playback is not None:
            playback.on_text(text)

    def _start_details(self) -> dict[str, Any]:
        rec = self.call.record
        assert self.format is not None
        return {
            "user_id": self.host.account_id,
            "call_control_id": rec.call_control_id,
            "call_session_id": rec.call_session_id,
            "from": rec.from_,
            "to": rec.to,
            "client_state": self.params.client_state or rec.client_state,
            "custom_parameters": dict(self.params.custom_parameters),
            "media_format": self.format.as_frame(),
        }

    def _make_playback(self) -> PlaybackLike | None:
        params = self.params
        try:
            playback: PlaybackLike = Playback(
                self.host.playback_targets(self),
                mode=params.stream_bidirectional_mode,
                codec=params.stream_bidirectional_codec,
                sampling_rate=params.stream_bidirectional_sampling_rate,
                emit=self._emit_frame,
                clock=self._clock,
                standing_ms=self._playback_standing_ms,
            )
        except Exception:
            log.exception("stream %s: bidirectional playback is unavailable", self.id)
            return None
        return playback

    def _emit_frame(self, event: ServerEvent) -> None:
        """A frame from Playback (mark echo, error): numbered and sent in order."""
        if self._stop_requested:
            return
        self._control.append(lambda: self._frames.event(event))
        self._wakeup.set()

    def _wake_sender(self) -> None:
        """From the media path (the encoder has frames to go): write them from here when
        they are the wire's payloads (no encoding to do on the media path) and the socket
        takes them without a wait; else the task encodes and sends them."""
        ws = self._live
        encoder = self._encoder
        if (ws is not None and encoder is not None and encoder.passthrough
                and not self._control and can_write_now(ws)):
            now = self._clock()
            frames, audio = self._take_pending(ws, now)  # none while the consumer reads behind
            if frames:
                write_now(ws, frames, ws.probe(now) if audio else None)
                self.counters.sent(len(frames), audio)
        else:
            self._wakeup.set()

    def _write_packet(self, track: str, payload: bytes, captured: float, queued: bool) -> bool:
        """From the media path (the encoder, pass-through only), one packet's payload: its
        ``media`` frame written at once, after what is ``queued``, when the socket takes it
        without a wait and nothing else is due (a control frame, a consumer behind); else
        False, and the encoder queues it for the usual way. The common case of
        :meth:`_wake_sender` without the queue: the frame goes out as it came."""
        ws = self._live
        if ws is None or self._control or not can_write_now(ws):
            return False
        if ws.probe_asked is not None and self._consumer_behind(ws, captured):
            return False
        encoder = self._encoder
        if queued and encoder is not None:  # an outbound frame waiting for this one
            out, audio = self._queued_frames(encoder, captured)
        else:
            out, audio = [], 0
        out.append(self._frames.media(track, payload, captured))
        audio += len(payload)
        write_now(ws, out, ws.probe(captured))
        self.counters.sent(len(out), audio)
        return True

    def _take_pending(self, ws: StreamConnection, now: float) -> tuple[list[bytes], int]:
        """Every frame ready, media first, and the audio bytes they carry."""
        out: list[bytes] = []
        audio = 0
        encoder = self._encoder
        if encoder is not None and len(encoder) and not self._consumer_behind(ws, now):
            out, audio = self._queued_frames(encoder, now)
        control = self._control
        while control:
            out.append(control.popleft()())
        return out, audio

    def _queued_frames(self, encoder: StreamEncoder, now: float) -> tuple[list[bytes], int]:
        """The encoder's queue as ``media`` frames, overdue live audio left out, and the
        audio bytes they carry."""
        self.counters.dropped(encoder.dropped)
        out: list[bytes] = []
        audio = 0
        frames = self._frames
        backlog_until = self._backlog_until if self._backlog_until is not None else 0.0
        cutoff = now - self._latency_bound
        overdue = 0
        for track, payload, captured in encoder.drain():
            if backlog_until < captured < cutoff:
                overdue += 1  # live audio too old to be worth hearing now
                continue
            out.append(frames.media(track, payload, captured))
            audio += len(payload)
        if overdue:
            self._overdue(overdue)
        return out, audio

    async def _send_pending(self, ws: StreamConnection) -> None:
        """Everything ready in one write (both tracks of a tick: one), waiting for room."""
        now = self._clock()
        frames, audio = self._take_pending(ws, now)
        if frames:
            await send_frames(ws, frames, ws.probe(now) if audio else None)
            self.counters.sent(len(frames), audio)

    def _consumer_behind(self, ws: StreamConnection, now: float) -> bool:
        """The consumer reads too far behind (its probe unanswered too long): hold back
        (and look again in :data:`RECHECK_SECS`; the audio meanwhile ages and may turn
        overdue)."""
        asked = ws.probe_asked
        if (self._backlog_until is None or asked is None
                or now - asked <= max(self._latency_bound, IN_FLIGHT_FLOOR_SECS)):
            return False
        if self._recheck is None:
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_SECS, self._rechecked)
        return True

    def _rechecked(self) -> None:
        self._recheck = None
        self._wakeup.set()

    def _overdue(self, frames: int) -> None:
        if self.counters.frames_overdue == 0:  # once per stream; the counters have the rest
            log.warning("stream %s: consumer is behind by more than %.0f ms; dropping the "
                        "overdue audio", self.id, self._latency_bound * 1000,
                        extra=self._log_fields())
        self.counters.overdue(frames)

    def _dropped(self, total: int) -> None:
        """From the media path: the encoder dropped its oldest frame (counted live)."""
        waiting = self._frames.sequence == 0  # start not sent: the socket is not open yet
        reconnecting = self.state is StreamState.RECONNECTING
        if total == 1:  # once per stream; the counters have the rest
            if reconnecting:
                log.warning("stream %s: socket down for %.1f s of buffered audio; dropping "
                            "the oldest", self.id, self._buffer_secs, extra=self._log_fields())
            elif waiting:
                log.warning("stream %s: socket not open after %.1f s of buffered audio; "
                            "dropping the oldest", self.id, self._buffer_secs,
                            extra=self._log_fields())
            else:
                log.warning("stream %s: consumer is not keeping up; dropping the oldest "
                            "audio", self.id, extra=self._log_fields())
        self.counters.dropped(total, before_start=waiting, reconnecting=reconnecting)

    async def _watch(self, ws: StreamConnection) -> None:
        """Ping every half timeout; a pong not back within the timeout means a stall."""
        timeout = self._stall_timeout
        while True:
            await asyncio.sleep(timeout / 2)
            try:
                # Both steps count: ping() itself waits while the write buffer is full.
                async with asyncio.timeout(timeout):
                    pong = await ws.ping()
                    await pong
            except TimeoutError:
                await asyncio.shield(self._stalled(ws))
                return
            except ConnectionClosed:
                return

    async def _stalled(self, ws: StreamConnection) -> None:
        if self.state is StreamState.STOPPED:
            return
        if self.params.stream_reconnect_seconds > 0:
            # A path that died silently shows only this way: reconnect as for a drop.
            log.warning("call %s: stream %s: consumer stalled (no pong in %.1f s); dropping "
                        "its socket to reconnect", self.call.id, self.id,
                        self._stall_timeout, extra=self._log_fields())
            self.counters.stalled()
            self._gone = 1006
            ws.transport.abort()
            self._wakeup.set()
            return
        log.warning("call %s: stream %s failed: %s (consumer stalled: no pong in %.1f s, %d "
                    "frames dropped); closing it", self.call.id, self.id, STALL_REASON,
                    self._stall_timeout, self.counters.frames_dropped,
                    extra=self._log_fields())
        self.outcome = "failed"
        self._stop_frame = False
        self.counters.stalled()
        self._begin_stop(None)
        ws.transport.abort()
        await self.host.emit(self, "streaming.failed", self.failure_fields(STALL_REASON))

    def _cancel_helpers(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        current = asyncio.current_task()
        for task in (self._reader, self._watchdog):
            if task is not None and task is not current:
                task.cancel()

    async def _read(self, ws: StreamConnection) -> None:
        """The end of the socket wakes the sender with its close code (:meth:`_serve`
        decides: end, or reconnect). Client → server messages go to Playback from the
        connection's callback; only those read with the upgrade response come here."""
        try:
            async for message in ws:
                playback = self._playback
                if playback is not None and isinstance(message, str):
                    playback.on_text(message)
        except ConnectionClosed as exc:
            self._gone = close_code(exc)
        else:
            rcvd = ws.protocol.close_rcvd
            self._gone = rcvd.code if rcvd is not None else 1006
        self._wakeup.set()

    async def _consumer_gone_code(self, code: int) -> None:
        if self.state is StreamState.STOPPED:
            return
        clean = code in (1000, 1001)
        if not clean:
            self.outcome = "failed"
        if clean:
            log.info("call %s: stream %s stopped (consumer closed the socket, %d)",
                     self.call.id, self.id, code, extra=self._log_fields())
        else:
            log.info("call %s: stream %s failed: connection_lost (consumer's socket closed "
                     "with %d)", self.call.id, self.id, code, extra=self._log_fields())
        self._stop_frame = False
        events = self._begin_stop(None)
        if not clean:
            events = [("streaming.failed", self.failure_fields("connection_lost"))]
        self._cancel_helpers()
        for event_type, extra in events:
            await self.host.emit(self, event_type, extra)
        await self._close()

    async def _fail(self, reason: str, detail: str, *, level: int = logging.INFO) -> None:
        if self.state is StreamState.STOPPED:
            return
        log.log(level, "call %s: stream %s failed: %s (%s)", self.call.id, self.id, reason,
                detail, extra=self._log_fields())
        self.outcome = "failed"
        self.state = StreamState.STOPPED
        self._release_media()
        self.host.ended(self)
        await self.host.emit(self, "streaming.failed", self.failure_fields(reason))

    async def _finish(self) -> None:
        """Stopped on our side: flush the captured audio, ``stop``, grace, close 1000."""
        ws = self._ws
        if ws is None:
            return
        self._cancel_helpers()
        with contextlib.suppress(ConnectionClosed):
            if self._stop_frame:
                try:
                    await self._send_pending(ws)
                    rec = self.call.record
                    await send_frames(
                        ws, [self._frames.stop(self.host.account_id, rec.call_control_id)])
                    self.counters.sent(1)
                finally:
                    self._stop_sent.set()
                await self._grace(ws)
        await self._close()

    async def _grace(self, ws: StreamConnection) -> None:
        """After ``stop``: wait for the consumer to close, at most ``stop_grace`` seconds.

        Its frames are read and dropped meanwhile (the stream is over), so its close
        frame is not stuck behind them.
        """
        if self._stop_grace <= 0:
            return
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            await asyncio.wait({reader})  # cancelled: one recv() at a time
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_grace):
                async for _ in ws:
                    pass

    async def _close(self) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000)



def close_code(exc: ConnectionClosed) -> int:
    """The consumer's close code; 1006 when none came (a drop), or a clean-looking end
    without a clean code."""
    rcvd = exc.rcvd
    code = rcvd.code if rcvd is not None else 1006
    if isinstance(exc, ConnectionClosedOK) and code not in CLEAN_CLOSE_CODES:
        code = 1006
    return code

