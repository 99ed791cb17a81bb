"""Prometheus counters of the media layer: RTP totals per ended leg, pacer health.

Per-packet counting would cost a Python call per datagram on the hot path, so the
RTP counters are added once per leg, when its endpoint closes, from the session's own
plain-integer counters. Live calls therefore show up when they end. Rejected packets are
the exception: they are counted as they come (an attack in progress must show), from the
path that already dropped them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RTP_PACKETS = Counter(
    "callstream_rtp_packets", "RTP packets of ended legs", ["direction"]
)
RTP_LOST = Counter(
    "callstream_rtp_lost_packets",
    "Inbound RTP packets of ended legs missing by sequence number (RFC 3550 A.3)",
)
RTP_SKIPPED_OUT = Counter(
    "callstream_rtp_skipped_out",
    "Outbound 20 ms ticks of ended legs sent as silence gaps (nothing to play)",
)
PACER_TICKS = Counter(
    "callstream_media_pacer_ticks",
    "Pacer ticks: run on time, run late (catch-up), or skipped after a stall",
    ["outcome"],
)
PLAYBACK_DISCARDED = Counter(
    "callstream_media_playback_discarded_frames",
    "Queued playback frames dropped so that what follows plays on time, not later: "
    "stall (stream or bridged audio whose ticks the pacer skipped after a stall), "
    "standing (a stream's standing queue refilled at real time, "
    "CALLSTREAM_PLAYBACK_STANDING_MS)",
    ["reason"],
)
PLAYBACK_DISCARDED_STALL = PLAYBACK_DISCARDED.labels("stall")
PLAYBACK_DISCARDED_STANDING = PLAYBACK_DISCARDED.labels("standing")
RTP_REJECTED = Counter(
    "callstream_rtp_rejected_packets",
    "RTP/RTCP packets dropped for their source (CALLSTREAM_STRICT_RTP): from another "
    "address than the leg's locked one (foreign), or while an address not in the SDP "
    "was on probation",
    ["protocol", "reason"],
)
BRIDGE_HOPS = Gauge(
    "callstream_bridge_hops",
    "Bridges with a call of another process (--workers, a cluster) open in this one",
)
BRIDGE_HOP_FRAMES = Counter(
    "callstream_bridge_hop_frames",
    "Audio frames of ended bridge hops: sent, received, early (the other side's first "
    "frames, before its answer), dropped (from another address, or not a frame of the "
    "peer)",
    ["outcome"],
)
