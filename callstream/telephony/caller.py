"""``callstream call``: a command-line SIP caller on callstream's own SIP and media stack.

It places one call (a UAC on :class:`~callstream.sip.transport.SipTransport`),
plays a WAV file into it as RTP, records what the far end sends back, sends
RFC 4733 DTMF once answered, and hangs up after the file, after a fixed
duration, or when the far end does. Users test their deployments with it; our
end-to-end tests use it as a real peer.

The pieces that decide things are pure and clock-free, so they are tested
without sockets:

* :class:`CallPlan` — when an answered call ends (``--duration``, the end of
  ``--play`` plus a short linger, or the safety maximum), and when DTMF goes out;
* :class:`Recorder` — inbound 20 ms frames to continuous PCM (gaps in the
  far end's stream are filled with silence, so the recording keeps time);
* :func:`load_wav`, :func:`parse_codecs`, :func:`normalize_target`.

:func:`place_call` is the thin asyncio shell around them: sockets, one pacer,
one :class:`~callstream.telephony.leg.Leg` named :data:`LEG` (the same leg the
server's switch runs).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from callstream.media.codecs import FRAME_MS, get_codec
from callstream.media.codecs.pcm import silence
from callstream.media.dtmf import DtmfDigit, plan_dtmf
from callstream.media.exceptions import InvalidDtmfError
from callstream.media.hub import AudioFrame, MediaHub, QueueSource, Track
from callstream.media.session import SessionEvent
from callstream.media.transport import Pacer, PortAllocator
from callstream.sip import endpoint as sip
from callstream.sip.exceptions import InvalidCallState, InvalidUri, SipError
from callstream.sip.offer_answer import Codec
from callstream.sip.sdp import SdpSession
from callstream.sip.transport import SipTransport
from callstream.sip.uri import SipUri, parse_uri
from callstream.telephony.codecs import UnknownCodec, parse_codec_names
from callstream.telephony.leg import Leg, MediaOptions

__all__ = [
    "LEG",
    "CallOptions",
    "CallPlan",
    "CallSummary",
    "Caller",
    "CallerError",
    "Recorder",
    "load_wav",
    "normalize_target",
    "parse_codecs",
    "place_call",
]

#: The caller's one leg in its media hub.
LEG = "caller"
DEFAULT_CODECS = ("PCMU", "PCMA", "G722", "L16")
#: Seconds an answered call may last when nothing else ends it.
DEFAULT_MAX_DURATION = 3600.0
DEFAULT_ANSWER_TIMEOUT = 30.0
#: Seconds to stay on after ``--play`` ends: the last packets reach the far
#: end's jitter buffer and its reply reaches our recording.
DEFAULT_LINGER = 0.5
DEFAULT_DTMF_DELAY = 0.5
#: Seconds to wait for the far end to answer our BYE or CANCEL.
END_WAIT = 5.0
#: Default local RTP port range (the allocator starts at a random pair of it).
RTP_PORTS = (40000, 59998)
#: Longest gap in the far end's stream the recording fills with silence.
MAX_GAP_SECONDS = 60.0
#: The caller's jitter buffer depth: deeper than the server's 40 ms, since a test
#: tool on a busy machine wants every packet more than it wants low latency.
JITTER_PREFETCH_MS = 100
#: Gap between SIP INFO digits when telephone-event was not negotiated.
INFO_DIGIT_GAP = 0.25


class CallerError(Exception):
    """Bad options or input (a missing WAV, an unknown codec): exit status 2."""


# -- pure parts --------------------------------------------------------------


def parse_codecs(names: Sequence[str]) -> tuple[Codec, ...]:
    """``["PCMU,PCMA", "g722"]`` -> the codecs to offer, in that order.

    Raises:
        CallerError: An unknown name, or no codec at all.
    """
    try:
        return parse_codec_names(names)
    except UnknownCodec as exc:
        raise CallerError(str(exc)) from exc


def normalize_target(target: str) -> SipUri:
    """The Request-URI to call: ``sip:…`` as given, or ``host:port`` / ``user@host``.

    Raises:
        CallerError: It is not a SIP URI we can call.
    """
    text = target.strip()
    if not text.lower().startswith(("sip:", "sips:", "tel:")):
        text = "sip:" + text
    try:
        uri = parse_uri(text)
    except (InvalidUri, ValueError) as exc:
        raise CallerError(f"bad SIP URI {target!r}: {exc}") from exc
    if uri.scheme != "sip" or uri.transport not in ("udp", "tcp"):
        raise CallerError(f"can only call sip: URIs over UDP or TCP, not {target!r}")
    return uri


def load_wav(path: Path, rate: int | None = None) -> tuple[bytes, int]:
    """Read a PCM WAV as 16-bit mono; resample it to ``rate`` when given.

    8, 16, 24 and 32-bit integer samples are taken; channels are averaged.

    Returns:
        The PCM (s16le) and its rate.

    Raises:
        CallerError: The file is missing or not a PCM WAV.
    """
    try:
        with wave.open(io.BytesIO(path.read_bytes())) as w:
            width, channels, source_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise CallerError(f"can't read WAV {str(path)!r}: {exc}") from exc
    samples = _to_float(raw, width)
    if channels > 1:
        samples = samples[: len(samples) - len(samples) % channels]
        samples = samples.reshape(-1, channels).mean(axis=1)
    out_rate = rate or source_rate
    if out_rate != source_rate and len(samples):
        samples = soxr.resample(samples, source_rate, out_rate)
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return pcm.tobytes(), out_rate


def _to_float(raw: bytes, width: int) -> npt.NDArray[np.float64]:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    if width == 3:
        b = np.frombuffer(raw[: len(raw) - len(raw) % 3], np.uint8).reshape(-1, 3)
        value = b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (
            b[:, 2].astype(np.int32) << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    if width == 4:
        return np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)
    raise CallerError(f"{8 * width}-bit WAV samples are not supported")


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """Write 16-bit mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


class Recorder:
    """What the far end sent, as continuous PCM at the leg's rate.

    Frames arrive once per 20 ms tick while the far end's stream plays; when
    it pauses (silence suppression, a hold) the ticks in between become
    silence, so the recording keeps wall-clock time from its first frame.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._frame = silence(sample_rate * FRAME_MS // 1000)
        self._chunks: list[bytes] = []
        self._last: float | None = None
        self.frames = 0
        self.filled_frames = 0

    def feed(self, frame: AudioFrame) -> None:
        if self._last is not None:
            missing = round((frame.time - self._last) * 1000 / FRAME_MS) - 1
            missing = min(missing, int(MAX_GAP_SECONDS * 1000 / FRAME_MS))
            if missing > 0:
                self._chunks.append(self._frame * missing)
                self.filled_frames += missing
        self._last = frame.time
        self._chunks.append(frame.pcm)
        self.frames += 1

    @property
    def pcm(self) -> bytes:
        return b"".join(self._chunks)


@dataclass(slots=True)
class CallPlan:
    """When an answered call ends, and when its DTMF goes out (no clock inside).

    Feed it :meth:`answered` and :meth:`playback_done`; ask :meth:`next_deadline`
    when to look again and :meth:`due` whether it is time to hang up.

    Args:
        duration: Hang up this many seconds after the answer (``--duration``).
        plays: Whether a file is played; then the call ends ``linger`` seconds
            after it has played (unless ``duration`` says otherwise).
        max_duration: The safety limit when nothing else ends the call.
        dtmf_delay: Seconds after the answer to send DTMF.
    """

    duration: float | None = None
    plays: bool = False
    max_duration: float = DEFAULT_MAX_DURATION
    linger: float = DEFAULT_LINGER
    dtmf_delay: float = DEFAULT_DTMF_DELAY
    answered_at: float | None = None
    played_at: float | None = None

    def answered(self, now: float) -> None:
        self.answered_at = now

    def playback_done(self, now: float) -> None:
        if self.played_at is None:
            self.played_at = now

    @property
    def dtmf_at(self) -> float | None:
        return None if self.answered_at is None else self.answered_at + self.dtmf_delay

    def _ends(self) -> list[tuple[float, str]]:
        if self.answered_at is None:
            return []
        ends = [(self.answered_at + self.max_duration, "max_duration")]
        if self.duration is not None:
            ends.append((self.answered_at + self.duration, "duration"))
        elif self.plays and self.played_at is not None:
            ends.append((self.played_at + self.linger, "played"))
        return ends

    def next_deadline(self) -> float | None:
        ends = self._ends()
        return min(t for t, _ in ends) if ends else None

    def due(self, now: float) -> str | None:
        """Why the call should end now, or ``None``."""
        for at, why in sorted(self._ends()):
            if at <= now:
                return why
        return None


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What ``callstream call`` was asked to do (see the CLI for each option)."""

    target: str
    play: Path | None = None
    record: Path | None = None
    dtmf: str = ""
    dtmf_delay: float = DEFAULT_DTMF_DELAY
    duration: float | None = None
    codecs: tuple[str, ...] = DEFAULT_CODECS
    from_uri: str | None = None
    local_ip: str = "127.0.0.1"
    sip_port: int = 0
    rtp_ports: tuple[int, int] = RTP_PORTS
    timeout: float = DEFAULT_ANSWER_TIMEOUT
    max_duration: float = DEFAULT_MAX_DURATION
    linger: float = DEFAULT_LINGER


@dataclass(slots=True)
class CallSummary:
    """The one-line JSON ``callstream call`` prints.

    ``status``: ``answered``, ``failed`` (the far end refused: ``sip_status``),
    ``no_answer`` (``--timeout`` passed), ``cancelled`` (interrupted before an
    answer) or ``error`` (no usable answer).
    """

    status: str = "calling"
    sip_status: int | None = None
    reason: str = ""
    codec: str | None = None
    seconds: float = 0.0
    packets_sent: int = 0
    packets_received: int = 0
    dtmf_sent: str = ""
    dtmf_received: str = ""
    ended_by: str | None = None
    call_id: str | None = None
    recording: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "answered" else 1

    def to_json(self) -> str:
        data = asdict(self)
        data.update(data.pop("extra"))
        return json.dumps(data, separators=(",", ":"))


# -- the asyncio shell -----------------------------------------------------------


class Caller:
    """One ``callstream call`` run: SIP events in, its leg set up, the plan followed."""

    def __init__(
        self, options: CallOptions, codecs: tuple[Codec, ...], audio: tuple[bytes, int] | None,
        notify: Callable[[str], None],
    ) -> None:
        self.options = options
        self.codecs = codecs
        self.audio = audio
        self.notify = notify
        self.summary = CallSummary()
        self.plan = CallPlan(
            duration=options.duration, plays=audio is not None,
            max_duration=options.max_duration, linger=options.linger,
            dtmf_delay=options.dtmf_delay,
        )
        self.changed = asyncio.Event()
        self.finished = False
        self.hangup_sent = False
        self.transport: SipTransport | None = None
        self.leg: Leg | None = None
        self.pacer = Pacer()
        self.recorder: Recorder | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def signaling(self) -> SipTransport:
        assert self.transport is not None
        return self.transport

    @property
    def handle(self) -> str:
        return self.leg.handle if self.leg is not None else ""

    # Setup -------------------------------------------------------------------

    async def start(self, target: SipUri) -> None:
        options = self.options
        self.transport = await SipTransport.start(
            options.local_ip, options.sip_port, self.on_event,
            make_endpoint=functools.partial(sip.SipEndpoint, user_agent="callstream-call"),
        )
        # The allocator starts at a random pair of the range and tries them all, since
        # other programs on the machine may hold stretches of it.
        low, high = options.rtp_ports
        media = MediaOptions(host=options.local_ip, codecs=self.codecs,
                             jitter_prefetch_ms=JITTER_PREFETCH_MS, send_silence_when_idle=True)
        self.leg = leg = await Leg.open(LEG, MediaHub("call"), media,
                                        ports=PortAllocator(low, high), pacer=self.pacer,
                                        on_event=self.on_media)
        offer = leg.offer()
        local_host = self.signaling.local_addr[0]
        host = f"[{local_host}]" if ":" in local_host else local_host
        from_uri = options.from_uri or f"sip:callstream@{host}:{self.signaling.local_addr[1]}"
        with self.signaling.command() as now:
            leg.handle = self.signaling.endpoint.invite(
                target, from_uri=normalize_target(from_uri), sdp=offer, now=now,
                from_display="callstream call",
            )
        self.notify(f"calling {target.serialize()} from {from_uri}")

    # SIP events -------------------------------------------------------------

    def on_event(self, event: sip.SipEvent) -> None:
        if isinstance(event, sip.IncomingCall):
            with self.signaling.command() as now:
                self.signaling.endpoint.reject(event.handle, 486, "Busy Here", now)
            return
        if getattr(event, "handle", None) != self.handle or self.leg is None:
            return
        if isinstance(event, sip.CallProgress):
            self.notify(f"{event.status} {event.reason}")
        elif isinstance(event, sip.CallAnswered):
            self._answered(self.leg, event.sdp)
        elif isinstance(event, sip.CallFailed):
            self._failed(event.status, event.reason)
        elif isinstance(event, sip.DialogEnded):
            self.summary.ended_by = "remote" if event.reason is sip.EndReason.REMOTE_BYE else (
                self.summary.ended_by or "local")
            if event.reason not in (sip.EndReason.REMOTE_BYE, sip.EndReason.LOCAL_BYE):
                self.summary.reason = event.reason.value
            self._finish()
        elif isinstance(event, sip.ReinviteReceived):
            self.leg.renegotiate(self.signaling, event)
        elif isinstance(event, sip.DtmfReceived):
            self.summary.dtmf_received += event.digit
        self.changed.set()

    def on_media(self, event: SessionEvent) -> None:
        if isinstance(event, DtmfDigit):
            self.summary.dtmf_received += event.digit

    def _answered(self, leg: Leg, sdp: SdpSession | None) -> None:
        now = self.signaling.now()
        self.answered_at = now
        self.summary.status = "answered"
        self.summary.sip_status = 200
        dialog = self.signaling.endpoint.dialog(leg.handle)
        self.summary.call_id = dialog.call_id if dialog is not None else None
        try:
            params = leg.accept(sdp)
        except SipError as exc:
            self.summary.status = "error"
            self.summary.reason = f"unusable answer: {exc}"
            self.notify(self.summary.reason)
            self._hang_up("error")
            return
        self._start_media(leg)
        self.plan.answered(now)
        self.notify(f"answered: {params.codec}/{params.clock_rate}, "
                    f"media {params.remote_addr}:{params.remote_port}")

    def _start_media(self, leg: Leg) -> None:
        codec = leg.session.codec
        self.summary.codec = codec.name
        if self.options.record is not None:
            self.recorder = Recorder(codec.sample_rate)
            leg.hub.add_frame_callback(LEG, Track.INBOUND, self.recorder.feed)
        if self.audio is not None and self.options.play is not None:
            pcm, rate = self.audio
            if rate != codec.sample_rate:
                # Resampled from the file's own samples, as load_wav(path, rate) does.
                try:
                    pcm, _ = load_wav(self.options.play, codec.sample_rate)
                except CallerError as exc:
                    self.notify(str(exc))
                    pcm = b""
            seconds = len(pcm) / (2 * codec.sample_rate)
            source = QueueSource(codec.sample_rate, max_seconds=seconds + 1)
            source.feed(pcm)
            source.mark(self._played)
            leg.hub.add_source(LEG, source)
        if self.options.dtmf:
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(self.options.dtmf_delay, self._send_dtmf))

    def _played(self) -> None:
        self.plan.playback_done(self.signaling.now())
        self.changed.set()

    def _send_dtmf(self) -> None:
        if self.finished or self.hangup_sent or self.leg is None:
            return
        digits = self.options.dtmf
        session = self.leg.session
        if session.dtmf_payload_type is not None:
            session.send_dtmf(digits)
            self.summary.dtmf_sent = digits
            return
        # No telephone-event in the answer: SIP INFO, one digit at a time.
        loop = asyncio.get_running_loop()
        for i, digit in enumerate(digits):
            self._timers.append(loop.call_later(i * INFO_DIGIT_GAP, self._send_info, digit))

    def _send_info(self, digit: str) -> None:
        if self.finished or self.hangup_sent:
            return
        body = f"Signal={digit}\r\nDuration=160\r\n".encode()
        with self.signaling.command() as now:
            self.signaling.endpoint.send_info(self.handle, "application/dtmf-relay", body, now)
        self.summary.dtmf_sent += digit

    def _failed(self, status: int, reason: str) -> None:
        if self.summary.status == "calling" or status != 487:
            self.summary.status = "failed"
        self.summary.sip_status = status
        self.summary.reason = self.summary.reason or f"{status} {reason}"
        self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            if self.ended_at is None:
                self.ended_at = self.signaling.now()
            self.changed.set()

    # Ending --------------------------------------------------------------------

    def _hang_up(self, why: str) -> None:
        if self.hangup_sent or self.finished:
            return
        self.hangup_sent = True
        if self.summary.status == "calling":
            self.summary.status = "no_answer" if why == "timeout" else "cancelled"
            self.summary.reason = ("no answer within "
                                   f"{self.options.timeout:g} s" if why == "timeout" else why)
        self.summary.ended_by = self.summary.ended_by or "local"
        self.summary.extra["hangup"] = why
        self.ended_at = self.signaling.now()  # talk time ends here, not at the BYE's 200
        try:
            with self.signaling.command() as now:
                self.signaling.endpoint.hangup(self.handle, now)
        except InvalidCallState:
            self._finish()

    async def run(self, interrupted: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer_by = started + self.options.timeout
        give_up_at: float | None = None
        waiter = asyncio.ensure_future(interrupted.wait())
        try:
            while not self.finished:
                now = loop.time()
                if interrupted.is_set():
                    self._hang_up("interrupted")
                elif self.answered_at is None:
                    if now >= answer_by:
                        self._hang_up("timeout")
                elif (why := self.plan.due(now)) is not None:
                    self._hang_up(why)
                if self.hangup_sent and give_up_at is None:
                    give_up_at = now + END_WAIT
                if give_up_at is not None and now >= give_up_at:
                    break  # the far end never answered our BYE/CANCEL
                deadlines = [d for d in (
                    answer_by if self.answered_at is None else None,
                    self.plan.next_deadline(), give_up_at) if d is not None]
                wait = max(0.0, min(deadlines) - now) + 0.001 if deadlines else None
                self.changed.clear()
                changed = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait({changed, waiter}, timeout=wait,
                                   return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            waiter.cancel()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        end = self.ended_at if self.ended_at is not None else asyncio.get_running_loop().time()
        if self.answered_at is not None:
            self.summary.seconds = round(end - self.answered_at, 3)
        if self.leg is not None:
            session = self.leg.session
            self.summary.packets_sent = session.packets_sent
            self.summary.packets_received = session.packets_received
            self.leg.close()
        self.pacer.stop()
        if self.transport is not None:
            await self.transport.close()
        if self.options.record is not None:
            rate = self.recorder.sample_rate if self.recorder else (
                get_codec(self.summary.codec or "PCMU").sample_rate)
            write_wav(self.options.record, self.recorder.pcm if self.recorder else b"", rate)
            self.summary.recording = str(self.options.record)


async def place_call(
    options: CallOptions,
    *,
    interrupted: asyncio.Event | None = None,
    notify: Callable[[str], None] | None = None,
) -> CallSummary:
    """Place one call as ``options`` says and return its summary.

    Args:
        options: The call.
        interrupted: Set it to hang up (BYE once answered, else CANCEL).
        notify: Called with one-line progress messages.

    Raises:
        CallerError: Bad options or input (checked before anything is sent).
        OSError: The SIP socket cannot be bound.
        PortsExhaustedError: No RTP port pair could be bound.
    """
    codecs = parse_codecs(options.codecs)
    target = normalize_target(options.target)
    if options.from_uri is not None:
        normalize_target(options.from_uri)
    try:
        list(plan_dtmf(options.dtmf, clock_rate=8000))  # validates the digits
    except InvalidDtmfError as exc:
        raise CallerError(f"bad --dtmf {options.dtmf!r}: {exc}") from exc
    for name, value in (("timeout", options.timeout), ("max-duration", options.max_duration)):
        if value <= 0:
            raise CallerError(f"--{name} must be positive")
    if options.duration is not None and options.duration <= 0:
        raise CallerError("--duration must be positive")
    if options.record is not None and not options.record.parent.is_dir():
        raise CallerError(f"can't record to {str(options.record)!r}: no such directory")
    audio = load_wav(options.play) if options.play is not None else None
    call = Caller(options, codecs, audio, notify or (lambda _line: None))
    try:
        await call.start(target)
        await call.run(interrupted or asyncio.Event())
    finally:
        await call.close()
    return call.summary
