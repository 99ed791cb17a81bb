"""RTP reception statistics (RFC 3550 A.1, A.3, A.8) and call quality.

:class:`ReceiverStats` follows the RFC's reference code closely: sequence
validation with cycles and restarts (A.1), expected and lost counts and the
interval fraction lost (A.3), and interarrival jitter (A.8). Arrival times
are monotonic seconds passed in by the caller.

:func:`estimate_mos` is a simplified ITU-T G.107 E-model; :func:`call_quality_stats`
renders the ``call_quality_stats`` object of the ``call.hangup`` webhook.
"""

from __future__ import annotations

from dataclasses import dataclass

from callstream.media.rtcp import ReportBlock

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "CallQuality",
    "ReceiverStats",
    "call_quality_stats",
    "estimate_mos",
]

RTP_SEQ_MOD = 1 << 16
# RFC 3550 A.1: a jump forward of less than MAX_DROPOUT is in-sequence loss,
# one back by less than MAX_MISORDER is a late or duplicate packet; anything
# else is a restart once two sequential packets confirm it.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
# A.1 recommends 2 packets of probation for a new source. Our sources are
# negotiated in SDP and latched by address, so the first packet counts.
MIN_SEQUENTIAL = 1
# A.8: the jitter estimate moves 1/16 of the way to each new sample.
JITTER_GAIN = 1 / 16
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31


class ReceiverStats:
    """Reception statistics of one RTP source (RFC 3550 A.1/A.3/A.8).

    Args:
        clock_rate: RTP timestamp units per second (8000 for G.722 too).
        probation: sequential packets required before a source is valid.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_last_transit",
        "_max_seq",
        "_min_sequential",
        "_probation",
        "_received_prior",
        "jitter",
        "max_jitter",
        "received",
        "restarts",
    )

    def __init__(self, clock_rate: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        self._clock_rate = clock_rate
        self._min_sequential = max(probation, 1)
        self._probation = self._min_sequential
        self._base_seq = 0
        self._max_seq = -1  # set from the first packet
        self._cycles = 0
        self._bad_seq = RTP_SEQ_MOD + 1  # "so seq == bad_seq is false"
        self._received_prior = 0
        self._expected_prior = 0
        self._last_transit: float | None = None
        self.received = 0
        self.jitter = 0.0
        self.max_jitter = 0.0
        self.restarts = 0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(self, seq: int, timestamp: int, arrival: float, *, timing: bool = True) -> bool:
        """Account one received packet.

        Args:
            seq: its 16-bit sequence number.
            timestamp: its RTP timestamp.
            arrival: when it arrived, in seconds (monotonic).
            timing: whether it feeds the jitter estimate; telephone-event
                packets repeat their timestamp and must not.

        Returns:
            Whether the packet is valid for this source (A.1 ``update_seq``).
        """
        if self._max_seq < 0:
            self._max_seq = (seq - 1) & 0xFFFF
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq != (self._max_seq + 1) & 0xFFFF:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
                return False
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return False
            self._init_seq(seq)
        elif udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD  # sequence number wrapped
            self._max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a big jump: the source restarted.
                self._init_seq(seq)
                self.restarts += 1
                self._last_transit = None
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or reordered packet, counted as received.
        self.received += 1
        if timing:
            # A.8: transit = arrival (in timestamp units) - timestamp; the jitter is
            # the smoothed absolute difference of successive transits. Inline: once
            # per packet received.
            transit = arrival * self._clock_rate - timestamp
            last = self._last_transit
            self._last_transit = transit
            if last is not None:
                d = (transit - last + _TS_HALF) % _TS_MOD - _TS_HALF  # timestamps wrap at 2**32
                if d < 0:
                    d = -d
                self.jitter += (d - self.jitter) * JITTER_GAIN
                if self.jitter > self.max_jitter:
                    self.max_jitter = self.jitter
        return True

    @property
    def extended_max_seq(self) -> int:
        """The highest sequence number received, extended with its cycles."""
        return self._cycles + max(self._max_seq, 0)

    @property
    def expected(self) -> int:
        """Packets expected so far (A.3)."""
        if self.received == 0 and self._probation:
            return 0
        return self.extended_max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates arrived."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        """The interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self._clock_rate

    @property
    def max_jitter_ms(self) -> float:
        """The largest interarrival jitter seen, in milliseconds."""
        return self.max_jitter * 1000.0 / self._clock_rate

    @property
    def loss_fraction(self) -> float:
        """Cumulative loss as a fraction of expected packets, 0.0-1.0."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return min(max(self.lost / expected, 0.0), 1.0)

    def make_report_block(self, ssrc: int, *, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """Build the RR block for this source and start a new interval (A.3).

        Args:
            ssrc: the source's SSRC.
            lsr: middle 32 bits of the NTP time of its last SR, or 0.
            dlsr: delay since that SR in 1/65536 s, or 0.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = max(-0x800000, min(self.lost, 0x7FFFFF))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=min(int(self.jitter), 0xFFFFFFFF),
            lsr=lsr,
            dlsr=dlsr,
        )


# G.107 defaults for the R-factor with every impairment but ours at default.
R_DEFAULT = 93.2
# Equipment impairment and packet-loss robustness of G.711 with PLC
# (G.113 Appendix I); G.722 is scored the same on this narrowband scale.
IE_G711 = 0.0
BPL_G711 = 25.1
# Delay the E-model assumes besides the network's: packetization and playout.
CODEC_DELAY_MS = 20.0


def estimate_mos(
    loss_fraction: float,
    jitter_ms: float,
    *,
    delay_ms: float = 0.0,
    ie: float = IE_G711,
    bpl: float = BPL_G711,
) -> float:
    """Estimate MOS-CQE from loss and jitter with a simplified E-model (G.107).

    Args:
        loss_fraction: packets lost, 0.0-1.0 (random loss assumed).
        jitter_ms: interarrival jitter; a playout buffer of twice it is assumed.
        delay_ms: known one-way network delay (half the RTT), if any.
        ie: the codec's equipment impairment factor.
        bpl: the codec's packet-loss robustness factor.

    Returns:
        MOS between 1.0 and 4.5 (4.41 for a perfect G.711 call).
    """
    ppl = min(max(loss_fraction, 0.0), 1.0) * 100.0
    # Id: one-way delay impairment (Cole & Rosenbluth's fit of G.107).
    d = delay_ms + 2.0 * jitter_ms + CODEC_DELAY_MS
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    # Ie,eff for random loss (BurstR = 1).
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    r = R_DEFAULT - i_d - ie_eff
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


@dataclass(frozen=True, slots=True)
class CallQuality:
    """The numbers behind the ``call_quality_stats`` webhook object.

    Attributes:
        inbound_packets: RTP packets received from the peer.
        inbound_skipped: inbound packets lost on the way (never played).
        jitter_packets: packets the jitter buffer threw away (late, duplicate
            or overflow).
        jitter_max_ms: the largest RFC 3550 interarrival jitter, in ms.
        mos: the E-model estimate.
        outbound_packets: RTP packets sent to the peer.
        outbound_skipped: 20 ms ticks for which nothing was sent.
    """

    inbound_packets: int
    inbound_skipped: int
    jitter_packets: int
    jitter_max_ms: float
    mos: float
    outbound_packets: int
    outbound_skipped: int

    def as_webhook(self) -> dict[str, dict[str, str]]:
        """Return the Telnyx ``call_quality_stats`` object (every value a string)."""
        return call_quality_stats(self)


def call_quality_stats(quality: CallQuality) -> dict[str, dict[str, str]]:
    """Render ``call_quality_stats`` for ``call.hangup`` (all values strings)."""
    return {
        "inbound": {
            "jitter_max_variance": f"{quality.jitter_max_ms:.2f}",
            "jitter_packet_count": str(quality.jitter_packets),
            "mos": f"{quality.mos:.2f}",
            "packet_count": str(quality.inbound_packets),
            "skip_packet_count": str(quality.inbound_skipped),
        },
        "outbound": {
            "packet_count": str(quality.outbound_packets),
            "skip_packet_count": str(quality.outbound_skipped),
        },
    }
