"""A sans-I/O RTP/RTCP session for one call leg.

Theory of operation
-------------------
:class:`RtpSession` is the protocol core of one leg's media: it never reads
a clock, opens a socket or creates a task. The I/O layer
(:mod:`callstream.media.transport`) drives it:

* **In.** ``receive_rtp(data, addr, now)`` and ``receive_rtcp(data, addr, now)``
  take datagrams as they arrive. Malformed packets are counted
  (``malformed_dropped``) and dropped; no parse error escapes.
* **Playout.** ``playout(now)`` is called once per 20 ms tick and returns one
  20 ms frame of decoded PCM from the jitter buffer (with concealment), or
  ``None`` while nothing is playing. Audio does not travel as events: a
  per-packet event object would be an allocation on the hot path for nothing.
  ``playout_unheard(now)`` plays a tick out that nobody listens to (no decode
  where the codec allows).
* **Out.** ``send_frame(pcm, now)`` encodes one 20 ms frame into an RTP packet
  (sequence number, timestamp, SSRC; the marker on the first packet and after
  a gap); ``skip_frame(now)`` lets a tick pass in silence. The packets wait in
  ``rtp_out``, drained by ``datagrams_to_send()``; RTCP in ``rtcp_out``,
  drained by ``rtcp_datagrams_to_send()``.
* **DTMF.** ``send_dtmf(digits)`` queues RFC 4733 events; they go out on the
  next ticks in place of audio. Received key presses are reported once each
  as :class:`~callstream.media.dtmf.DtmfDigit` events.
* **Timers.** ``start(now)`` arms them; ``next_deadline()`` says when
  ``handle_timeout(now)`` is due: periodic RTCP reports (RFC 3550 §6.2, 5 s
  randomized to 0.5-1.5 of it) and the no-media timeout.
* **Events.** ``events_received()`` drains :data:`SessionEvent` objects.

Symmetric RTP: the session sends to the address the SDP gave until it has
learned the peer's source, then to that source (NATs rewrite it). Whose
packets are accepted is :mod:`callstream.media.latch`'s policy (strict RTP):
the SDP's address at once, another only after a probation (dropped meanwhile,
``probation_dropped``), and then that source only: packets from anywhere else
are dropped (``foreign_dropped``, ``rtcp_foreign_dropped``) until the SDP
changes (:meth:`RtpSession.set_remote_address`).

Note the gotcha: both directions may carry the same SSRC (SIPp plays one pcap
both ways), so streams are told apart by socket, never by SSRC.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass

from callstream.media.clock import ntp_from_unix, ntp_middle, seconds_to_short_ntp
from callstream.media.codecs import TELEPHONE_EVENT_PT, CodecInfo
from callstream.media.codecs.pcm import silence
from callstream.media.dtmf import DtmfDetector, DtmfDigit, DtmfPlan, TelephoneEvent, plan_dtmf
from callstream.media.exceptions import (
    DtmfParseError,
    MediaStateError,
    RtcpParseError,
    RtpParseError,
)
from callstream.media.jitter import JITTER_PREFETCH_MS, NO_AUDIO, JitterBuffer
from callstream.media.latch import SourceLatch, StrictRtp, Verdict
from callstream.media.rtcp import (
    SDES_CNAME,
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    SdesChunk,
    SdesItem,
    SenderInfo,
    parse_rtcp,
    serialize_rtcp,
)
from callstream.media.rtp import (
    MAX_PAYLOAD_TYPE,
    PLAIN_FIRST_OCTET,
    RTCP_MUX_FIRST,
    RTCP_MUX_LAST,
    RTP_HEADER,
    RTP_HEADER_LENGTH,
    RtpView,
    build_packet,
    parse_header,
    rtp_view,
)
from callstream.media.stats import CallQuality, ReceiverStats, estimate_mos

__all__ = [
    "DEFAULT_MEDIA_TIMEOUT",
    "RTCP_INTERVAL",
    "Address",
    "ByeReceived",
    "DtmfDigit",
    "RemoteAddressChanged",
    "RtpSession",
    "RtpStarted",
    "RtpTimeout",
    "SessionEvent",
    "SsrcChanged",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int] | tuple[str, int, int, int]
"""A socket address as asyncio gives it (IPv4 pair or IPv6 4-tuple)."""

# RFC 3550 §6.2: 5 s minimum interval, randomized to 0.5-1.5 of it (§6.3.1).
RTCP_INTERVAL = 5.0
RTCP_JITTER_LOW = 0.5
RTCP_JITTER_HIGH = 1.5
DEFAULT_MEDIA_TIMEOUT = 30.0
MAX_RTT = 60.0  # an RTT computed above this is a clock mix-up, not a measurement
_MASK32 = 0xFFFFFFFF
_pack_header = RTP_HEADER.pack


@dataclass(frozen=True, slots=True)
class RtpStarted:
    """The first accepted RTP packet arrived; the session learned ``address``."""

    address: Address
    ssrc: int
    at: float


@dataclass(frozen=True, slots=True)
class RemoteAddressChanged:
    """The peer's media now comes from (and goes to) ``new``."""

    old: Address
    new: Address
    at: float


@dataclass(frozen=True, slots=True)
class SsrcChanged:
    """The peer's stream restarted with a new SSRC (re-INVITE, transfer, ...)."""

    old: int
    new: int
    at: float


@dataclass(frozen=True, slots=True)
class RtpTimeout:
    """No RTP for ``idle`` seconds (reported once until media resumes)."""

    idle: float
    at: float


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The peer sent an RTCP BYE for its stream."""

    reason: str | None
    at: float


SessionEvent = (
    RtpStarted | RemoteAddressChanged | SsrcChanged | RtpTimeout | ByeReceived | DtmfDigit
)


class RtpSession:
    """The RTP/RTCP state of one call leg (sans-I/O).

    Args:
        codec: the negotiated audio codec.
        payload_type: its payload type in this session (default: the codec's).
        dtmf_payload_type: the negotiated telephone-event PT, or None.
        remote_address: where to send RTP until the peer's packets say otherwise.
        remote_rtcp_address: where to send RTCP (default: RTP port + 1).
        rtcp_mux: RTP and RTCP share one port (RFC 5761).
        strict_rtp: whose packets to accept (:class:`~callstream.media.latch.StrictRtp`).
        ssrc: our SSRC (random when None).
        cname: our SDES CNAME.
        media_timeout: seconds without RTP before :class:`RtpTimeout`; None disables.
        rtcp_interval: the nominal RTCP report interval in seconds.
        jitter_prefetch_ms: the jitter buffer's depth.
        wallclock_offset: Unix time minus the ``now`` clock, from
            :func:`callstream.media.clock.wallclock_offset`; for RTCP NTP times.
            None until known: :func:`~callstream.media.transport.open_rtp_endpoint`
            fills it in.
        rng: source of the random SSRC, sequence number, timestamp and
            RTCP jitter (tests pass a seeded one).
        name: a tag for log lines (the call leg id).
    """

    __slots__ = (
        "_audio_last",
        "_closed",
        "_codec",
        "_detector",
        "_dtmf_event_ts",
        "_dtmf_plan",
        "_dtmf_pt",
        "_encoder",
        "_events",
        "_frame_ticks",
        "_jitter",
        "_jitter_prefetch_ms",
        "_last_rx",
        "_last_send_at",
        "_last_send_ts",
        "_last_sr_at",
        "_last_sr_mid",
        "_latch",
        "_latched_rtcp",
        "_marker",
        "_media_timeout",
        "_pt",
        "_remote_rtcp",
        "_remote_rtp",
        "_remote_ssrc",
        "_retired",
        "_rng",
        "_rtcp_due",
        "_rtcp_interval",
        "_rtcp_mux",
        "_sdp_rtp",
        "_sending",
        "_sent_at_last_report",
        "_seq",
        "_silence_length",
        "_silence_payload",
        "_silence_pcm",
        "_started",
        "_stats",
        "_timed_out",
        "_ts",
        "bytes_received",
        "bytes_sent",
        "cname",
        "dtmf_received",
        "dtmf_sent",
        "foreign_dropped",
        "malformed_dropped",
        "name",
        "octets_sent",
        "packets_received",
        "packets_sent",
        "probation_dropped",
        "remote_cname",
        "remote_report",
        "rtcp_foreign_dropped",
        "rtcp_malformed",
        "rtcp_out",
        "rtcp_received",
        "rtcp_sent",
        "rtp_out",
        "rtt",
        "skipped_out",
        "ssrc",
        "telephone_event_packets",
        "unknown_payload_type",
        "wallclock_offset",
    )

    def __init__(
        self,
        codec: CodecInfo,
        *,
        payload_type: int | None = None,
        dtmf_payload_type: int | None = TELEPHONE_EVENT_PT,
        remote_address: Address | None = None,
        remote_rtcp_address: Address | None = None,
        rtcp_mux: bool = False,
        strict_rtp: StrictRtp = StrictRtp.LEARN,
        ssrc: int | None = None,
        cname: str | None = None,
        media_timeout: float | None = DEFAULT_MEDIA_TIMEOUT,
        rtcp_interval: float = RTCP_INTERVAL,
        jitter_prefetch_ms: int = JITTER_PREFETCH_MS,
        wallclock_offset: float | None = None,
        rng: random.Random | None = None,
        name: str = "",
    ) -> None:
        self._rng = rng if rng is not None else random.SystemRandom()
        self.name = name
        self._codec = codec
        self._pt = codec.payload_type if payload_type is None else payload_type
        self._dtmf_pt = dtmf_payload_type
        self._encoder = codec.new_encoder()
        # Idle ticks send silence (send_silence_when_idle): a stateless encoder's
        # silence is encoded once. None when the encoder keeps state (G.722).
        self._silence_pcm = silence(codec.frame_samples) if self._encoder.stateless else None
        self._silence_payload = (
            self._encoder.encode(self._silence_pcm) if self._silence_pcm is not None else b"")
        self._silence_length = len(self._silence_payload)
        self._frame_ticks = codec.frame_ticks
        self._jitter_prefetch_ms = jitter_prefetch_ms
        self._jitter = JitterBuffer(codec, codec.new_decoder(), prefetch_ms=jitter_prefetch_ms)
        self._stats = ReceiverStats(codec.clock_rate)
        self._detector = DtmfDetector()
        self._sdp_rtp = remote_address
        self._remote_rtp = remote_address
        self._remote_rtcp = remote_rtcp_address
        self._rtcp_mux = rtcp_mux
        self._latch = SourceLatch(
            strict_rtp, remote_address, remote_rtcp_address, rtcp_mux=rtcp_mux
        )
        self._latched_rtcp: Address | None = None
        self._remote_ssrc: int | None = None
        # RFC 3550 §5.1: SSRC, first sequence number and timestamp are random.
        self.ssrc = self._rng.getrandbits(32) if ssrc is None else ssrc
        self._seq = self._rng.getrandbits(16)
        self._ts = self._rng.getrandbits(32)
        self.cname = cname if cname is not None else f"callstream-{self.ssrc:08x}"
        self._marker = True
        self._dtmf_plan: deque[DtmfPlan] = deque()
        self._dtmf_event_ts = 0
        self._media_timeout = media_timeout
        self._rtcp_interval = rtcp_interval
        self.wallclock_offset = wallclock_offset
        self._started = False
        self._closed = False
        self._sending = True
        self._audio_last = False
        self._timed_out = False
        self._rtcp_due = 0.0
        self._last_rx = 0.0
        self._last_send_at: float | None = None
        self._last_send_ts = 0
        self._last_sr_mid = 0
        self._last_sr_at = 0.0
        self._sent_at_last_report = 0
        self._retired = _Retired()
        self._events: list[SessionEvent] = []
        #: Datagrams waiting for the RTP and the RTCP socket. The I/O layer sends
        #: and clears them (the pacer's tick reads them without a call), or drains
        #: them with datagrams_to_send() and rtcp_datagrams_to_send().
        self.rtp_out: list[tuple[bytes, Address]] = []
        self.rtcp_out: list[tuple[bytes, Address]] = []
        self.remote_cname: str | None = None
        self.remote_report: ReportBlock | None = None
        self.rtt: float | None = None
        # Counters (plain attributes; the metrics layer reads them).
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.octets_sent = 0
        self.malformed_dropped = 0
        self.foreign_dropped = 0
        self.probation_dropped = 0
        self.rtcp_foreign_dropped = 0
        self.unknown_payload_type = 0
        self.rtcp_received = 0
        self.rtcp_sent = 0
        self.rtcp_malformed = 0
        self.skipped_out = 0
        self.dtmf_received = 0
        #: RFC 4733 packets received: apart from audio and from the jitter discards.
        self.telephone_event_packets = 0
        self.dtmf_sent = 0

    # -- properties (read-only views) ------------------------------------

    @property
    def codec(self) -> CodecInfo:
        """The negotiated audio codec."""
        return self._codec

    @property
    def payload_type(self) -> int:
        """The audio payload type in this session."""
        return self._pt

    @property
    def dtmf_payload_type(self) -> int | None:
        """The telephone-event payload type, or None when not negotiated."""
        return self._dtmf_pt

    @property
    def remote_address(self) -> Address | None:
        """Where RTP goes: the latched source, else the SDP address."""
        return self._remote_rtp

    @property
    def remote_ssrc(self) -> int | None:
        """The SSRC of the peer's current stream."""
        return self._remote_ssrc

    @property
    def stats(self) -> ReceiverStats:
        """RFC 3550 statistics of the peer's current stream."""
        return self._stats

    @property
    def jitter_buffer(self) -> JitterBuffer:
        """The inbound jitter buffer (its counters: lost, late, ...)."""
        return self._jitter

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def has_events(self) -> bool:
        """Whether ``events_received()`` has something to return."""
        return bool(self._events)

    @property
    def dtmf_pending(self) -> bool:
        """Whether DTMF ticks are still queued for sending."""
        return bool(self._dtmf_plan)

    # -- input -------------------------------------------------------------

    def receive_rtp(self, data: bytes, addr: Address, now: float) -> RtpView | None:
        """Take one datagram from the RTP socket.

        Returns:
            The packet, parsed, when it was a valid RTP packet of this session's
            peer (else None): the caller forwards exactly those to taps that want
            wire bytes, without parsing them again.
        """
        if self._closed:
            return None
        length = len(data)
        if self._rtcp_mux and length > 1 and RTCP_MUX_FIRST <= data[1] <= RTCP_MUX_LAST:
            self.receive_rtcp(data, addr, now)
            return None
        if length >= RTP_HEADER_LENGTH and data[0] == PLAIN_FIRST_OCTET:
            # The common packet, read in place (what parse_header would say of it).
            _, pt, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
            pt &= MAX_PAYLOAD_TYPE
            start, end = RTP_HEADER_LENGTH, length
        else:
            try:
                pt, _marker, seq, ts, ssrc, start, end = parse_header(data)
            except RtpParseError as exc:
                self.malformed_dropped += 1
                logger.debug("%s < malformed RTP from %s: %s", self.name, addr, exc)
                return None
        if addr != self._latch.source and not self._accept_source(addr, ssrc, seq, now):
            return None
        view = rtp_view((data, pt, start, end))
        self.packets_received += 1
        self.bytes_received += length
        self._last_rx = now
        self._timed_out = False
        if ssrc != self._remote_ssrc:
            if pt == self._dtmf_pt and self._remote_ssrc is not None:
                # Some senders (SIPp's pcaps among them) send telephone-events
                # under their own SSRC: detect the key, leave the audio stream be.
                self._receive_dtmf(data[start:end], ts, now)
                return view
            self._new_source(ssrc, now)
        if pt == self._pt:
            self._stats.update(seq, ts, now)
            self._jitter.push(seq, data[start:end])
            self._audio_last = True
        elif pt == self._dtmf_pt:
            self._stats.update(seq, ts, now, timing=False)
            # Right after audio, the sender may be keeping its audio going (baresip):
            # the event takes no time. Event after event, it suppresses audio meanwhile.
            self._jitter.push(seq, NO_AUDIO if self._audio_last else None)
            self._audio_last = False
            self.telephone_event_packets += 1
            self._receive_dtmf(data[start:end], ts, now)
        else:
            # Comfort noise or an unnegotiated PT: it holds a sequence number,
            # so it plays as silence rather than counting as a loss.
            self.unknown_payload_type += 1
            self._stats.update(seq, ts, now, timing=False)
            self._jitter.push(seq, None)
        return view

    def _accept_source(self, addr: Address, ssrc: int, seq: int, now: float) -> bool:
        # Off the hot path: only packets from other than the locked source get here.
        latch = self._latch
        old = latch.source
        verdict = latch.check(addr, seq, now - self._last_rx)
        if verdict is Verdict.PROBATION:
            self.probation_dropped += 1
            return False
        if verdict is Verdict.FOREIGN:
            self.foreign_dropped += 1
            # Once loudly per leg (an attack sends thousands); the count is on /metrics.
            level = logging.WARNING if self.foreign_dropped == 1 else logging.DEBUG
            logger.log(level, "%s < RTP from %s dropped: the source is locked to %s"
                       " (strict_rtp=%s)", self.name, addr, old, latch.mode)
            return False
        self._remote_rtp = addr
        self._latched_rtcp = None
        if old is None:
            if not latch.is_expected(addr):
                logger.info("%s < RTP source %s learned on probation (the SDP named %s)",
                            self.name, addr, self._sdp_rtp)
            self._events.append(RtpStarted(addr, ssrc, now))
        else:
            logger.info("%s < RTP source moved from %s to %s (strict_rtp=%s)",
                        self.name, old, addr, latch.mode)
            self._events.append(RemoteAddressChanged(old, addr, now))
        return True

    def _new_source(self, ssrc: int, now: float) -> None:
        old = self._remote_ssrc
        self._remote_ssrc = ssrc
        if old is None:
            return
        self._retired.add(self._stats, self._jitter)
        self._stats = ReceiverStats(self._codec.clock_rate)
        self._jitter = JitterBuffer(
            self._codec, self._codec.new_decoder(), prefetch_ms=self._jitter_prefetch_ms
        )
        self._detector.reset()
        self._last_sr_mid = 0
        self._events.append(SsrcChanged(old, ssrc, now))

    def _receive_dtmf(self, payload: bytes, timestamp: int, now: float) -> None:
        try:
            event = TelephoneEvent.parse(payload)
        except DtmfParseError as exc:
            self.malformed_dropped += 1
            logger.debug("%s < malformed telephone-event: %s", self.name, exc)
            return
        digit = self._detector.feed(event, timestamp, now)
        if digit is not None:
            self.dtmf_received += 1
            self._events.append(digit)

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram from the RTCP socket (or a muxed one)."""
        if self._closed:
            return
        try:
            packets = parse_rtcp(data)
        except RtcpParseError as exc:
            self.rtcp_malformed += 1
            logger.debug("%s < malformed RTCP from %s: %s", self.name, addr, exc)
            return
        if not self._latch.accepts_rtcp(addr):
            self.rtcp_foreign_dropped += 1
            logger.debug("%s < RTCP from %s dropped: not the peer's", self.name, addr)
            return
        self.rtcp_received += 1
        if self._latch.mode is not StrictRtp.STRICT and not self._rtcp_mux:
            self._latched_rtcp = addr
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                if self._remote_ssrc is None or packet.ssrc == self._remote_ssrc:
                    self._last_sr_mid = ntp_middle(packet.sender_info.ntp_timestamp)
                    self._last_sr_at = now
                self._take_reports(packet.reports, now)
            elif isinstance(packet, RtcpReceiverReport):
                self._take_reports(packet.reports, now)
            elif isinstance(packet, RtcpSourceDescription):
                if self._remote_ssrc is not None:
                    cname = packet.cname(self._remote_ssrc)
                    if cname is not None:
                        self.remote_cname = cname
            elif isinstance(packet, RtcpBye) and (
                self._remote_ssrc is None or self._remote_ssrc in packet.sources
            ):
                reason = None
                if packet.reason is not None:
                    reason = packet.reason.decode("utf-8", "replace")
                self._events.append(ByeReceived(reason, now))

    def _take_reports(self, reports: tuple[ReportBlock, ...], now: float) -> None:
        for block in reports:
            if block.ssrc != self.ssrc:
                continue
            self.remote_report = block
            if block.lsr:
                # RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                arrival = ntp_middle(ntp_from_unix(now + (self.wallclock_offset or 0.0)))
                rtt = ((arrival - block.lsr - block.dlsr) & _MASK32) / 65536.0
                if rtt < MAX_RTT:
                    self.rtt = rtt

    # -- output --------------------------------------------------------------

    def playout(self, now: float) -> bytes | None:
        """Return the next 20 ms of received PCM, or None while nothing plays."""
        return self._jitter.pull()

    def playout_unheard(self, now: float) -> bool:
        """Play the next 20 ms out for nobody: ``playout``'s bookkeeping (losses,
        concealment, counters), without the PCM and, where the codec allows,
        without decoding it. Returns whether ``playout`` would have given a frame."""
        return self._jitter.advance()

    def send_frame(self, pcm: bytes, now: float) -> None:
        """Send one 20 ms PCM frame (at the codec's sample rate) to the peer.

        While DTMF is being sent, the tick carries the telephone-event packet
        instead and ``pcm`` is discarded (RFC 4733 §2.5.1.2: audio is muted).

        Raises:
            MediaStateError: the session is closed.
        """
        if self._closed:
            raise MediaStateError("RTP session is closed")
        if self._dtmf_plan and self._send_dtmf_tick(now):
            return
        # == rather than is: any all-zero frame, from the hub or a source, is silence.
        if pcm == self._silence_pcm:
            payload = self._silence_payload
            length = self._silence_length
        else:
            payload = self._encoder.encode(pcm)
            length = len(payload)
        ts = self._ts
        self._ts = (ts + self._frame_ticks) & _MASK32
        remote = self._remote_rtp
        if remote is None or not self._sending:
            self.skipped_out += 1
            return
        # _send, inlined for the audio packet of every tick.
        pt = self._pt
        self.rtp_out.append((
            _pack_header(0x80, (pt | 0x80) if self._marker else pt, self._seq, ts, self.ssrc)
            + payload, remote))
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        self.bytes_sent += RTP_HEADER_LENGTH + length
        self.octets_sent += length
        self._last_send_ts = ts
        self._last_send_at = now

    def send_payload(self, payload: bytes, now: float) -> None:
        """Send an already encoded payload in the session's codec (passthrough).

        DTMF takes the tick as in :meth:`send_frame` (the payload is discarded).

        Raises:
            MediaStateError: the session is closed.
        """
        if self._closed:
            raise MediaStateError("RTP session is closed")
        if self._dtmf_plan and self._send_dtmf_tick(now):
            return
        self._send(self._pt, payload, self._ts, now)
        codec = self._codec
        size = len(payload)
        # A whole 20 ms frame (a stream's echo, every tick) without the division.
        ticks = self._frame_ticks if size == codec.frame_bytes else codec.ticks_for(size)
        self._ts = (self._ts + ticks) & _MASK32

    def skip_frame(self, now: float) -> None:
        """Let one 20 ms tick pass without audio.

        The RTP clock keeps running, and the next packet carries the marker
        bit (RFC 3551 §4.1: the first packet of a talkspurt). Queued DTMF
        still goes out.
        """
        if self._closed:
            raise MediaStateError("RTP session is closed")
        if self._dtmf_plan and self._send_dtmf_tick(now):
            return
        self._ts = (self._ts + self._frame_ticks) & _MASK32
        self._marker = True
        self.skipped_out += 1

    def send_dtmf(
        self, digits: str, *, duration_ms: int | None = None, gap_ms: int | None = None
    ) -> None:
        """Queue ``digits`` to be sent as RFC 4733 events on the next ticks.

        Raises:
            MediaStateError: telephone-event was not negotiated, or the session is closed.
            InvalidDtmfError: a character is not a DTMF key or the duration is out of range.
        """
        if self._closed:
            raise MediaStateError("RTP session is closed")
        if self._dtmf_pt is None:
            raise MediaStateError("telephone-event was not negotiated")
        options: dict[str, int] = {}
        if duration_ms is not None:
            options["duration_ms"] = duration_ms
        if gap_ms is not None:
            options["gap_ms"] = gap_ms
        plan = list(plan_dtmf(digits, clock_rate=self._codec.clock_rate, **options))
        self._dtmf_plan.extend(plan)

    def _send_dtmf_tick(self, now: float) -> bool:
        step = self._dtmf_plan.popleft()
        event = step.event
        pt = self._dtmf_pt
        if event is None or pt is None:
            return False  # an inter-digit gap: audio as usual
        if step.start:
            self._dtmf_event_ts = self._ts
            self._marker = True
            self.dtmf_sent += 1
        self._send(pt, event.serialize(), self._dtmf_event_ts, now)
        self._ts = (self._ts + self._frame_ticks) & _MASK32
        return True

    def _send(self, pt: int, payload: bytes, ts: int, now: float) -> None:
        # send_frame has its own copy of this for the audio of every tick.
        remote = self._remote_rtp
        if remote is None or not self._sending:
            # Nowhere to send yet (no SDP address), or on hold: the RTP clock runs on.
            self.skipped_out += 1
            return
        packet = build_packet(pt, self._marker, self._seq, ts, self.ssrc, payload)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self.rtp_out.append((packet, remote))
        self.packets_sent += 1
        self.bytes_sent += len(packet)
        self.octets_sent += len(payload)
        if pt == self._pt:
            self._last_send_ts = ts
            self._last_send_at = now

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain the RTP packets waiting to go out on the RTP socket."""
        out = self.rtp_out
        if out:
            self.rtp_out = []
        return out

    def rtcp_datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain the RTCP packets waiting to go out on the RTCP socket."""
        out = self.rtcp_out
        if out:
            self.rtcp_out = []
        return out

    def events_received(self) -> list[SessionEvent]:
        """Drain the events that happened since the last call."""
        events = self._events
        if events:
            self._events = []
        return events

    # -- timers --------------------------------------------------------------

    def start(self, now: float) -> None:
        """Arm the RTCP and no-media timers."""
        if self._started:
            return
        self._started = True
        self._last_rx = now
        self._rtcp_due = now + self._next_interval()

    def _next_interval(self) -> float:
        return self._rtcp_interval * self._rng.uniform(RTCP_JITTER_LOW, RTCP_JITTER_HIGH)

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` is next due, or None when no timer runs."""
        if not self._started or self._closed:
            return None
        deadline = self._rtcp_due
        if self._media_timeout is not None and not self._timed_out:
            deadline = min(deadline, self._last_rx + self._media_timeout)
        return deadline

    def handle_timeout(self, now: float) -> None:
        """Run the timers that are due at ``now``."""
        if not self._started or self._closed:
            return
        if now >= self._rtcp_due:
            self._queue_rtcp(self._build_report(now))
            self._rtcp_due = now + self._next_interval()
        if (
            self._media_timeout is not None
            and not self._timed_out
            and now - self._last_rx >= self._media_timeout
        ):
            self._timed_out = True
            self._events.append(RtpTimeout(now - self._last_rx, now))

    def close(self, now: float, reason: str | None = None) -> None:
        """Say goodbye: queue a final report and an RTCP BYE (RFC 3550 §6.6)."""
        if self._closed:
            return
        packets = self._build_report(now)
        packets.append(
            RtcpBye((self.ssrc,), None if reason is None else reason.encode()[:255])
        )
        self._queue_rtcp(packets)
        self._closed = True
        self._dtmf_plan.clear()

    def _rtcp_destination(self) -> Address | None:
        if self._rtcp_mux:
            return self._remote_rtp
        if self._latched_rtcp is not None:
            return self._latched_rtcp
        if self._remote_rtcp is not None:
            return self._remote_rtcp
        if self._remote_rtp is not None:
            return (self._remote_rtp[0], self._remote_rtp[1] + 1)
        return None

    def _queue_rtcp(self, packets: list[RtcpPacket]) -> None:
        destination = self._rtcp_destination()
        if destination is None:
            return
        data = serialize_rtcp(packets)
        (self.rtp_out if self._rtcp_mux else self.rtcp_out).append((data, destination))
        self.rtcp_sent += 1

    def _build_report(self, now: float) -> list[RtcpPacket]:
        blocks: tuple[ReportBlock, ...] = ()
        if self._remote_ssrc is not None and self._stats.received:
            dlsr = seconds_to_short_ntp(now - self._last_sr_at) if self._last_sr_mid else 0
            blocks = (
                self._stats.make_report_block(self._remote_ssrc, lsr=self._last_sr_mid, dlsr=dlsr),
            )
        report: RtcpPacket
        if self.packets_sent > self._sent_at_last_report and self._last_send_at is not None:
            # RFC 3550 §6.4.1: the RTP timestamp of the same instant as the NTP one.
            elapsed = round((now - self._last_send_at) * self._codec.clock_rate)
            info = SenderInfo(
                ntp_timestamp=ntp_from_unix(now + (self.wallclock_offset or 0.0)),
                rtp_timestamp=(self._last_send_ts + elapsed) & _MASK32,
                packet_count=self.packets_sent & _MASK32,
                octet_count=self.octets_sent & _MASK32,
            )
            report = RtcpSenderReport(self.ssrc, info, blocks)
        else:
            report = RtcpReceiverReport(self.ssrc, blocks)
        self._sent_at_last_report = self.packets_sent
        sdes = RtcpSourceDescription(
            (SdesChunk(self.ssrc, (SdesItem(SDES_CNAME, self.cname.encode()[:255]),)),)
        )
        return [report, sdes]

    # -- changes and results -----------------------------------------------

    def set_remote_address(self, rtp: Address, rtcp: Address | None = None) -> None:
        """Point the session at the address a new SDP named (a re-INVITE, UPDATE).

        A changed address starts learning the peer's source afresh; the same
        address (hold, resume) keeps the learned one, so a re-INVITE opens no
        window for another source to be learned.
        """
        if rtp == self._sdp_rtp and rtcp == self._remote_rtcp:
            return
        self._sdp_rtp = rtp
        self._remote_rtp = rtp
        self._remote_rtcp = rtcp
        self._latched_rtcp = None
        self._latch.reset(rtp, rtcp, rtcp_mux=self._rtcp_mux)

    def set_sending(self, sending: bool) -> None:
        """Send RTP or stop (hold): RFC 3264 §6.1, a recvonly or inactive stream
        "MUST NOT" be sent on. The RTP clock keeps running; RTCP goes on."""
        if sending and not self._sending:
            self._marker = True  # the first packet after a pause starts a talkspurt
        self._sending = sending

    @property
    def sending(self) -> bool:
        """Whether the negotiated direction lets us send."""
        return self._sending

    def quality(self) -> CallQuality:
        """Summarize the call's media quality (the ``call.hangup`` numbers)."""
        retired = self._retired
        stats = self._stats
        jitter = self._jitter
        lost = retired.lost + max(stats.lost, 0)
        expected = retired.expected + stats.expected
        loss_fraction = min(max(lost / expected, 0.0), 1.0) if expected > 0 else 0.0
        delay_ms = self.rtt * 500.0 if self.rtt is not None else 0.0
        mos = estimate_mos(loss_fraction, stats.jitter_ms, delay_ms=delay_ms)
        return CallQuality(
            inbound_packets=self.packets_received,
            inbound_skipped=lost,
            jitter_packets=retired.discarded + jitter.late + jitter.duplicates + jitter.overflow,
            jitter_max_ms=max(retired.max_jitter_ms, stats.max_jitter_ms),
            mos=mos,
            outbound_packets=self.packets_sent,
            outbound_skipped=self.skipped_out,
        )


class _Retired:
    """Totals of the peer's earlier streams (before an SSRC change)."""

    __slots__ = ("discarded", "expected", "lost", "max_jitter_ms")

    def __init__(self) -> None:
        self.expected = 0
        self.lost = 0
        self.discarded = 0
        self.max_jitter_ms = 0.0

    def add(self, stats: ReceiverStats, jitter: JitterBuffer) -> None:
        self.expected += stats.expected
        self.lost += max(stats.lost, 0)
        self.discarded += jitter.late + jitter.duplicates + jitter.overflow
        self.max_jitter_ms = max(self.max_jitter_ms, stats.max_jitter_ms)
