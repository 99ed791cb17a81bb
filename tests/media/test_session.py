"""The sans-I/O RTP session, driven by bytes over a fake wire."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.media.codecs import G722, PCMA, PCMU, CodecInfo
from callstream.media.codecs.g711 import PcmuEncoder
from callstream.media.dtmf import DtmfDigit, dtmf_packets
from callstream.media.exceptions import InvalidDtmfError, MediaStateError, RtpParseError
from callstream.media.latch import PROBATION_PACKETS, RELATCH_IDLE, StrictRtp
from callstream.media.rtcp import (
    RtcpBye,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    parse_rtcp,
)
from callstream.media.rtp import RtpPacket, RtpView
from callstream.media.session import (
    ByeReceived,
    RemoteAddressChanged,
    RtpSession,
    RtpStarted,
    RtpTimeout,
    SsrcChanged,
)

from .helpers import A_ADDR, B_ADDR, Wire, fixture, frames, tone

TICK = 0.02
G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def pair(codec: CodecInfo = PCMU, **kwargs: object) -> tuple[RtpSession, RtpSession, Wire]:
    a = RtpSession(codec, remote_address=B_ADDR, rng=random.Random(1), name="a", **kwargs)  # type: ignore[arg-type]
    b = RtpSession(codec, remote_address=A_ADDR, rng=random.Random(2), name="b", **kwargs)  # type: ignore[arg-type]
    return a, b, Wire(a, b)


def test_frames_cross_and_play_out() -> None:
    a, b, wire = pair()
    pcm = tone(440, 8000, 0.2)
    played = []
    for n, frame in enumerate(frames(pcm, 320)):
        a.send_frame(frame, n * TICK)
        wire.deliver(n * TICK)
        out = b.playout(n * TICK)
        if out is not None:
            played.append(out)
    packets = [RtpPacket.parse(data) for data in wire.a_to_b]
    assert len(packets) == 10
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert [p.sequence_number for p in packets] == [
        (packets[0].sequence_number + i) & 0xFFFF for i in range(10)
    ]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * i for i in range(10)]
    assert {p.ssrc for p in packets} == {a.ssrc}
    assert {p.payload_type for p in packets} == {0}
    decoded = PCMU.new_decoder().decode(PCMU.new_encoder().encode(pcm))
    assert b"".join(played) == decoded[: len(b"".join(played))]
    assert len(played) == 9  # 40 ms of prefetch, one frame behind
    assert b.events_received() == [RtpStarted(A_ADDR, a.ssrc, 0.0)]
    assert (b.packets_received, b.bytes_received) == (10, 10 * 172)
    assert (a.packets_sent, a.octets_sent) == (10, 1600)


def test_g722_clock_is_8000() -> None:
    a, _b, wire = pair(G722)
    for n in range(3):
        a.send_frame(bytes(640), n * TICK)
    wire.deliver(0.0)
    packets = [RtpPacket.parse(d) for d in wire.a_to_b]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 160, 320]
    assert {len(p.payload) for p in packets} == {160}
    assert {p.payload_type for p in packets} == {9}


def test_playout_of_30ms_pcma_packets() -> None:
    """A peer with ptime 30 (SIPp's g711a.pcap): 240-byte packets, 20 ms frames out."""
    session = RtpSession(PCMA, remote_address=A_ADDR, rng=random.Random(0))
    pcm = tone(300, 8000, 0.3)
    payloads = [PCMA.new_encoder().encode(c) for c in frames(pcm, 480)]
    out = []
    for t in range(0, 400, 10):
        if t % 30 == 0 and t // 30 < len(payloads):
            seq = t // 30
            packet = RtpPacket(8, 1000 + seq, 240 * seq, 0x1234, payloads[seq])
            session.receive_rtp(packet.serialize(), A_ADDR, t / 1000)
        if t % 20 == 0:
            frame = session.playout(t / 1000)
            if frame is not None:
                out.append(frame)
    assert {len(f) for f in out} == {320}
    decoded = PCMA.new_decoder().decode(b"".join(payloads))
    assert b"".join(out)[: len(decoded)] == decoded


def read_pcap_udp(path: Path) -> list[tuple[float, bytes]]:
    """UDP payloads of an Ethernet/IPv4 pcap (enough for SIPp's sample files)."""
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        out.append((sec + usec / 1e6, udp[8:]))
    return out


def test_sipp_g711a_pcap_plays_bit_exact() -> None:
    assert G711A_PCAP.exists(), "sip-tester's g711a.pcap is missing: apt-get install sip-tester"
    packets = read_pcap_udp(G711A_PCAP)
    session = RtpSession(PCMA, remote_address=A_ADDR, rng=random.Random(0))
    start = packets[0][0]
    out = []
    pending = list(packets)
    ticks = int((packets[-1][0] - start) / TICK) + 10
    for n in range(ticks):
        now = n * TICK
        # The pcap's own timing: 30 ms packets, arriving with some jitter.
        while pending and pending[0][0] - start <= now:
            assert session.receive_rtp(pending.pop(0)[1], A_ADDR, now)
        frame = session.playout(now)
        if frame is not None:
            out.append(frame)
    expected = PCMA.new_decoder().decode(b"".join(RtpPacket.parse(p).payload for _, p in packets))
    played = b"".join(out)
    assert session.jitter_buffer.lost == 0
    assert session.malformed_dropped == 0
    assert played[: len(expected)] == expected


NAT = ("192.0.2.7", 31000)
SPRAYER = ("203.0.113.1", 9)
SDP_ADDR = ("10.9.9.9", 1)


def rtp(seq: int, ssrc: int = 99, payload: bytes = bytes(160)) -> bytes:
    return RtpPacket(0, seq & 0xFFFF, 160 * seq, ssrc, payload).serialize()


def test_the_sdp_address_is_accepted_at_once_and_then_locked() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR, rng=random.Random(2))
    assert b.receive_rtp(rtp(1), SDP_ADDR, 0.0)
    # Long silence (hold, DTX): a sprayer still gets nothing in and nothing out.
    for n in range(10):
        assert not b.receive_rtp(rtp(100 + n, ssrc=7), SPRAYER, 5.0 + n * TICK)
    assert b.foreign_dropped == 10 and b.packets_received == 1
    assert b.remote_address == SDP_ADDR
    b.send_frame(bytes(320), 6.0)
    assert [addr for _, addr in b.datagrams_to_send()] == [SDP_ADDR]
    assert b.events_received() == [RtpStarted(SDP_ADDR, 99, 0.0)]


def test_a_nat_source_is_learned_after_probation_then_locked() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR, rng=random.Random(2))
    verdicts = [b.receive_rtp(rtp(seq), NAT, seq * TICK) is not None
                for seq in range(1, 1 + PROBATION_PACKETS)]
    assert verdicts == [False] * (PROBATION_PACKETS - 1) + [True]
    assert b.probation_dropped == PROBATION_PACKETS - 1
    assert b.remote_address == NAT
    b.send_frame(bytes(320), 1.0)
    assert [addr for _, addr in b.datagrams_to_send()] == [NAT]
    assert not b.receive_rtp(rtp(50, ssrc=7), SPRAYER, 9.0)
    assert b.foreign_dropped == 1
    assert b.events_received() == [RtpStarted(NAT, 99, PROBATION_PACKETS * TICK)]


def test_probation_wants_consecutive_packets_from_one_source() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR)
    # Interleaved sources and gaps in the sequence restart the count.
    for seq, addr in ((1, NAT), (2, SPRAYER), (3, NAT), (5, NAT), (6, NAT)):
        assert not b.receive_rtp(rtp(seq), addr, 0.0)
    assert b.receive_rtp(rtp(7), NAT, 0.0)
    assert b.probation_dropped == 5


def test_the_sdp_address_takes_over_from_a_source_learned_on_probation() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR)
    for seq in range(1, 1 + PROBATION_PACKETS):
        b.receive_rtp(rtp(seq, ssrc=7), SPRAYER, 0.0)
    assert b.remote_address == SPRAYER
    assert b.receive_rtp(rtp(1), SDP_ADDR, 0.1)
    assert b.remote_address == SDP_ADDR
    assert RemoteAddressChanged(SPRAYER, SDP_ADDR, 0.1) in b.events_received()
    assert not b.receive_rtp(rtp(9, ssrc=7), SPRAYER, 0.2)


def test_a_new_sdp_address_starts_learning_again() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR)
    assert b.receive_rtp(rtp(1), SDP_ADDR, 0.0)
    b.set_remote_address(SDP_ADDR)  # a re-INVITE with the same address: still locked
    assert not b.receive_rtp(rtp(2, ssrc=7), SPRAYER, 0.1)
    b.set_remote_address(NAT)  # the peer moved
    assert b.remote_address == NAT
    assert not b.receive_rtp(rtp(3), SDP_ADDR, 0.2)  # the old address is now foreign...
    assert b.probation_dropped == 1
    assert b.receive_rtp(rtp(4), NAT, 0.3)  # ...and the new one is trusted at once


def test_strict_mode_accepts_only_the_sdp_address() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR, strict_rtp=StrictRtp.STRICT)
    for seq in range(1, 10):
        assert not b.receive_rtp(rtp(seq), NAT, seq * TICK)
    assert (b.foreign_dropped, b.probation_dropped) == (9, 0)
    assert b.receive_rtp(rtp(10), SDP_ADDR, 1.0)
    assert b.remote_address == SDP_ADDR


def test_off_mode_follows_any_source_after_a_silence() -> None:
    b = RtpSession(PCMU, remote_address=SDP_ADDR, rng=random.Random(2), strict_rtp=StrictRtp.OFF)
    assert b.receive_rtp(rtp(1), NAT, 0.0)
    assert b.remote_address == NAT
    assert not b.receive_rtp(rtp(2, ssrc=7), SPRAYER, 0.01)
    assert b.foreign_dropped == 1
    assert b.receive_rtp(rtp(3), SPRAYER, RELATCH_IDLE + 0.1)
    assert b.remote_address == SPRAYER
    assert b.events_received() == [
        RtpStarted(NAT, 99, 0.0),
        RemoteAddressChanged(NAT, SPRAYER, RELATCH_IDLE + 0.1),
    ]


def test_rtcp_only_from_the_peer() -> None:
    a, b, _wire = pair()
    a.start(0.0)
    a.send_frame(bytes(320), 0.0)
    a.handle_timeout(100.0)
    report = a.rtcp_datagrams_to_send()[0][0]
    rtcp_port = (A_ADDR[0], A_ADDR[1] + 1)
    b.receive_rtcp(report, SPRAYER, 100.0)  # a forged report or BYE from elsewhere
    assert (b.rtcp_received, b.rtcp_foreign_dropped) == (0, 1)
    b.receive_rtcp(report, rtcp_port, 100.0)  # the SDP's RTCP port, before any RTP
    assert b.rtcp_received == 1
    assert b.receive_rtp(a.datagrams_to_send()[0][0], A_ADDR, 100.0)
    b.receive_rtcp(report, (A_ADDR[0], 40999), 100.0)  # any port of the learned host
    assert (b.rtcp_received, b.rtcp_foreign_dropped) == (2, 1)


def test_dtmf_round_trip() -> None:
    a, b, wire = pair()
    a.send_dtmf("12#", duration_ms=100, gap_ms=60)
    n = 0
    while a.dtmf_pending:
        a.send_frame(bytes(320), n * TICK)
        wire.deliver(n * TICK)
        b.playout(n * TICK)
        n += 1
    digits = [e for e in b.events_received() if isinstance(e, DtmfDigit)]
    assert [d.digit for d in digits] == ["1", "2", "#"]
    assert b.dtmf_received == 3 and a.dtmf_sent == 3
    packets = [RtpPacket.parse(d) for d in wire.a_to_b]
    # 3 digits x (4 updates + 3 ends) telephone-events, and audio only in the gaps.
    assert sum(p.payload_type == 101 for p in packets) == 21
    assert sum(p.payload_type == 0 for p in packets) == 9  # 3 gap ticks after each
    assert b.jitter_buffer.lost == 0


def test_sipp_dtmf_packets_give_one_digit() -> None:
    b = RtpSession(PCMU, remote_address=A_ADDR, rng=random.Random(0))
    data = fixture("rtp_dtmf.bin")
    start = RtpPacket.parse(data)
    payloads = ["010a0000", "010a0140", "010a0280", "018a08c0", "018a08c0", "018a08c0"]
    seqs = [7984, 7985, 7986, 7987, 7987, 7987]
    for n, (seq, payload) in enumerate(zip(seqs, payloads, strict=True)):
        packet = RtpPacket(101, seq, start.timestamp, start.ssrc, bytes.fromhex(payload), n == 0)
        b.receive_rtp(packet.serialize(), A_ADDR, n * TICK)
    digits = [e for e in b.events_received() if isinstance(e, DtmfDigit)]
    assert [d.digit for d in digits] == ["1"]


def test_dtmf_under_its_own_ssrc_leaves_the_audio_stream_alone() -> None:
    """SIPp plays speech and DTMF from two pcaps: two SSRCs, two sequence spaces."""
    b = RtpSession(PCMU, remote_address=A_ADDR, jitter_prefetch_ms=20)
    for n in range(5):
        b.receive_rtp(RtpPacket(0, 100 + n, 160 * n, 0xAAAA, bytes(160)).serialize(), A_ADDR, 0.0)
    for packet in dtmf_packets("4", payload_type=101, ssrc=0xBBBB, sequence_number=9000):
        assert b.receive_rtp(packet.serialize(), A_ADDR, 0.1)
    b.receive_rtp(RtpPacket(0, 105, 800, 0xAAAA, bytes(160)).serialize(), A_ADDR, 0.2)
    events = b.events_received()
    assert not any(isinstance(e, SsrcChanged) for e in events)
    assert [e.digit for e in events if isinstance(e, DtmfDigit)] == ["4"]
    assert b.remote_ssrc == 0xAAAA
    assert b.stats.received == 6 and b.stats.lost == 0


@pytest.mark.parametrize("audio_goes_on", [True, False])
def test_telephone_events_are_not_jitter_discards(audio_goes_on: bool) -> None:
    """baresip keeps its audio going during a digit, one sequence space for both; a muting
    sender (RFC 4733 §2.5.1.2) sends events instead. Neither makes a jitter discard (84 of
    84 events did with the audio going on), and the events are counted apart."""
    b = RtpSession(PCMU, remote_address=A_ADDR, rng=random.Random(0))
    encode = PCMU.new_encoder().encode
    seq = 100
    events = 0
    for n in range(400):
        digit = 100 <= n < 121 or 200 <= n < 221 or 300 <= n < 342
        if audio_goes_on or not digit:
            b.receive_rtp(RtpPacket(0, seq, 160 * n, 77, encode(bytes(320))).serialize(),
                          A_ADDR, n * TICK)
            seq += 1
        if digit:
            start = 100 if n < 200 else 200 if n < 300 else 300
            event = (bytes([1, 10]) + struct.pack("!H", 160 * (n - start + 1)))
            b.receive_rtp(RtpPacket(101, seq, 160 * start, 77, event).serialize(),
                          A_ADDR, n * TICK)
            seq += 1
            events += 1
        b.playout(n * TICK)
    assert (events, b.telephone_event_packets) == (84, 84)
    assert b.quality().jitter_packets == 0
    assert b.jitter_buffer.lost == 0


def test_dtmf_needs_negotiation_and_keys() -> None:
    session = RtpSession(PCMU, dtmf_payload_type=None)
    with pytest.raises(MediaStateError, match="telephone-event was not negotiated"):
        session.send_dtmf("1")
    with pytest.raises(InvalidDtmfError):
        RtpSession(PCMU).send_dtmf("12x")


def test_rtcp_reports_and_rtt() -> None:
    a, b, wire = pair(wallclock_offset=1.7e9, rtcp_interval=1.0)
    a.start(0.0)
    b.start(0.0)
    for n in range(200):
        now = n * TICK
        a.send_frame(bytes(320), now)
        if n % 2:
            b.send_frame(bytes(320), now)
        for session in (a, b):
            deadline = session.next_deadline()
            if deadline is not None and deadline <= now:
                session.handle_timeout(now)
        wire.deliver(now)
        b.playout(now)
    assert a.rtcp_sent >= 2 and b.rtcp_received >= 2
    assert a.remote_report is not None and a.remote_report.ssrc == a.ssrc
    assert a.remote_report.packets_lost == 0
    assert a.rtt is not None and a.rtt < 0.001  # the fake wire has no delay
    assert b.rtt is not None and b.rtt < 0.001
    assert b.remote_cname == a.cname


def test_report_contents() -> None:
    a, _b, _wire = pair(wallclock_offset=1.7e9)
    a.start(0.0)
    for n in range(50):
        a.send_frame(bytes(320), n * TICK)
    a.handle_timeout(100.0)
    (data, addr), = a.rtcp_datagrams_to_send()
    assert addr == (B_ADDR[0], B_ADDR[1] + 1)
    sr, sdes = parse_rtcp(data)
    assert isinstance(sr, RtcpSenderReport)
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (50, 8000)
    assert isinstance(sdes, RtcpSourceDescription) and sdes.cname(a.ssrc) == a.cname
    # Nothing sent since: the next report is an RR.
    a.handle_timeout(200.0)
    (data, _), = a.rtcp_datagrams_to_send()
    assert isinstance(parse_rtcp(data)[0], RtcpReceiverReport)


def test_bye() -> None:
    a, b, wire = pair()
    a.send_frame(bytes(320), 0.0)
    wire.deliver(0.0)
    b.events_received()
    a.close(1.0, "hangup")
    wire.deliver(1.0)
    assert b.events_received() == [ByeReceived("hangup", 1.0)]
    assert a.closed
    with pytest.raises(MediaStateError, match="RTP session is closed"):
        a.send_frame(bytes(320), 1.1)
    assert not a.receive_rtp(wire.b_to_a[0] if wire.b_to_a else b"", B_ADDR, 2.0)


def test_bye_packet_shape() -> None:
    session = RtpSession(PCMU, remote_address=B_ADDR)
    session.close(0.0)
    (data, _), = session.rtcp_datagrams_to_send()
    assert parse_rtcp(data)[-1] == RtcpBye((session.ssrc,))


def test_no_media_timeout() -> None:
    session = RtpSession(PCMU, remote_address=A_ADDR, media_timeout=2.0)
    assert session.next_deadline() is None
    session.start(10.0)
    assert session.next_deadline() == 12.0
    session.handle_timeout(12.0)
    assert session.events_received() == [RtpTimeout(2.0, 12.0)]
    session.handle_timeout(13.0)
    assert session.events_received() == []  # once per silence
    session.receive_rtp(RtpPacket(0, 1, 0, 5, bytes(160)).serialize(), A_ADDR, 14.0)
    session.events_received()
    session.handle_timeout(16.5)
    assert session.events_received() == [RtpTimeout(2.5, 16.5)]


def test_malformed_input_is_counted_and_dropped() -> None:
    session = RtpSession(PCMU, remote_address=A_ADDR)
    assert not session.receive_rtp(fixture("bad_rtp_csrc.bin"), A_ADDR, 0.0)
    assert not session.receive_rtp(b"", A_ADDR, 0.0)
    session.receive_rtcp(fixture("bad_rtcp_truncated.bin"), A_ADDR, 0.0)
    bad_dtmf = RtpPacket(101, 1, 0, 5, b"\x01").serialize()
    assert session.receive_rtp(bad_dtmf, A_ADDR, 0.0)
    assert (session.malformed_dropped, session.rtcp_malformed) == (3, 1)
    assert session.events_received() == [RtpStarted(A_ADDR, 5, 0.0)]


def test_rtcp_mux() -> None:
    a, b, _wire = pair(rtcp_mux=True)
    a.start(0.0)
    a.send_frame(bytes(320), 0.0)
    a.handle_timeout(100.0)
    assert a.rtcp_datagrams_to_send() == []
    datagrams = a.datagrams_to_send()
    assert len(datagrams) == 2 and {addr for _, addr in datagrams} == {B_ADDR}
    for data, _ in datagrams:
        b.receive_rtp(data, A_ADDR, 100.0)
    assert (b.packets_received, b.rtcp_received) == (1, 1)
    assert b.remote_cname == a.cname


def test_ssrc_change_restarts_the_stream() -> None:
    b = RtpSession(PCMU, remote_address=A_ADDR, jitter_prefetch_ms=20)
    for seq in range(5):
        b.receive_rtp(RtpPacket(0, seq, 160 * seq, 1, bytes(160)).serialize(), A_ADDR, seq * TICK)
    b.receive_rtp(RtpPacket(0, 1000, 0, 2, bytes(160)).serialize(), A_ADDR, 0.2)
    events = b.events_received()
    assert events[-1] == SsrcChanged(1, 2, 0.2)
    assert b.remote_ssrc == 2
    assert b.stats.received == 1
    assert b.quality().inbound_packets == 6


def test_skip_frame_keeps_the_clock_and_marks_the_talkspurt() -> None:
    a, _b, wire = pair()
    a.send_frame(bytes(320), 0.0)
    a.skip_frame(0.02)
    a.skip_frame(0.04)
    a.send_frame(bytes(320), 0.06)
    wire.deliver(0.06)
    first, second = (RtpPacket.parse(d) for d in wire.a_to_b)
    assert second.timestamp - first.timestamp == 480
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert second.marker
    assert a.quality().outbound_skipped == 2


def test_passthrough_payload() -> None:
    a, _, wire = pair(PCMA)
    a.send_payload(b"\xd5" * 240, 0.0)
    a.send_payload(b"\xd5" * 160, 0.03)
    wire.deliver(0.03)
    first, second = (RtpPacket.parse(d) for d in wire.a_to_b)
    assert second.timestamp - first.timestamp == 240
    assert first.payload == b"\xd5" * 240


def test_unknown_payload_type_plays_as_silence() -> None:
    b = RtpSession(PCMU, remote_address=A_ADDR, jitter_prefetch_ms=20)
    b.receive_rtp(RtpPacket(13, 1, 0, 5, b"\x40").serialize(), A_ADDR, 0.0)  # comfort noise
    assert b.unknown_payload_type == 1
    assert b.playout(0.0) == bytes(320)


def test_nowhere_to_send() -> None:
    session = RtpSession(PCMU)
    session.send_frame(bytes(320), 0.0)
    assert session.datagrams_to_send() == []
    assert session.skipped_out == 1


def test_quality_counts_loss() -> None:
    a, b, _wire = pair()
    for n in range(100):
        a.send_frame(bytes(320), n * TICK)
        data, _ = a.datagrams_to_send()[0]
        if n % 10 != 5:  # lose one packet in ten
            b.receive_rtp(data, A_ADDR, n * TICK)
        b.playout(n * TICK)
    quality = b.quality()
    assert quality.inbound_packets == 90
    assert quality.inbound_skipped == 10
    assert quality.mos < 4.0
    webhook = quality.as_webhook()
    assert webhook["inbound"]["skip_packet_count"] == "10"
    assert webhook["inbound"]["packet_count"] == "90"


def test_generated_dtmf_packets_interleave_with_audio_seq() -> None:
    """Telephone-event packets take sequence numbers; they are not losses."""
    b = RtpSession(PCMU, remote_address=A_ADDR, jitter_prefetch_ms=20)
    seq = 0
    for n in range(3):
        b.receive_rtp(RtpPacket(0, seq, 160 * n, 7, bytes(160)).serialize(), A_ADDR, n * TICK)
        seq += 1
    for packet in dtmf_packets("9", payload_type=101, ssrc=7, sequence_number=seq, timestamp=480):
        b.receive_rtp(packet.serialize(), A_ADDR, 0.1)
        seq += 1
    for _ in range(20):
        b.playout(1.0)
    assert b.jitter_buffer.lost == 0
    assert [e.digit for e in b.events_received() if isinstance(e, DtmfDigit)] == ["9"]


@settings(max_examples=300, deadline=None)
@given(first=st.just(0x80) | st.integers(0, 255), rest=st.binary(min_size=0, max_size=60))
def test_the_plain_header_read_in_place_says_what_parse_header_says(
        first: int, rest: bytes) -> None:
    """``receive_rtp`` reads a plain packet's fixed header in place: the view (or the
    refusal) is the full parse's for any bytes."""
    session = RtpSession(PCMU, remote_address=B_ADDR, rng=random.Random(1), name="a")
    data = bytes((first,)) + rest
    try:
        expected: RtpView | None = RtpView.parse(data)
    except RtpParseError:
        expected = None
    assert session.receive_rtp(data, B_ADDR, 0.0) == expected
    assert session.malformed_dropped == (expected is None)


# -- send_frame's tick: silence encoded once, the packet built inline ------------------

_tick_kinds = st.lists(
    st.sampled_from(["silence", "audio", "audio", "skip", "dtmf", "hold", "resume"]),
    max_size=60)


def _general_send_frame(session: RtpSession, pcm: bytes, now: float) -> None:
    """send_frame's general path: encode every frame, build and queue with _send."""
    if session._dtmf_plan and session._send_dtmf_tick(now):
        return
    session._send(session.payload_type, session._encoder.encode(pcm), session._ts, now)
    session._ts = (session._ts + session.codec.frame_ticks) & 0xFFFFFFFF


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([PCMU, PCMA, G722]), _tick_kinds, st.randoms(use_true_random=False))
def test_send_frames_wire_equals_the_general_paths(
        codec: CodecInfo, kinds: list[str], rng: random.Random) -> None:
    fast = RtpSession(codec, remote_address=B_ADDR, rng=random.Random(7))
    general = RtpSession(codec, remote_address=B_ADDR, rng=random.Random(7))
    for session in (fast, general):
        session.start(0.0)
    silence = bytes(codec.pcm_frame_bytes)
    for n, kind in enumerate(kinds):
        now = n * TICK
        pcm = rng.randbytes(codec.pcm_frame_bytes) if kind == "audio" else silence
        for session in (fast, general):
            if kind == "dtmf":
                session.send_dtmf("1", duration_ms=60, gap_ms=40)
            elif kind in ("hold", "resume"):
                session.set_sending(kind == "resume")
        if kind == "skip":
            fast.skip_frame(now)
            general.skip_frame(now)
        else:
            fast.send_frame(pcm, now)
            _general_send_frame(general, pcm, now)
    assert fast.datagrams_to_send() == general.datagrams_to_send()
    assert (fast.packets_sent, fast.bytes_sent, fast.octets_sent, fast.skipped_out) == (
        general.packets_sent, general.bytes_sent, general.octets_sent, general.skipped_out)
    # The sender report's RTP timestamp comes from the last audio packet sent.
    end = len(kinds) * TICK + 10
    fast.handle_timeout(end)
    general.handle_timeout(end)
    assert fast.rtcp_datagrams_to_send() == general.rtcp_datagrams_to_send()


def test_silence_is_encoded_once_by_a_stateless_encoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    session = RtpSession(PCMU, remote_address=B_ADDR)
    calls: list[bytes] = []
    encode = PcmuEncoder.encode
    monkeypatch.setattr(PcmuEncoder, "encode", staticmethod(
        lambda pcm: calls.append(pcm) or encode(pcm)))
    for n in range(10):
        session.send_frame(bytes(320), n * TICK)
    assert calls == []
    session.send_frame(b"\x01" * 320, 10 * TICK)
    assert len(calls) == 1
    payloads = [RtpPacket.parse(data).payload for data, _ in session.datagrams_to_send()]
    assert payloads == [b"\xff" * 160] * 10 + [encode(b"\x01" * 320)]
