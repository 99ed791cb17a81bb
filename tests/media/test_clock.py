from __future__ import annotations

import time

import pytest

from callstream.media.clock import (
    NTP_UNIX_OFFSET,
    ntp_from_unix,
    ntp_middle,
    seconds_to_short_ntp,
    short_ntp_to_seconds,
    unix_from_ntp,
    wallclock_offset,
)


def test_unix_epoch_in_ntp() -> None:
    assert ntp_from_unix(0.0) == NTP_UNIX_OFFSET << 32
    assert ntp_from_unix(0.5) == (NTP_UNIX_OFFSET << 32) | 0x80000000


def test_round_trip() -> None:
    t = 1_700_000_000.123456
    assert unix_from_ntp(ntp_from_unix(t)) == pytest.approx(t, abs=1e-6)


def test_middle_32_bits() -> None:
    assert ntp_middle(0x0123456789ABCDEF) == 0x456789AB


def test_short_ntp() -> None:
    assert seconds_to_short_ntp(1.5) == 0x18000
    assert short_ntp_to_seconds(0x18000) == 1.5
    assert seconds_to_short_ntp(-1.0) == 0
    assert seconds_to_short_ntp(1e9) == 0xFFFFFFFF


def test_wallclock_offset_maps_monotonic_to_unix() -> None:
    mono = time.monotonic()
    offset = wallclock_offset(mono)
    assert mono + offset == pytest.approx(time.time(), abs=0.5)
