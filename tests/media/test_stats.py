"""RFC 3550 A.1/A.3/A.8 statistics, the E-model and the hangup webhook object."""

from __future__ import annotations

import pytest

from callstream.media.stats import (
    CallQuality,
    ReceiverStats,
    call_quality_stats,
    estimate_mos,
)

RATE = 8000
TICK = 160


def feed(stats: ReceiverStats, seqs: list[int], *, start_ts: int = 1000) -> None:
    for seq in seqs:
        # Perfectly paced: arrival and timestamp advance together.
        n = (seq - seqs[0]) & 0xFFFF
        stats.update(seq, (start_ts + n * TICK) & 0xFFFFFFFF, n * 0.02)


def test_no_loss() -> None:
    stats = ReceiverStats(RATE)
    feed(stats, list(range(100, 150)))
    assert stats.received == 50
    assert stats.expected == 50
    assert stats.lost == 0
    assert stats.extended_max_seq == 149
    assert stats.jitter == 0.0
    block = stats.make_report_block(0xABC)
    assert (block.fraction_lost, block.packets_lost, block.highest_sequence) == (0, 0, 149)


def test_loss_counts_and_interval_fraction() -> None:
    """A.3: 2 lost of 10 expected gives fraction (2 << 8) / 10 = 51."""
    stats = ReceiverStats(RATE)
    feed(stats, [0, 1, 2, 4, 5, 6, 8, 9])
    assert stats.expected == 10
    assert stats.received == 8
    assert stats.lost == 2
    block = stats.make_report_block(1)
    assert block.fraction_lost == 51
    assert block.packets_lost == 2
    # The next interval has no loss: fraction 0, cumulative stays 2.
    feed(stats, list(range(10, 20)), start_ts=1000 + 10 * TICK)
    block = stats.make_report_block(1)
    assert block.fraction_lost == 0
    assert block.packets_lost == 2


def test_duplicates_make_loss_negative() -> None:
    stats = ReceiverStats(RATE)
    for seq in [1, 2, 2, 3, 3, 3]:
        stats.update(seq, 0, 0.0, timing=False)
    assert stats.expected == 3
    assert stats.received == 6
    assert stats.lost == -3
    assert stats.make_report_block(1).packets_lost == -3
    assert stats.loss_fraction == 0.0


def test_wraparound_counts_a_cycle() -> None:
    stats = ReceiverStats(RATE)
    feed(stats, [65533, 65534, 65535, 0, 1, 2])
    assert stats.extended_max_seq == 65536 + 2
    assert stats.expected == 6
    assert stats.lost == 0
    assert stats.make_report_block(1).highest_sequence == 65538


def test_reordered_packet_is_not_a_cycle() -> None:
    stats = ReceiverStats(RATE)
    for seq in [10, 12, 11, 13]:
        stats.update(seq, 0, 0.0, timing=False)
    assert stats.extended_max_seq == 13
    assert stats.lost == 0


def test_restart_needs_two_sequential_packets() -> None:
    """A.1: a jump beyond MAX_DROPOUT is a restart once the next packet follows it."""
    stats = ReceiverStats(RATE)
    feed(stats, [1, 2, 3])
    assert stats.update(40000, 0, 1.0, timing=False) is False
    assert stats.received == 3
    assert stats.update(40001, 0, 1.02, timing=False) is True
    assert stats.restarts == 1
    assert stats.received == 1
    assert stats.extended_max_seq == 40001


def test_probation_of_two_like_the_rfc() -> None:
    stats = ReceiverStats(RATE, probation=2)
    assert stats.update(5, 0, 0.0) is False
    assert stats.expected == 0
    assert stats.update(6, 160, 0.02) is True
    assert stats.received == 1
    assert stats.expected == 1


def test_jitter_of_alternating_delay() -> None:
    """A.8: |D| = 40 units each packet gives J_n = 40 (1 - (15/16)^n)."""
    stats = ReceiverStats(RATE)
    for n in range(30):
        delay = 0.005 if n % 2 else 0.0
        stats.update(n, n * TICK, n * 0.02 + delay)
    expected = 40 * (1 - (15 / 16) ** 29)
    assert stats.jitter == pytest.approx(expected)
    assert stats.jitter_ms == pytest.approx(expected / 8)
    assert stats.max_jitter == pytest.approx(expected)
    assert stats.make_report_block(1).jitter == int(expected)


def test_jitter_survives_timestamp_wrap() -> None:
    stats = ReceiverStats(RATE)
    base = 2**32 - 2 * TICK
    for n in range(10):
        stats.update(n, (base + n * TICK) & 0xFFFFFFFF, n * 0.02)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_telephone_events_do_not_feed_jitter() -> None:
    stats = ReceiverStats(RATE)
    for n in range(10):
        stats.update(n, 5000, n * 0.02, timing=False)  # one event timestamp
    assert stats.jitter == 0.0
    assert stats.received == 10


def test_mos_estimate() -> None:
    perfect = estimate_mos(0.0, 0.0)
    assert 4.3 < perfect < 4.5
    lossy = estimate_mos(0.05, 0.0)
    jittery = estimate_mos(0.0, 80.0)
    assert lossy < perfect
    assert jittery < perfect
    assert estimate_mos(0.05, 40.0) < lossy
    assert estimate_mos(1.0, 500.0) == 1.0
    assert 3.0 < estimate_mos(0.03, 20.0) < 4.2


def test_webhook_object_is_all_strings() -> None:
    quality = CallQuality(
        inbound_packets=500,
        inbound_skipped=3,
        jitter_packets=1,
        jitter_max_ms=4.256,
        mos=4.3912,
        outbound_packets=498,
        outbound_skipped=2,
    )
    assert call_quality_stats(quality) == {
        "inbound": {
            "jitter_max_variance": "4.26",
            "jitter_packet_count": "1",
            "mos": "4.39",
            "packet_count": "500",
            "skip_packet_count": "3",
        },
        "outbound": {"packet_count": "498", "skip_packet_count": "2"},
    }
    assert quality.as_webhook() == call_quality_stats(quality)
