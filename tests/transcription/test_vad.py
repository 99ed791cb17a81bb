"""The VAD segmenter as a table: probabilities in, utterance boundaries out."""

from __future__ import annotations

import pytest

from callstream.transcription.vad import (
    CUT_SEARCH_S,
    END_LOOKBACK_S,
    WINDOW_SECONDS,
    Segmenter,
    VadEvent,
    VadEventKind,
    VadOptions,
)

START, END, DROP = VadEventKind.START, VadEventKind.END, VadEventKind.DROP
SILENCE_WINDOWS = round(VadOptions().min_silence_ms / 1000 / WINDOW_SECONDS)  # 22 windows of 32 ms


def run(probs: list[float], options: VadOptions | None = None) -> list[VadEvent]:
    seg = Segmenter(options)
    events = [e for p in probs for e in seg.push(p)]
    return events + seg.finish()


@pytest.mark.parametrize(("probs", "expected"), [
    ([0.0] * 50, []),
    ([0.0] * 5 + [0.9] * 20 + [0.0] * 30,
     [VadEvent(START, 5), VadEvent(END, 5, 25)]),
    # Phone-band speech scores low: 0.25 is speech at the tuned threshold of 0.2.
    ([0.25] * 20 + [0.0] * 30, [VadEvent(START, 0), VadEvent(END, 0, 20)]),
    # A dip shorter than the minimum silence does not end the utterance.
    ([0.9] * 10 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30,
     [VadEvent(START, 0), VadEvent(END, 0, 30)]),
    # Between the thresholds (0.1..0.2) counts as neither: the silence timer keeps going.
    ([0.9] * 10 + [0.0] * 5 + [0.15] * 20, [VadEvent(START, 0), VadEvent(END, 0, 10)]),
    # Too short to be speech (a click): dropped.
    ([0.9] * 3 + [0.0] * 30, [VadEvent(START, 0), VadEvent(DROP, 0, 3)]),
    # Speech still going when the track ends is closed by finish().
    ([0.9] * 40, [VadEvent(START, 0), VadEvent(END, 0, 40)]),
])
def test_segmenter(probs: list[float], expected: list[VadEvent]) -> None:
    assert run(probs) == expected


def test_long_speech_is_cut_at_the_maximum_and_continues() -> None:
    options = VadOptions(max_utterance_s=1.0)
    limit = round(1.0 / WINDOW_SECONDS)
    events = run([0.9] * (limit * 2 + 5) + [0.0] * 30, options)
    assert events == [
        VadEvent(START, 0), VadEvent(END, 0, limit, cut=True),
        VadEvent(START, limit, cut=True), VadEvent(END, limit, 2 * limit, cut=True),
        # The 160 ms left over is under the minimum speech length, but it is the rest
        # of a cut utterance: kept.
        VadEvent(START, 2 * limit, cut=True), VadEvent(END, 2 * limit, 2 * limit + 5),
    ]


def test_a_cut_goes_to_the_quietest_point_of_the_last_two_seconds() -> None:
    options = VadOptions(max_utterance_s=4.0)
    limit = round(4.0 / WINDOW_SECONDS)
    search = round(CUT_SEARCH_S / WINDOW_SECONDS)
    # Loud speech with a quiet gap (two windows at -50 dB) 1 s before the limit, and a
    # quieter one (-90 dB) 3 s before it: outside the search, so ignored.
    levels = [-20.0] * (limit + 40)
    quiet_at = limit - round(1.0 / WINDOW_SECONDS)
    levels[quiet_at] = levels[quiet_at + 1] = -50.0
    far = limit - round(3.0 / WINDOW_SECONDS)
    levels[far] = levels[far + 1] = -90.0
    seg = Segmenter(options)
    events = [e for level in levels for e in seg.push(0.9, level)]
    # The boundary between the two quiet windows scores -50 (both quiet): the cut.
    assert events[:3] == [VadEvent(START, 0), VadEvent(END, 0, quiet_at + 1, cut=True),
                          VadEvent(START, quiet_at + 1, cut=True)]
    assert limit - search <= quiet_at + 1 < limit


def test_a_cut_continuation_ended_by_silence_is_kept_however_short() -> None:
    limit = round(1.0 / WINDOW_SECONDS)
    events = run([0.9] * (limit + 1) + [0.0] * 30, VadOptions(max_utterance_s=1.0))
    assert events[-1] == VadEvent(END, limit, limit + 1)


def test_end_needs_the_full_minimum_silence() -> None:
    seg = Segmenter()
    for _ in range(10):
        seg.push(0.9)
    events = [e for _ in range(SILENCE_WINDOWS - 1) for e in seg.push(0.0)]
    assert events == [] and seg.in_speech
    assert seg.push(0.0) == [VadEvent(END, 0, 10)]


@pytest.mark.parametrize("kwargs", [
    {"threshold": 0.1, "neg_threshold": 0.2}, {"threshold": 1.0},
    {"max_utterance_s": 0.1}, {"sentence_end_silence_ms": 0},
])
def test_bad_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadOptions(**kwargs)  # type: ignore[arg-type]


def test_silence_is_counted_from_the_energy_end_not_the_vad_drop() -> None:
    # 20 loud windows, then quiet audio (40 dB down) while Silero's probability stays
    # up for 8 more windows (its lag): the silence began at window 20, not 28.
    seg = Segmenter()
    events = [e for _ in range(20) for e in seg.push(0.9, -20.0)]
    events += [e for _ in range(8) for e in seg.push(0.9, -60.0)]
    assert seg.silence_from is None
    events += seg.push(0.0, -60.0)
    assert seg.silence_from == 20
    # The END comes 700 ms after window 20, 8 windows sooner than from the drop.
    events += [e for _ in range(SILENCE_WINDOWS - 10) for e in seg.push(0.0, -60.0)]
    assert events == [VadEvent(START, 0)]
    assert seg.push(0.0, -60.0) == [VadEvent(END, 0, 20)]


def test_energy_end_looks_back_no_further_than_the_lookback() -> None:
    lookback = round(END_LOOKBACK_S / WINDOW_SECONDS)
    seg = Segmenter()
    for _ in range(20):
        seg.push(0.9, -20.0)
    for _ in range(lookback + 10):  # quiet but still "speech" to the VAD for too long
        seg.push(0.9, -60.0)
    seg.push(0.0, -60.0)
    assert seg.silence_from == seg.position - 1  # the drop itself


def test_a_soft_stretch_inside_speech_does_not_end_it() -> None:
    # Quiet for 5 windows, loud again, then the VAD drops: the end is the drop's quiet.
    seg = Segmenter()
    levels = [-20.0] * 20 + [-60.0] * 5 + [-20.0] * 5
    for level in levels:
        seg.push(0.9, level)
    seg.push(0.0, -60.0)
    assert seg.silence_from == 30


def test_energy_end_never_shortens_speech_below_the_minimum() -> None:
    seg = Segmenter()
    seg.push(0.9, -20.0)  # one loud window, then quiet the VAD still calls speech
    for _ in range(10):
        seg.push(0.9, -60.0)
    seg.push(0.0, -60.0)
    assert seg.silence_from == round(0.25 / WINDOW_SECONDS)  # min_speech_ms


def test_end_at_silence_ends_the_utterance_where_its_silence_began() -> None:
    seg = Segmenter()
    for _ in range(10):
        seg.push(0.9, -20.0)
    for _ in range(5):
        seg.push(0.0, -60.0)
    assert seg.end_at_silence() == [VadEvent(END, 0, 10)]
    assert not seg.in_speech
    # The next speech is a new utterance.
    assert seg.push(0.9) == [VadEvent(START, 15)]


def test_end_at_silence_needs_a_silence() -> None:
    seg = Segmenter()
    assert seg.end_at_silence() == []  # no utterance
    for _ in range(10):
        seg.push(0.9)
    assert seg.end_at_silence() == [] and seg.in_speech  # speech still going
    for _ in range(3):
        seg.push(0.9)
    seg.push(0.0)
    seg.push(0.9)  # speech resumed: the silence is over
    assert seg.end_at_silence() == [] and seg.in_speech


def test_end_at_silence_drops_a_click() -> None:
    seg = Segmenter()
    for _ in range(3):
        seg.push(0.9, -20.0)
    seg.push(0.0, -60.0)
    assert seg.end_at_silence() == [VadEvent(DROP, 0, 3)]


def test_end_at_silence_needs_the_silence_quiet_throughout() -> None:
    # A soft word the VAD scores 0.15 (neither speech nor silence) keeps the silence
    # timer running, but it is within 20 dB of the utterance's loudest: not over yet.
    seg = Segmenter()
    for _ in range(10):
        seg.push(0.9, -20.0)
    for _ in range(5):
        seg.push(0.0, -60.0)
    for _ in range(3):
        seg.push(0.15, -30.0)
    assert seg.silence_from == 10
    assert seg.end_at_silence() == [] and seg.in_speech
    for _ in range(5):
        seg.push(0.0, -60.0)
    assert seg.end_at_silence() == []  # the quiet since began after the silence did
