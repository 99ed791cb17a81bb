"""The QueueSource extensions playback relies on: hold, drain, mark offsets, clear."""

from __future__ import annotations

from callstream.media.hub import QueueSource


def test_partial_frame_waits_hold_ticks_then_pads() -> None:
    source = QueueSource(8000, hold_ticks=1)
    source.feed(b"\x01\x00" * 100)  # 100 of 160 samples
    assert source.read(0.0) is None  # waits one tick for the rest
    frame = source.read(0.02)
    assert frame == b"\x01\x00" * 100 + bytes(120)
    assert source.read(0.04) is None


def test_rest_arriving_within_the_hold_is_contiguous() -> None:
    source = QueueSource(8000, hold_ticks=1)
    source.feed(b"\x01\x00" * 100)
    assert source.read(0.0) is None
    source.feed(b"\x02\x00" * 100)
    assert source.read(0.02) == b"\x01\x00" * 100 + b"\x02\x00" * 60


def test_pending_mark_skips_the_hold() -> None:
    source = QueueSource(8000, hold_ticks=5)
    marks: list[str] = []
    source.feed(b"\x01\x00" * 10)
    source.mark(lambda: marks.append("m"))
    assert source.read(0.0) == b"\x01\x00" * 10 + bytes(300)
    assert marks == ["m"]


def test_drain_is_called_before_padding() -> None:
    calls: list[int] = []
    source = QueueSource(8000, hold_ticks=0)

    def drain() -> None:
        calls.append(1)
        source.feed(b"\x03\x00" * 60)

    source.drain = drain
    source.feed(b"\x01\x00" * 100)
    assert source.read(0.0) == b"\x01\x00" * 100 + b"\x03\x00" * 60
    assert calls == [1]


def test_mark_offsets() -> None:
    source = QueueSource(8000)
    marks: list[str] = []
    source.feed(bytes(640))  # two frames
    source.mark(lambda: marks.append("later"), offset=320)  # audio still to come
    source.mark(lambda: marks.append("earlier"), offset=-320)  # padding fed past it
    source.read(0.0)
    assert marks == []  # marks fire in the order given, "earlier" waits behind "later"
    source.feed(bytes(320))
    source.read(0.02)
    source.read(0.04)
    assert marks == ["later", "earlier"]
    source.mark(lambda: marks.append("past"), offset=-2000)
    assert marks[-1] == "past"  # its position has played already: at once


def test_clear_fires_marks_placed_past_the_end() -> None:
    source = QueueSource(8000)
    marks: list[str] = []
    source.feed(bytes(320))
    source.mark(lambda: marks.append("tail"), offset=1000)
    source.clear()
    assert marks == ["tail"]
    assert source.read(0.0) is None
