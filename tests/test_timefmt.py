from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from callstream.timefmt import iso, parse_iso


def reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.floats(min_value=-1e9, max_value=2**35, allow_nan=False))
def test_iso_is_datetimes_text(ts: float) -> None:
    assert iso(ts) == reference(ts)


def test_iso_rounds_like_datetime_at_the_edges() -> None:
    for ts in (0.0, 0.0000005, 0.0000015, 0.9999994, 0.9999995, 1.9999996,
               1764979200.9999996, 1764979200.0000005, 1764979199.9999999, -0.5):
        assert iso(ts) == reference(ts), ts
    assert iso(1764979200.25) == "2025-12-06T00:00:00.250000Z"


def test_parse_iso_reads_what_iso_writes() -> None:
    assert parse_iso(iso(1764979200.123456)) == 1764979200.123456
