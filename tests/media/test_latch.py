"""The source policy (strict RTP), row by row of the table in callstream/media/latch.py."""

from __future__ import annotations

import pytest

from callstream.media.latch import (
    PROBATION_PACKETS,
    RELATCH_IDLE,
    SourceLatch,
    StrictRtp,
    Verdict,
)

SDP = ("192.0.2.10", 4000)
NAT = ("198.51.100.7", 31000)
OTHER = ("203.0.113.1", 9)
LEARN, STRICT, OFF = StrictRtp.LEARN, StrictRtp.STRICT, StrictRtp.OFF
LEARNED, PROBATION, FOREIGN = Verdict.LEARNED, Verdict.PROBATION, Verdict.FOREIGN


def locked_to(mode: StrictRtp, source: tuple[str, int]) -> SourceLatch:
    latch = SourceLatch(mode, SDP)
    for seq in range(PROBATION_PACKETS):
        latch.check(source, seq, 0.0)
    assert latch.source == source
    return latch


@pytest.mark.parametrize(("mode", "addr", "verdict"), [
    (LEARN, SDP, LEARNED), (LEARN, NAT, PROBATION),
    (STRICT, SDP, LEARNED), (STRICT, NAT, FOREIGN),
    (OFF, SDP, LEARNED), (OFF, NAT, LEARNED),
])
def test_nothing_learned(mode: StrictRtp, addr: tuple[str, int], verdict: Verdict) -> None:
    assert SourceLatch(mode, SDP).check(addr, 1, 0.0) is verdict


@pytest.mark.parametrize(("mode", "addr", "silent_for", "verdict"), [
    (LEARN, SDP, 0.0, LEARNED),  # the SDP's address takes over from a probation-learned one
    (LEARN, OTHER, 0.0, FOREIGN),
    (LEARN, OTHER, 3600.0, FOREIGN),  # however long the source was silent
    (OFF, SDP, 0.0, FOREIGN),
    (OFF, OTHER, 0.0, FOREIGN),
    (OFF, OTHER, RELATCH_IDLE, LEARNED),
])
def test_learned(
    mode: StrictRtp, addr: tuple[str, int], silent_for: float, verdict: Verdict
) -> None:
    latch = locked_to(mode, NAT)
    assert latch.check(addr, 100, silent_for) is verdict
    assert latch.source == (addr if verdict is LEARNED else NAT)


def test_strict_is_locked_to_the_sdp_address() -> None:
    latch = SourceLatch(STRICT, SDP)
    assert latch.check(SDP, 1, 0.0) is LEARNED
    assert latch.check(OTHER, 2, 3600.0) is FOREIGN


def test_probation_counts_consecutive_sequence_numbers_from_one_address() -> None:
    latch = SourceLatch(LEARN, SDP)
    assert [latch.check(NAT, seq, 0.0) for seq in (65534, 65535, 0)] == [
        PROBATION, PROBATION, LEARNED]  # the sequence number wraps
    latch = SourceLatch(LEARN, SDP)
    verdicts = [latch.check(addr, seq, 0.0)
                for addr, seq in ((NAT, 1), (NAT, 2), (OTHER, 3), (NAT, 3), (NAT, 5))]
    assert verdicts == [PROBATION] * 5 and latch.source is None


def test_reset_forgets_the_source_and_trusts_the_new_sdp_address() -> None:
    latch = locked_to(LEARN, NAT)
    latch.reset(OTHER)
    assert latch.source is None
    assert latch.check(SDP, 1, 0.0) is PROBATION  # the old SDP address is nobody now
    assert latch.check(OTHER, 2, 0.0) is LEARNED


def test_ipv6_spellings_and_socket_tuples_match_the_sdp() -> None:
    latch = SourceLatch(STRICT, ("2001:db8:0:0::1", 4000))
    assert latch.is_expected(("2001:db8::1", 4000, 0, 0))
    assert not latch.is_expected(("2001:db8::1", 4002, 0, 0))


@pytest.mark.parametrize(("mode", "rtcp_mux", "explicit", "addr", "accepted"), [
    (LEARN, False, None, ("192.0.2.10", 4001), True),  # RTP port + 1
    (LEARN, False, None, ("192.0.2.10", 4003), False),
    (LEARN, False, ("192.0.2.99", 7000), ("192.0.2.99", 7000), True),  # a=rtcp
    (LEARN, True, None, SDP, True),
    (STRICT, False, None, OTHER, False),
    (OFF, False, None, OTHER, True),
])
def test_rtcp_before_any_rtp(
    mode: StrictRtp, rtcp_mux: bool, explicit: tuple[str, int] | None,
    addr: tuple[str, int], accepted: bool,
) -> None:
    assert SourceLatch(mode, SDP, explicit, rtcp_mux=rtcp_mux).accepts_rtcp(addr) is accepted


def test_rtcp_from_any_port_of_the_learned_host() -> None:
    latch = locked_to(LEARN, NAT)
    assert latch.accepts_rtcp((NAT[0], 40999))
    assert not latch.accepts_rtcp(OTHER)
