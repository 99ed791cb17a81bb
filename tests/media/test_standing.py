"""The standing-queue bound: the delay a stall leaves in a queue refilled at real time is
trimmed; audio queued on purpose (a lead kept while pacing, a clip sent ahead, a stream
faster than real time) is not. Driven through a real QueueSource, one read per 20 ms
tick, as the hub does; a stall is the late ticks the pacer runs back to back to catch
up (reads before the answer to them is fed) and its ``skip`` of the ticks it missed
beyond those."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.media.hub import QueueSource
from callstream.media.standing import (
    CREDIT_TICKS,
    MAX_GAP_TICKS,
    MAX_RATE,
    WINDOW_TICKS,
    StandingQueue,
)

FRAME = 320  # bytes of 20 ms at 8 kHz
TARGET = 3 * FRAME  # 60 ms


def frame(n: int) -> bytes:
    """Frame number ``n``: its first sample says which (n < 32768)."""
    return n.to_bytes(2, "little") * (FRAME // 2)


def number(pcm: bytes) -> int:
    return int.from_bytes(pcm[:2], "little")


def echo_with_burst(source: QueueSource, burst: int, ticks: int,
                    burst_at: int = 20) -> tuple[list[int], list[float]]:
    """A consumer echoing one frame a tick; at ``burst_at`` the pacer skips ``burst``
    ticks (a stall) and the stall's worth of echo arrives at once. Returns the frames
    played and the depth after each tick."""
    played: list[int] = []
    depths: list[float] = []
    sent = 0
    for tick in range(ticks):
        if tick == burst_at:
            source.skip(burst)
        count = burst + 1 if tick == burst_at else 1
        for _ in range(count):
            source.feed(frame(sent))
            sent += 1
        pcm = source.read(tick * 0.02)
        if pcm is not None:
            played.append(number(pcm))
        depths.append(source.buffered_ms)
    return played, depths


def test_an_echo_after_a_stall_is_trimmed_to_one_frame_after_the_window() -> None:
    trims: list[int] = []
    source = QueueSource(8000, standing_bytes=TARGET, on_trim=trims.append)
    played, depths = echo_with_burst(source, burst=15, ticks=300)
    assert trims == [15]  # the stall's 300 ms, once
    assert source.trimmed_frames == 15 and source.skipped_frames == 0
    first = next(i for i, d in enumerate(depths) if d > 60)
    trimmed = next(i for i in range(first, len(depths)) if depths[i] <= 20)
    # The skipped ticks count in the window: it ends some 50 - 15 ticks after the burst.
    assert WINDOW_TICKS - 16 <= trimmed - first <= WINDOW_TICKS + 2
    assert all(d <= 20 for d in depths[trimmed:])  # and it stays trimmed
    assert played == sorted(played)  # oldest dropped, order kept
    assert len(played) == 300  # no tick went silent


def test_the_late_ticks_before_a_skip_are_owed_too() -> None:
    """A 0.3 s stall as the pacer handles it: three late ticks (which find the queue
    empty: the echo is still in the socket), then 12 skipped. The echo of all 15 comes
    back in a burst; all 15 are trimmed, and the echo is back to one frame."""
    source = QueueSource(8000, standing_bytes=TARGET)
    sent = 0
    depths = []
    for tick in range(300):
        if tick == 50:
            for _ in range(3):
                assert source.read(0.0) is None
            source.skip(12)
        for _ in range(16 if tick == 50 else 1):
            source.feed(frame(sent))
            sent += 1
        source.read(0.0)
        depths.append(source.buffered_ms)
    assert source.trimmed_frames == 15
    assert max(depths[-100:]) == 0  # each echo plays on the tick after it came


def echo_with_late_answers(source: QueueSource, late: int, every: int,
                           ticks: int) -> list[float]:
    """A consumer echoing one frame a tick; every ``every`` ticks (from tick 10) its
    answers come ``late`` ticks late, together (a loaded server's jitter, or a stall
    too short for a skip, which the pacer catches up): those ticks find the queue
    empty, and the late frames land at once. Returns the depth after each tick."""
    depths: list[float] = []
    sent = owed = 0
    for tick in range(ticks):
        if 10 <= tick % every < 10 + late:
            owed += 1
        else:
            for _ in range(owed + 1):
                source.feed(frame(sent % 30000))
                sent += 1
            owed = 0
        source.read(0.0)
        depths.append(source.buffered_ms)
    return depths


@pytest.mark.parametrize("late", [1, 2, 3])
def test_late_answers_leave_no_standing_delay(late: int) -> None:
    """Each tick a late answer left empty is owed a frame; the queue then stands that
    much deeper, and is trimmed back to the echo's own frame a window later."""
    source = QueueSource(8000, standing_bytes=FRAME)
    depths = echo_with_late_answers(source, late, every=100, ticks=100 * 10)
    assert source.trimmed_frames == 10 * late
    assert max(depths[-30:]) == 0  # each echo plays on the tick it came


def test_frequent_late_answers_are_trimmed_between_them() -> None:
    """A loaded server: the echo comes 3 ticks late every 0.4 s, more often than a
    second. Each late answer stands only a window before it goes."""
    source = QueueSource(8000, standing_bytes=FRAME)
    depths = echo_with_late_answers(source, 3, every=20, ticks=20 * 50)
    assert source.trimmed_frames >= 3 * 45
    assert sum(depths[-400:]) / 400 <= 45  # 60 without the bound


def test_without_the_bound_late_answers_creep_for_good() -> None:
    """The same late answers with the bound off: the queue keeps the worst of them."""
    source = QueueSource(8000, standing_bytes=0)
    depths = echo_with_late_answers(source, 3, every=100, ticks=100 * 10)
    assert min(depths[-80:]) == 60


def test_a_pause_owes_nothing() -> None:
    """A gap longer than MAX_GAP_TICKS is the sender pausing (a bot between turns):
    the lead it keeps when it speaks again stays whole."""
    source = QueueSource(8000, standing_bytes=FRAME)
    sent = 0
    for tick in range(10 * WINDOW_TICKS):
        if 100 <= tick < 100 + MAX_GAP_TICKS + 1:
            pass  # a pause
        else:
            for _ in range(16 if tick == 100 + MAX_GAP_TICKS + 1 else 1):
                source.feed(frame(sent % 30000))
                sent += 1
        source.read(0.0)
    assert source.trimmed_frames == 0
    assert source.buffered_bytes == 15 * FRAME


def test_a_clear_owes_nothing() -> None:
    """Audio after a ``clear`` (barge-in: the bot's new answer, with its lead) is new:
    the tick the clear left empty is not owed."""
    source = QueueSource(8000, standing_bytes=FRAME)
    sent = 0
    for tick in range(10 * WINDOW_TICKS):
        if tick == 100:
            source.clear()
        else:
            for _ in range(16 if tick == 101 else 1):
                source.feed(frame(sent % 30000))
                sent += 1
        source.read(0.0)
    assert source.trimmed_frames == 0
    assert source.buffered_bytes == 15 * FRAME


def test_without_the_bound_the_same_echo_creeps_for_good() -> None:
    source = QueueSource(8000, standing_bytes=0)
    played, depths = echo_with_burst(source, burst=15, ticks=300)
    assert source.trimmed_frames == 0
    assert depths[-1] == 15 * 20  # the stall's length, for the rest of the call
    assert played == list(range(300))


def test_ticks_skipped_in_stalls_count_as_real_time() -> None:
    """A stall of 0.3 s every 0.9 s: the pacer skips its ticks (dropping what was queued)
    and the echo of the stall comes back in a burst. Counted as time with nothing fed,
    the skipped ticks make the burst real time, and the queue is trimmed between stalls;
    counted as nothing, every window looks 1.3 times faster than real time, and the
    queue stands 0.3 s deep for good."""
    source = QueueSource(8000, standing_bytes=TARGET)
    sent = 0
    burst = 0
    depths = []
    for tick in range(20 * 45):
        if tick % 45 == 44:
            source.skip(15)
            burst = 15
            continue
        for _ in range(1 + burst):
            source.feed(frame(sent % 30000))
            sent += 1
        burst = 0
        source.read(0.0)
        depths.append(source.buffered_ms)
    assert source.trimmed_frames >= 15 * 15
    assert sum(depths[-300:]) / 300 < 250  # 300 without


@given(burst=st.integers(5, 150), burst_at=st.integers(0, 60), jitter=st.booleans())
def test_any_standing_queue_refilled_at_real_time_is_trimmed(
        burst: int, burst_at: int, jitter: bool) -> None:
    source = QueueSource(8000, standing_bytes=TARGET)
    sent = 0
    depths = []
    for tick in range(burst_at + burst + 3 * WINDOW_TICKS):
        if tick == burst_at:
            source.skip(burst)
            count = burst + 1
        elif jitter:  # the echo arrives in pairs: two frames every other tick
            count = 2 if tick % 2 else 0
        else:
            count = 1
        for _ in range(count):
            source.feed(frame(sent % 30000))
            sent += 1
        source.read(0.0)
        depths.append(source.buffered_ms)
    assert source.trimmed_frames >= burst - 2
    assert max(depths[-WINDOW_TICKS:]) <= 40


@settings(deadline=None)
@given(seconds=st.floats(0.1, 20.0), chunk=st.integers(20, 5000), lumps=st.integers(1, 4))
def test_a_clip_sent_ahead_is_never_trimmed(seconds: float, chunk: int, lumps: int) -> None:
    """A TTS clip sent ahead, in any chunking, arriving over one to four ticks, drains:
    all of it plays."""
    source = QueueSource(8000, standing_bytes=TARGET)
    source.skip(20)  # a stall just before: the clip is not its answer, and is kept
    clip = b"".join(frame(n) for n in range(int(seconds * 50)))
    chunks = [clip[i : i + 2 * chunk] for i in range(0, len(clip), 2 * chunk)]
    per_tick = -(-len(chunks) // lumps)
    played = []
    for tick in range(lumps):
        for piece in chunks[tick * per_tick : (tick + 1) * per_tick]:
            source.feed(piece)
        if (pcm := source.read(0.0)) is not None:
            played.append(pcm)
    while (pcm := source.read(0.0)) is not None:
        played.append(pcm)
    assert source.trimmed_frames == 0
    assert b"".join(played)[: len(clip)] == clip


@given(rate=st.floats(MAX_RATE + 0.05, 4.0))
def test_a_stream_faster_than_real_time_is_never_trimmed(rate: float) -> None:
    source = QueueSource(8000, standing_bytes=TARGET)
    source.skip(20)
    owed = 0.0
    sent = 0
    for _ in range(10 * WINDOW_TICKS):
        owed += rate
        while owed >= 1:
            source.feed(frame(sent % 30000))
            sent += 1
            owed -= 1
        source.read(0.0)
    assert source.trimmed_frames == 0
    assert source.buffered_bytes == (sent - 10 * WINDOW_TICKS) * FRAME


def test_a_clip_then_real_time_speech_keeps_the_clip() -> None:
    """A bot queues 3 s after a stall: the clip drains (it was fed in one tick of the
    window), and all of it plays."""
    source = QueueSource(8000, standing_bytes=TARGET)
    source.skip(20)
    for n in range(150):
        source.feed(frame(n))
    played = [number(pcm) for _ in range(150) if (pcm := source.read(0.0)) is not None]
    assert played == list(range(150)) and source.trimmed_frames == 0


@pytest.mark.parametrize("stall", [0, 10])
def test_a_bot_keeping_a_lead_while_it_paces_is_never_trimmed(stall: int) -> None:
    """A bot that sends 300 ms ahead, then a frame a tick (as Pipecat's transports pace
    their output): no stall made that lead, so it stays; a stall shorter than the lead
    drops part of it (the pacer's skip) and owes nothing, so the rest stays too."""
    source = QueueSource(8000, standing_bytes=TARGET)
    sent = 0
    for tick in range(10 * WINDOW_TICKS):
        if tick == 100 and stall:
            source.skip(stall)
        for _ in range(16 if tick == 0 else 1):
            source.feed(frame(sent % 30000))
            sent += 1
        source.read(0.0)
    assert source.trimmed_frames == 0
    assert source.buffered_bytes == (15 - stall) * FRAME


def test_credit_lapses() -> None:
    """Standing delay that forms more than 2 s after the last stall is not its doing."""
    source = QueueSource(8000, standing_bytes=TARGET)
    source.skip(15)
    for _ in range(CREDIT_TICKS):
        source.read(0.0)
    for n in range(16):
        source.feed(frame(n))
    for n in range(3 * WINDOW_TICKS):
        source.feed(frame(n))
        source.read(0.0)
    assert source.trimmed_frames == 0


def test_zero_turns_it_off() -> None:
    assert not StandingQueue(FRAME, 0).enabled
    detector = StandingQueue(FRAME, 0)
    detector.missed(50, 0)
    assert all(detector.tick(100 * FRAME, n * FRAME) == 0 for n in range(10 * WINDOW_TICKS))


def test_a_shallow_queue_below_the_target_is_kept() -> None:
    """A bot that keeps 40 ms queued (under the 60 ms target) is never trimmed."""
    source = QueueSource(8000, standing_bytes=TARGET)
    source.skip(20)
    source.feed(frame(0) + frame(1))
    for n in range(2, 500):
        source.feed(frame(n))
        source.read(0.0)
    assert source.trimmed_frames == 0 and source.buffered_bytes == 2 * FRAME


def test_marks_within_trimmed_audio_are_echoed_at_once_in_order() -> None:
    source = QueueSource(8000, standing_bytes=TARGET)
    marks: list[int] = []
    sent = 0
    for tick in range(200):
        if tick == 10:
            source.skip(15)
        for _ in range(16 if tick == 10 else 1):
            source.feed(frame(sent))
            source.mark(lambda n=sent: marks.append(n))
            sent += 1
        source.read(0.0)
        assert marks == list(range(len(marks)))  # in order, every tick
    assert source.trimmed_frames == 15
    assert len(marks) >= sent - 2  # all but the frame or two still queued


def test_clear_resets_the_window() -> None:
    """After clear the queue must stand a whole window again before a trim: the audio
    queued after it is new (without the reset, this one is trimmed at the window's
    end)."""
    source = QueueSource(8000, standing_bytes=TARGET)
    sent = 0
    source.skip(6)
    for tick in range(WINDOW_TICKS + WINDOW_TICKS // 2):
        for _ in range(6 if tick == 0 else 1):
            source.feed(frame(sent))
            sent += 1
        if tick == WINDOW_TICKS // 2:
            source.clear()
            for _ in range(6):
                source.feed(frame(sent))
                sent += 1
        source.read(0.0)
    assert source.trimmed_frames == 0


@pytest.mark.parametrize(("frame_bytes", "target", "window"), [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_bad_arguments(frame_bytes: int, target: int, window: int) -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        StandingQueue(frame_bytes, target, window_ticks=window)
