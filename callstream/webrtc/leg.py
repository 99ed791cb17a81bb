"""One browser's peer connection as a leg of a media hub.

The hub sees an ordinary leg at :data:`~callstream.webrtc.audio.HUB_RATE` (16 kHz,
the L16 rate): taps, streams, forks, transcription and bridges work on it unchanged.
Between the hub and aiortc's Opus (48 kHz) sit the hub's resamplers
(:mod:`callstream.webrtc.audio`: libswresample, ~1 ms of delay each way):

* **inbound** — a task reads the browser's decoded audio (aiortc hands 20 ms
  frames, 48 kHz, stereo), converts it to mono 16 kHz and pushes
  each 20 ms frame into the hub at once (20 ms in, 20 ms out: nothing waits for the
  next frame); the same audio goes to packet taps as L16 RTP
  (so a fork or an L16 stream gets the bytes a SIP L16 leg would give them).
  aiortc's receive jitter buffer waits for :data:`RECEIVE_PREFETCH` packets beyond
  the one it hands out (its default, 4, is 80 ms before the first byte reaches us);
* **outbound** — aiortc's sender pulls :class:`HubTrack` every 20 ms; each pull
  ticks the hub, converts the leg's frame to 48 kHz and hands it to the Opus
  encoder; nothing to play is silence. Pulls keep to a 20 ms grid: a
  late pull is served at once, up to :data:`MAX_CATCH_UP_SECS` behind; beyond that the
  overdue frames are dropped and counted, and the RTP timestamps skip them, so delay
  cannot creep, here or in the browser's jitter buffer.

DTMF: the browser's ``RTCDTMFSender`` sends RFC 4733 telephone-event packets,
which aiortc does not decode. :func:`enable_telephone_event` lets aiortc's
negotiation accept the codec, and the leg reads those packets off the receiver
before aiortc sees them, through the same :class:`~callstream.media.dtmf.DtmfDetector`
the SIP legs use.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from callstream.calls.features import LegMedia
from callstream.media.codecs import FRAMES_PER_SECOND, L16_16K_PT
from callstream.media.codecs.pcm import byteswap
from callstream.media.codecs.resample import Resampler
from callstream.media.dtmf import DtmfDetector, TelephoneEvent
from callstream.media.exceptions import CodecError, DtmfParseError
from callstream.media.hub import MediaHub, Track
from callstream.media.rtp import RtpView, build_packet
from callstream.webrtc.audio import HUB_RATE, OPUS_RATE, FromBrowser
from callstream.webrtc.offer import Offer

log = logging.getLogger(__name__)

HUB_FRAME_BYTES = 2 * HUB_RATE // FRAMES_PER_SECOND
FRAME_SECS = 1 / FRAMES_PER_SECOND
#: A pull this late is served at once (frames back to back); later, the overdue frames go
#: and the RTP timestamps jump with them: a frame sent that late with the next timestamp
#: would tell the browser's jitter buffer to hold that much more, for many seconds after.
MAX_CATCH_UP_SECS = 5 * FRAME_SECS
OPUS_FRAME_SAMPLES = OPUS_RATE // FRAMES_PER_SECOND
#: What call.answered reports of the wire.
WIRE_MEDIA = {"codec": "OPUS", "sampling_rate": OPUS_RATE}
_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
#: Packets aiortc's audio jitter buffer holds beyond the one it hands out (its own
#: default: 4, i.e. 80 ms). One rides out reordering by a packet; a browser paces its
#: packets evenly, and what jitter there is the hub's tick absorbs.
RECEIVE_PREFETCH = 1
#: aiortc's audio jitter buffer size (packets), kept as aiortc 1.16 has it.
RECEIVE_CAPACITY = 16


def ice_servers(urls: list[str], username: str | None,
                credential: str | None) -> list[RTCIceServer]:
    """aiortc's STUN/TURN servers for ``webrtc_ice_servers`` (the turn: ones with the
    username and credential)."""
    return [RTCIceServer(urls=url, username=username, credential=credential)
            if url.startswith("turn") else RTCIceServer(urls=url) for url in urls]


def enable_telephone_event() -> None:
    """Let aiortc accept telephone-event/48000 in answers (once per process).

    aiortc negotiates only codecs in its module-level list; with this entry the
    answer keeps the browser's telephone-event, so ``RTCDTMFSender`` can send.
    aiortc never sends with it (the sender takes the first codec, Opus).
    """
    audio = CODECS["audio"]
    if not any(c.mimeType.lower() == "audio/telephone-event" for c in audio):
        audio.append(RTCRtpCodecParameters(
            mimeType="audio/telephone-event", clockRate=OPUS_RATE, channels=1, payloadType=101))


class HubTrack(MediaStreamTrack):
    """What the browser hears: the hub's outbound frames for the leg, at 48 kHz."""

    kind = "audio"

    def __init__(self, leg: WebRtcLeg) -> None:
        super().__init__()
        self._leg = leg
        self._converter = Resampler(HUB_RATE, OPUS_RATE)
        self._deadline: float | None = None
        self._pts = 0
        self.dropped_frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deadline = now if self._deadline is None else self._deadline + FRAME_SECS
        late = now - self._deadline
        if late > MAX_CATCH_UP_SECS:
            # A stall: the overdue frames are dropped (counted), not queued behind, and
            # what follows carries the timestamp of when it is sent.
            missed = int(late / FRAME_SECS)
            self.dropped_frames += missed
            self._leg.skip(missed)
            self._pts += missed * OPUS_FRAME_SAMPLES
            self._deadline = now
        elif late < 0:
            await asyncio.sleep(-late)
        # else a little late (a busy loop, the encoder's thread): catch up back to back
        pcm = self._converter.process(self._leg.tick(loop.time()))
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = OPUS_RATE
        frame.time_base = _TIME_BASE
        frame.pts = self._pts
        self._pts += len(pcm) // 2
        return frame


class WebRtcLeg:
    """A browser's audio, in a hub of its own.

    Args:
        name: The leg's name in the hub (the call leg id).
        hub: The call's hub; the leg closes it.
        ice_servers: STUN/TURN servers for the peer connection.
        on_dtmf: Called with each digit the browser sends.
        on_gone: Called once when the browser's side goes away (closed, failed,
            its audio ended); not called after :meth:`close`.
    """

    def __init__(self, name: str, hub: MediaHub, ice_servers: list[RTCIceServer],
                 on_dtmf: Callable[[str], None], on_gone: Callable[[str], None]) -> None:
        self.name = name
        self.hub = hub
        self.on_dtmf = on_dtmf
        self.on_gone = on_gone
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self.track = HubTrack(self)
        self.closed = False
        self.answered = False  # until then the browser hears silence, the hub is not ticked
        self._detector = DtmfDetector()
        self._dtmf_pts: frozenset[int] = frozenset()
        self._inbound = _Packetizer()
        self._outbound = _Packetizer()
        self._silence = bytes(HUB_FRAME_BYTES)
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        hub.add_leg(name, HUB_RATE)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer: Offer) -> str:
        """Run the browser's offer; return our answer (ICE candidates gathered in it)."""
        self._dtmf_pts = offer.dtmf_payload_types
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.sender.replaceTrack(self.track)
                transceiver.direction = "sendrecv"
                self._intercept_dtmf(transceiver.receiver)
                shorten_jitter_buffer(transceiver.receiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def media(self) -> LegMedia:
        return LegMedia(hub=self.hub, leg=self.name, codec="L16", sample_rate=HUB_RATE,
                        payload_type=L16_16K_PT)

    # -- media path ------------------------------------------------------------

    def tick(self, now: float) -> bytes:
        """The leg's next 20 ms for the browser (silence until answered or when idle)."""
        if not self.answered or self.closed:
            return self._silence
        pcm = self._silence
        for leg, frame in self.hub.tick(now):
            if leg == self.name and frame is not None:
                pcm = frame
                packet = RtpView.of_built(self._outbound.packet(pcm))
                self.hub.push_packet(self.name, Track.OUTBOUND, packet, now)
        return pcm

    def skip(self, frames: int) -> None:
        """The sender missed ``frames`` pulls: the hub's sources drop that much audio, so
        what the browser hears stays on time rather than as late as the stall was long."""
        if self.answered and not self.closed:
            self.hub.skip(frames)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        converter = FromBrowser()
        pending = bytearray()
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            if not isinstance(frame, av.AudioFrame):
                continue
            try:
                pending += converter.process(frame)
            except CodecError as exc:
                self._gone(f"the browser's audio cannot be converted: {exc}")
                return
            while len(pending) >= HUB_FRAME_BYTES:
                pcm = bytes(pending[:HUB_FRAME_BYTES])
                del pending[:HUB_FRAME_BYTES]
                if self.closed:
                    return
                now = loop.time()
                packet = RtpView.of_built(self._inbound.packet(pcm))
                self.hub.push_packet(self.name, Track.INBOUND, packet, now)
                self.hub.push_inbound(self.name, pcm, now)
        self._gone("the browser's audio ended")

    def _intercept_dtmf(self, receiver: Any) -> None:
        # aiortc has no telephone-event decoder: take those packets before it looks.
        handle: Callable[[RtpPacket, int], Awaitable[None]] = receiver._handle_rtp_packet

        async def handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            if packet.payload_type in self._dtmf_pts:
                self._on_telephone_event(packet)
            else:
                await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp

    def _on_telephone_event(self, packet: RtpPacket) -> None:
        try:
            event = TelephoneEvent.parse(packet.payload)
        except DtmfParseError:
            return
        digit = self._detector.feed(event, packet.timestamp, asyncio.get_running_loop().time())
        if digit is not None and not self.closed:
            self.on_dtmf(digit.digit)

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._gone(f"the peer connection is {self.pc.connectionState}")

    def _gone(self, why: str) -> None:
        if not self.closed:
            log.info("%s: %s", self.name, why)
            self.close()
            self.on_gone(why)

    def close(self) -> None:
        """Close the peer connection (the browser sees it closed) and the hub."""
        if self.closed:
            return
        self.closed = True
        self.track.stop()
        self.hub.close()
        # Kept: a task nobody references may be collected before it has run.
        self._closing = asyncio.get_running_loop().create_task(self.pc.close())
        self._closing.add_done_callback(_log_failure)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()


def shorten_jitter_buffer(receiver: Any) -> None:
    """Give an aiortc audio receiver a jitter buffer of :data:`RECEIVE_PREFETCH` packets.

    aiortc 1.16 (pinned) makes ``JitterBuffer(capacity=16, prefetch=4)`` in the
    receiver's constructor, with no setting; this swaps it before the first packet.
    """
    attribute = "_RTCRtpReceiver__jitter_buffer"
    if not isinstance(getattr(receiver, attribute, None), JitterBuffer):
        raise RuntimeError("aiortc's RTCRtpReceiver has no jitter buffer where 1.16 has it")
    setattr(receiver, attribute, JitterBuffer(capacity=RECEIVE_CAPACITY,
                                              prefetch=RECEIVE_PREFETCH))


class _Packetizer:
    """One direction's PCM as L16 RTP packets, for packet taps (forks, L16 streams)."""

    __slots__ = ("_sequence", "_ssrc", "_timestamp")

    def __init__(self) -> None:
        rng = random.SystemRandom()
        self._sequence = rng.randrange(1 << 16)
        self._timestamp = rng.randrange(1 << 32)
        self._ssrc = rng.randrange(1 << 32)

    def packet(self, pcm: bytes) -> bytes:
        data = build_packet(L16_16K_PT, False, self._sequence, self._timestamp, self._ssrc,
                            byteswap(pcm))
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + len(pcm) // 2) & 0xFFFFFFFF
        return data


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a peer connection failed", exc_info=task.exception())
