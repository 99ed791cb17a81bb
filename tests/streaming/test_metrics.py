"""Stream counters on /metrics: the per-write counts are read when scraped, exactly."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from callstream.streaming.metrics import StreamCounters

SENT = "callstream_stream_frames_sent_total"
BYTES = "callstream_stream_media_bytes_total"
ALL = "callstream_stream_frames_sent_all_total"


def value(name: str, stream_id: str | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream_id": stream_id} if stream_id else {})


def test_writes_show_on_a_scrape_and_the_total_outlives_the_stream() -> None:
    before = value(ALL) or 0.0
    counters = StreamCounters("metrics-a")
    for _ in range(3):
        counters.sent(2, 320)
    counters.sent(1)  # a control frame: no audio
    assert value(SENT, "metrics-a") == 7
    assert value(BYTES, "metrics-a") == 960
    assert value(ALL) == before + 7
    counters.forget()
    assert value(SENT, "metrics-a") is None
    assert value(BYTES, "metrics-a") is None
    assert value(ALL) == before + 7
    counters.forget()  # twice: counted once
    assert value(ALL) == before + 7


def test_two_streams_with_one_id_show_as_one_series() -> None:
    first, second = StreamCounters("metrics-b"), StreamCounters("metrics-b")
    first.sent(2, 100)
    second.sent(3, 50)
    assert value(SENT, "metrics-b") == 5
    assert generate_latest().decode().count(f'{SENT}{{stream_id="metrics-b"}}') == 1
    first.forget()
    second.forget()
