from __future__ import annotations

import pytest

from callstream.media.seqnum import seq_add, seq_diff, seq_gt, ts_add, ts_diff, unwrap_seq


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [(1, 0, 1), (0, 1, -1), (0, 65535, 1), (65535, 0, -1), (100, 65500, 136), (32767, 0, 32767)],
)
def test_seq_diff_wraps(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff
    assert seq_gt(a, b) == (diff > 0)


def test_seq_add_wraps() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535


def test_unwrap_follows_the_reference() -> None:
    assert unwrap_seq(2, 65534) == 65538
    assert unwrap_seq(65534, 65538) == 65534
    assert unwrap_seq(65535, 3) == -1
    assert unwrap_seq(10, 131072 + 5) == 131072 + 10


def test_timestamps_wrap_at_32_bits() -> None:
    assert ts_add(0xFFFFFFF0, 0x20) == 0x10
    assert ts_diff(0x10, 0xFFFFFFF0) == 0x20
    assert ts_diff(0xFFFFFFF0, 0x10) == -0x20
